//! What the hub counts for `/metrics` and the status page: plain integers
//! bumped on the event loop's thread (no atomics, nothing shared), read
//! when someone asks.

use std::collections::BTreeMap;

/// Where an accepted event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Http,
    Sqs,
    Cluster,
}

/// Why a subscriber was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Its queue would have passed `max_queued_bytes`.
    QueueFull,
    /// Its socket took nothing for `write_timeout`.
    WriteTimeout,
    /// Its replay fell behind the backlog's oldest event.
    ReplayBehind,
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub published_http: u64,
    pub published_sqs: u64,
    pub published_cluster: u64,
    /// Event frames queued for subscribers (live and replayed).
    pub deliveries: u64,
    /// Bytes written to sockets.
    pub bytes_sent: u64,
    pub dropped_queue_full: u64,
    pub dropped_write_timeout: u64,
    pub dropped_replay_behind: u64,
    /// Responses by status (a stream's head counts as 200).
    pub responses: BTreeMap<u16, u64>,
    pub tls_handshakes: u64,
    pub tls_handshake_failures: u64,
}

impl Stats {
    pub fn published(&mut self, source: Source) {
        match source {
            Source::Http => self.published_http += 1,
            Source::Sqs => self.published_sqs += 1,
            Source::Cluster => self.published_cluster += 1,
        }
    }

    pub fn dropped(&mut self, why: Drop) {
        match why {
            Drop::QueueFull => self.dropped_queue_full += 1,
            Drop::WriteTimeout => self.dropped_write_timeout += 1,
            Drop::ReplayBehind => self.dropped_replay_behind += 1,
        }
    }

    pub fn responded(&mut self, status: u16) {
        *self.responses.entry(status).or_default() += 1;
    }

    /// Events accepted from every source.
    pub fn published_total(&self) -> u64 {
        self.published_http + self.published_sqs + self.published_cluster
    }
}
