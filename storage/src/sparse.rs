//! Log lines that repeat under load (refused connections, files that will not open)
//! written at most once per interval, with how many of their kind were not: a client
//! in a loop or a broker out of descriptors cannot flood the log, while a metric
//! counts every event.

use std::sync::atomic::{AtomicU64, Ordering};

/// One kind of sparse log line; see the module comment.
pub struct Sparse {
    interval_ms: u64,
    logged_at_ms: AtomicU64,
    unlogged: AtomicU64,
}

impl Sparse {
    pub const fn new(interval_ms: u64) -> Sparse {
        Sparse {
            interval_ms,
            logged_at_ms: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
        }
    }

    /// Some(events not logged since the last line) when a line is due now; None (and
    /// counted) when not.
    pub fn due(&self) -> Option<u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let last = self.logged_at_ms.load(Ordering::Relaxed);
        let due = now.saturating_sub(last) >= self.interval_ms
            && self
                .logged_at_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        if due {
            Some(self.unlogged.swap(0, Ordering::Relaxed))
        } else {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}
