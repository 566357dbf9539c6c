//! What the pool counts, for the server's `/metrics` and `/readyz`: atomics
//! bumped by the workers, read as a snapshot from the event loop's thread.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub(crate) struct PoolStats {
    lookups: AtomicU64,
    cache_hits: AtomicU64,
    failures: AtomicU64,
    micros: AtomicU64,
    /// 0: no connection tried yet, 1: the last connect worked, 2: it failed.
    reachable: AtomicU8,
}

/// The pool's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Lookups that went to the server (cache hits not included).
    pub lookups: u64,
    pub cache_hits: u64,
    /// Lookups that granted nothing (bad credentials, errors, timeouts).
    pub failures: u64,
    /// Time spent in server lookups, in total.
    pub lookup_time: Duration,
    /// Whether the last connection attempt reached the server (`None`:
    /// none tried yet).
    pub reachable: Option<bool>,
    /// Jobs waiting for a worker.
    pub queued: usize,
}

impl PoolStats {
    pub(crate) fn cache_hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// One lookup; `reached`: whether it got to the server (`None`: it was
    /// refused before trying).
    pub(crate) fn lookup(&self, took: Duration, ok: bool, reached: Option<bool>) {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.micros.fetch_add(micros, Ordering::Relaxed);
        if let Some(reached) = reached {
            self.reachable
                .store(if reached { 1 } else { 2 }, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self, queued: usize) -> StatsSnapshot {
        StatsSnapshot {
            lookups: self.lookups.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            lookup_time: Duration::from_micros(self.micros.load(Ordering::Relaxed)),
            reachable: match self.reachable.load(Ordering::Relaxed) {
                1 => Some(true),
                2 => Some(false),
                _ => None,
            },
            queued,
        }
    }
}
