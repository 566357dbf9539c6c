//! What the hub does when time passes: the ping tick (and the status
//! page's sample), the backlog's age limit and its storage file's resync,
//! and the connection deadlines the table reports due (a late request, a
//! late LDAP or cluster answer, a stalled socket, a stream's token that
//! expires).
//!
//! Uses: `conns` (its deadlines), `history`, `stats`, `activity`.

use log::{debug, warn};

use super::table::{Due, State};
use super::Hub;
use crate::event;
use crate::stats::Drop;

impl Hub {
    /// Runs everything that is due.
    pub fn run_timers(&mut self) {
        let now = self.clock.now();
        let clock = &self.clock;
        self.history.prune(|| clock.epoch());
        self.history.resync_if_needed();
        if self.next_ping <= now {
            let (epoch, events) = (self.clock.epoch(), self.stats.published_total());
            self.activity.sample(epoch, events, self.stats.deliveries);
            self.send_pings();
            self.next_ping = now + self.config.server.ping_interval;
        }
        let write_timeout = self.config.server.write_timeout;
        while let Some(due) = self.conns.pop_due(now, write_timeout) {
            match due {
                Due::Request { key, serial } => self.request_late(key, serial),
                Due::Stall { key } => {
                    let Some(conn) = self.conns.get(key) else {
                        continue;
                    };
                    warn!(
                        "dropping slow subscriber {} ({key}): nothing written for {write_timeout:?}, {} bytes queued",
                        conn.peer(),
                        conn.queued()
                    );
                    self.conns.doom(key);
                    self.stats.dropped(Drop::WriteTimeout);
                }
                Due::Expired { key } => self.token_expired(key),
            }
        }
    }

    /// The token a stream was opened with has expired: a last ping (so the
    /// client sees the stream was alive to the end), the stream's end,
    /// and the connection closes once that is written.
    fn token_expired(&mut self, key: usize) {
        if !matches!(
            self.conns.get(key).map(|c| c.state()),
            Some(State::Stream(_))
        ) {
            return;
        }
        debug!("{key}: its token expired: ending the stream");
        let cap = self.config.server.max_queued_bytes;
        if self.conns.ping(key, &event::ping(self.clock.epoch()), cap) {
            // A WebSocket's close: 1008, policy violation (RFC 6455 §7.4.1).
            self.conns.end_stream(key, (1008, "token expired"));
        } else {
            self.stats.dropped(Drop::QueueFull);
        }
    }

    /// The request of connection `key` (or the answer it waits for) is
    /// late: what that means depends on where the connection is.
    fn request_late(&mut self, key: usize, serial: u64) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        match conn.state() {
            State::Authenticating(_) => {
                warn!("{key}: no LDAP answer in time; continuing without private access");
                self.resume_parked(key, serial, None);
            }
            State::Appending(token) => {
                let token = *token;
                self.append_timed_out(key, token);
            }
            State::Head | State::Body(_) => {
                debug!("{key}: request timeout");
                self.conns.doom(key);
            }
            _ => {}
        }
    }
}
