//! Accepting an event: a published object becomes the next event, the
//! history keeps it (backlog, storage file), and the connection table
//! queues its shared frame for every subscriber that wants it. Replays
//! and the keep-alive ping go through the table the same way.
//!
//! Uses: `history`, `conns`, `stats`, `activity` (and `cluster`, which
//! takes the event instead on a cluster node).

use std::rc::Rc;

use super::table::Replayed;
use super::Hub;
use crate::event::{self, Event, Payload};
use crate::stats::{Drop, Source};

impl Hub {
    /// Turns a published object into the next event and accepts it; the
    /// path names its topics (`/private/...` makes it private).
    pub fn publish(
        &mut self,
        source: Source,
        path: &str,
        path_topics: Vec<String>,
        payload: Payload<'_>,
    ) {
        // A cluster node appends to the stream; it comes back from there.
        if self.cluster.is_some() {
            return self.append_to_cluster(source, path, path_topics, payload, None, None);
        }
        self.stats.published(source);
        let (topics, private) = event::split_private(path_topics);
        if !private {
            self.activity.count_topic(&topics);
        }
        let seq = self.history.next_seq();
        let event = Event::publish(seq, path, topics, private, payload, self.clock.epoch());
        self.accept_event(Rc::new(event));
    }

    /// An event has been accepted: keep it for replay (and on disk), then
    /// send it to every subscriber that wants it.
    pub(super) fn accept_event(&mut self, event: Rc<Event>) {
        self.history.keep(&event);
        let cap = self.config.server.max_queued_bytes;
        let done = self.conns.broadcast(&event, cap);
        self.stats.deliveries += done.delivered;
        self.stats.dropped_n(Drop::QueueFull, done.dropped);
    }

    /// Queues more of the backlog for a replaying subscriber.
    pub(super) fn pump_replay(&mut self, key: usize) {
        let cap = self.config.server.max_queued_bytes;
        let (backlog, last_seq) = (self.history.backlog(), self.history.last_seq());
        let replayed = self
            .conns
            .pump_replay(key, backlog, last_seq, self.clock.epoch(), cap);
        if replayed == Replayed::FellBehind {
            self.stats.dropped(Drop::ReplayBehind);
        }
    }

    /// Sends the keep-alive line to every subscriber.
    pub(super) fn send_pings(&mut self) {
        let cap = self.config.server.max_queued_bytes;
        let ping = event::ping(self.clock.epoch());
        let dropped = self.conns.ping_all(&ping, cap);
        self.stats.dropped_n(Drop::QueueFull, dropped);
    }
}
