//! A connection's input: how much it may read, what it received, the next
//! request in its buffer, and the input budget (`server.max_input_bytes`)
//! over every connection's request buffers.
//!
//! Requests are taken from the buffer one at a time, in order
//! (pipelining), and not at all while the client leaves more than
//! `RESPONSE_HIGH_WATER` of responses unread. What a request leaves in
//! the buffers is counted by [`ConnTable::count_input`], the one place that
//! changes `held_input` and the total.

use log::debug;

use super::{BodyState, ConnTable, State};
use crate::http::{self, HttpError, RequestHead};
use crate::websocket::frames::{self, Fail, Incoming};

/// Unread input kept per connection beyond one request head.
pub(crate) const MAX_INPUT: usize = 64 * 1024;
/// A request whose head or body needs more buffer than this is "large":
/// large requests wait for nothing but are answered 503 when the input
/// budget is spent; smaller ones always go through.
pub const SMALL_REQUEST: usize = 16 * 1024;
/// Output (responses to pipelined requests) above which a connection's
/// requests are not processed until the client reads.
pub(super) const RESPONSE_HIGH_WATER: usize = 256 * 1024;

/// The request limits of `server` in force.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_headers: usize,
    pub max_head_size: usize,
    pub max_payload_size: usize,
}

/// What the connection's buffer holds next.
// Taken once per request and matched at once (`next_request` is inlined
// into its one caller): boxing the head would cost an allocation per
// request for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Step {
    /// Nothing to do now: no complete head yet, a body still arriving, a
    /// request parked, a stream, closing, doomed, or paused.
    Wait,
    /// A complete request head, taken from the buffer.
    Head(RequestHead),
    /// The head is over `max_head_size`.
    HeadTooLarge,
    /// The head (or a chunked body) cannot be parsed.
    Bad(HttpError),
    /// A publish body is complete; the connection reads a head next.
    Body(Box<BodyState>),
    /// The body is over `max_payload_size`.
    BodyTooLarge,
    /// A subscriber replaying the backlog: queue more of it.
    Replay,
    /// A WebSocket subscriber sent a control frame.
    WebSocket(Incoming),
    /// A WebSocket subscriber broke the protocol (or sent data): close
    /// with this code.
    WebSocketFail(Fail),
}

/// What counting a connection's buffers against the budget found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputCount {
    Within,
    /// A large request took the total past the budget.
    OverBudget,
}

impl ConnTable {
    /// Bytes held in request buffers over all connections.
    pub fn input_bytes(&self) -> usize {
        self.input_bytes
    }

    /// How many bytes the connection may read now: 0 when it should not
    /// read (gone, closing, paused, waiting for its turn, or its input is
    /// full), else at most `scratch`.
    #[inline]
    pub fn read_room(&self, key: usize, scratch: usize, max_head_size: usize) -> usize {
        let Some(conn) = self.slab.get(key) else {
            return 0;
        };
        if conn.read_closed || conn.paused || conn.to_rerun {
            return 0;
        }
        match &conn.state {
            // A WebSocket's frames are parsed from the buffer, kept small.
            State::Stream(s) if s.framing.is_websocket() => (MAX_INPUT + 1)
                .saturating_sub(conn.inbuf.len())
                .min(scratch),
            State::Stream(_) | State::Closing => scratch,
            State::Authenticating(_) if conn.inbuf.len() >= MAX_INPUT => 0,
            _ => {
                let limit = max_head_size.max(MAX_INPUT);
                (limit + 1).saturating_sub(conn.inbuf.len()).min(scratch)
            }
        }
    }

    /// Bytes read from the connection's socket: kept for the request
    /// parser (or a WebSocket's frame parser), or (a stream, a closing
    /// connection) counted and dropped, closing a connection that sends
    /// too much of that.
    #[inline]
    pub fn receive(&mut self, key: usize, bytes: &[u8]) {
        let Some(conn) = self.slab.get_mut(key) else {
            return;
        };
        match &conn.state {
            State::Stream(s) if s.framing.is_websocket() => conn.inbuf.extend_from_slice(bytes),
            State::Stream(_) | State::Closing => {
                // Ignored, but bounded: a subscriber has nothing to say.
                conn.stream_input += bytes.len();
                if conn.stream_input > MAX_INPUT * 16 {
                    debug!("{key}: too much input on a stream; closing");
                    self.turn.doom(key, conn);
                }
            }
            _ => conn.inbuf.extend_from_slice(bytes),
        }
    }

    /// The peer will send nothing more.
    #[inline]
    pub fn set_read_closed(&mut self, key: usize) {
        if let Some(conn) = self.slab.get_mut(key) {
            conn.read_closed = true;
        }
    }

    /// Counts the connection's request buffers against the budget of
    /// `max_input_bytes`. `OverBudget`: this is a large request and the
    /// total is past the budget (the caller refuses it, and its buffers go
    /// with the refusal).
    #[inline]
    pub fn count_input(&mut self, key: usize, max_input_bytes: usize) -> InputCount {
        let Some(conn) = self.slab.get_mut(key) else {
            return InputCount::Within;
        };
        let body = match &conn.state {
            State::Body(b) => b.body.capacity(),
            _ => 0,
        };
        let held = conn.inbuf.capacity() + body;
        self.input_bytes = self.input_bytes - conn.held_input + held;
        conn.held_input = held;
        if held <= SMALL_REQUEST || self.input_bytes <= max_input_bytes {
            return InputCount::Within;
        }
        debug!(
            "{key}: input budget spent ({} bytes held, {held} by this request)",
            self.input_bytes
        );
        InputCount::OverBudget
    }

    /// Takes the next request (or the next piece of work) from the
    /// connection's buffer.
    #[inline] // on every request; kept inlined (see `OutQueue::push`)
    pub fn next_request(&mut self, key: usize, limits: RequestLimits) -> Step {
        let Some(conn) = self.slab.get_mut(key) else {
            return Step::Wait;
        };
        if conn.doomed || conn.paused {
            return Step::Wait;
        }
        if conn.out.queued() > RESPONSE_HIGH_WATER {
            // The client is not reading its responses: stop until it does.
            conn.paused = true;
            return Step::Wait;
        }
        match &mut conn.state {
            State::Head => {
                if conn.inbuf.is_empty() {
                    // Idle connections keep at most a small buffer (reused
                    // request after request).
                    if conn.inbuf.capacity() > 4096 {
                        conn.inbuf = Vec::new();
                    }
                    return Step::Wait;
                }
                match http::parse_head(&conn.inbuf, limits.max_headers) {
                    Ok(None) if conn.inbuf.len() > limits.max_head_size => Step::HeadTooLarge,
                    Ok(None) => Step::Wait,
                    Ok(Some((head, used))) => {
                        conn.inbuf.drain(..used);
                        Step::Head(head)
                    }
                    Err(e) => Step::Bad(e),
                }
            }
            State::Body(body) => {
                let max = limits.max_payload_size;
                match body.decoder.feed(&conn.inbuf, &mut body.body, max) {
                    Ok(progress) => {
                        conn.inbuf.drain(..progress.consumed);
                        if conn.inbuf.is_empty() && conn.inbuf.capacity() > SMALL_REQUEST {
                            // The bytes moved to the body: do not hold
                            // them twice.
                            conn.inbuf = Vec::new();
                        }
                        if !progress.done {
                            return Step::Wait;
                        }
                        match self.streams.transition(key, conn, State::Head) {
                            State::Body(body) => Step::Body(body),
                            _ => Step::Wait,
                        }
                    }
                    Err(HttpError::BodyTooLarge) => Step::BodyTooLarge,
                    Err(e) => Step::Bad(e),
                }
            }
            State::Stream(stream) if stream.framing.is_websocket() => {
                let replaying = stream.replay.is_some();
                match frames::parse(&conn.inbuf, stream.framing.compressed) {
                    Ok(Some((frame, used))) => {
                        conn.inbuf.drain(..used);
                        if conn.inbuf.is_empty() {
                            // An idle WebSocket holds no buffer.
                            conn.inbuf = Vec::new();
                        }
                        Step::WebSocket(frame)
                    }
                    Ok(None) if replaying => Step::Replay,
                    Ok(None) => Step::Wait,
                    Err(fail) => {
                        conn.inbuf = Vec::new();
                        Step::WebSocketFail(fail)
                    }
                }
            }
            State::Stream(stream) if stream.replay.is_some() => {
                conn.inbuf = Vec::new();
                Step::Replay
            }
            // Input waits (bounded by the reader) until LDAP answers, or
            // the cluster's stream takes the event.
            State::Authenticating(_) | State::Appending(_) => Step::Wait,
            State::Stream(_) | State::Closing => {
                if conn.inbuf.len() > MAX_INPUT {
                    conn.inbuf.clear();
                }
                Step::Wait
            }
        }
    }
}
