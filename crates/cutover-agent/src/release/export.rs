//! Exports one commit's tree into a release directory without a clone.
//!
//! `git archive` writes the commit as a tar stream, which is unpacked here
//! entry by entry with the safety checks an untrusted bundle needs: no
//! absolute paths, no `..`, no links that point outside the release, no
//! writing through a link, and caps on entry count and sizes. The same
//! unpacker serves application bundles that arrive as tar files.

use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

/// Caps that keep a hostile or broken bundle from filling the disk.
#[derive(Debug, Clone)]
pub struct ExportLimits {
    pub max_total_bytes: u64,
    pub max_file_bytes: u64,
    pub max_entries: usize,
}

impl Default for ExportLimits {
    fn default() -> Self {
        Self {
            max_total_bytes: 2 << 30,
            max_file_bytes: 1 << 30,
            max_entries: 200_000,
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub files: usize,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot run git: {0}")]
    Spawn(#[source] io::Error),
    #[error("git {what} failed for {rev}: {stderr}")]
    Git {
        what: &'static str,
        rev: String,
        stderr: String,
    },
    #[error("archive entry {path:?} is an absolute path")]
    AbsolutePath { path: String },
    #[error("archive entry {path:?} climbs out of the release with '..'")]
    ParentDir { path: String },
    #[error("archive entry {path:?} links to {target:?}, outside the release")]
    EscapingLink { path: String, target: String },
    #[error("archive entry {path:?} would be written through a link")]
    ThroughLink { path: String },
    #[error("archive entry {path:?} is a {kind}, which a release may not contain")]
    UnsupportedKind { path: String, kind: String },
    #[error("archive entry {path:?} is {size} bytes, above the limit of {limit} bytes per file")]
    FileTooLarge { path: String, size: u64, limit: u64 },
    #[error("archive is above the limit of {limit} bytes in total")]
    TooLarge { limit: u64 },
    #[error("archive has more than {limit} entries")]
    TooManyEntries { limit: usize },
    #[error("cannot read the archive: {0}")]
    Read(#[source] io::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Exports commit `rev` of the repository at `git_dir` into `dest` (created).
pub fn export_commit(
    git_dir: &Path,
    rev: &str,
    dest: &Path,
    limits: &ExportLimits,
) -> Result<ExportSummary, ExportError> {
    let mut child = git(git_dir)
        .args(["archive", "--format=tar", rev, "--"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(ExportError::Spawn)?;
    let stdout = child.stdout.take().expect("stdout was piped");
    let unpacked = unpack_tar(stdout, dest, limits);
    if unpacked.is_err() {
        let _ = child.kill();
    }
    let output = child.wait_with_output().map_err(ExportError::Spawn)?;
    if unpacked.is_ok() && !output.status.success() {
        return Err(ExportError::Git {
            what: "archive",
            rev: rev.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    unpacked
}

/// Reads one file of a commit (`git show REV:PATH`); `None` when it is absent.
pub fn show_file(git_dir: &Path, rev: &str, path: &str) -> Result<Option<String>, ExportError> {
    let output = git(git_dir)
        .args(["cat-file", "-e", &format!("{rev}:{path}")])
        .output()
        .map_err(ExportError::Spawn)?;
    if !output.status.success() {
        return Ok(None);
    }
    let output = git(git_dir)
        .args(["show", &format!("{rev}:{path}")])
        .output()
        .map_err(ExportError::Spawn)?;
    if !output.status.success() {
        return Err(ExportError::Git {
            what: "show",
            rev: rev.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()))
}

/// Resolves a revision to a full commit id.
pub fn resolve_commit(git_dir: &Path, rev: &str) -> Result<String, ExportError> {
    let output = git(git_dir)
        .args([
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ])
        .output()
        .map_err(ExportError::Spawn)?;
    if !output.status.success() {
        return Err(ExportError::Git {
            what: "rev-parse",
            rev: rev.to_string(),
            stderr: "no such commit".to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn git(git_dir: &Path) -> Command {
    let mut command = Command::new("git");
    command.arg("--git-dir").arg(git_dir);
    // A hook runs with GIT_DIR and friends set; --git-dir wins, but a stale
    // GIT_INDEX_FILE or GIT_WORK_TREE must not leak into these calls.
    for var in ["GIT_INDEX_FILE", "GIT_WORK_TREE", "GIT_DIR"] {
        command.env_remove(var);
    }
    command
}

/// Unpacks a tar stream into `dest`, refusing anything that would escape it.
pub fn unpack_tar<R: Read>(
    reader: R,
    dest: &Path,
    limits: &ExportLimits,
) -> Result<ExportSummary, ExportError> {
    fs::create_dir_all(dest).map_err(|source| ExportError::Write {
        path: dest.to_path_buf(),
        source,
    })?;
    let mut archive = tar::Archive::new(reader);
    let mut summary = ExportSummary::default();
    let mut links: Vec<PathBuf> = Vec::new();
    let mut entries = 0usize;
    for entry in archive.entries().map_err(ExportError::Read)? {
        let mut entry = entry.map_err(ExportError::Read)?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        entries += 1;
        if entries > limits.max_entries {
            return Err(ExportError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let raw = entry.path().map_err(ExportError::Read)?.into_owned();
        let display = raw.to_string_lossy().into_owned();
        let relative = safe_relative(&raw, &display)?;
        if relative.as_os_str().is_empty() {
            continue;
        }
        let target = dest.join(&relative);
        refuse_links_above(dest, &relative, &display)?;
        let write_err = |source| ExportError::Write {
            path: target.clone(),
            source,
        };
        if let Ok(meta) = fs::symlink_metadata(&target)
            && meta.file_type().is_symlink()
        {
            return Err(ExportError::ThroughLink { path: display });
        }
        if kind.is_dir() {
            fs::create_dir_all(&target).map_err(write_err)?;
        } else if kind.is_file() {
            let size = entry.header().size().map_err(ExportError::Read)?;
            if size > limits.max_file_bytes {
                return Err(ExportError::FileTooLarge {
                    path: display,
                    size,
                    limit: limits.max_file_bytes,
                });
            }
            summary.bytes += size;
            if summary.bytes > limits.max_total_bytes {
                return Err(ExportError::TooLarge {
                    limit: limits.max_total_bytes,
                });
            }
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(write_err)?;
            }
            let mode = entry.header().mode().unwrap_or(0o644);
            let mut file = fs::File::create(&target).map_err(write_err)?;
            let copied = io::copy(&mut (&mut entry).take(size), &mut file).map_err(write_err)?;
            if copied != size {
                return Err(ExportError::Read(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("entry {display:?} is truncated"),
                )));
            }
            set_mode(&target, if mode & 0o111 != 0 { 0o755 } else { 0o644 }).map_err(write_err)?;
            summary.files += 1;
        } else if kind.is_symlink() {
            let link = entry
                .link_name()
                .map_err(ExportError::Read)?
                .ok_or_else(|| ExportError::UnsupportedKind {
                    path: display.clone(),
                    kind: "link without a target".to_string(),
                })?
                .into_owned();
            if !link_stays_inside(&relative, &link) {
                return Err(ExportError::EscapingLink {
                    path: display,
                    target: link.to_string_lossy().into_owned(),
                });
            }
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(write_err)?;
            }
            std::os::unix::fs::symlink(&link, &target).map_err(write_err)?;
            links.push(relative);
        } else {
            let kind = if kind.is_hard_link() {
                "hard link".to_string()
            } else {
                format!("{kind:?}").to_lowercase()
            };
            return Err(ExportError::UnsupportedKind {
                path: display,
                kind,
            });
        }
    }
    // Lexical checks cannot see chains of links (`a -> b/..` where `b` is
    // itself a link); resolving every link once the tree is complete can.
    let root = fs::canonicalize(dest).map_err(|source| ExportError::Write {
        path: dest.to_path_buf(),
        source,
    })?;
    for relative in links {
        let path = dest.join(&relative);
        if let Ok(resolved) = fs::canonicalize(&path)
            && !resolved.starts_with(&root)
        {
            let target = fs::read_link(&path)
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Err(ExportError::EscapingLink {
                path: relative.to_string_lossy().into_owned(),
                target,
            });
        }
    }
    Ok(summary)
}

/// Turns an archive path into a clean relative path, or says why it cannot.
fn safe_relative(raw: &Path, display: &str) -> Result<PathBuf, ExportError> {
    let mut clean = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(ExportError::ParentDir {
                    path: display.to_string(),
                });
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(ExportError::AbsolutePath {
                    path: display.to_string(),
                });
            }
        }
    }
    Ok(clean)
}

/// Refuses an entry whose parent directories include a link already unpacked.
fn refuse_links_above(dest: &Path, relative: &Path, display: &str) -> Result<(), ExportError> {
    let mut current = dest.to_path_buf();
    let parts: Vec<_> = relative.components().collect();
    for part in parts.iter().take(parts.len().saturating_sub(1)) {
        current.push(part);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(ExportError::ThroughLink {
                    path: display.to_string(),
                });
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

/// Whether a link at `relative` pointing at `link` stays inside the root, lexically.
fn link_stays_inside(relative: &Path, link: &Path) -> bool {
    if link.is_absolute() {
        return false;
    }
    let mut depth: usize = relative.components().count().saturating_sub(1);
    for component in link.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                if depth == 0 {
                    return false;
                }
                depth -= 1;
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tar in memory with raw header names, so hostile paths survive
    /// (the tar crate's safe builders refuse to write `..`).
    fn tar_with(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, data, link) in entries {
            let mut header = tar::Header::new_old();
            {
                let bytes = header.as_old_mut();
                bytes.name[..name.len()].copy_from_slice(name.as_bytes());
                if let Some(link) = link {
                    bytes.linkname[..link.len()].copy_from_slice(link.as_bytes());
                }
            }
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(data);
            let pad = (512 - data.len() % 512) % 512;
            out.extend(std::iter::repeat_n(0u8, pad));
        }
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }

    fn unpack(bytes: &[u8]) -> (tempfile::TempDir, Result<ExportSummary, ExportError>) {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("release");
        let result = unpack_tar(bytes, &dest, &ExportLimits::default());
        (dir, result)
    }

    #[test]
    fn unpacks_files_dirs_and_inner_links() {
        let bytes = tar_with(&[
            ("app/", tar::EntryType::Directory, b"", None),
            ("app/main.py", tar::EntryType::Regular, b"print(1)\n", None),
            ("static", tar::EntryType::Symlink, b"", Some("app")),
        ]);
        let (dir, result) = unpack(&bytes);
        let summary = result.unwrap();
        assert_eq!(summary.files, 1);
        let dest = dir.path().join("release");
        assert_eq!(
            fs::read_to_string(dest.join("static/main.py")).unwrap(),
            "print(1)\n"
        );
    }

    #[test]
    fn refuses_parent_dir_entries() {
        let bytes = tar_with(&[("../evil", tar::EntryType::Regular, b"x", None)]);
        let (dir, result) = unpack(&bytes);
        assert!(
            matches!(result, Err(ExportError::ParentDir { .. })),
            "{result:?}"
        );
        assert!(!dir.path().join("evil").exists());
    }

    #[test]
    fn refuses_absolute_entries() {
        let bytes = tar_with(&[("/tmp/evil", tar::EntryType::Regular, b"x", None)]);
        let (_dir, result) = unpack(&bytes);
        assert!(
            matches!(result, Err(ExportError::AbsolutePath { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn refuses_links_that_escape() {
        for link in ["../../etc/passwd", "/etc/passwd", "a/../../x"] {
            let bytes = tar_with(&[("out", tar::EntryType::Symlink, b"", Some(link))]);
            let (_dir, result) = unpack(&bytes);
            assert!(
                matches!(result, Err(ExportError::EscapingLink { .. })),
                "{link}: {result:?}"
            );
        }
    }

    #[test]
    fn refuses_chained_links_that_escape() {
        // `up` points at the root (allowed), `esc` at `up/..` which is lexically
        // the root too, but resolves one level above it.
        let bytes = tar_with(&[
            ("d/", tar::EntryType::Directory, b"", None),
            ("d/up", tar::EntryType::Symlink, b"", Some("..")),
            ("d/esc", tar::EntryType::Symlink, b"", Some("up/..")),
        ]);
        let (_dir, result) = unpack(&bytes);
        assert!(
            matches!(result, Err(ExportError::EscapingLink { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn refuses_writing_through_a_link() {
        let bytes = tar_with(&[
            ("sub/", tar::EntryType::Directory, b"", None),
            ("link", tar::EntryType::Symlink, b"", Some("sub")),
            ("link/file", tar::EntryType::Regular, b"x", None),
        ]);
        let (_dir, result) = unpack(&bytes);
        assert!(
            matches!(result, Err(ExportError::ThroughLink { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn refuses_hard_links_and_devices() {
        let bytes = tar_with(&[("h", tar::EntryType::Link, b"", Some("x"))]);
        let (_dir, result) = unpack(&bytes);
        assert!(
            matches!(result, Err(ExportError::UnsupportedKind { .. })),
            "{result:?}"
        );
        let bytes = tar_with(&[("c", tar::EntryType::Char, b"", None)]);
        let (_dir, result) = unpack(&bytes);
        assert!(
            matches!(result, Err(ExportError::UnsupportedKind { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn caps_file_and_total_sizes() {
        let bytes = tar_with(&[("big", tar::EntryType::Regular, &[7u8; 2000], None)]);
        let dir = tempfile::tempdir().unwrap();
        let limits = ExportLimits {
            max_file_bytes: 1000,
            ..ExportLimits::default()
        };
        let result = unpack_tar(&bytes[..], &dir.path().join("r"), &limits);
        assert!(
            matches!(result, Err(ExportError::FileTooLarge { .. })),
            "{result:?}"
        );
        let bytes = tar_with(&[
            ("a", tar::EntryType::Regular, &[1u8; 600], None),
            ("b", tar::EntryType::Regular, &[1u8; 600], None),
        ]);
        let limits = ExportLimits {
            max_total_bytes: 1000,
            ..ExportLimits::default()
        };
        let result = unpack_tar(&bytes[..], &dir.path().join("s"), &limits);
        assert!(
            matches!(result, Err(ExportError::TooLarge { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn exports_a_real_commit() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        fs::create_dir_all(work.join("pkg")).unwrap();
        fs::write(work.join("deploy.yml"), "name: x\n").unwrap();
        fs::write(work.join("pkg/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
        set_mode(&work.join("pkg/run.sh"), 0o755).unwrap();
        let run = |args: &[&str]| {
            let status = Command::new("git")
                .args(args)
                .current_dir(&work)
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
                .output()
                .unwrap();
            assert!(status.status.success(), "{status:?}");
        };
        run(&["init", "-q", "-b", "main"]);
        run(&["add", "."]);
        run(&["commit", "-q", "-m", "one"]);
        let git_dir = work.join(".git");
        let sha = resolve_commit(&git_dir, "HEAD").unwrap();
        assert_eq!(sha.len(), 40);
        let dest = dir.path().join("release");
        let summary = export_commit(&git_dir, &sha, &dest, &ExportLimits::default()).unwrap();
        assert_eq!(summary.files, 2);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dest.join("pkg/run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
        assert_eq!(
            show_file(&git_dir, &sha, "deploy.yml").unwrap().as_deref(),
            Some("name: x\n")
        );
        assert_eq!(show_file(&git_dir, &sha, "missing.yml").unwrap(), None);
        assert!(resolve_commit(&git_dir, "0000000").is_err());
    }
}
