//! The hub's side of the cluster (`cluster:`): with the `cluster` feature,
//! `bus.rs` parks publishers until their append is acknowledged and
//! delivers what the stream brings back; without it, `off.rs`, where
//! `Cluster` has no values and the methods the rest of the hub calls are
//! never reached. The answers a cluster node gives either way are here.

#[cfg(feature = "cluster")]
mod bus;
#[cfg(not(feature = "cluster"))]
mod off;

#[cfg(feature = "cluster")]
pub use bus::Cluster;
#[cfg(not(feature = "cluster"))]
pub use off::Cluster;

use super::requests::After;
use super::Hub;

pub const TEXT_LOADING: &str =
    "The backlog is still loading from the cluster's stream; please try again.\n";
/// What an `EventSource` replaying too early gets: reconnect in 1 s.
const SSE_RETRY_SOON: &str = ": the backlog is still loading\nretry: 1000\n\n";
/// Seconds a refused publisher (or early replay) is asked to wait.
const RETRY_AFTER: &str = "1";

impl Hub {
    /// A replay asked for before the backlog was loaded: 503, try again.
    /// An `EventSource` would give up for good on a 503, so it gets an
    /// empty event stream that asks it to reconnect in a second instead
    /// (with the same `Last-Event-ID`).
    pub(super) fn respond_backlog_loading(&mut self, key: usize, sse: bool) {
        if sse {
            let body = ("text/event-stream", SSE_RETRY_SOON.as_bytes());
            return self.respond_typed(key, 200, Some(body), &[], After::Close);
        }
        let body = ("text/plain; charset=utf-8", TEXT_LOADING.as_bytes());
        self.respond_typed(
            key,
            503,
            Some(body),
            &[("Retry-After", RETRY_AFTER)],
            After::Close,
        );
    }
}
