//! A/B slots as files in a directory, with a boot pointer and boot counting.
//!
//! `slot-a.img` and `slot-b.img` hold the images; `boot.json` is the boot
//! pointer (which slot is active, which one is pending a first confirmed
//! boot and how many times it was tried). The pointer is only ever replaced
//! whole: written to a temporary file, fsynced, renamed over, and the
//! directory fsynced, so a crash at any point leaves either the old or the
//! new pointer. A new image is written to the inactive slot, which the
//! pointer marks invalid while it is written, so a device killed mid-write
//! boots the old slot. A pending slot that is booted `max_tries` times
//! without a health confirmation is abandoned and the old slot boots again,
//! as RAUC and U-Boot boot counting do.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("slot directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("boot pointer {path} is unreadable: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("no slot to {0}")]
    Nothing(&'static str),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SlotError + '_ {
    move |source| SlotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotMeta {
    /// None while the slot is empty or being written.
    pub version: Option<String>,
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub slot: usize,
    pub tries: u32,
}

/// The boot pointer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootState {
    /// Index into `slots` (0 = a, 1 = b) of the last confirmed slot.
    pub active: usize,
    pub slots: [SlotMeta; 2],
    /// A newly written slot waiting for its first confirmed boot.
    pub pending: Option<Pending>,
    /// Written and verified but not to be booted until activated (blue-green).
    #[serde(default)]
    pub staged: Option<usize>,
    /// Why the last new slot was abandoned, for the inventory.
    #[serde(default)]
    pub last_fallback: Option<String>,
}

/// What the boot loader chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// The confirmed slot.
    Active { slot: usize },
    /// The pending slot, on its `try_number`-th try; it must be confirmed.
    Trying { slot: usize, try_number: u32 },
    /// The pending slot ran out of tries; the old slot boots.
    FellBack {
        slot: usize,
        abandoned_version: String,
        tries: u32,
    },
}

pub const SLOT_NAMES: [&str; 2] = ["a", "b"];

pub struct SlotStore {
    dir: PathBuf,
    max_tries: u32,
    state: BootState,
    /// The slot this process booted, once `boot` ran.
    booted: Option<usize>,
}

impl SlotStore {
    /// Opens the directory, creating slot A with `factory_version` on first use.
    pub fn open(dir: &Path, factory_version: &str, max_tries: u32) -> Result<Self, SlotError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let pointer = dir.join("boot.json");
        let state = match std::fs::read(&pointer) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| SlotError::Corrupt {
                path: pointer.clone(),
                why: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let slot_a = dir.join("slot-a.img");
                if !slot_a.exists() {
                    File::create(&slot_a)
                        .map_err(io(&slot_a))?
                        .sync_all()
                        .map_err(io(&slot_a))?;
                }
                let (sha, _) = super::verify::sha256_file(&slot_a).map_err(io(&slot_a))?;
                let state = BootState {
                    active: 0,
                    slots: [
                        SlotMeta {
                            version: Some(factory_version.to_string()),
                            sha256: Some(sha),
                        },
                        SlotMeta::default(),
                    ],
                    pending: None,
                    staged: None,
                    last_fallback: None,
                };
                write_pointer(dir, &state)?;
                state
            }
            Err(e) => {
                return Err(SlotError::Io {
                    path: pointer,
                    source: e,
                });
            }
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            max_tries: max_tries.max(1),
            state,
            booted: None,
        })
    }

    pub fn state(&self) -> &BootState {
        &self.state
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn slot_path(&self, slot: usize) -> PathBuf {
        self.dir.join(format!("slot-{}.img", SLOT_NAMES[slot]))
    }

    /// The slot running now: the booted one, or the active one before boot.
    pub fn running_slot(&self) -> usize {
        self.booted.unwrap_or(self.state.active)
    }

    pub fn running_version(&self) -> String {
        self.state.slots[self.running_slot()]
            .version
            .clone()
            .unwrap_or_else(|| "unknown".into())
    }

    pub fn inactive(&self) -> usize {
        1 - self.state.active
    }

    /// Runs the boot loader's choice: counts a try of a pending slot, or
    /// falls back once the tries are used up. Persisted before returning, so
    /// a crash during the try still counts it.
    pub fn boot(&mut self) -> Result<Boot, SlotError> {
        let result = match self.state.pending.clone() {
            None => Boot::Active {
                slot: self.state.active,
            },
            Some(p) if p.tries >= self.max_tries => {
                let abandoned = self.state.slots[p.slot].version.clone().unwrap_or_default();
                self.state.pending = None;
                self.state.last_fallback = Some(format!(
                    "version {abandoned} in slot {} was not confirmed after {} boots; slot {} boots again",
                    SLOT_NAMES[p.slot], p.tries, SLOT_NAMES[self.state.active]
                ));
                Boot::FellBack {
                    slot: self.state.active,
                    abandoned_version: abandoned,
                    tries: p.tries,
                }
            }
            Some(p) => {
                let try_number = p.tries + 1;
                self.state.pending = Some(Pending {
                    slot: p.slot,
                    tries: try_number,
                });
                Boot::Trying {
                    slot: p.slot,
                    try_number,
                }
            }
        };
        write_pointer(&self.dir, &self.state)?;
        self.booted = Some(match result {
            Boot::Active { slot } | Boot::Trying { slot, .. } | Boot::FellBack { slot, .. } => slot,
        });
        Ok(result)
    }

    /// The booted pending slot is healthy: it becomes the active slot.
    pub fn confirm(&mut self) -> Result<String, SlotError> {
        let p = self
            .state
            .pending
            .clone()
            .ok_or(SlotError::Nothing("confirm"))?;
        self.state.active = p.slot;
        self.state.pending = None;
        self.state.last_fallback = None;
        write_pointer(&self.dir, &self.state)?;
        self.booted = Some(p.slot);
        Ok(self.running_version())
    }

    /// Writes `source` (already verified) into the inactive slot and marks it
    /// pending (or staged). The pointer marks the slot empty first, so a crash
    /// mid-write leaves a device that boots the old slot.
    pub fn write_inactive(
        &mut self,
        source: &Path,
        version: &str,
        sha256: &str,
        stage_only: bool,
        bytes_per_s: Option<u64>,
    ) -> Result<usize, SlotError> {
        let slot = self.inactive();
        self.state.slots[slot] = SlotMeta::default();
        self.state.pending = None;
        self.state.staged = None;
        write_pointer(&self.dir, &self.state)?;

        let dest = self.slot_path(slot);
        copy_synced(source, &dest, bytes_per_s)?;

        self.state.slots[slot] = SlotMeta {
            version: Some(version.to_string()),
            sha256: Some(sha256.to_string()),
        };
        if stage_only {
            self.state.staged = Some(slot);
        } else {
            self.state.pending = Some(Pending { slot, tries: 0 });
        }
        write_pointer(&self.dir, &self.state)?;
        Ok(slot)
    }

    /// Records a slot installed by an external installer command.
    pub fn record_external(
        &mut self,
        version: &str,
        sha256: &str,
        stage_only: bool,
    ) -> Result<usize, SlotError> {
        let slot = self.inactive();
        self.state.slots[slot] = SlotMeta {
            version: Some(version.to_string()),
            sha256: Some(sha256.to_string()),
        };
        if stage_only {
            self.state.staged = Some(slot);
        } else {
            self.state.pending = Some(Pending { slot, tries: 0 });
        }
        write_pointer(&self.dir, &self.state)?;
        Ok(slot)
    }

    /// Blue-green: the staged slot becomes pending, to boot next.
    pub fn activate_staged(&mut self) -> Result<usize, SlotError> {
        let slot = self
            .state
            .staged
            .take()
            .ok_or(SlotError::Nothing("activate"))?;
        self.state.pending = Some(Pending { slot, tries: 0 });
        write_pointer(&self.dir, &self.state)?;
        Ok(slot)
    }

    /// Makes the other slot active again (a rollback after a confirmed
    /// update); returns its version. Refused when the other slot is empty.
    pub fn switch_back(&mut self) -> Result<String, SlotError> {
        let other = 1 - self.running_slot();
        if self.state.slots[other].version.is_none() {
            return Err(SlotError::Nothing("roll back to"));
        }
        self.state.active = other;
        self.state.pending = None;
        self.state.staged = None;
        write_pointer(&self.dir, &self.state)?;
        self.booted = Some(other);
        Ok(self.running_version())
    }

    /// Drops a pending or staged slot that was never confirmed (cancel, or a
    /// rollback before the new slot was confirmed): the active slot runs.
    pub fn abandon_pending(&mut self) -> Result<(), SlotError> {
        self.state.pending = None;
        self.state.staged = None;
        write_pointer(&self.dir, &self.state)?;
        self.booted = Some(self.state.active);
        Ok(())
    }

    /// Whether the booted slot's content matches its recorded digest.
    pub fn check_running_slot(&self) -> Result<bool, SlotError> {
        let slot = self.running_slot();
        let path = self.slot_path(slot);
        let (sha, _) = super::verify::sha256_file(&path).map_err(io(&path))?;
        Ok(self.state.slots[slot]
            .sha256
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case(&sha)))
    }

    pub fn slot_infos(&self) -> Vec<cutover_core::protocol::SlotInfo> {
        (0..2)
            .map(|i| cutover_core::protocol::SlotInfo {
                name: SLOT_NAMES[i].to_string(),
                version: self.state.slots[i].version.clone(),
                active: i == self.running_slot(),
                pending: self.state.pending.as_ref().is_some_and(|p| p.slot == i),
            })
            .collect()
    }
}

/// Replaces the boot pointer atomically: temporary file, fsync, rename, fsync of the directory.
fn write_pointer(dir: &Path, state: &BootState) -> Result<(), SlotError> {
    let tmp = dir.join("boot.json.tmp");
    let dest = dir.join("boot.json");
    let bytes = serde_json::to_vec_pretty(state).expect("boot state serializes");
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

/// Copies a file and fsyncs it, optionally at a capped rate.
fn copy_synced(source: &Path, dest: &Path, bytes_per_s: Option<u64>) -> Result<(), SlotError> {
    let mut input = File::open(source).map_err(io(source))?;
    let mut out = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(dest)
        .map_err(io(dest))?;
    let mut buf = vec![0u8; 64 * 1024];
    let started = Instant::now();
    let mut written = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(io(source))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(io(dest))?;
        written += n as u64;
        if let Some(rate) = bytes_per_s.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64(written as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    out.sync_all().map_err(io(dest))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(dir: &Path, name: &str, content: &[u8]) -> (PathBuf, String) {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        let (sha, _) = super::super::verify::sha256_file(&p).unwrap();
        (p, sha)
    }

    #[test]
    fn a_confirmed_boot_makes_the_new_slot_active_across_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("slots");
        let mut s = SlotStore::open(&dir, "1.0.0", 3).unwrap();
        assert_eq!(s.boot().unwrap(), Boot::Active { slot: 0 });
        let (img, sha) = image(tmp.path(), "img", b"v2");
        s.write_inactive(&img, "2.0.0", &sha, false, None).unwrap();
        assert_eq!(
            s.boot().unwrap(),
            Boot::Trying {
                slot: 1,
                try_number: 1
            }
        );
        assert!(s.check_running_slot().unwrap());
        assert_eq!(s.confirm().unwrap(), "2.0.0");
        let mut s = SlotStore::open(&dir, "1.0.0", 3).unwrap();
        assert_eq!(s.boot().unwrap(), Boot::Active { slot: 1 });
        assert_eq!(s.running_version(), "2.0.0");
        assert_eq!(s.switch_back().unwrap(), "1.0.0");
    }

    #[test]
    fn unconfirmed_boots_fall_back_after_max_tries() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("slots");
        let mut s = SlotStore::open(&dir, "1.0.0", 2).unwrap();
        let (img, sha) = image(tmp.path(), "img", b"v2");
        s.write_inactive(&img, "2.0.0", &sha, false, None).unwrap();
        // Each reopen is a power cycle in which the health check never confirmed.
        for n in 1..=2 {
            let mut s = SlotStore::open(&dir, "1.0.0", 2).unwrap();
            assert_eq!(
                s.boot().unwrap(),
                Boot::Trying {
                    slot: 1,
                    try_number: n
                }
            );
            assert_eq!(s.running_version(), "2.0.0");
        }
        let mut s = SlotStore::open(&dir, "1.0.0", 2).unwrap();
        match s.boot().unwrap() {
            Boot::FellBack {
                slot: 0,
                abandoned_version,
                tries: 2,
            } => assert_eq!(abandoned_version, "2.0.0"),
            other => panic!("expected a fallback, got {other:?}"),
        }
        assert_eq!(s.running_version(), "1.0.0");
        assert!(
            s.state()
                .last_fallback
                .as_deref()
                .unwrap()
                .contains("not confirmed after 2 boots")
        );
        let mut s = SlotStore::open(&dir, "1.0.0", 2).unwrap();
        assert_eq!(s.boot().unwrap(), Boot::Active { slot: 0 });
    }

    #[test]
    fn a_slot_being_written_is_not_bootable() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("slots");
        let mut s = SlotStore::open(&dir, "1.0.0", 3).unwrap();
        // Writing fails half way (the source vanishes): the pointer already
        // says the inactive slot is empty, so the old slot boots.
        let err = s.write_inactive(&tmp.path().join("missing"), "2.0.0", "00", false, None);
        assert!(err.is_err());
        let mut s = SlotStore::open(&dir, "1.0.0", 3).unwrap();
        assert_eq!(s.boot().unwrap(), Boot::Active { slot: 0 });
        assert_eq!(s.state().slots[1].version, None);
        assert!(
            s.switch_back().is_err(),
            "an empty slot is never switched to"
        );
    }
}
