//! The hub: everything the server knows, and what happens to it. It makes
//! no system calls on sockets: the reactor hands it the bytes it read and
//! writes out what the hub queued, so the hub can be driven in-process by
//! tests (`tests.rs`).
//!
//! Its parts, each owning its state and keeping its invariants:
//! - `conns` (`table/`): every connection, the topic index and subscriber
//!   count, the turn's lists, the per-connection deadlines, the input
//!   budget; the only code that writes a connection's fields;
//! - `history` (`history.rs`): the newest sequence number, the backlog and
//!   its storage file;
//! - `acl`, `tokens` and the feeds (`ldap`, `sqs`, `cluster`): who may do
//!   what, and the helper threads' ends;
//! - `stats` and `activity`: what is counted, for `/metrics` and the
//!   status page.
//!
//! The files that `impl Hub` each say which parts they use: `requests.rs`
//! (what each request gets), `fanout.rs` (accepting an event),
//! `auth.rs` (credentials, parking for LDAP), `timers.rs`, `cluster/`,
//! `admin.rs`.
//!
//! What happens to a published event (README "Layout" has it step by
//! step): [`Hub::received`] → [`Hub::process_input`] →
//! `ConnTable::next_request` (the head) → `requests::dispatch` →
//! `begin_publish` (topics, credentials) → `continue_publish` (who may
//! publish; `State::Body`) → `next_request` (the body, this turn or a later
//! one) → `finish_publish` (the JSON) → [`Hub::publish`] (the event line) →
//! `accept_event` (`History::keep`, then `ConnTable::broadcast`) → the 202
//! (`ConnTable::respond`) → [`Hub::flush`] at the end of the turn. On a
//! cluster node `publish` appends to the Redis stream instead, and
//! `accept_event` runs when the stream brings the event back
//! (`cluster/bus.rs`).

#[cfg(feature = "admin")]
mod admin;
mod auth;
mod cluster;
mod fanout;
mod history;
mod idempotency;
mod requests;
pub mod table;
#[cfg(test)]
mod tests;
mod timers;

use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use log::{debug, info};

use crate::clock::Clock;
use crate::config::Config;
use crate::event::Frame;
use crate::http::{self, ServerHeaders};
use crate::out_queue::{Flushed, OutQueue};

use crate::feeds::ldap::Ldap;
use crate::feeds::sqs::Sqs;
use crate::stats::{self, Stats};
use crate::tokens::Tokens;
use crate::websocket;
pub use auth::AclFile;
pub use cluster::Cluster;
pub use history::History;
use table::{ConnTable, InputCount, RequestLimits, State};

/// Requests handled from one connection's buffer per turn.
const REQUEST_BUDGET: usize = 64;
/// How long stream endings may take to flush on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// What the hub is built from (`startup.rs` starts the helper threads and
/// hands their ends over).
pub struct HubParts {
    pub config: Config,
    pub acl: AclFile,
    /// `clients.tokens`' verifier, its key loaded.
    pub tokens: Option<Tokens>,
    pub ldap: Option<Ldap>,
    pub history: History,
    /// Events taken from SQS queues by the poller threads.
    pub sqs: Option<Sqs>,
    /// The Redis stream shared with the other nodes (`cluster:`).
    pub cluster: Option<Cluster>,
    pub max_connections: usize,
    pub clock: Box<dyn Clock>,
}

/// What a SIGHUP reload runs with next (`setup::reload` builds it).
pub struct Reloaded {
    /// The running value for every key that needs a restart.
    pub config: Config,
    pub max_connections: usize,
    /// The token verifier with its key read anew; `None`: the new key
    /// could not be loaded (logged), so the running one stays, and so
    /// does `config.clients.tokens`.
    pub tokens: Option<Option<Tokens>>,
}

/// The answer to a new connection.
pub enum Admission {
    /// Taken on under this key.
    Open(usize),
    /// Over the connection limit: send these bytes (a 503) and close.
    Refused(Vec<u8>),
}

/// The server's state; see the module documentation.
pub struct Hub {
    config: Config,
    server_name: String,
    clock: Box<dyn Clock>,
    conns: ConnTable,
    max_connections: usize,
    /// Requests read so far (the `X-Requests` header).
    requests: u64,
    history: History,
    acl: AclFile,
    /// The ACL file in force is the one on disk (false after a failed
    /// reload): `/readyz` says so.
    acl_ok: bool,
    tokens: Option<Tokens>,
    ldap: Option<Ldap>,
    sqs: Option<Sqs>,
    cluster: Option<Cluster>,
    next_ping: Instant,
    shutdown_deadline: Option<Instant>,
    /// Where responses are written before they are queued (reused).
    response_buf: Vec<u8>,
    stats: Stats,
    /// The status page's chart samples and topic counts.
    activity: stats::Activity,
    /// The `Idempotency-Key`s of recent events (`idempotency.rs`).
    idempotency: idempotency::Window,
}

impl Hub {
    pub fn new(parts: HubParts) -> Hub {
        let now = parts.clock.now();
        Hub {
            activity: stats::Activity::new(parts.clock.epoch()),
            acl_ok: true,
            idempotency: idempotency::Window::new(idempotency::capacity(&parts.config)),
            server_name: format!("pubsubd/{}", env!("CARGO_PKG_VERSION")),
            next_ping: now + parts.config.server.ping_interval,
            config: parts.config,
            clock: parts.clock,
            conns: ConnTable::new(),
            max_connections: parts.max_connections,
            requests: 0,
            history: parts.history,
            acl: parts.acl,
            tokens: parts.tokens,
            ldap: parts.ldap,
            sqs: parts.sqs,
            cluster: parts.cluster,
            shutdown_deadline: None,
            response_buf: Vec::with_capacity(256),
            stats: Stats::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Live subscribers.
    pub fn subscribers(&self) -> usize {
        self.conns.subscribers()
    }

    /// Open connections, subscribers included.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// What has been counted so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// The values every response carries.
    fn headers(&self) -> ServerHeaders<'_> {
        ServerHeaders {
            server: &self.server_name,
            subscribers: self.conns.subscribers(),
            requests: self.requests,
            cors: None,
        }
    }

    /// The values a response to connection `key` carries: CORS headers
    /// too when its request came from an allowed origin.
    fn headers_for(&self, key: usize) -> ServerHeaders<'_> {
        let cors = self
            .conns
            .get(key)
            .and_then(|c| c.cors())
            .and_then(|i| self.config.clients.cors_origins.get(usize::from(i)))
            .map(String::as_str);
        ServerHeaders {
            cors,
            ..self.headers()
        }
    }

    /// Which `clients.cors_origins` entry allows `origin`, if any.
    fn cors_match(&self, origin: Option<&str>) -> Option<u16> {
        let origin = origin?.trim();
        let i = self
            .config
            .clients
            .cors_origins
            .iter()
            .position(|o| o == "*" || o.eq_ignore_ascii_case(origin))?;
        u16::try_from(i).ok()
    }

    /// The request limits in force.
    fn request_limits(&self) -> RequestLimits {
        let server = &self.config.server;
        RequestLimits {
            max_headers: server.max_headers,
            max_head_size: server.max_head_size,
            max_payload_size: server.max_payload_size,
        }
    }

    /// Takes on a new connection from `peer` (on the admin listener if
    /// `admin`), or refuses it when full: admin clients count against the
    /// same limit as any other.
    pub fn open(&mut self, peer: IpAddr, admin: bool) -> Admission {
        if self.conns.len() >= self.max_connections {
            let body = "Too many connections, please try again later.\n";
            let mut response = Vec::new();
            http::response(&mut response, 503, Some(body), &self.headers(), true);
            return Admission::Refused(response);
        }
        let now = self.clock.now();
        let key = self.conns.open(peer, admin, now);
        self.conns
            .set_deadline(key, now + self.config.server.request_timeout);
        Admission::Open(key)
    }

    /// Drops a connection the reactor could not set up (no bytes were
    /// exchanged, so nothing else refers to it).
    pub fn forget(&mut self, key: usize) {
        self.conns.remove(key);
    }

    /// How many bytes the connection may read now: 0 when it should not
    /// read (gone, closing, paused, waiting for its turn, or its input is
    /// full), else at most `scratch`.
    pub fn read_room(&self, key: usize, scratch: usize) -> usize {
        self.conns
            .read_room(key, scratch, self.config.server.max_head_size)
    }

    /// Bytes read from the connection's socket.
    pub fn received(&mut self, key: usize, bytes: &[u8]) {
        self.conns.receive(key, bytes);
        self.count_input(key);
    }

    /// Counts the connection's request buffers against the input budget;
    /// a large request that takes the total past it is answered 503 and
    /// its buffers are freed.
    fn count_input(&mut self, key: usize) {
        let budget = self.config.server.max_input_bytes;
        if self.conns.count_input(key, budget) == InputCount::OverBudget {
            self.shed(key);
            self.conns.count_input(key, budget);
        }
    }

    /// The peer will send nothing more: answer what it sent, then close.
    pub fn peer_closed(&mut self, key: usize) {
        self.conns.set_read_closed(key);
        self.process_input(key);
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        match conn.state() {
            State::Head | State::Body(_) | State::Authenticating(_) if !conn.is_paused() => {
                self.conns.close_after_flush(key)
            }
            State::Stream(_) => self.conns.doom(key),
            _ => {}
        }
    }

    /// The socket failed: close at the end of the turn.
    pub fn io_failed(&mut self, key: usize, what: &str, e: &io::Error) {
        debug!("{key}: {what}: {e}");
        self.conns.doom(key);
    }

    /// The socket can take bytes again: flush at the end of the turn.
    pub fn writable(&mut self, key: usize) {
        self.conns.mark_dirty(key);
    }

    /// The connection has work left over: it runs again next turn.
    pub fn rerun(&mut self, key: usize) {
        self.conns.rerun(key);
    }

    /// Whether some connection has work left over for the next turn.
    pub fn has_rerun(&self) -> bool {
        self.conns.has_rerun()
    }

    /// The connections with work left over, each taken off the list.
    pub fn take_rerun(&mut self) -> Vec<usize> {
        self.conns.take_rerun()
    }

    /// Writes every connection's queued output once, through `write` (the
    /// reactor's socket writes; a test's buffer).
    pub fn flush(&mut self, write: impl FnMut(usize, &mut OutQueue) -> io::Result<Flushed>) {
        self.send_cluster_appends();
        let now = self.clock.now();
        let write_timeout = self.config.server.write_timeout;
        self.stats.bytes_sent += self.conns.flush(now, write_timeout, write);
    }

    /// Removes the connections doomed this turn; the reactor closes their
    /// sockets.
    pub fn close_doomed(&mut self) -> Vec<usize> {
        self.conns.close_doomed()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown_deadline.is_some()
    }

    /// Ends every stream cleanly; the connections close once flushed. A
    /// publish waiting for the cluster's stream keeps waiting (within the
    /// grace period) for its answer: its event may already be stored, so
    /// its publisher must hear whether it was.
    pub fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        info!("shutting down: ending {} streams", self.conns.subscribers());
        self.shutdown_deadline = Some(self.clock.now() + SHUTDOWN_GRACE);
        for key in self.conns.keys() {
            let Some(conn) = self.conns.get(key) else {
                continue;
            };
            match conn.state() {
                State::Appending(_) => continue,
                // The last chunk, a gzip trailer, a WebSocket's close.
                State::Stream(_) => {
                    let close = (websocket::CLOSE_GOING_AWAY, "server shutting down");
                    self.conns.end_stream(key, close);
                }
                _ => self.conns.close_after_flush(key),
            }
        }
    }

    /// After `begin_shutdown`: true once every connection is gone or the
    /// grace period is over; the backlog is then written out.
    pub fn shutdown_complete(&mut self) -> bool {
        let Some(deadline) = self.shutdown_deadline else {
            return false;
        };
        if !self.conns.is_empty() && self.clock.now() < deadline {
            return false;
        }
        info!("shut down with {} connections left", self.conns.len());
        self.history.write_out(SHUTDOWN_GRACE);
        true
    }

    /// The nearest moment the hub has something to do, if any.
    pub fn next_deadline(&self) -> Instant {
        let mut next = self.next_ping;
        if let Some(t) = self.conns.next_deadline() {
            next = next.min(t);
        }
        if let Some(t) = self.shutdown_deadline {
            next = next.min(t);
        }
        next
    }

    /// A reloaded configuration (only keys that may change live differ):
    /// new limits apply to what happens next, the backlog is trimmed to its
    /// new limits, the ping tick moves to the new interval, and requests
    /// from now on are checked against the token key read anew (open
    /// streams keep theirs, and end at their own token's expiry).
    pub fn reconfigure(&mut self, next: Reloaded) {
        let (config, max_connections) = (next.config, next.max_connections);
        if let Some(tokens) = next.tokens {
            self.tokens = tokens;
        }
        let b = &config.server.backlog;
        self.history.set_limits(b.size, b.max_age, b.max_bytes);
        let now = self.clock.now();
        self.next_ping = self.next_ping.min(now + config.server.ping_interval);
        self.max_connections = max_connections;
        self.config = config;
        let clock = &self.clock;
        self.history.prune(|| clock.epoch());
    }

    /// A TLS handshake completed (or failed) on the reactor's side.
    pub fn count_tls_handshake(&mut self, ok: bool) {
        if ok {
            self.stats.tls_handshakes += 1;
        } else {
            self.stats.tls_handshake_failures += 1;
        }
    }

    /// The waker fired: take what the helper threads sent.
    pub fn on_wake(&mut self) {
        self.take_ldap_replies();
        self.drain_sqs();
        self.drain_cluster();
    }

    /// Publishes every event the SQS pollers have sent, exactly as a `PUT`
    /// to its `pubsub_path`.
    fn drain_sqs(&mut self) {
        let Some(feed) = &self.sqs else {
            return;
        };
        for (path, object) in feed.take() {
            let Ok(topics) = crate::topics::parse_topics(&path) else {
                log::warn!("sqs: message with unusable pubsub_path {path:?} skipped");
                continue;
            };
            let payload = crate::event::Payload::Object(object);
            self.publish(stats::Source::Sqs, &path, topics, payload);
        }
    }

    /// Queues raw bytes on a connection (used for `100 Continue` and the
    /// stream's head).
    fn queue(&mut self, key: usize, frame: Frame) {
        self.conns.queue(key, frame);
    }
}
