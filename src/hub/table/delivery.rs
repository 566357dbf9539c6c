//! Queueing to subscribers: an event to every live subscriber that wants
//! it (only the topic index's candidates are visited), the next part of a
//! replay, the keep-alive ping. Each receives a reference to the frame of
//! its framing, built once per event; a subscriber whose queue would pass
//! `server.max_queued_bytes` is dropped on the spot, so no client can make
//! the server hold more than that for it.

use std::num::NonZeroU64;

use log::warn;

use super::{Conn, ConnTable, State, Stream, Turn};
use crate::backlog::Backlog;
use crate::event::{Event, Frame, Line, Ping};
use crate::http;
use crate::websocket;

/// Events replayed to one subscriber per turn.
const REPLAY_BUDGET: usize = 1024;
/// Replay pauses while this much output waits, and resumes as it drains.
const REPLAY_HIGH_WATER: usize = 256 * 1024;

/// What a broadcast did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Broadcast {
    pub delivered: u64,
    /// Subscribers dropped because the event would pass their queue's cap.
    pub dropped: u64,
}

/// How a turn of replay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replayed {
    /// Not a replaying subscriber (any more), or output is waiting.
    Done,
    /// The replay's next event has left the backlog: the subscriber was
    /// dropped.
    FellBehind,
}

impl ConnTable {
    /// Queues `event` for every live subscriber that wants it and is not
    /// replaying (a replay reaches it in the backlog).
    pub fn broadcast(&mut self, event: &Event, cap: usize) -> Broadcast {
        let mut done = Broadcast::default();
        for key in self.streams.index.candidates(&event.topics) {
            let Some(conn) = self.slab.get_mut(key) else {
                continue;
            };
            if conn.last_event_seen == event.seq {
                continue;
            }
            conn.last_event_seen = event.seq;
            let State::Stream(stream) = &mut conn.state else {
                continue;
            };
            if stream.replay.is_some() || !stream.wants(event) {
                continue;
            }
            let frame = framed(stream, &event.line, Some(&event.cursor));
            match queue_frame(conn, key, frame, cap, &mut self.turn) {
                Queued::Yes => done.delivered += 1,
                Queued::Dropped => done.dropped += 1,
                Queued::No => {}
            }
        }
        done
    }

    /// Queues more of the backlog for a replaying subscriber, until its
    /// output passes the high-water mark (resumed when it drains) or it has
    /// caught up with `last_seq` (then it goes live).
    pub fn pump_replay(
        &mut self,
        key: usize,
        backlog: &Backlog,
        last_seq: u64,
        now: f64,
        cap: usize,
    ) -> Replayed {
        let Some(conn) = self.slab.get_mut(key) else {
            return Replayed::Done;
        };
        let State::Stream(stream) = &mut conn.state else {
            return Replayed::Done;
        };
        let Some(mut next) = stream.replay.map(NonZeroU64::get) else {
            return Replayed::Done;
        };
        let mut budget = REPLAY_BUDGET;
        while next <= last_seq {
            if conn.out.queued() >= REPLAY_HIGH_WATER.min(cap / 2) {
                conn.paused = true;
                break;
            }
            if budget == 0 {
                break;
            }
            let Some(event) = backlog.get(next) else {
                warn!(
                    "dropping subscriber {} ({key}): its replay fell behind the backlog",
                    conn.peer
                );
                self.turn.doom(key, conn);
                return Replayed::FellBehind;
            };
            if stream.wants(event) && backlog.is_fresh(event, now) {
                conn.out
                    .push(framed(stream, &event.line, Some(&event.cursor)));
            }
            next += 1;
            budget -= 1;
        }
        if next > last_seq {
            stream.replay = None;
            conn.last_event_seen = last_seq;
        } else {
            stream.replay = NonZeroU64::new(next);
        }
        let more = budget == 0 && stream.replay.is_some();
        self.turn.mark_dirty(key, conn);
        if more {
            self.turn.rerun(key, conn);
        }
        Replayed::Done
    }

    /// Queues the keep-alive to every subscriber; returns how many were
    /// dropped for it (their queue was full).
    pub fn ping_all(&mut self, ping: &Ping, cap: usize) -> u64 {
        let mut dropped = 0;
        for (key, conn) in self.slab.iter_mut() {
            if ping_conn(conn, key, ping, cap, &mut self.turn) == Queued::Dropped {
                dropped += 1;
            }
        }
        dropped
    }

    /// Queues the keep-alive to one subscriber (the last one of a stream
    /// that is ending); false if that dropped it.
    pub fn ping(&mut self, key: usize, ping: &Ping, cap: usize) -> bool {
        let Some(conn) = self.slab.get_mut(key) else {
            return true;
        };
        ping_conn(conn, key, ping, cap, &mut self.turn) != Queued::Dropped
    }

    /// Queues an answer to the client (a WebSocket pong) under the same cap
    /// as events, so a client that sends but does not read is dropped;
    /// false if it was.
    pub fn queue_reply(&mut self, key: usize, frame: Frame, cap: usize) -> bool {
        let Some(conn) = self.slab.get_mut(key) else {
            return true;
        };
        queue_frame(conn, key, frame, cap, &mut self.turn) != Queued::Dropped
    }

    /// Ends a stream the way its framing ends (the last chunk; a gzip
    /// stream's final block and trailer first; a WebSocket's close frame
    /// with `close`), then closes once that is written. Anything else just
    /// closes after its output.
    pub fn end_stream(&mut self, key: usize, close: (u16, &str)) {
        let ending = match self.slab.get(key).map(|c| &c.state) {
            Some(State::Stream(stream)) => ending(stream, close),
            _ => Vec::new(),
        };
        if !ending.is_empty() {
            self.queue(key, ending.into());
        }
        self.close_after_flush(key);
    }
}

/// Queues `ping` framed for `conn`, if it is a stream (a gzip stream's
/// trailer counts it).
fn ping_conn(conn: &mut Conn, key: usize, ping: &Ping, cap: usize, turn: &mut Turn) -> Queued {
    let State::Stream(stream) = &mut conn.state else {
        return Queued::No;
    };
    let frame = if stream.framing.is_gzip() {
        let (frame, part) = ping.gzip_frame(stream.framing);
        stream.gzip.append(&part);
        frame
    } else {
        ping.frame(stream.framing)
    };
    queue_frame(conn, key, frame, cap, turn)
}

/// The frame of `line` for this subscriber; a gzip stream's trailer
/// counts it.
#[inline]
fn framed(stream: &mut Stream, line: &Line, id: Option<&str>) -> Frame {
    if stream.framing.is_gzip() {
        return gzip_framed(stream, line, id);
    }
    line.frame(stream.framing, id)
}

/// Out of line, so a plain delivery's path stays as short as it was.
#[inline(never)]
fn gzip_framed(stream: &mut Stream, line: &Line, id: Option<&str>) -> Frame {
    let (frame, part) = line.gzip_frame(stream.framing, id);
    stream.gzip.append(&part);
    frame
}

/// The bytes that end `stream` cleanly.
fn ending(stream: &Stream, (code, reason): (u16, &str)) -> Vec<u8> {
    let framing = stream.framing;
    if framing.is_websocket() {
        return websocket::close_frame(code, reason);
    }
    let mut out = Vec::new();
    if framing.is_gzip() {
        let end = stream.gzip.end();
        if framing.chunked {
            out.extend_from_slice(&http::chunk(&end));
        } else {
            out.extend_from_slice(&end);
        }
    }
    if framing.chunked {
        out.extend_from_slice(http::LAST_CHUNK);
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queued {
    Yes,
    /// Doomed already.
    No,
    /// The frame would pass the cap: the subscriber was dropped.
    Dropped,
}

/// Appends a frame to a subscriber's queue, or drops the subscriber if that
/// would pass its cap.
fn queue_frame(conn: &mut Conn, key: usize, frame: Frame, cap: usize, turn: &mut Turn) -> Queued {
    if conn.doomed {
        return Queued::No;
    }
    // One frame always fits an empty queue, however large it is.
    if !conn.out.is_empty() && conn.out.queued() + frame.len() > cap {
        warn!(
            "dropping slow subscriber {} ({key}): {} bytes queued, limit {cap}",
            conn.peer,
            conn.out.queued()
        );
        turn.doom(key, conn);
        return Queued::Dropped;
    }
    conn.out.push(frame);
    turn.mark_dirty(key, conn);
    Queued::Yes
}
