//! The node example (examples/node-app) deployed by a real `git push`:
//! `npm ci` from its package-lock.json, `npm start` on an internal port, the
//! health check and the app's answers through the proxy, and a second push
//! that replaces the running node process.

mod gitpush_support;

use gitpush_support::*;

#[test]
fn node_example_deploys_by_git_push() {
    if !tool_available("node") || !tool_available("npm") {
        return;
    }
    let server = Server::setup("node-example");
    server.copy_example("node-app");
    server.commit("node example");
    let output = server.push("main");
    assert!(output.contains("installing: npm ci"), "{output}");
    assert!(output.contains("healthy after"), "{output}");
    assert!(output.contains("-----> deployed"), "{output}");
    let first = server.link("current").unwrap();
    let release_dir = server.app_dir().join("releases").join(&first);
    // `npm ci` installed the app's dependency into the release.
    assert!(
        release_dir.join("node_modules/greeting/index.js").is_file(),
        "no node_modules/greeting in {}",
        release_dir.display()
    );
    assert!(
        release_dir
            .join("node_modules/.package-lock.json")
            .is_file()
    );

    let (status, body) = server.get("/health");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("healthy"), "{body}");
    let (status, body) = server.get("/");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Hello from Node.js!"), "{body}");
    assert!(body.contains(&first), "the app sees its release id: {body}");
    assert_eq!(server.get("/missing").0, 404);
    let logs = server.cutover(&["logs", "node-example"]);
    assert!(text(&logs).contains("listening on"), "{}", text(&logs));

    // A second push starts a new node process and switches to it.
    server.write(
        "lib/greeting/index.js",
        "module.exports = (who) => `Hello again from ${who}!`;\n",
    );
    server.commit("second release");
    let output = server.push("main");
    assert!(output.contains("-----> deployed"), "{output}");
    let second = server.link("current").unwrap();
    assert_ne!(first, second);
    let (status, body) = server.get("/");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Hello again from Node.js!"), "{body}");
    assert!(body.contains(&second), "{body}");
    assert_eq!(server.get("/health").0, 200);
}
