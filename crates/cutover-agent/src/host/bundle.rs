//! An application bundle (a tar or tar.gz of the app tree with its
//! deploy.yml) turned into a commit of the host's own bundle repository.
//!
//! The release installer deploys commits: reading deploy.yml from a commit and
//! exporting its tree is how the git-push flow works. A bundle is unpacked
//! with the same safe unpacker (no `..`, no absolute paths, no escaping
//! links, size caps), committed on top of the bundles received before, and
//! then deployed exactly as a push would be. The repository is also the
//! host's history: a version whose release directory was pruned can be
//! deployed again from it.

use crate::release::export::{self, ExportError, ExportLimits, ExportSummary};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The branch that chains the received bundles.
pub const BRANCH: &str = "refs/heads/bundles";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read the bundle {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bundle refused: {0}")]
    Unpack(#[from] ExportError),
    #[error("the bundle has no deploy.yml at its top (nor in its only directory)")]
    NoDeployYml,
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("git {what} failed: {detail}")]
    Git { what: &'static str, detail: String },
}

/// Whether the first bytes are a gzip header.
pub fn is_gzip(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
}

/// Unpacks `bundle` into `dest` (emptied first) with the release unpacker.
pub fn unpack(
    bundle: &Path,
    dest: &Path,
    limits: &ExportLimits,
) -> Result<ExportSummary, BundleError> {
    let open = |path: &Path| {
        std::fs::File::open(path).map_err(|source| BundleError::Open {
            path: path.to_path_buf(),
            source,
        })
    };
    let mut head = [0u8; 2];
    let n = open(bundle)?
        .read(&mut head)
        .map_err(|source| BundleError::Open {
            path: bundle.to_path_buf(),
            source,
        })?;
    if dest.exists() {
        std::fs::remove_dir_all(dest).map_err(|source| BundleError::Io {
            path: dest.to_path_buf(),
            source,
        })?;
    }
    let file = std::io::BufReader::new(open(bundle)?);
    let summary = if is_gzip(&head[..n]) {
        export::unpack_tar(flate2::read::GzDecoder::new(file), dest, limits)?
    } else {
        export::unpack_tar(file, dest, limits)?
    };
    Ok(summary)
}

/// The app tree inside an unpacked bundle: its top, or its only directory
/// when the bundle was made as `tar czf app.tgz app/`.
pub fn app_root(unpacked: &Path) -> Result<PathBuf, BundleError> {
    if unpacked.join("deploy.yml").is_file() {
        return Ok(unpacked.to_path_buf());
    }
    let entries: Vec<_> = std::fs::read_dir(unpacked)
        .map_err(|source| BundleError::Io {
            path: unpacked.to_path_buf(),
            source,
        })?
        .flatten()
        .collect();
    if let [only] = entries.as_slice()
        && only.file_type().is_ok_and(|t| t.is_dir())
        && only.path().join("deploy.yml").is_file()
    {
        return Ok(only.path());
    }
    Err(BundleError::NoDeployYml)
}

fn git(repo: &Path) -> Command {
    let mut command = Command::new("git");
    command.arg("--git-dir").arg(repo);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GIT_") {
            command.env_remove(key);
        }
    }
    command
        .env("GIT_AUTHOR_NAME", "cutover-agent")
        .env("GIT_AUTHOR_EMAIL", "cutover-agent@localhost")
        .env("GIT_COMMITTER_NAME", "cutover-agent")
        .env("GIT_COMMITTER_EMAIL", "cutover-agent@localhost")
        .stdin(Stdio::null());
    command
}

fn run(what: &'static str, command: &mut Command) -> Result<String, BundleError> {
    let out = command.output().map_err(|e| BundleError::Git {
        what,
        detail: format!("cannot run git: {e}"),
    })?;
    if !out.status.success() {
        return Err(BundleError::Git {
            what,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Creates the bare bundle repository when it is missing.
pub fn ensure_repo(repo: &Path) -> Result<(), BundleError> {
    if repo.join("HEAD").is_file() {
        return Ok(());
    }
    std::fs::create_dir_all(repo).map_err(|source| BundleError::Io {
        path: repo.to_path_buf(),
        source,
    })?;
    run(
        "init",
        git(repo).args(["init", "--bare", "-q"]).arg("--template="),
    )?;
    Ok(())
}

/// Commits the tree at `root` as `version` on top of the bundles before it;
/// returns the commit id.
pub fn commit_tree(
    repo: &Path,
    root: &Path,
    version: &str,
    artifact_sha256: &str,
) -> Result<String, BundleError> {
    ensure_repo(repo)?;
    let index = repo.join(format!("index-{}", std::process::id()));
    let _ = std::fs::remove_file(&index);
    let with_tree = |command: &mut Command| {
        command
            .env("GIT_INDEX_FILE", &index)
            .arg("--work-tree")
            .arg(root);
    };
    let mut add = git(repo);
    with_tree(&mut add);
    // -f: a .gitignore in the bundle must not drop files from the release.
    add.args(["add", "-A", "-f", "."]);
    let added = run("add", &mut add);
    let tree = added.and_then(|_| {
        let mut write = git(repo);
        with_tree(&mut write);
        run("write-tree", write.arg("write-tree"))
    });
    let _ = std::fs::remove_file(&index);
    let tree = tree?;
    let parent = run(
        "rev-parse",
        git(repo).args(["rev-parse", "-q", "--verify", BRANCH]),
    )
    .ok()
    .filter(|p| !p.is_empty());
    let mut commit = git(repo);
    commit.arg("commit-tree").arg(&tree);
    if let Some(parent) = &parent {
        commit.arg("-p").arg(parent);
    }
    commit
        .arg("-m")
        .arg(format!("{version}\n\nartifact sha256 {artifact_sha256}"));
    let sha = run("commit-tree", &mut commit)?;
    run(
        "update-ref",
        git(repo).args(["update-ref", BRANCH]).arg(&sha),
    )?;
    Ok(sha)
}

/// The newest commit of the bundle repository whose version is `version`.
pub fn find_version(repo: &Path, version: &str) -> Option<String> {
    let log = run(
        "log",
        git(repo).args(["log", "--format=%H %s", BRANCH, "--"]),
    )
    .ok()?;
    log.lines().find_map(|line| {
        let (sha, subject) = line.split_once(' ')?;
        (subject == version).then(|| sha.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn gzip_is_told_by_its_magic() {
        assert!(is_gzip(&[0x1f, 0x8b, 8]));
        assert!(!is_gzip(b"deploy.yml"));
        assert!(!is_gzip(&[]));
    }

    #[test]
    fn a_bundle_in_one_directory_is_found_and_committed_twice_as_a_chain() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("app.tgz");
        let tar = tar_of(&[
            ("app/deploy.yml", b"name: web\n"),
            ("app/.gitignore", b"*\n"),
        ]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        std::fs::write(&bundle, gz.finish().unwrap()).unwrap();
        let staging = dir.path().join("staging");
        unpack(&bundle, &staging, &ExportLimits::default()).unwrap();
        let root = app_root(&staging).unwrap();
        assert_eq!(root, staging.join("app"));
        let repo = dir.path().join("bundles.git");
        let first = commit_tree(&repo, &root, "1.0.0", "aa").unwrap();
        let second = commit_tree(&repo, &root, "2.0.0", "bb").unwrap();
        assert_ne!(first, second);
        assert_eq!(
            find_version(&repo, "1.0.0").as_deref(),
            Some(first.as_str())
        );
        assert_eq!(
            find_version(&repo, "2.0.0").as_deref(),
            Some(second.as_str())
        );
        assert_eq!(find_version(&repo, "3.0.0"), None);
        // The ignored file was committed all the same.
        let files = run(
            "ls-tree",
            git(&repo).args(["ls-tree", "--name-only"]).arg(&second),
        )
        .unwrap();
        assert!(
            files.contains(".gitignore") && files.contains("deploy.yml"),
            "{files}"
        );
    }

    #[test]
    fn a_bundle_without_deploy_yml_or_climbing_out_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("a.tar");
        std::fs::write(&bundle, tar_of(&[("index.html", b"hi")])).unwrap();
        let staging = dir.path().join("s");
        unpack(&bundle, &staging, &ExportLimits::default()).unwrap();
        assert!(matches!(app_root(&staging), Err(BundleError::NoDeployYml)));
        // A raw header, so the path is written as given.
        let mut header = tar::Header::new_gnu();
        header.as_gnu_mut().unwrap().name[..12].copy_from_slice(b"../evil.yml\0");
        header.set_size(2);
        header.set_mode(0o644);
        header.set_cksum();
        let mut builder = tar::Builder::new(Vec::new());
        builder.append(&header, &b"hi"[..]).unwrap();
        std::fs::write(&bundle, builder.into_inner().unwrap()).unwrap();
        let err = unpack(&bundle, &staging, &ExportLimits::default()).unwrap_err();
        assert!(err.to_string().contains(".."), "{err}");
        assert!(!dir.path().join("evil.yml").exists());
    }
}
