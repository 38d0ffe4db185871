//! Where an application's releases live on a host, and the atomic link switch.
//!
//! ```text
//! {deployments}/{app}/releases/{time}-{short sha}/   one directory per release
//! {deployments}/{app}/current  -> releases/{id}      switched atomically
//! {deployments}/{app}/previous -> releases/{id}
//! {deployments}/{app}/failed/{id}/                   failed releases, with their logs
//! {deployments}/{app}/shared/                        linked into every release
//! {deployments}/{app}/config.yml                     host config: port, manager, env
//! {deployments}/{app}/.env.{env}                     linked as the release's .env
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The directories of one application.
#[derive(Debug, Clone)]
pub struct AppLayout {
    pub name: String,
    pub root: PathBuf,
}

/// The directory inside a release that holds cutover's own files.
pub const META_DIR: &str = ".cutover";

impl AppLayout {
    pub fn new(deployments_dir: &Path, name: &str) -> Self {
        Self {
            name: name.to_string(),
            root: deployments_dir.join(name),
        }
    }
    pub fn releases(&self) -> PathBuf {
        self.root.join("releases")
    }
    pub fn failed(&self) -> PathBuf {
        self.root.join("failed")
    }
    pub fn shared(&self) -> PathBuf {
        self.root.join("shared")
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.yml")
    }
    pub fn current(&self) -> PathBuf {
        self.root.join("current")
    }
    pub fn previous(&self) -> PathBuf {
        self.root.join("previous")
    }
    pub fn lock(&self) -> PathBuf {
        self.root.join("deploy.lock")
    }
    pub fn release_log(&self) -> PathBuf {
        self.root.join("releases.log")
    }
    pub fn release_dir(&self, id: &str) -> PathBuf {
        self.releases().join(id)
    }
    /// The app's output for one release (kept inside the release, so a failed
    /// release carries its log into `failed/`).
    pub fn app_log(&self, id: &str) -> PathBuf {
        self.release_dir(id).join(META_DIR).join("app.log")
    }

    /// The release id `current` (or `previous`) points at, if any.
    pub fn link_target(&self, link: &Path) -> Option<String> {
        let target = fs::read_link(link).ok()?;
        target
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
    }

    /// Release ids in `releases/`, oldest first (ids start with a sortable time).
    pub fn list_releases(&self) -> io::Result<Vec<String>> {
        list_dirs(&self.releases())
    }

    pub fn list_failed(&self) -> io::Result<Vec<String>> {
        list_dirs(&self.failed())
    }

    /// Points `link` at `releases/{id}` atomically: a new link, renamed over.
    pub fn switch_link(&self, link: &Path, id: &str) -> io::Result<()> {
        let temp = link.with_extension(format!("tmp-{}", std::process::id()));
        let _ = fs::remove_file(&temp);
        std::os::unix::fs::symlink(Path::new("releases").join(id), &temp)?;
        fs::rename(&temp, link)
    }

    /// Makes `id` current and the old current previous (unless they are equal).
    pub fn promote(&self, id: &str) -> io::Result<()> {
        let old = self.link_target(&self.current());
        if let Some(old) = old.as_deref()
            && old != id
        {
            self.switch_link(&self.previous(), old)?;
        }
        self.switch_link(&self.current(), id)
    }

    /// Removes all but the newest `keep` releases, never current or previous.
    pub fn prune(&self, keep: usize) -> io::Result<Vec<String>> {
        let releases = self.list_releases()?;
        let current = self.link_target(&self.current());
        let previous = self.link_target(&self.previous());
        let mut removed = Vec::new();
        let excess = releases.len().saturating_sub(keep);
        for id in releases.into_iter().take(excess) {
            if Some(&id) == current.as_ref() || Some(&id) == previous.as_ref() {
                continue;
            }
            fs::remove_dir_all(self.release_dir(&id))?;
            removed.push(id);
        }
        Ok(removed)
    }

    /// Moves a release into `failed/`, keeping its files and logs.
    pub fn move_to_failed(&self, id: &str) -> io::Result<PathBuf> {
        fs::create_dir_all(self.failed())?;
        let dest = self.failed().join(id);
        let _ = fs::remove_dir_all(&dest);
        fs::rename(self.release_dir(id), &dest)?;
        Ok(dest)
    }
}

fn list_dirs(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(names),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// The last `lines` lines of a file, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(text) = fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promote_switches_current_and_previous_and_prune_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let app = AppLayout::new(dir.path(), "web");
        for id in [
            "20260101T000001-a",
            "20260101T000002-b",
            "20260101T000003-c",
        ] {
            fs::create_dir_all(app.release_dir(id)).unwrap();
        }
        app.promote("20260101T000001-a").unwrap();
        assert_eq!(
            app.link_target(&app.current()).as_deref(),
            Some("20260101T000001-a")
        );
        assert_eq!(app.link_target(&app.previous()), None);
        app.promote("20260101T000003-c").unwrap();
        assert_eq!(
            app.link_target(&app.current()).as_deref(),
            Some("20260101T000003-c")
        );
        assert_eq!(
            app.link_target(&app.previous()).as_deref(),
            Some("20260101T000001-a")
        );
        assert!(app.current().join(".").exists());
        let removed = app.prune(1).unwrap();
        assert_eq!(removed, vec!["20260101T000002-b".to_string()]);
        assert_eq!(app.list_releases().unwrap().len(), 2);
    }
}
