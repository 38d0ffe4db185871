//! The seed's Flask example (examples/flask-app) deployed by a real
//! `git push`: a venv, `pip install -r requirements.txt` from the package
//! index, the app started on an internal port and served through the proxy.

mod gitpush_support;

use gitpush_support::*;

#[test]
fn flask_example_deploys_by_git_push() {
    let server = Server::setup("flask-example");
    server.copy_example("flask-app");
    server.commit("flask example");
    let output = server.push("main");
    assert!(
        output.contains("installing: python3 -m venv venv"),
        "{output}"
    );
    assert!(output.contains("-----> deployed"), "{output}");
    let (status, body) = server.get("/");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Hello from Deployment Paradigm!"), "{body}");
    let current = server.link("current").unwrap();
    assert!(
        body.contains(&current),
        "the app sees its release id: {body}"
    );
    let (status, body) = server.get("/health");
    assert_eq!(status, 200);
    assert!(body.contains("healthy"));
    // Flask really came from the release's own venv.
    let venv = server
        .app_dir()
        .join("releases")
        .join(&current)
        .join("venv");
    let out = std::process::Command::new(venv.join("bin/python"))
        .args(["-c", "import flask, sys; print(flask.__file__)"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&venv.display().to_string()),
        "{}",
        text(&out)
    );
}
