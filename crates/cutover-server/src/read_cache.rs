//! The API's hottest reads (a deployment's status, deployment lists) kept as finished JSON
//! bodies for a short while.
//!
//! Every change this process makes to an execution drops its entry at once, before open
//! event streams hear of it: API commands through [`crate::AppState::changed`], the
//! orchestrator's commits through the fleet plane's progress events. Any change drops every
//! cached list. What another replica changes (several servers on one PostgreSQL) is seen
//! within the time to live, the only staleness a reader can meet.
//!
//! A read that started before a change must not store what it read after the change dropped
//! the entry; each change moves an epoch, and a body read before the latest change of its
//! key is not kept.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept at most; beyond it, expired ones are dropped, then all.
const MAX_ENTRIES: usize = 20_000;

enum Slot {
    Body {
        body: Bytes,
        at: Instant,
    },
    /// Changed at this epoch: a read that began earlier is not stored.
    Changed {
        epoch: u64,
    },
}

#[derive(Default)]
struct Entries {
    epoch: u64,
    /// Reads that began before this epoch are not stored (set by [`ReadCache::clear`]).
    cleared: u64,
    status: HashMap<String, Slot>,
    /// Epoch of the last change to any execution: lists read before it are not stored.
    lists_changed: u64,
    lists: HashMap<String, (Bytes, Instant)>,
}

/// Where a read began, to be handed back when storing what it read.
#[derive(Debug, Clone, Copy)]
pub struct ReadStart(u64);

/// Cached bodies of deployment status and lists, dropped on change and after `ttl`.
pub struct ReadCache {
    ttl: Duration,
    entries: Mutex<Entries>,
}

impl std::fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl ReadCache {
    /// A cache whose entries live `ttl`; zero keeps nothing.
    pub fn new(ttl: Duration) -> Self {
        ReadCache {
            ttl,
            entries: Mutex::new(Entries::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock leaves plain maps behind; keep using them.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the start of a read from the store.
    pub fn begin(&self) -> ReadStart {
        ReadStart(self.lock().epoch)
    }

    /// The status body of execution `id`, when fresh.
    pub fn status(&self, id: &str) -> Option<Bytes> {
        if self.ttl.is_zero() {
            return None;
        }
        match self.lock().status.get(id) {
            Some(Slot::Body { body, at }) if at.elapsed() < self.ttl => Some(body.clone()),
            _ => None,
        }
    }

    /// Keeps the status body of `id` read since `start`, unless `id` changed meanwhile.
    pub fn put_status(&self, id: &str, start: ReadStart, body: Bytes) {
        if self.ttl.is_zero() {
            return;
        }
        let mut e = self.lock();
        if start.0 < e.cleared {
            return;
        }
        if let Some(Slot::Changed { epoch }) = e.status.get(id)
            && *epoch > start.0
        {
            return;
        }
        if e.status.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            let epoch = e.epoch;
            e.status.retain(|_, s| match s {
                Slot::Body { at, .. } => at.elapsed() < ttl,
                Slot::Changed { epoch: changed } => *changed == epoch,
            });
            if e.status.len() >= MAX_ENTRIES {
                e.status.clear();
                e.cleared = e.epoch;
            }
        }
        e.status.insert(
            id.to_string(),
            Slot::Body {
                body,
                at: Instant::now(),
            },
        );
    }

    /// The list body for the query `key`, when fresh.
    pub fn list(&self, key: &str) -> Option<Bytes> {
        if self.ttl.is_zero() {
            return None;
        }
        match self.lock().lists.get(key) {
            Some((body, at)) if at.elapsed() < self.ttl => Some(body.clone()),
            _ => None,
        }
    }

    /// Keeps a list body read since `start`, unless any execution changed meanwhile.
    pub fn put_list(&self, key: &str, start: ReadStart, body: Bytes) {
        if self.ttl.is_zero() {
            return;
        }
        let mut e = self.lock();
        if start.0 < e.lists_changed || start.0 < e.cleared {
            return;
        }
        if e.lists.len() >= 1_000 {
            e.lists.clear();
        }
        e.lists.insert(key.to_string(), (body, Instant::now()));
    }

    /// Execution `id` changed: its status and every list are read again.
    pub fn changed(&self, id: &str) {
        let mut e = self.lock();
        e.epoch += 1;
        let epoch = e.epoch;
        e.status.insert(id.to_string(), Slot::Changed { epoch });
        e.lists_changed = epoch;
        e.lists.clear();
    }

    /// Drops everything (when changes may have been missed).
    pub fn clear(&self) {
        let mut e = self.lock();
        e.epoch += 1;
        e.cleared = e.epoch;
        e.lists_changed = e.epoch;
        e.status.clear();
        e.lists.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }

    #[test]
    fn a_fresh_body_is_served_until_its_execution_changes() {
        let c = ReadCache::new(Duration::from_secs(60));
        let start = c.begin();
        c.put_status("e1", start, body("running"));
        assert_eq!(c.status("e1"), Some(body("running")));
        c.changed("e1");
        assert_eq!(c.status("e1"), None);
        assert_eq!(c.status("e2"), None);
    }

    #[test]
    fn a_read_that_began_before_a_change_is_not_kept() {
        let c = ReadCache::new(Duration::from_secs(60));
        let start = c.begin();
        c.changed("e1");
        c.put_status("e1", start, body("stale"));
        assert_eq!(c.status("e1"), None, "read before the change");
        // Another execution's change does not stop it.
        let start = c.begin();
        c.changed("e2");
        c.put_status("e1", start, body("fresh"));
        assert_eq!(c.status("e1"), Some(body("fresh")));
    }

    #[test]
    fn any_change_drops_the_lists_and_stops_older_list_reads() {
        let c = ReadCache::new(Duration::from_secs(60));
        let start = c.begin();
        c.put_list("limit=20", start, body("[a]"));
        assert_eq!(c.list("limit=20"), Some(body("[a]")));
        let start = c.begin();
        c.changed("e9");
        assert_eq!(c.list("limit=20"), None);
        c.put_list("limit=20", start, body("[old]"));
        assert_eq!(c.list("limit=20"), None);
    }

    #[test]
    fn entries_expire_and_a_zero_ttl_keeps_nothing() {
        let c = ReadCache::new(Duration::from_millis(30));
        c.put_status("e1", c.begin(), body("x"));
        assert!(c.status("e1").is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.status("e1"), None);
        let off = ReadCache::new(Duration::ZERO);
        off.put_status("e1", off.begin(), body("x"));
        off.put_list("k", off.begin(), body("x"));
        assert_eq!(off.status("e1"), None);
        assert_eq!(off.list("k"), None);
    }

    #[test]
    fn clear_drops_everything_and_refuses_reads_begun_before() {
        let c = ReadCache::new(Duration::from_secs(60));
        let start = c.begin();
        c.put_status("e1", c.begin(), body("x"));
        c.clear();
        assert_eq!(c.status("e1"), None);
        c.put_status("e1", start, body("old"));
        assert_eq!(c.status("e1"), None);
    }
}
