//! The mio loop: one thread owns every socket. It accepts, reads, hands
//! bytes to the request logic (`requests.rs`), fans events out
//! (`fanout.rs`), runs the timers and flushes output.
//!
//! Edge-triggered discipline: every socket is registered once for
//! `READABLE | WRITABLE`; reads run until `WouldBlock`, EOF or a budget (then
//! the connection goes on the `pending` list for the next turn); output
//! queued during a turn is flushed once at the end of the turn, so one
//! vectored write carries everything a subscriber got in that turn.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::auth::{AclFile, Ldap};
use crate::backlog::{self, Backlog};
use crate::config::Config;
use crate::conn::{Conn, State};
use crate::http::{self, ServerHeaders};
use crate::persist::{self, Persister};
use crate::tls::Transport;
use crate::topics::TopicIndex;

const WAKER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
/// Listener `i` has token `LISTENER_BASE - i`.
const LISTENER_BASE: usize = usize::MAX - 16;

/// Bytes read from one socket per readiness event before other connections
/// get a turn.
const READ_BUDGET: usize = 256 * 1024;
/// Requests handled from one connection's buffer per turn.
pub(crate) const REQUEST_BUDGET: usize = 64;
/// Unread input kept per connection beyond one request head.
pub(crate) const MAX_INPUT: usize = 64 * 1024;
/// Output (responses to pipelined requests) above which a connection's
/// requests are not processed until the client reads.
pub(crate) const RESPONSE_HIGH_WATER: usize = 256 * 1024;
/// How long stream endings may take to flush on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How long to wait before accepting again when out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The per-connection deadlines kept in the timer heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Request,
    Stall,
}

/// A deadline for connection `key` with serial `serial`; stale entries
/// (closed or reused connections, moved deadlines) are skipped when popped.
type Timer = Reverse<(Instant, TimerKind, usize, u64)>;

/// All the server's state. Fields are crate-visible so that the request and
/// fan-out logic in their own files can borrow them separately.
pub struct Reactor {
    pub(crate) config: Config,
    pub(crate) server_name: String,
    poll: Poll,
    /// Each listener, and whether it speaks TLS.
    listeners: Vec<(TcpListener, bool)>,
    /// The certificate and key for TLS listeners (swapped on SIGHUP).
    tls: Option<Arc<rustls::ServerConfig>>,
    signals: Signals,
    pub(crate) conns: Slab<Conn>,
    next_serial: u64,
    pub(crate) max_connections: usize,
    pub(crate) index: TopicIndex,
    pub(crate) subscribers: usize,
    pub(crate) requests: u64,
    /// The sequence number of the newest accepted event.
    pub(crate) last_seq: u64,
    pub(crate) backlog: Backlog,
    pub(crate) acl: AclFile,
    pub(crate) ldap: Option<Ldap>,
    pub(crate) persister: Option<Persister>,
    /// Connections with output queued this turn.
    pub(crate) dirty: Vec<usize>,
    /// Connections with work left over (budget, resumed input).
    pub(crate) pending: Vec<usize>,
    /// Connections to close at the end of the turn.
    pub(crate) doomed: Vec<usize>,
    timers: BinaryHeap<Timer>,
    next_ping: Instant,
    accept_paused_until: Option<Instant>,
    /// When running out of file descriptors was last logged.
    accept_warned: Option<Instant>,
    /// Connections refused at the limit, and when that was last logged.
    refused: u64,
    refused_logged: Option<Instant>,
    shutdown_deadline: Option<Instant>,
    scratch: Box<[u8]>,
    /// Where responses are written before they are queued (reused).
    pub(crate) response_buf: Vec<u8>,
    /// Events taken from SQS queues by the poller threads.
    #[cfg(feature = "sqs")]
    sqs: Option<crossbeam_channel::Receiver<sqs_feed::SqsEvent>>,
}

/// Listener sockets bound before the reactor starts (so tests and `main`
/// can report the addresses).
pub fn bind(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // `::` means every address, IPv4 included; a specific v6 address
        // means just that.
        socket.set_only_v6(!addr.ip().is_unspecified())?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

impl Reactor {
    /// `listeners`: bound sockets, each marked true if it speaks TLS (then
    /// `tls` must be given).
    pub fn new(
        config: Config,
        acl: AclFile,
        listeners: Vec<(std::net::TcpListener, bool)>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let mut mio_listeners = Vec::new();
        for (i, (l, is_tls)) in listeners.into_iter().enumerate() {
            l.set_nonblocking(true)?;
            let mut l = TcpListener::from_std(l);
            poll.registry()
                .register(&mut l, Token(LISTENER_BASE - i), Interest::READABLE)?;
            mio_listeners.push((l, is_tls));
        }
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        #[cfg(feature = "sqs")]
        let sqs = start_sqs(&config, &waker)?;
        #[cfg(not(feature = "sqs"))]
        if !config.sqs.is_empty() {
            warn!("the sqs section is ignored: this build has no SQS support");
        }
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGUSR2, SIGHUP])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        // Past the open-files limit, accept() fails and clients wait
        // unanswered: keep the limit where excess clients can still be
        // accepted and refused with a 503.
        let fd_bound = default_max_connections();
        let max_connections = match config.server.max_connections {
            Some(n) if n > fd_bound => {
                warn!(
                    "server.max_connections {n} is above what the open-files limit allows; using {fd_bound}"
                );
                fd_bound
            }
            Some(n) => n,
            None => fd_bound,
        };
        let now = Instant::now();
        let next_ping = now + config.server.ping_interval;
        let (backlog, persister) = open_backlog(&config)?;
        let ldap = Ldap::start(config.clients.ldap.as_ref(), waker).map_err(io::Error::other)?;
        Ok(Reactor {
            server_name: format!("pubsubd/{}", env!("CARGO_PKG_VERSION")),
            config,
            poll,
            listeners: mio_listeners,
            tls,
            signals,
            conns: Slab::new(),
            next_serial: 1,
            max_connections,
            index: TopicIndex::default(),
            subscribers: 0,
            requests: 0,
            last_seq: backlog.iter().last().map_or(0, |e| e.seq),
            backlog,
            persister,
            acl,
            ldap,
            dirty: Vec::new(),
            pending: Vec::new(),
            doomed: Vec::new(),
            timers: BinaryHeap::new(),
            next_ping,
            accept_paused_until: None,
            accept_warned: None,
            refused: 0,
            refused_logged: None,
            shutdown_deadline: None,
            scratch: vec![0; 64 * 1024].into_boxed_slice(),
            response_buf: Vec::with_capacity(256),
            #[cfg(feature = "sqs")]
            sqs,
        })
    }

    /// Runs until SIGTERM/SIGINT and every stream has been ended.
    pub fn run(&mut self) -> io::Result<()> {
        info!("serving with at most {} connections", self.max_connections);
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => {
                        self.take_ldap_replies();
                        #[cfg(feature = "sqs")]
                        self.drain_sqs();
                    }
                    SIGNALS => self.handle_signals(),
                    Token(t) if t > LISTENER_BASE - 16 && t <= LISTENER_BASE => {
                        self.accept(LISTENER_BASE - t)
                    }
                    Token(key) => {
                        if event.is_writable() || event.is_write_closed() || event.is_error() {
                            self.mark_dirty(key);
                        }
                        if event.is_readable() || event.is_read_closed() {
                            self.read_ready(key, event.is_read_closed());
                        }
                    }
                }
            }
            let pending = std::mem::take(&mut self.pending);
            for key in pending {
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.pending = false;
                    self.read_ready(key, true);
                }
            }
            self.run_timers(Instant::now());
            self.flush_dirty();
            self.close_doomed();
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.is_empty() || Instant::now() >= deadline {
                    info!("shut down with {} connections left", self.conns.len());
                    if let Some(p) = &mut self.persister {
                        p.resync(|| {
                            self.backlog
                                .iter()
                                .map(|e| backlog::storage_line(e))
                                .collect()
                        });
                        p.flush(SHUTDOWN_GRACE);
                    }
                    return Ok(());
                }
            }
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.pending.is_empty() {
            return Some(Duration::ZERO);
        }
        let mut next = self.next_ping;
        if let Some(Reverse((t, ..))) = self.timers.peek() {
            next = next.min(*t);
        }
        if let Some(t) = self.accept_paused_until {
            next = next.min(t);
        }
        if let Some(t) = self.shutdown_deadline {
            next = next.min(t);
        }
        // Round up so a wake-up is never a millisecond early.
        Some(next.saturating_duration_since(now) + Duration::from_micros(500))
    }

    fn handle_signals(&mut self) {
        let received: Vec<i32> = self.signals.pending().collect();
        for signal in received {
            match signal {
                SIGTERM | SIGINT => self.begin_shutdown(),
                SIGUSR2 => self.reload_acl(),
                SIGHUP => self.reload_tls(),
                _ => {}
            }
        }
    }

    /// Re-reads the certificate and key; connections already open keep
    /// theirs, new ones get the new pair. A bad pair keeps the old one.
    fn reload_tls(&mut self) {
        let Some(settings) = &self.config.server.tls else {
            info!("SIGHUP: no TLS configured; nothing to reload");
            return;
        };
        match crate::tls::load_config(settings) {
            Ok(config) => {
                self.tls = Some(config);
                info!("SIGHUP: reloaded the TLS certificate and key");
            }
            Err(e) => warn!("SIGHUP: keeping the old TLS certificate: {e}"),
        }
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutdown_deadline.is_some()
    }

    /// Stops accepting and ends every stream cleanly.
    fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        info!("shutting down: ending {} streams", self.subscribers);
        for (mut l, _) in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut l);
        }
        self.shutdown_deadline = Some(Instant::now() + SHUTDOWN_GRACE);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let conn = &mut self.conns[key];
            if let State::Stream(stream) = &conn.state {
                if stream.framing.chunked {
                    conn.out.push(http::LAST_CHUNK.into());
                }
            }
            self.finish_after_flush(key);
        }
    }

    /// The connection ends once its queued output has been written.
    pub(crate) fn finish_after_flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let State::Stream(stream) = std::mem::replace(&mut conn.state, State::Closing) {
            self.index.remove(key, &stream.sub);
            self.subscribers -= 1;
        }
        conn.request_deadline = None;
        self.mark_dirty(key);
    }

    fn accept(&mut self, listener: usize) {
        if self.shutdown_deadline.is_some() || self.accept_paused_until.is_some() {
            return;
        }
        loop {
            let Some((l, is_tls)) = self.listeners.get(listener) else {
                return;
            };
            let is_tls = *is_tls;
            match l.accept() {
                Ok((socket, peer)) => self.admit(socket, peer, is_tls),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_out_of_fds(&e) => {
                    // Said once per burst, not every retry.
                    if self
                        .accept_warned
                        .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
                    {
                        warn!("accept: {e}; pausing accepts for {ACCEPT_BACKOFF:?} at a time");
                        self.accept_warned = Some(Instant::now());
                    }
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
                Err(e) => {
                    // ECONNABORTED and friends: that one client is gone.
                    debug!("accept: {e}");
                }
            }
        }
    }

    fn accept_all(&mut self) {
        for i in 0..self.listeners.len() {
            self.accept(i);
        }
    }

    /// Takes on a new connection, or refuses it with a 503 when full.
    fn admit(&mut self, mut socket: TcpStream, peer: SocketAddr, is_tls: bool) {
        let _ = socket.set_nodelay(true);
        if self.conns.len() >= self.max_connections {
            self.refused += 1;
            // One line per burst of refusals, not one per client.
            if self
                .refused_logged
                .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
            {
                warn!(
                    "refusing connections at the limit of {} (latest {peer}; {} refused so far)",
                    self.max_connections, self.refused
                );
                self.refused_logged = Some(Instant::now());
            }
            if is_tls {
                // No handshake for a connection we refuse.
                return;
            }
            let body = "Too many connections, please try again later.\n";
            let mut response = Vec::new();
            http::response(&mut response, 503, Some(body), &self.headers(), true);
            let _ = socket.write(&response);
            return;
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if key >= LISTENER_BASE - 16 {
            return;
        }
        if let Err(e) = self.poll.registry().register(
            &mut socket,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("register {peer}: {e}");
            return;
        }
        let transport = match (&self.tls, is_tls) {
            (Some(config), true) => match Transport::tls(socket, config.clone()) {
                Ok(t) => t,
                Err(e) => {
                    warn!("TLS for {peer}: {e}");
                    return;
                }
            },
            _ => Transport::Plain(socket),
        };
        let now = Instant::now();
        let peer_ip = canonical(peer.ip());
        let serial = self.next_serial;
        self.next_serial += 1;
        entry.insert(Conn::new(transport, serial, peer_ip, now));
        self.set_request_deadline(key, now);
        debug!("accepted {peer} as {key}");
    }

    /// The values every response carries.
    pub(crate) fn headers(&self) -> ServerHeaders<'_> {
        ServerHeaders {
            server: &self.server_name,
            subscribers: self.subscribers,
            requests: self.requests,
        }
    }

    /// Reads what the socket has and processes it, within the read budget.
    /// `until_would_block`: read until the socket says so (the peer may
    /// have closed, or earlier reads were cut short by a budget).
    fn read_ready(&mut self, key: usize, until_would_block: bool) {
        let mut budget = READ_BUDGET;
        let mut drained = false;
        loop {
            self.process_input(key);
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.read_closed || conn.paused || conn.pending || drained {
                return;
            }
            if matches!(conn.state, State::Authenticating(_)) && conn.inbuf.len() >= MAX_INPUT {
                return;
            }
            if budget == 0 {
                self.push_pending(key);
                return;
            }
            let room = if matches!(conn.state, State::Stream(_) | State::Closing) {
                self.scratch.len()
            } else {
                let limit = self.config.server.max_head_size.max(MAX_INPUT);
                (limit + 1)
                    .saturating_sub(conn.inbuf.len())
                    .min(self.scratch.len())
            };
            if room == 0 {
                // Input is full and nothing could be processed: a head
                // over the limit is refused by `process_input`.
                return;
            }
            match conn.socket.read(&mut self.scratch[..room]) {
                Ok(0) => {
                    conn.read_closed = true;
                    self.on_read_closed(key);
                    return;
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    // A short read on a TCP socket took everything there
                    // was; more data will come with a new edge. This saves
                    // the read that would only say WouldBlock. (TLS may
                    // hold decrypted bytes back, so it reads on.)
                    drained = !until_would_block
                        && n < room
                        && matches!(conn.socket, Transport::Plain(_));
                    match conn.state {
                        State::Stream(_) | State::Closing => {
                            conn.stream_input += n;
                            if conn.stream_input > MAX_INPUT * 16 {
                                debug!("{key}: too much input on a stream; closing");
                                self.doom(key);
                                return;
                            }
                        }
                        _ => conn.inbuf.extend_from_slice(&self.scratch[..n]),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("{key}: read: {e}");
                    self.doom(key);
                    return;
                }
            }
        }
    }

    /// The peer will send nothing more: answer what it sent, then close.
    fn on_read_closed(&mut self, key: usize) {
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

    pub(crate) fn push_pending(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.pending {
                conn.pending = true;
                self.pending.push(key);
            }
        }
    }

    pub(crate) fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Closes the connection at the end of this turn, without flushing.
    pub(crate) fn doom(&mut self, key: usize) {
        if self.conns.get_mut(key).is_some_and(Conn::doom) {
            self.doomed.push(key);
        }
    }

    /// Writes every connection's queued output once.
    fn flush_dirty(&mut self) {
        let now = Instant::now();
        let write_timeout = self.config.server.write_timeout;
        let dirty = std::mem::take(&mut self.dirty);
        for key in dirty {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.dirty = false;
            let result = conn.out.flush_to(&mut conn.socket).and_then(|mut flushed| {
                if !flushed.blocked {
                    flushed.blocked = conn.socket.flush_pending()?;
                }
                Ok(flushed)
            });
            match result {
                Ok(flushed) => {
                    if flushed.written > 0 {
                        conn.last_progress = now;
                    }
                    if flushed.blocked {
                        if !conn.stall_timer_armed {
                            conn.stall_timer_armed = true;
                            let deadline = conn.last_progress + write_timeout;
                            self.timers.push(Reverse((
                                deadline,
                                TimerKind::Stall,
                                key,
                                conn.serial,
                            )));
                        }
                    } else if matches!(conn.state, State::Closing) {
                        self.doom(key);
                    } else if conn.paused && conn.out.queued() < RESPONSE_HIGH_WATER / 2 {
                        conn.paused = false;
                        self.push_pending(key);
                    }
                }
                Err(e) => {
                    debug!("{key}: write: {e}");
                    self.doom(key);
                }
            }
        }
    }

    fn close_doomed(&mut self) {
        let doomed = std::mem::take(&mut self.doomed);
        for key in doomed {
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        let mut conn = self.conns.remove(key);
        if let State::Stream(stream) = &conn.state {
            self.index.remove(key, &stream.sub);
            self.subscribers -= 1;
        }
        let _ = self.poll.registry().deregister(conn.socket.socket());
        debug!("closed {key}");
    }

    /// (Re)starts the deadline for the request being read.
    pub(crate) fn set_request_deadline(&mut self, key: usize, now: Instant) {
        let timeout = self.config.server.request_timeout;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.request_deadline = Some(now + timeout);
        self.arm_request_timer(key);
    }

    /// Makes sure a timer will look at the connection's request deadline.
    pub(crate) fn arm_request_timer(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let (Some(deadline), false) = (conn.request_deadline, conn.request_timer_armed) {
            conn.request_timer_armed = true;
            self.timers
                .push(Reverse((deadline, TimerKind::Request, key, conn.serial)));
        }
    }

    /// Drops events past `max_age`, here and on disk.
    pub(crate) fn prune_backlog(&mut self) {
        if self.backlog.is_empty() {
            return;
        }
        let evicted = self.backlog.prune(crate::event::epoch_now());
        if let Some(p) = &mut self.persister {
            p.evict(evicted);
        }
    }

    fn run_timers(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
            self.accept_all();
        }
        self.prune_backlog();
        if let Some(p) = &mut self.persister {
            if p.needs_resync() {
                let backlog = &self.backlog;
                p.resync(|| backlog.iter().map(|e| backlog::storage_line(e)).collect());
            }
        }
        if self.next_ping <= now {
            self.send_pings();
            self.next_ping = now + self.config.server.ping_interval;
        }
        while let Some(&Reverse((deadline, kind, key, serial))) = self.timers.peek() {
            if deadline > now {
                break;
            }
            self.timers.pop();
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.serial != serial {
                continue;
            }
            match kind {
                TimerKind::Request => {
                    conn.request_timer_armed = false;
                    let Some(due) = conn.request_deadline else {
                        continue;
                    };
                    if due > now {
                        conn.request_timer_armed = true;
                        self.timers.push(Reverse((due, kind, key, serial)));
                    } else if matches!(conn.state, State::Authenticating(_)) {
                        warn!("{key}: no LDAP answer in time; continuing without private access");
                        self.resume_parked(key, serial, None);
                    } else if matches!(conn.state, State::Head | State::Body(_)) {
                        debug!("{key}: request timeout");
                        self.doom(key);
                    }
                }
                TimerKind::Stall => {
                    conn.stall_timer_armed = false;
                    if conn.out.is_empty() {
                        continue;
                    }
                    let due = conn.last_progress + self.config.server.write_timeout;
                    if due > now {
                        conn.stall_timer_armed = true;
                        self.timers.push(Reverse((due, kind, key, serial)));
                    } else {
                        warn!(
                            "dropping slow subscriber {} ({key}): nothing written for {:?}, {} bytes queued",
                            conn.peer,
                            self.config.server.write_timeout,
                            conn.out.queued()
                        );
                        self.doom(key);
                    }
                }
            }
        }
    }
}

/// How often at most the backlog file is rewritten.
const PERSIST_INTERVAL: Duration = Duration::from_secs(2);

/// The backlog, loaded from its storage file if one is configured, and the
/// writer that keeps that file up to date.
fn open_backlog(config: &Config) -> io::Result<(Backlog, Option<Persister>)> {
    let settings = &config.server.backlog;
    let mut backlog =
        Backlog::new(settings.size, settings.max_age).with_max_bytes(settings.max_bytes);
    let Some(path) = settings.storage.as_ref().filter(|_| backlog.is_enabled()) else {
        return Ok((backlog, None));
    };
    for event in persist::load(path) {
        backlog.push(std::rc::Rc::new(event));
    }
    backlog.prune(crate::event::epoch_now());
    let lines = backlog.iter().map(|e| backlog::storage_line(e)).collect();
    let persister = Persister::start(path.clone(), PERSIST_INTERVAL, lines)?;
    Ok((backlog, Some(persister)))
}

/// Starts the SQS pollers, if any queue is configured; they wake the
/// reactor after sending events.
#[cfg(feature = "sqs")]
fn start_sqs(
    config: &Config,
    waker: &Arc<Waker>,
) -> io::Result<Option<crossbeam_channel::Receiver<sqs_feed::SqsEvent>>> {
    if config.sqs.is_empty() {
        return Ok(None);
    }
    let queues = config.sqs.iter().map(sqs_settings).collect();
    let (tx, rx) = crossbeam_channel::bounded(1024);
    let waker = waker.clone();
    sqs_feed::start(
        queues,
        tx,
        Arc::new(move || {
            let _ = waker.wake();
        }),
    );
    Ok(Some(rx))
}

/// The validated `sqs` entry as the feed's settings.
#[cfg(feature = "sqs")]
fn sqs_settings(q: &crate::config::SqsQueueConfig) -> sqs_feed::QueueSettings {
    sqs_feed::QueueSettings {
        name: q.name.clone(),
        queue: q.queue.clone(),
        region: q.region.clone(),
        delete: q.delete,
        credentials: q.credentials.as_ref().map(|c| sqs_feed::Credentials {
            access_key: c.access_key.clone(),
            secret_key: c.secret_key.clone(),
            session_token: None,
        }),
        endpoint: sqs_feed::Endpoint {
            https: q.endpoint.https,
            authority: q.endpoint.authority.clone(),
            path: q.endpoint.path.clone(),
        },
        wait_time: q.wait_time,
    }
}

#[cfg(feature = "sqs")]
impl Reactor {
    /// Publishes every event the SQS pollers have sent, exactly as a `PUT`
    /// to its `pubsub_path`.
    fn drain_sqs(&mut self) {
        let Some(rx) = &self.sqs else {
            return;
        };
        let events: Vec<sqs_feed::SqsEvent> = rx.try_iter().collect();
        for event in events {
            let Ok(topics) = crate::topics::parse_topics(&event.path) else {
                warn!(
                    "sqs: message with unusable pubsub_path {:?} skipped",
                    event.path
                );
                continue;
            };
            let payload = crate::event::Payload::Object(event.object);
            self.publish(&event.path, topics, payload);
        }
    }
}

/// IPv4-mapped IPv6 peers count as their IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn is_out_of_fds(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The open-files limit, less a reserve for listeners, files and workers.
fn default_max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    let fds = if ok { limit.rlim_cur as usize } else { 1024 };
    fds.saturating_sub(64).max(16)
}
