//! The hub: everything the server knows, and what happens to it. It owns
//! every connection's protocol state (`Conn`), the topic index and the
//! subscriber count, the backlog and its persister, the ACL and the LDAP
//! client, the timers and the per-turn lists. It makes no system calls on
//! sockets: the reactor hands it the bytes it read and writes out what the
//! hub queued, so the hub can be driven in-process by tests (`tests.rs`).
//!
//! What happens to a published event, in one call chain:
//! `Reactor::read_ready` → [`Hub::received`] → [`Hub::process_input`] →
//! `requests::dispatch` → `begin_publish` → `finish_publish` →
//! [`Hub::publish`] → `accept_event` (backlog, persister) → `broadcast`
//! (topic index → `queue_frame` per subscriber) → [`Hub::flush`] (the
//! reactor's writes at the end of the turn). With a `cluster` section,
//! `publish` appends the event to the Redis stream instead, and
//! `accept_event` runs when the stream delivers it back (`cluster.rs`).
//!
//! Invariants, each kept in one place:
//! - a connection is in the topic index ⇔ its state is `State::Stream` ⇔
//!   it is counted in `subscribers` (`Streams`);
//! - a key is on a per-turn list at most once, flagged on its `Conn`
//!   (`Turn`);
//! - a doomed connection queues and reads nothing more, and is removed
//!   from the table only by [`Hub::close_doomed`] at the end of the turn;
//! - `input_bytes` is the sum of every connection's `held_input`, updated
//!   by `count_input` and on removal (the global input budget).

#[cfg(feature = "admin")]
mod admin;
mod auth;
#[cfg(feature = "cluster")]
mod cluster;
mod fanout;
mod idempotency;
mod ldap;
mod requests;
#[cfg(test)]
mod tests;
mod timers;

use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use log::{debug, info};
use slab::Slab;

use crate::backlog::{self, Backlog};
use crate::clock::Clock;
use crate::config::Config;
use crate::conn::{Conn, Flushed, OutQueue, State, Stream};
use crate::event::Frame;
use crate::http::{self, ServerHeaders};
use crate::persist::Persister;
use crate::topics::TopicIndex;

use crate::stats::{self, Stats};
pub use auth::AclFile;
#[cfg(feature = "cluster")]
pub use cluster::Cluster;
pub use ldap::Ldap;
use timers::Timers;

#[cfg(feature = "sqs")]
use sqs_feed::SqsEvent;

/// The SQS pollers' ends the hub holds: their events and their counters.
#[cfg(feature = "sqs")]
pub struct SqsFeed {
    pub events: crossbeam_channel::Receiver<SqsEvent>,
    pub stats: std::sync::Arc<sqs_feed::FeedStats>,
}

/// Requests handled from one connection's buffer per turn.
const REQUEST_BUDGET: usize = 64;
/// Unread input kept per connection beyond one request head.
pub(crate) const MAX_INPUT: usize = 64 * 1024;
/// Output (responses to pipelined requests) above which a connection's
/// requests are not processed until the client reads.
const RESPONSE_HIGH_WATER: usize = 256 * 1024;
/// A request whose head or body needs more buffer than this is "large":
/// large requests wait for nothing but are answered 503 when the input
/// budget (`server.max_input_bytes`) is spent; smaller ones always go
/// through.
pub(crate) const SMALL_REQUEST: usize = 16 * 1024;
/// How long stream endings may take to flush on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// What the hub is built from; the reactor starts the helper threads
/// (LDAP, persister, feeds) and hands their ends over.
pub struct HubParts {
    pub config: Config,
    pub acl: AclFile,
    pub ldap: Option<Ldap>,
    pub backlog: Backlog,
    pub persister: Option<Persister>,
    /// Events taken from SQS queues by the poller threads.
    #[cfg(feature = "sqs")]
    pub sqs: Option<SqsFeed>,
    /// The Redis stream shared with the other nodes (`cluster:`).
    #[cfg(feature = "cluster")]
    pub cluster: Option<Cluster>,
    pub max_connections: usize,
    pub clock: Box<dyn Clock>,
}

/// The answer to a new connection.
pub enum Admission {
    /// Taken on under this key.
    Open(usize),
    /// Over the connection limit: send these bytes (a 503) and close.
    Refused(Vec<u8>),
}

/// The live subscribers: the topic index and their count, changed only
/// together with the connection's state.
#[derive(Default)]
struct Streams {
    index: TopicIndex,
    count: usize,
}

impl Streams {
    /// Makes `conn` a live subscriber.
    fn start(&mut self, key: usize, conn: &mut Conn, mut stream: Box<Stream>) {
        debug_assert!(!matches!(conn.state, State::Stream(_)));
        self.index.insert(key, &mut stream.sub);
        self.count += 1;
        conn.state = State::Stream(stream);
    }

    /// Moves `conn` to `next`; if it was a subscriber, it leaves the index.
    fn leave(&mut self, key: usize, conn: &mut Conn, next: State) {
        if let State::Stream(stream) = std::mem::replace(&mut conn.state, next) {
            self.index.remove(key, &stream.sub);
            self.count -= 1;
        }
    }
}

/// The connections with something to do at the end of this turn.
#[derive(Default)]
struct Turn {
    /// Output queued: flush.
    dirty: Vec<usize>,
    /// Work left over (a budget ran out, input resumed): run next turn.
    pending: Vec<usize>,
    /// Close without flushing.
    doomed: Vec<usize>,
}

impl Turn {
    fn mark_dirty(&mut self, key: usize, conn: &mut Conn) {
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(key);
        }
    }

    fn push_pending(&mut self, key: usize, conn: &mut Conn) {
        if !conn.pending {
            conn.pending = true;
            self.pending.push(key);
        }
    }

    fn doom(&mut self, key: usize, conn: &mut Conn) {
        if conn.doom() {
            self.doomed.push(key);
        }
    }
}

/// The server's state; see the module documentation.
pub struct Hub {
    config: Config,
    server_name: String,
    clock: Box<dyn Clock>,
    conns: Slab<Conn>,
    next_serial: u64,
    max_connections: usize,
    streams: Streams,
    requests: u64,
    /// The sequence number of the newest accepted event.
    last_seq: u64,
    backlog: Backlog,
    persister: Option<Persister>,
    acl: AclFile,
    ldap: Option<Ldap>,
    #[cfg(feature = "sqs")]
    sqs: Option<SqsFeed>,
    #[cfg(feature = "cluster")]
    cluster: Option<Cluster>,
    turn: Turn,
    timers: Timers,
    next_ping: Instant,
    shutdown_deadline: Option<Instant>,
    /// Where responses are written before they are queued (reused).
    response_buf: Vec<u8>,
    stats: Stats,
    /// The status page's chart samples and topic counts.
    activity: stats::Activity,
    /// When the hub started (epoch seconds).
    #[cfg_attr(not(feature = "admin"), allow(dead_code))]
    started: f64,
    /// The ACL file in force is the one on disk (false after a failed
    /// reload): `/readyz` says so.
    acl_ok: bool,
    /// Bytes held in request buffers over all connections (the sum of
    /// their `held_input`).
    input_bytes: usize,
    /// The `Idempotency-Key`s of recent events (`idempotency.rs`).
    idempotency: idempotency::Window,
}

impl Hub {
    pub fn new(parts: HubParts) -> Hub {
        let now = parts.clock.now();
        let started = parts.clock.epoch();
        Hub {
            activity: stats::Activity::default(),
            started,
            acl_ok: true,
            input_bytes: 0,
            idempotency: idempotency::Window::new(idempotency::capacity(&parts.config)),
            server_name: format!("pubsubd/{}", env!("CARGO_PKG_VERSION")),
            next_ping: now + parts.config.server.ping_interval,
            config: parts.config,
            clock: parts.clock,
            conns: Slab::new(),
            next_serial: 1,
            max_connections: parts.max_connections,
            streams: Streams::default(),
            requests: 0,
            last_seq: parts.backlog.iter().last().map_or(0, |e| e.seq),
            backlog: parts.backlog,
            persister: parts.persister,
            acl: parts.acl,
            ldap: parts.ldap,
            #[cfg(feature = "sqs")]
            sqs: parts.sqs,
            #[cfg(feature = "cluster")]
            cluster: parts.cluster,
            turn: Turn::default(),
            timers: Timers::default(),
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
        self.streams.count
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
            subscribers: self.streams.count,
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
            .and_then(|c| c.cors)
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
        let serial = self.next_serial;
        self.next_serial += 1;
        let mut conn = Conn::new(serial, peer.to_canonical(), now);
        conn.admin = admin;
        let key = self.conns.insert(conn);
        self.set_request_deadline(key, now);
        Admission::Open(key)
    }

    /// Drops a connection the reactor could not set up (no bytes were
    /// exchanged, so nothing else refers to it).
    pub fn forget(&mut self, key: usize) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            self.input_bytes -= conn.held_input;
            self.streams.leave(key, &mut conn, State::Closing);
        }
    }

    /// How many bytes the connection may read now: 0 when it should not
    /// read (gone, closing, paused, waiting for its turn, or its input is
    /// full), else at most `scratch`.
    pub fn read_room(&self, key: usize, scratch: usize) -> usize {
        let Some(conn) = self.conns.get(key) else {
            return 0;
        };
        if conn.read_closed || conn.paused || conn.pending {
            return 0;
        }
        match conn.state {
            State::Stream(_) | State::Closing => scratch,
            State::Authenticating(_) if conn.inbuf.len() >= MAX_INPUT => 0,
            _ => {
                let limit = self.config.server.max_head_size.max(MAX_INPUT);
                (limit + 1).saturating_sub(conn.inbuf.len()).min(scratch)
            }
        }
    }

    /// Bytes read from the connection's socket.
    pub fn received(&mut self, key: usize, bytes: &[u8]) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.state {
            State::Stream(_) | State::Closing => {
                // Ignored, but bounded: a subscriber has nothing to say.
                conn.stream_input += bytes.len();
                if conn.stream_input > MAX_INPUT * 16 {
                    debug!("{key}: too much input on a stream; closing");
                    self.turn.doom(key, conn);
                }
            }
            _ => {
                conn.inbuf.extend_from_slice(bytes);
                self.count_input(key);
            }
        }
    }

    /// Counts the connection's request buffers against the input budget;
    /// a large request that takes the total past it is answered 503 and
    /// its buffers are freed. Returns false if it was.
    fn count_input(&mut self, key: usize) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return true;
        };
        let body = match &conn.state {
            State::Body(b) => b.body.capacity(),
            _ => 0,
        };
        let held = conn.inbuf.capacity() + body;
        self.input_bytes = self.input_bytes - conn.held_input + held;
        conn.held_input = held;
        if held <= SMALL_REQUEST || self.input_bytes <= self.config.server.max_input_bytes {
            return true;
        }
        debug!(
            "{key}: input budget spent ({} bytes held, {held} by this request): 503",
            self.input_bytes
        );
        conn.inbuf = Vec::new();
        self.shed(key);
        if let Some(conn) = self.conns.get_mut(key) {
            self.input_bytes -= conn.held_input;
            conn.held_input = 0;
        }
        false
    }

    /// The peer will send nothing more: answer what it sent, then close.
    pub fn peer_closed(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.read_closed = true;
        }
        self.process_input(key);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.state {
            State::Head | State::Body(_) | State::Authenticating(_) if !conn.paused => {
                self.finish_after_flush(key)
            }
            State::Stream(_) => self.doom(key),
            _ => {}
        }
    }

    /// The socket failed: close at the end of the turn.
    pub fn io_failed(&mut self, key: usize, what: &str, e: &io::Error) {
        debug!("{key}: {what}: {e}");
        self.doom(key);
    }

    /// The socket can take bytes again: flush at the end of the turn.
    pub fn writable(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            self.turn.mark_dirty(key, conn);
        }
    }

    /// The connection has work left over: it runs again next turn.
    pub fn push_pending(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            self.turn.push_pending(key, conn);
        }
    }

    /// Closes the connection at the end of this turn, without flushing.
    fn doom(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            self.turn.doom(key, conn);
        }
    }

    /// Whether some connection has work left over for the next turn.
    pub fn has_pending(&self) -> bool {
        !self.turn.pending.is_empty()
    }

    /// The connections with work left over, each taken off the list.
    pub fn take_pending(&mut self) -> Vec<usize> {
        let mut pending = std::mem::take(&mut self.turn.pending);
        pending.retain(|&key| match self.conns.get_mut(key) {
            Some(conn) => {
                conn.pending = false;
                true
            }
            None => false,
        });
        pending
    }

    /// The connection ends once its queued output has been written.
    fn finish_after_flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        self.streams.leave(key, conn, State::Closing);
        conn.request_deadline = None;
        self.turn.mark_dirty(key, conn);
    }

    /// Writes every connection's queued output once, through `write` (the
    /// reactor's socket writes; a test's buffer).
    pub fn flush(&mut self, mut write: impl FnMut(usize, &mut OutQueue) -> io::Result<Flushed>) {
        #[cfg(feature = "cluster")]
        self.send_cluster_appends();
        let now = self.clock.now();
        let write_timeout = self.config.server.write_timeout;
        for key in std::mem::take(&mut self.turn.dirty) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.dirty = false;
            match write(key, &mut conn.out) {
                Ok(flushed) => {
                    if flushed.written > 0 {
                        conn.last_progress = now;
                        self.stats.bytes_sent += flushed.written as u64;
                    }
                    if flushed.blocked {
                        if !conn.stall_timer_armed {
                            conn.stall_timer_armed = true;
                            let deadline = conn.last_progress + write_timeout;
                            self.timers
                                .arm(deadline, timers::Kind::Stall, key, conn.serial);
                        }
                    } else if matches!(conn.state, State::Closing) {
                        self.turn.doom(key, conn);
                    } else if conn.paused && conn.out.queued() < RESPONSE_HIGH_WATER / 2 {
                        conn.paused = false;
                        self.turn.push_pending(key, conn);
                    }
                }
                Err(e) => {
                    debug!("{key}: write: {e}");
                    self.turn.doom(key, conn);
                }
            }
        }
    }

    /// Removes the connections doomed this turn; the reactor closes their
    /// sockets.
    pub fn close_doomed(&mut self) -> Vec<usize> {
        let mut doomed = std::mem::take(&mut self.turn.doomed);
        doomed.retain(|&key| match self.conns.try_remove(key) {
            Some(mut conn) => {
                self.input_bytes -= conn.held_input;
                self.streams.leave(key, &mut conn, State::Closing);
                debug!("closed {key}");
                true
            }
            None => false,
        });
        doomed
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
        info!("shutting down: ending {} streams", self.streams.count);
        self.shutdown_deadline = Some(self.clock.now() + SHUTDOWN_GRACE);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let conn = &mut self.conns[key];
            match &conn.state {
                State::Appending(_) => continue,
                State::Stream(stream) if stream.framing.chunked => {
                    conn.out.push(http::LAST_CHUNK.into());
                }
                _ => {}
            }
            self.finish_after_flush(key);
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
        if let Some(p) = &mut self.persister {
            let backlog = &self.backlog;
            p.resync(|| backlog.iter().map(|e| backlog::storage_line(e)).collect());
            p.flush(SHUTDOWN_GRACE);
        }
        true
    }

    /// The nearest moment the hub has something to do, if any.
    pub fn next_deadline(&self) -> Instant {
        let mut next = self.next_ping;
        if let Some(t) = self.timers.next() {
            next = next.min(t);
        }
        if let Some(t) = self.shutdown_deadline {
            next = next.min(t);
        }
        next
    }

    /// A reloaded configuration (only keys that may change live differ):
    /// new limits apply to what happens next, the backlog is trimmed to its
    /// new limits, and the ping tick moves to the new interval.
    pub fn reconfigure(&mut self, config: Config, max_connections: usize) {
        let b = &config.server.backlog;
        let evicted = self.backlog.set_limits(b.size, b.max_age, b.max_bytes);
        if let Some(p) = &mut self.persister {
            p.evict(evicted);
        }
        let now = self.clock.now();
        self.next_ping = self.next_ping.min(now + config.server.ping_interval);
        self.max_connections = max_connections;
        self.config = config;
        self.prune_backlog();
    }

    /// The LDAP pool's counters, when LDAP is configured.
    #[cfg(feature = "admin")]
    fn ldap_stats(&self) -> Option<stats::LdapCounts> {
        self.ldap.as_ref().map(Ldap::counts)
    }

    /// A TLS handshake completed (or failed) on the reactor's side.
    pub fn count_tls_handshake(&mut self, ok: bool) {
        if ok {
            self.stats.tls_handshakes += 1;
        } else {
            self.stats.tls_handshake_failures += 1;
        }
    }

    /// The SQS feed's counters, when it runs.
    #[cfg(feature = "admin")]
    fn sqs_counts(&self) -> Option<stats::SqsCounts> {
        #[cfg(feature = "sqs")]
        if let Some(feed) = &self.sqs {
            let c = feed.stats.counts();
            return Some(stats::SqsCounts {
                received: c.received,
                deleted: c.deleted,
                errors: c.errors,
            });
        }
        None
    }

    /// The waker fired: take what the helper threads sent.
    pub fn on_wake(&mut self) {
        self.take_ldap_replies();
        #[cfg(feature = "sqs")]
        self.drain_sqs();
        #[cfg(feature = "cluster")]
        self.drain_cluster();
    }

    /// Publishes every event the SQS pollers have sent, exactly as a `PUT`
    /// to its `pubsub_path`.
    #[cfg(feature = "sqs")]
    fn drain_sqs(&mut self) {
        let Some(feed) = &self.sqs else {
            return;
        };
        let events: Vec<SqsEvent> = feed.events.try_iter().collect();
        for event in events {
            let Ok(topics) = crate::topics::parse_topics(&event.path) else {
                log::warn!(
                    "sqs: message with unusable pubsub_path {:?} skipped",
                    event.path
                );
                continue;
            };
            let payload = crate::event::Payload::Object(event.object);
            self.publish(stats::Source::Sqs, &event.path, topics, payload);
        }
    }

    /// Queues raw bytes on a connection (used for `100 Continue` and the
    /// stream's head).
    fn queue(&mut self, key: usize, frame: Frame) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.out.push(frame);
            self.turn.mark_dirty(key, conn);
        }
    }
}
