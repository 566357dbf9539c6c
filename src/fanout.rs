//! Fan-out: an accepted event goes to every matching subscriber, and a ping
//! to every subscriber each interval.
//!
//! Only the topic index's candidates are visited; each receives a reference
//! to the event's shared frame, queued in accept order. Output is written at
//! the end of the reactor turn. A subscriber whose queue would pass
//! `server.max_queued_bytes` is dropped on the spot, so no client can make
//! the server hold more than that for it.

use std::rc::Rc;

use log::warn;

use crate::conn::{Conn, State};
use crate::event::{self, Event, Frame};

impl crate::reactor::Reactor {
    /// Queues `event` for every subscriber that matches it and may see it.
    pub(crate) fn broadcast(&mut self, event: Rc<Event>) {
        let cap = self.config.server.max_queued_bytes;
        for key in self.index.candidates(&event.topics) {
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
            if !stream.sub.matches(&event.topics) {
                continue;
            }
            if event.private
                && !stream
                    .grant
                    .as_ref()
                    .is_some_and(|g| g.can_see(&event.topics))
            {
                continue;
            }
            let frame = event.line.frame(stream.framing);
            queue_frame(conn, key, frame, cap, &mut self.dirty, &mut self.doomed);
        }
    }

    /// Sends the keep-alive line to every subscriber.
    pub(crate) fn send_pings(&mut self) {
        let cap = self.config.server.max_queued_bytes;
        let line = event::ping(event::epoch_now());
        for (key, conn) in self.conns.iter_mut() {
            let State::Stream(stream) = &conn.state else {
                continue;
            };
            let frame = line.frame(stream.framing);
            queue_frame(conn, key, frame, cap, &mut self.dirty, &mut self.doomed);
        }
    }
}

/// Appends a frame to a subscriber's queue, or drops the subscriber if that
/// would pass its cap.
fn queue_frame(
    conn: &mut Conn,
    key: usize,
    frame: Frame,
    cap: usize,
    dirty: &mut Vec<usize>,
    doomed: &mut Vec<usize>,
) {
    if conn.doomed {
        return;
    }
    if conn.out.queued() + frame.len() > cap {
        warn!(
            "dropping slow subscriber {} ({key}): {} bytes queued, limit {cap}",
            conn.peer,
            conn.out.queued()
        );
        conn.doomed = true;
        conn.read_closed = true;
        conn.out = Default::default();
        doomed.push(key);
        return;
    }
    conn.out.push(frame);
    if !conn.dirty {
        conn.dirty = true;
        dirty.push(key);
    }
}
