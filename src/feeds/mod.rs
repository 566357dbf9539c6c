//! The feeds: the parts that talk to the outside world on helper threads,
//! each an optional cargo feature and a crate of its own — LDAP lookups
//! (`ldap-worker`), SQS pollers (`sqs-feed`), the cluster's Redis stream
//! (`cluster-bus`).
//!
//! Each is started the same way, by `setup.rs`: `start(its config
//! section, wake)` translates the section into its crate's settings (the
//! one place that does), starts the threads, and returns the handle the
//! hub keeps. The threads answer only through a channel and [`Wake`] (the
//! event loop's waker). Without its feature, a feed's handle is a type with
//! no values: `start` warns about a configured section and returns `None`,
//! and the hub's `Option<handle>` needs no cfg at its call sites.

pub mod cluster;
pub mod ldap;
pub mod sqs;

use std::fmt;
use std::sync::Arc;

/// Wakes the event loop; every feed's threads call it after sending.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// A feed that could not start.
#[derive(Debug)]
pub struct FeedError {
    /// Which feed: `LDAP`, `sqs`, `cluster`.
    pub feed: &'static str,
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl fmt::Display for FeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.feed, self.source)
    }
}

impl std::error::Error for FeedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}
