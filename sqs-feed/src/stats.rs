//! What the pollers count, for the server's `/metrics`: atomics bumped by
//! the poller threads, read as a snapshot by the event loop.

use std::sync::atomic::{AtomicU64, Ordering};

/// Shared by every poller of one feed.
#[derive(Debug, Default)]
pub struct FeedStats {
    received: AtomicU64,
    deleted: AtomicU64,
    errors: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedCounts {
    /// Messages received from the queues (duplicates and bad bodies too).
    pub received: u64,
    /// Messages deleted after they were taken.
    pub deleted: u64,
    /// Calls that failed (each followed by a back-off) and messages that
    /// could not be deleted.
    pub errors: u64,
}

impl FeedStats {
    pub(crate) fn received(&self, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn deleted(&self, n: usize) {
        self.deleted.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn counts(&self) -> FeedCounts {
        FeedCounts {
            received: self.received.load(Ordering::Relaxed),
            deleted: self.deleted.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}
