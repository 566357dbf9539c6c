//! The events the hub has accepted: the newest sequence number, the replay
//! backlog and, when it is persisted, the writer thread mirroring it to
//! its storage file.
//!
//! Invariant: the persister is told of every change to the backlog (push,
//! eviction by size, age or new limits), so the file mirrors the backlog;
//! every change goes through a method here.

use std::rc::Rc;
use std::time::Duration;

use crate::backlog::{self, Backlog, Start};
use crate::event::Event;
use crate::persist::Persister;

pub struct History {
    /// The sequence number of the newest accepted event.
    last_seq: u64,
    backlog: Backlog,
    persister: Option<Persister>,
}

impl History {
    pub fn new(backlog: Backlog, persister: Option<Persister>) -> History {
        History {
            last_seq: backlog.iter().last().map_or(0, |e| e.seq),
            backlog,
            persister,
        }
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The sequence number the next event gets, now taken.
    pub fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    pub fn backlog(&self) -> &Backlog {
        &self.backlog
    }

    /// Keeps an accepted event for replay (and on disk).
    pub fn keep(&mut self, event: &Rc<Event>) {
        if !self.backlog.is_enabled() {
            return;
        }
        let evicted = self.backlog.push(event.clone());
        if let Some(p) = &mut self.persister {
            p.evict(evicted);
            p.push(backlog::storage_line(event));
        }
    }

    /// Keeps an event loaded as history (the cluster's stream at start):
    /// for replay only, never written to a file.
    pub fn keep_loaded(&mut self, event: Rc<Event>) {
        if self.backlog.is_enabled() {
            self.backlog.push(event);
        }
    }

    /// Drops events past `max_age` at `now()`, here and on disk; the clock
    /// is not read when there is nothing to drop (every turn calls this).
    pub fn prune(&mut self, now: impl FnOnce() -> f64) {
        if self.backlog.is_empty() {
            return;
        }
        let evicted = self.backlog.prune(now());
        if let Some(p) = &mut self.persister {
            p.evict(evicted);
        }
    }

    /// New limits (a reload): the backlog is trimmed to them, here and on
    /// disk.
    pub fn set_limits(&mut self, size: usize, max_age: Option<Duration>, max_bytes: usize) {
        let evicted = self.backlog.set_limits(size, max_age, max_bytes);
        if let Some(p) = &mut self.persister {
            p.evict(evicted);
        }
    }

    /// Where a replay after `cursor` starts (after pruning, so an aged-out
    /// cursor reads as unknown).
    pub fn start_after_cursor(&mut self, cursor: &str, now: f64) -> Start {
        self.prune(|| now);
        self.backlog.start_after_cursor(cursor)
    }

    /// Where a replay of events since `since` (epoch seconds) starts.
    pub fn start_since(&mut self, since: f64, now: f64) -> u64 {
        self.prune(|| now);
        self.backlog.start_since(since, self.last_seq + 1)
    }

    /// The writer lost messages to a full channel: send it everything.
    pub fn resync_if_needed(&mut self) {
        if let Some(p) = &mut self.persister {
            if p.needs_resync() {
                let backlog = &self.backlog;
                p.resync(|| backlog.iter().map(|e| backlog::storage_line(e)).collect());
            }
        }
    }

    /// Shutting down: the file is written out once more, within `timeout`.
    pub fn write_out(&mut self, timeout: Duration) {
        if let Some(p) = &mut self.persister {
            let backlog = &self.backlog;
            p.resync(|| backlog.iter().map(|e| backlog::storage_line(e)).collect());
            p.flush(timeout);
        }
    }
}
