//! The connection table: the only code that writes a connection's fields.
//! It owns the slab of connections and their serial numbers, the topic
//! index and the subscriber count, the turn's lists, the per-connection
//! deadlines and the input budget; the rest of the hub asks it for changes
//! through methods, each of which keeps the invariants below.
//!
//! Invariants, each kept in one place:
//! - a connection is in the topic index ⇔ its state is `State::Stream` ⇔
//!   it is counted in `subscribers` and, by its framing, in `transports`
//!   (`set_state`, the one way a state changes, and `remove`);
//! - a key is on each of the turn's lists at most once, flagged on its
//!   `Conn` (`Turn`);
//! - a doomed connection queues and reads nothing more, and leaves the
//!   table only through [`ConnTable::close_doomed`] at the end of the turn
//!   (or [`ConnTable::remove`], before any byte was exchanged);
//! - `input_bytes` is the sum of every connection's `held_input`
//!   (`input.rs`: the one place that counts, and `remove`);
//! - a connection with a request deadline has a timer armed at or before
//!   it, and a stream with a token's expiry a timer at it (`deadlines.rs`).
//!
//! Layout: this file holds the table, state changes and the turn;
//! `conn.rs` the connection and its states; `input.rs` reading and the
//! next request; `deadlines.rs` the per-connection timers; `delivery.rs`
//! queueing events, replays and pings to subscribers.

mod conn;
mod deadlines;
mod delivery;
mod input;
#[cfg(test)]
mod tests;

use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use log::debug;
use slab::Slab;

use crate::event::Frame;
use crate::out_queue::{Flushed, OutQueue};
use crate::topics::TopicIndex;

pub use conn::{Access, AfterAuth, BodyState, Conn, Parked, State, Stream};
pub use deadlines::Due;
pub use delivery::Replayed;
use input::RESPONSE_HIGH_WATER;
pub use input::{InputCount, RequestLimits, Step};

/// Every connection and what is kept about them together.
#[derive(Default)]
pub struct ConnTable {
    slab: Slab<Conn>,
    next_serial: u64,
    streams: Streams,
    turn: Turn,
    deadlines: deadlines::Heap,
    /// Bytes held in request buffers over all connections.
    input_bytes: usize,
}

/// Live subscribers by transport; `compressed` counts those of any
/// transport whose frames are compressed (gzip, permessage-deflate).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Transports {
    /// PyPubSub's stream of JSON lines (chunked, or raw for HTTP/1.0).
    pub stream: usize,
    pub sse: usize,
    pub websocket: usize,
    pub compressed: usize,
}

impl Transports {
    fn count(&mut self, framing: crate::event::Framing, up: bool) {
        let bump = |n: &mut usize| {
            if up {
                *n += 1;
            } else {
                *n -= 1;
            }
        };
        if framing.is_websocket() {
            bump(&mut self.websocket);
        } else if framing.sse {
            bump(&mut self.sse);
        } else {
            bump(&mut self.stream);
        }
        if framing.compressed {
            bump(&mut self.compressed);
        }
    }
}

/// The live subscribers: the topic index, their count and their count by
/// transport, changed only together with a connection's state.
#[derive(Default)]
struct Streams {
    index: TopicIndex,
    count: usize,
    transports: Transports,
}

impl Streams {
    /// Moves `conn` to `next`, returning the state it leaves; a move into
    /// or out of `State::Stream` files or unfiles it in the index.
    #[inline]
    fn transition(&mut self, key: usize, conn: &mut Conn, next: State) -> State {
        let old = std::mem::replace(&mut conn.state, next);
        if let State::Stream(stream) = &old {
            self.index.remove(key, &stream.sub);
            self.count -= 1;
            self.transports.count(stream.framing, false);
        }
        if let State::Stream(stream) = &mut conn.state {
            self.index.insert(key, &mut stream.sub);
            self.count += 1;
            self.transports.count(stream.framing, true);
        }
        old
    }
}

/// The connections with something to do at the end of this turn.
#[derive(Default)]
struct Turn {
    /// Output queued: flush.
    flush: Vec<usize>,
    /// Work left over (a budget ran out, input resumed): run next turn.
    rerun: Vec<usize>,
    /// Close without flushing.
    doomed: Vec<usize>,
}

impl Turn {
    #[inline]
    fn mark_dirty(&mut self, key: usize, conn: &mut Conn) {
        if !conn.to_flush {
            conn.to_flush = true;
            self.flush.push(key);
        }
    }

    #[inline]
    fn rerun(&mut self, key: usize, conn: &mut Conn) {
        if !conn.to_rerun {
            conn.to_rerun = true;
            self.rerun.push(key);
        }
    }

    /// Marks the connection to be closed at the end of the turn without
    /// flushing, freeing its output.
    fn doom(&mut self, key: usize, conn: &mut Conn) {
        if conn.doomed {
            return;
        }
        conn.doomed = true;
        conn.read_closed = true;
        conn.out = OutQueue::default();
        self.doomed.push(key);
    }
}

impl ConnTable {
    pub fn new() -> ConnTable {
        ConnTable {
            next_serial: 1,
            ..ConnTable::default()
        }
    }

    /// Open connections, subscribers included.
    #[inline]
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Live subscribers.
    #[inline]
    pub fn subscribers(&self) -> usize {
        self.streams.count
    }

    #[inline]
    /// Live subscribers by transport.
    pub fn transports(&self) -> Transports {
        self.streams.transports
    }

    pub fn get(&self, key: usize) -> Option<&Conn> {
        self.slab.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (usize, &Conn)> {
        self.slab.iter()
    }

    /// Every key, for changes to all connections (shutdown).
    pub fn keys(&self) -> Vec<usize> {
        self.slab.iter().map(|(key, _)| key).collect()
    }

    /// Takes on a connection from `peer` (folded to IPv4 if mapped).
    pub fn open(&mut self, peer: IpAddr, admin: bool, now: Instant) -> usize {
        let serial = self.next_serial;
        self.next_serial += 1;
        self.slab
            .insert(Conn::new(serial, peer.to_canonical(), admin, now))
    }

    /// Takes a connection out of the table at once (one the reactor could
    /// not set up, or one closed at the end of its turn).
    pub fn remove(&mut self, key: usize) -> bool {
        if !self.slab.contains(key) {
            return false;
        }
        self.set_state(key, State::Closing);
        let conn = self.slab.remove(key);
        self.input_bytes -= conn.held_input;
        // Off every list, so a connection that reuses the key starts on none.
        if conn.to_flush {
            self.turn.flush.retain(|&k| k != key);
        }
        if conn.to_rerun {
            self.turn.rerun.retain(|&k| k != key);
        }
        if conn.doomed {
            self.turn.doomed.retain(|&k| k != key);
        }
        true
    }

    /// Moves the connection to `next`, returning the state it leaves: the
    /// one way a state changes, so the topic index and the subscriber
    /// count follow every move into and out of `State::Stream`.
    #[inline] // on every request; kept inlined (see `OutQueue::push`)
    pub fn set_state(&mut self, key: usize, next: State) -> Option<State> {
        let conn = self.slab.get_mut(key)?;
        Some(self.streams.transition(key, conn, next))
    }

    /// Makes the connection a live subscriber that has seen every event up
    /// to `last_seq`; its request buffers and deadline are dropped (but for
    /// a WebSocket's, which may already hold its first frames), and a
    /// stream whose token expires at `until` gets a timer for it.
    pub fn start_stream(
        &mut self,
        key: usize,
        stream: Box<Stream>,
        last_seq: u64,
        until: Option<Instant>,
    ) {
        let Some(conn) = self.slab.get_mut(key) else {
            return;
        };
        let websocket = stream.framing.is_websocket();
        self.streams.transition(key, conn, State::Stream(stream));
        conn.request_deadline = None;
        if !websocket || conn.inbuf.is_empty() {
            conn.inbuf = Vec::new();
        }
        conn.last_event_seen = last_seq;
        if let Some(until) = until {
            self.deadlines.arm_expiry(key, conn.serial, until);
        }
    }

    /// Takes the parked request of connection `key` if it is still the
    /// connection with `serial` and still parked; it then reads a head.
    pub fn take_parked(&mut self, key: usize, serial: u64) -> Option<Box<Parked>> {
        let conn = self.slab.get_mut(key)?;
        if conn.serial != serial || !matches!(conn.state, State::Authenticating(_)) {
            return None;
        }
        match self.streams.transition(key, conn, State::Head) {
            State::Authenticating(parked) => Some(parked),
            _ => None,
        }
    }

    /// The `clients.cors_origins` entry the current request matched.
    pub fn set_cors(&mut self, key: usize, cors: Option<u16>) {
        if let Some(conn) = self.slab.get_mut(key) {
            conn.cors = cors;
        }
    }

    /// Queues bytes on a connection; they are written at the end of the
    /// turn. A doomed connection takes nothing.
    #[inline]
    pub fn queue(&mut self, key: usize, frame: Frame) {
        if let Some(conn) = self.slab.get_mut(key) {
            if conn.doomed {
                return;
            }
            conn.out.push(frame);
            self.turn.mark_dirty(key, conn);
        }
    }

    /// Queues a complete response. With `next_request_by`, the connection
    /// stays open and waits for the next request, due by then; without,
    /// it closes once its output is flushed.
    #[inline]
    pub fn respond(&mut self, key: usize, frame: Frame, next_request_by: Option<Instant>) {
        let Some(conn) = self.slab.get_mut(key) else {
            return;
        };
        if !conn.doomed {
            conn.out.push(frame);
        }
        match next_request_by {
            Some(deadline) => {
                if !matches!(conn.state, State::Head) {
                    self.streams.transition(key, conn, State::Head);
                }
                self.turn.mark_dirty(key, conn);
                self.deadlines.set_request(key, conn, deadline);
            }
            None => self.close_conn_after_flush(key),
        }
    }

    /// The connection ends once its queued output has been written; input
    /// is over for it.
    pub fn close_after_flush(&mut self, key: usize) {
        self.close_conn_after_flush(key);
    }

    fn close_conn_after_flush(&mut self, key: usize) {
        let Some(conn) = self.slab.get_mut(key) else {
            return;
        };
        self.streams.transition(key, conn, State::Closing);
        conn.inbuf = Vec::new();
        conn.request_deadline = None;
        self.turn.mark_dirty(key, conn);
    }

    /// The socket can take bytes again: flush at the end of the turn.
    #[inline]
    pub fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.slab.get_mut(key) {
            self.turn.mark_dirty(key, conn);
        }
    }

    /// The connection has work left over: it runs again next turn.
    #[inline]
    pub fn rerun(&mut self, key: usize) {
        if let Some(conn) = self.slab.get_mut(key) {
            self.turn.rerun(key, conn);
        }
    }

    /// Closes the connection at the end of this turn, without flushing.
    #[inline]
    pub fn doom(&mut self, key: usize) {
        if let Some(conn) = self.slab.get_mut(key) {
            self.turn.doom(key, conn);
        }
    }

    /// Whether some connection has work left over for the next turn.
    #[inline]
    pub fn has_rerun(&self) -> bool {
        !self.turn.rerun.is_empty()
    }

    /// The connections with work left over, each taken off the list.
    pub fn take_rerun(&mut self) -> Vec<usize> {
        let mut rerun = std::mem::take(&mut self.turn.rerun);
        rerun.retain(|&key| match self.slab.get_mut(key) {
            Some(conn) => {
                conn.to_rerun = false;
                true
            }
            None => false,
        });
        rerun
    }

    /// Writes every connection's queued output once, through `write` (the
    /// reactor's socket writes; a test's buffer); returns the bytes
    /// written. A socket that blocks gets a stall deadline of
    /// `write_timeout` after its last progress.
    pub fn flush(
        &mut self,
        now: Instant,
        write_timeout: Duration,
        mut write: impl FnMut(usize, &mut OutQueue) -> io::Result<Flushed>,
    ) -> u64 {
        let mut total = 0;
        for key in std::mem::take(&mut self.turn.flush) {
            let Some(conn) = self.slab.get_mut(key) else {
                continue;
            };
            conn.to_flush = false;
            match write(key, &mut conn.out) {
                Ok(flushed) => {
                    if flushed.written > 0 {
                        conn.last_progress = now;
                        total += flushed.written as u64;
                    }
                    if flushed.blocked {
                        self.deadlines.arm_stall(key, conn, write_timeout);
                    } else if matches!(conn.state, State::Closing) {
                        self.turn.doom(key, conn);
                    } else if conn.paused && conn.out.queued() < RESPONSE_HIGH_WATER / 2 {
                        conn.paused = false;
                        self.turn.rerun(key, conn);
                    }
                }
                Err(e) => {
                    debug!("{key}: write: {e}");
                    self.turn.doom(key, conn);
                }
            }
        }
        total
    }

    /// Removes the connections doomed this turn; the reactor closes their
    /// sockets.
    pub fn close_doomed(&mut self) -> Vec<usize> {
        let mut doomed = std::mem::take(&mut self.turn.doomed);
        doomed.retain(|&key| {
            let gone = self.remove(key);
            if gone {
                debug!("closed {key}");
            }
            gone
        });
        doomed
    }
}
