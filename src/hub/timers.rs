//! The hub's timers: the ping tick, the backlog's age limit, and two
//! deadlines per connection (the request must arrive in time; a stalled
//! socket is dropped), kept in one heap and run once per turn.
//!
//! A timer is `(deadline, kind, key, serial)`. Stale entries (a closed or
//! reused connection, a deadline that moved) are skipped when popped: the
//! connection's own fields say what is due, the heap only when to look.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use log::{debug, warn};

use super::Hub;
use crate::backlog;
use crate::conn::State;

/// The per-connection deadlines kept in the heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    /// The request being read (or the LDAP answer awaited) is due.
    Request,
    /// The socket has taken nothing for `write_timeout`.
    Stall,
}

#[derive(Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Kind, usize, u64)>>,
}

impl Timers {
    pub(super) fn arm(&mut self, deadline: Instant, kind: Kind, key: usize, serial: u64) {
        self.heap.push(Reverse((deadline, kind, key, serial)));
    }

    pub(super) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, ..))| *t)
    }

    fn pop_due(&mut self, now: Instant) -> Option<(Kind, usize, u64)> {
        match self.heap.peek() {
            Some(Reverse((t, ..))) if *t <= now => {
                let Reverse((_, kind, key, serial)) = self.heap.pop()?;
                Some((kind, key, serial))
            }
            _ => None,
        }
    }
}

impl Hub {
    /// (Re)starts the deadline for the request being read.
    pub(super) fn set_request_deadline(&mut self, key: usize, now: Instant) {
        let timeout = self.config.server.request_timeout;
        self.set_deadline(key, now + timeout);
    }

    /// Sets the connection's request deadline and makes sure a timer will
    /// look at it.
    pub(super) fn set_deadline(&mut self, key: usize, deadline: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.request_deadline = Some(deadline);
        if !conn.request_timer_armed {
            conn.request_timer_armed = true;
            self.timers.arm(deadline, Kind::Request, key, conn.serial);
        }
    }

    /// Drops events past `max_age`, here and on disk.
    pub(super) fn prune_backlog(&mut self) {
        if self.backlog.is_empty() {
            return;
        }
        let evicted = self.backlog.prune(self.clock.epoch());
        if let Some(p) = &mut self.persister {
            p.evict(evicted);
        }
    }

    /// Runs everything that is due.
    pub fn run_timers(&mut self) {
        let now = self.clock.now();
        self.prune_backlog();
        if let Some(p) = &mut self.persister {
            if p.needs_resync() {
                let backlog = &self.backlog;
                p.resync(|| backlog.iter().map(|e| backlog::storage_line(e)).collect());
            }
        }
        if self.next_ping <= now {
            let (epoch, events) = (self.clock.epoch(), self.stats.published_total());
            self.activity.sample(epoch, events, self.stats.deliveries);
            self.send_pings();
            self.next_ping = now + self.config.server.ping_interval;
        }
        while let Some((kind, key, serial)) = self.timers.pop_due(now) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.serial != serial {
                continue;
            }
            match kind {
                Kind::Request => {
                    conn.request_timer_armed = false;
                    let Some(due) = conn.request_deadline else {
                        continue;
                    };
                    if due > now {
                        conn.request_timer_armed = true;
                        self.timers.arm(due, kind, key, serial);
                    } else if matches!(conn.state, State::Authenticating(_)) {
                        warn!("{key}: no LDAP answer in time; continuing without private access");
                        self.resume_parked(key, serial, None);
                    } else if let State::Appending(_token) = conn.state {
                        #[cfg(feature = "cluster")]
                        self.append_timed_out(key, _token);
                    } else if matches!(conn.state, State::Head | State::Body(_)) {
                        debug!("{key}: request timeout");
                        self.turn.doom(key, conn);
                    }
                }
                Kind::Stall => {
                    conn.stall_timer_armed = false;
                    if conn.out.is_empty() {
                        continue;
                    }
                    let due = conn.last_progress + self.config.server.write_timeout;
                    if due > now {
                        conn.stall_timer_armed = true;
                        self.timers.arm(due, kind, key, serial);
                    } else {
                        warn!(
                            "dropping slow subscriber {} ({key}): nothing written for {:?}, {} bytes queued",
                            conn.peer,
                            self.config.server.write_timeout,
                            conn.out.queued()
                        );
                        self.turn.doom(key, conn);
                        self.stats.dropped(crate::stats::Drop::WriteTimeout);
                    }
                }
            }
        }
    }
}
