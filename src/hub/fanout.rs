//! Fan-out: an accepted event goes to every matching subscriber, the
//! backlog is replayed to subscribers that asked for it, and a ping goes to
//! every subscriber each interval.
//!
//! Only the topic index's candidates are visited; each receives a reference
//! to the event's shared frame, queued in accept order. Output is written at
//! the end of the reactor turn. A subscriber whose queue would pass
//! `server.max_queued_bytes` is dropped on the spot, so no client can make
//! the server hold more than that for it.

use std::rc::Rc;

use log::warn;

use super::{Hub, Turn};
use crate::conn::{Conn, State};
use crate::event::{self, Event, Frame, Payload};
use crate::stats::{Drop, Source, Stats};

/// Events replayed to one subscriber per turn.
const REPLAY_BUDGET: usize = 1024;
/// Replay pauses while this much output waits, and resumes as it drains.
const REPLAY_HIGH_WATER: usize = 256 * 1024;

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
        #[cfg(feature = "cluster")]
        if self.cluster.is_some() {
            return self.append_to_cluster(source, path, path_topics, payload, None, None);
        }
        self.stats.published(source);
        let (topics, private) = event::split_private(path_topics);
        if !private {
            self.activity.count_topic(&topics);
        }
        self.last_seq += 1;
        let event = Event::publish(
            self.last_seq,
            path,
            topics,
            private,
            payload,
            self.clock.epoch(),
        );
        self.accept_event(Rc::new(event));
    }

    /// An event has been accepted: keep it for replay (and on disk), then
    /// send it to every subscriber that wants it.
    pub(super) fn accept_event(&mut self, event: Rc<Event>) {
        if self.backlog.is_enabled() {
            let evicted = self.backlog.push(event.clone());
            if let Some(p) = &mut self.persister {
                p.evict(evicted);
                p.push(crate::backlog::storage_line(&event));
            }
        }
        self.broadcast(event);
    }

    /// Queues `event` for every live subscriber that wants it.
    fn broadcast(&mut self, event: Rc<Event>) {
        let cap = self.config.server.max_queued_bytes;
        let mut delivered = 0;
        for key in self.streams.index.candidates(&event.topics) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.last_event_seen == event.seq {
                continue;
            }
            conn.last_event_seen = event.seq;
            let State::Stream(stream) = &conn.state else {
                continue;
            };
            if stream.replay.is_some() || !stream.wants(&event) {
                continue;
            }
            let frame = event.line.frame(stream.framing, Some(&event.cursor));
            if queue_frame(conn, key, frame, cap, &mut self.turn, &mut self.stats) {
                delivered += 1;
            }
        }
        self.stats.deliveries += delivered;
    }

    /// Queues more of the backlog for a replaying subscriber, until its
    /// output passes the high-water mark (resumed when it drains) or it has
    /// caught up with the newest event (then it goes live).
    pub(super) fn pump_replay(&mut self, key: usize) {
        let cap = self.config.server.max_queued_bytes;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let State::Stream(stream) = &mut conn.state else {
            return;
        };
        let Some(mut next) = stream.replay else {
            return;
        };
        let now = self.clock.epoch();
        let mut budget = REPLAY_BUDGET;
        while next <= self.last_seq {
            if conn.out.queued() >= REPLAY_HIGH_WATER.min(cap / 2) {
                conn.paused = true;
                break;
            }
            if budget == 0 {
                break;
            }
            let Some(event) = self.backlog.get(next) else {
                warn!(
                    "dropping subscriber {} ({key}): its replay fell behind the backlog",
                    conn.peer
                );
                self.turn.doom(key, conn);
                self.stats.dropped(Drop::ReplayBehind);
                return;
            };
            if stream.wants(event) && self.backlog.is_fresh(event, now) {
                conn.out
                    .push(event.line.frame(stream.framing, Some(&event.cursor)));
            }
            next += 1;
            budget -= 1;
        }
        if next > self.last_seq {
            stream.replay = None;
            conn.last_event_seen = self.last_seq;
        } else {
            stream.replay = Some(next);
        }
        let more = budget == 0 && stream.replay.is_some();
        self.turn.mark_dirty(key, conn);
        if more {
            self.turn.push_pending(key, conn);
        }
    }

    /// Sends the keep-alive line to every subscriber.
    pub(super) fn send_pings(&mut self) {
        let cap = self.config.server.max_queued_bytes;
        let ping = event::ping(self.clock.epoch());
        for (key, conn) in self.conns.iter_mut() {
            let State::Stream(stream) = &conn.state else {
                continue;
            };
            let frame = ping.frame(stream.framing);
            queue_frame(conn, key, frame, cap, &mut self.turn, &mut self.stats);
        }
    }
}

/// Appends a frame to a subscriber's queue (true), or drops the subscriber
/// if that would pass its cap.
fn queue_frame(
    conn: &mut Conn,
    key: usize,
    frame: Frame,
    cap: usize,
    turn: &mut Turn,
    stats: &mut Stats,
) -> bool {
    if conn.doomed {
        return false;
    }
    // One frame always fits an empty queue, however large it is.
    if !conn.out.is_empty() && conn.out.queued() + frame.len() > cap {
        warn!(
            "dropping slow subscriber {} ({key}): {} bytes queued, limit {cap}",
            conn.peer,
            conn.out.queued()
        );
        turn.doom(key, conn);
        stats.dropped(Drop::QueueFull);
        return false;
    }
    conn.out.push(frame);
    turn.mark_dirty(key, conn);
    true
}
