//! Per-connection deadlines: the request being read (or the answer a
//! parked request awaits) is due, a socket has taken nothing for the
//! write timeout, or the token a stream was opened with expires. One heap of `(deadline, kind, key, serial)`; the
//! connection's own fields say what is due, the heap only when to look,
//! so stale entries (a closed or reused connection, a deadline that moved)
//! are skipped when popped.
//!
//! Invariants: a connection with a request deadline has a request timer
//! armed at or before it, and `request_timer` is the earliest one armed;
//! a stream whose token expires has an expiry timer armed at that moment
//! (`start_stream`; a connection is a stream once, so its serial names it).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::{Conn, ConnTable, State};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Request,
    Stall,
    Expiry,
}

/// The timers armed for connections.
#[derive(Default)]
pub(super) struct Heap {
    heap: BinaryHeap<Reverse<(Instant, Kind, usize, u64)>>,
}

impl Heap {
    fn arm(&mut self, deadline: Instant, kind: Kind, key: usize, serial: u64) {
        self.heap.push(Reverse((deadline, kind, key, serial)));
    }

    /// Sets the connection's request deadline (replacing any earlier one)
    /// and makes sure a timer looks at it in time.
    #[inline]
    pub(super) fn set_request(&mut self, key: usize, conn: &mut Conn, deadline: Instant) {
        conn.request_deadline = Some(deadline);
        if conn.request_timer.is_none_or(|armed| armed > deadline) {
            conn.request_timer = Some(deadline);
            self.arm(deadline, Kind::Request, key, conn.serial);
        }
    }

    /// Arms the end of a stream whose token expires at `until`.
    pub(super) fn arm_expiry(&mut self, key: usize, serial: u64, until: Instant) {
        self.arm(until, Kind::Expiry, key, serial);
    }

    /// Arms the stall check of a connection whose socket would block.
    pub(super) fn arm_stall(&mut self, key: usize, conn: &mut Conn, write_timeout: Duration) {
        if !conn.stall_timer_armed {
            conn.stall_timer_armed = true;
            let deadline = conn.last_progress + write_timeout;
            self.arm(deadline, Kind::Stall, key, conn.serial);
        }
    }
}

/// A connection deadline that has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The request (or the answer its connection awaits) is late; what
    /// that means depends on the connection's state.
    Request { key: usize, serial: u64 },
    /// The socket has taken nothing for `write_timeout` with output queued.
    Stall { key: usize },
    /// The token this stream was opened with has expired.
    Expired { key: usize },
}

impl ConnTable {
    /// Sets the connection's request deadline (replacing any earlier one)
    /// and makes sure a timer looks at it in time.
    #[inline]
    pub fn set_deadline(&mut self, key: usize, deadline: Instant) {
        if let Some(conn) = self.slab.get_mut(key) {
            self.deadlines.set_request(key, conn, deadline);
        }
    }

    /// The nearest moment a connection deadline may be due.
    #[inline]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.heap.peek().map(|Reverse((t, ..))| *t)
    }

    /// The next connection deadline that has passed by `now`, if any.
    /// Timers for deadlines that moved later are re-armed on the way.
    pub fn pop_due(&mut self, now: Instant, write_timeout: Duration) -> Option<Due> {
        loop {
            let (at, kind, key, serial) = match self.deadlines.heap.peek() {
                Some(Reverse(entry)) if entry.0 <= now => *entry,
                _ => return None,
            };
            self.deadlines.heap.pop();
            let Some(conn) = self.slab.get_mut(key) else {
                continue;
            };
            if conn.serial != serial {
                continue;
            }
            match kind {
                Kind::Request => {
                    if conn.request_timer != Some(at) {
                        // Superseded by an earlier timer.
                        continue;
                    }
                    conn.request_timer = None;
                    let Some(due) = conn.request_deadline else {
                        continue;
                    };
                    if due > now {
                        conn.request_timer = Some(due);
                        self.deadlines.arm(due, kind, key, serial);
                        continue;
                    }
                    conn.request_deadline = None;
                    return Some(Due::Request { key, serial });
                }
                Kind::Stall => {
                    conn.stall_timer_armed = false;
                    if conn.out.is_empty() {
                        continue;
                    }
                    let due = conn.last_progress + write_timeout;
                    if due > now {
                        conn.stall_timer_armed = true;
                        self.deadlines.arm(due, kind, key, serial);
                        continue;
                    }
                    return Some(Due::Stall { key });
                }
                Kind::Expiry => {
                    // One stream per connection: the serial names it.
                    if matches!(&conn.state, State::Stream(_)) {
                        return Some(Due::Expired { key });
                    }
                }
            }
        }
    }
}
