//! Fixed-window rate limiting: at most `max_requests` per `window` for each key (a client
//! address, or an authenticated caller).
//!
//! This is the seed's `rate_limiting` read literally ("max_requests per window_seconds"),
//! so the limit an operator writes is the limit a client sees, and `Retry-After` is the time
//! left in the current window. tower_governor's GCRA would smooth bursts instead and keys
//! one extractor per layer; here the same small table serves both the per-address check
//! (before authentication) and the per-caller check (after it), and its refusal comes back
//! in the API's own problem+json. Windows are aligned to a start instant shared by all keys;
//! stale entries are dropped when the table grows.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A limiter shared by every request of one server.
#[derive(Debug)]
pub struct RateLimiter {
    max_requests: u32,
    window: Duration,
    origin: Instant,
    table: Mutex<HashMap<String, (u64, u32)>>,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused; retry after this many seconds (at least 1).
    Deny {
        retry_after_secs: u64,
    },
}

impl RateLimiter {
    pub fn new(max_requests: u32, window: Duration) -> Self {
        RateLimiter {
            max_requests,
            window: window.max(Duration::from_millis(1)),
            origin: Instant::now(),
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request for `key` at `now`.
    pub fn check_at(&self, key: &str, now: Instant) -> Decision {
        let elapsed = now.saturating_duration_since(self.origin);
        let window_nanos = self.window.as_nanos().max(1);
        let index = (elapsed.as_nanos() / window_nanos) as u64;
        let Ok(mut table) = self.table.lock() else {
            return Decision::Allow;
        };
        if table.len() > 50_000 {
            table.retain(|_, (w, _)| *w == index);
        }
        let entry = table.entry(key.to_string()).or_insert((index, 0));
        if entry.0 != index {
            *entry = (index, 0);
        }
        if entry.1 >= self.max_requests {
            let window_end = u128::from(index + 1) * window_nanos;
            let left = Duration::from_nanos(
                (window_end.saturating_sub(elapsed.as_nanos())).min(u128::from(u64::MAX)) as u64,
            );
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            return Decision::Deny {
                retry_after_secs: secs.max(1),
            };
        }
        entry.1 += 1;
        Decision::Allow
    }

    pub fn check(&self, key: &str) -> Decision {
        self.check_at(key, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_max_and_recovers_next_window() {
        let limiter = RateLimiter::new(3, Duration::from_secs(60));
        let t0 = limiter.origin;
        for _ in 0..3 {
            assert_eq!(limiter.check_at("a", t0), Decision::Allow);
        }
        match limiter.check_at("a", t0 + Duration::from_secs(10)) {
            Decision::Deny { retry_after_secs } => assert_eq!(retry_after_secs, 50),
            other => panic!("{other:?}"),
        }
        // Another key has its own budget.
        assert_eq!(limiter.check_at("b", t0), Decision::Allow);
        // The next window starts afresh.
        assert_eq!(
            limiter.check_at("a", t0 + Duration::from_secs(60)),
            Decision::Allow
        );
    }
}
