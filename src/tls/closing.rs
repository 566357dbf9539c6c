//! Orderly closes. A connection the hub is done with may still owe its
//! peer the rest of a TLS record a write started and a close_notify
//! (`Transport::close`); the socket can take them only as the peer reads.
//! `Closing` holds such a connection's transport, out of the poll, and
//! retries on every turn until it has sent them, for at most `GRACE` and at
//! most `MAX_LINGERING` connections at once (each still holds a descriptor
//! that the hub no longer counts). Past either bound the socket is closed
//! as it is, which is what happened to every connection before.
//! Plain TCP owes nothing: its sockets close at once.

use std::time::{Duration, Instant};

use super::Transport;

/// How long a closed connection may take to send what it owes.
const GRACE: Duration = Duration::from_secs(2);
/// How many closed connections may wait at once.
const MAX_LINGERING: usize = 32;
/// How often a waiting connection is retried (it is out of the poll).
const RETRY: Duration = Duration::from_millis(10);

/// The closed connections whose sockets have not taken everything yet.
#[derive(Debug, Default)]
pub struct Closing {
    lingering: Vec<(Transport, Instant)>,
}

impl Closing {
    /// Ends `transport` in an orderly way: closed now if it owes nothing or
    /// the socket took it all, else kept until it has (within the bounds).
    pub fn close(&mut self, mut transport: Transport, now: Instant) {
        if transport.close() && self.lingering.len() < MAX_LINGERING {
            self.lingering.push((transport, now + GRACE));
        }
    }

    /// Sends more of what the waiting connections owe; closes those done
    /// and those past their deadline.
    pub fn retry(&mut self, now: Instant) {
        self.lingering
            .retain_mut(|(transport, deadline)| *deadline > now && transport.close());
    }

    /// When `retry` should run next, if anything waits.
    pub fn next_retry(&self, now: Instant) -> Option<Instant> {
        (!self.lingering.is_empty()).then(|| now + RETRY)
    }

    pub fn is_empty(&self) -> bool {
        self.lingering.is_empty()
    }
}
