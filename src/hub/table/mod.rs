//! The connection table: the only code that writes a connection's fields.
//! It owns the slab of connections and their serial numbers, the topic
//! index and the subscriber count, the turn's lists, the per-connection
//! deadlines and the input budget; the rest of the hub asks it for changes
//! through methods, each of which keeps the invariants below.
//!
//! Invariants, each kept in one place:
//! - a connection is in the topic index ⇔ its state is `State::Stream` ⇔
//!   it is counted in `subscribers` (`set_state`, the one way a state
//!   changes, and `remove`);
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
    /// The live subscribers by topic (changed only with their state).
    index: TopicIndex,
    subscribers: usize,
    turn: Turn,
    deadlines: deadlines::Heap,
    /// Bytes held in request buffers over all connections.
    input_bytes: usize,
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
    fn mark_dirty(&mut self, key: usize, conn: &mut Conn) {
        if !conn.to_flush {
            conn.to_flush = true;
            self.flush.push(key);
        }
    }

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
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Live subscribers.
    pub fn subscribers(&self) -> usize {
        self.subscribers
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
        true
    }

    /// Moves the connection to `next`, returning the state it leaves: the
    /// one way a state changes, so the topic index and the subscriber
    /// count follow every move into and out of `State::Stream`.
    #[inline] // on every request; kept inlined (see `OutQueue::push`)
    pub fn set_state(&mut self, key: usize, next: State) -> Option<State> {
        let conn = self.slab.get_mut(key)?;
        let old = std::mem::replace(&mut conn.state, next);
        if let State::Stream(stream) = &old {
            self.index.remove(key, &stream.sub);
            self.subscribers -= 1;
        }
        if let State::Stream(stream) = &mut conn.state {
            self.index.insert(key, &mut stream.sub);
            self.subscribers += 1;
        }
        Some(old)
    }

    /// Makes the connection a live subscriber that has seen every event up
    /// to `last_seq`; its request buffers and deadline are dropped, and a
    /// stream with a token's expiry gets a timer for it.
    pub fn start_stream(&mut self, key: usize, stream: Box<Stream>, last_seq: u64) {
        let until = stream.until;
        if self.set_state(key, State::Stream(stream)).is_none() {
            return;
        }
        if let Some(conn) = self.slab.get_mut(key) {
            conn.request_deadline = None;
            conn.inbuf = Vec::new();
            conn.last_event_seen = last_seq;
            if let Some(until) = until {
                self.deadlines.arm_expiry(key, conn.serial, until);
            }
        }
    }

    /// Takes the parked request of connection `key` if it is still the
    /// connection with `serial` and still parked; it then reads a head.
    pub fn take_parked(&mut self, key: usize, serial: u64) -> Option<Box<Parked>> {
        let conn = self.slab.get(key)?;
        if conn.serial != serial || !matches!(conn.state, State::Authenticating(_)) {
            return None;
        }
        match self.set_state(key, State::Head)? {
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
    pub fn queue(&mut self, key: usize, frame: Frame) {
        if let Some(conn) = self.slab.get_mut(key) {
            if conn.doomed {
                return;
            }
            conn.out.push(frame);
            self.turn.mark_dirty(key, conn);
        }
    }

    /// A response was queued and the connection stays open: it waits for
    /// the next request, due by `deadline`.
    pub fn await_request(&mut self, key: usize, deadline: Instant) {
        self.set_state(key, State::Head);
        if let Some(conn) = self.slab.get_mut(key) {
            self.turn.mark_dirty(key, conn);
        }
        self.set_deadline(key, deadline);
    }

    /// The connection ends once its queued output has been written; input
    /// is over for it.
    pub fn close_after_flush(&mut self, key: usize) {
        if self.set_state(key, State::Closing).is_none() {
            return;
        }
        if let Some(conn) = self.slab.get_mut(key) {
            conn.inbuf = Vec::new();
            conn.request_deadline = None;
            self.turn.mark_dirty(key, conn);
        }
    }

    /// The socket can take bytes again: flush at the end of the turn.
    pub fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.slab.get_mut(key) {
            self.turn.mark_dirty(key, conn);
        }
    }

    /// The connection has work left over: it runs again next turn.
    pub fn rerun(&mut self, key: usize) {
        if let Some(conn) = self.slab.get_mut(key) {
            self.turn.rerun(key, conn);
        }
    }

    /// Closes the connection at the end of this turn, without flushing.
    pub fn doom(&mut self, key: usize) {
        if let Some(conn) = self.slab.get_mut(key) {
            self.turn.doom(key, conn);
        }
    }

    /// Whether some connection has work left over for the next turn.
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
