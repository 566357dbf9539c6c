//! The event loop: one thread owns every socket. It polls, accepts, reads
//! into one shared scratch buffer and hands the bytes to the hub, writes out
//! what the hub queued, and answers the waker (helper threads, `Control`).
//! Everything else — what the bytes mean, who gets what, when a connection
//! must go — is the hub's (`hub/`).
//!
//! Edge-triggered discipline: every socket is registered once for
//! `READABLE | WRITABLE`; reads run until `WouldBlock`, EOF or a budget (then
//! the connection goes on the hub's pending list for the next turn); output
//! queued during a turn is flushed once at the end of the turn, so one
//! vectored write carries everything a subscriber got in that turn.
//!
//! Invariant: `sockets[key]` is `Some` exactly while the hub has a
//! connection under `key` (set in `admit`, cleared in `end_turn`).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::clock::SystemClock;
use crate::config::Config;
use crate::control::Control;
use crate::error::StartError;
use crate::hub::{AclFile, Admission, Hub};
use crate::listeners::ListenerKind;
use crate::tls::{self, Transport};

const WAKER: Token = Token(usize::MAX - 1);
/// Listener `i` has token `LISTENER_BASE - i`.
const LISTENER_BASE: usize = usize::MAX - 16;

/// Bytes read from one socket per readiness event before other connections
/// get a turn.
const READ_BUDGET: usize = 256 * 1024;
/// How long to wait before accepting again when out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The event loop and the hub it drives.
pub struct Reactor {
    poll: Poll,
    /// Each listener, and what it speaks.
    listeners: Vec<(TcpListener, ListenerKind)>,
    /// The certificate and key for TLS listeners (swapped on reload).
    tls: Option<Arc<tls::ServerConfig>>,
    control: Control,
    /// Where SIGHUP re-reads the configuration from.
    config_file: Option<std::path::PathBuf>,
    /// Each connection's socket, at the hub's key for it.
    sockets: Vec<Option<Transport>>,
    /// Closed connections still sending what TLS owes (close_notify).
    closing: tls::Closing,
    hub: Hub,
    scratch: Box<[u8]>,
    accept_paused_until: Option<Instant>,
    /// When running out of file descriptors was last logged.
    accept_warned: Option<Instant>,
    /// Connections refused at the limit, and when that was last logged.
    refused: u64,
    refused_logged: Option<Instant>,
}

impl Reactor {
    /// `listeners`: bound sockets, each with what it speaks.
    pub fn new(
        config: Config,
        acl: AclFile,
        listeners: Vec<(std::net::TcpListener, ListenerKind)>,
        control: Control,
    ) -> Result<Reactor, StartError> {
        let tls = match &config.server.tls {
            Some(settings) => Some(tls::load_config(settings).map_err(StartError::Tls)?),
            None => None,
        };
        let poll = Poll::new().map_err(StartError::Io)?;
        let mut mio_listeners = Vec::new();
        for (i, (l, kind)) in listeners.into_iter().enumerate() {
            l.set_nonblocking(true).map_err(StartError::Io)?;
            let mut l = TcpListener::from_std(l);
            poll.registry()
                .register(&mut l, Token(LISTENER_BASE - i), Interest::READABLE)
                .map_err(StartError::Io)?;
            mio_listeners.push((l, kind));
        }
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(StartError::Io)?);
        control.attach(waker.clone());
        let wake = Arc::new(move || {
            let _ = waker.wake();
        });
        let parts = crate::setup::hub_parts(config, acl, wake, Box::new(SystemClock))?;
        let hub = Hub::new(parts);
        Ok(Reactor {
            poll,
            listeners: mio_listeners,
            tls,
            control,
            config_file: None,
            sockets: Vec::new(),
            closing: tls::Closing::default(),
            hub,
            scratch: vec![0; 64 * 1024].into_boxed_slice(),
            accept_paused_until: None,
            accept_warned: None,
            refused: 0,
            refused_logged: None,
        })
    }

    /// Where a configuration reload reads from.
    pub fn set_config_file(&mut self, path: std::path::PathBuf) {
        self.config_file = Some(path);
    }

    /// The addresses the listeners are bound to, and what each speaks.
    pub fn local_addrs(&self) -> Vec<(SocketAddr, ListenerKind)> {
        self.listeners
            .iter()
            .filter_map(|(l, kind)| Some((l.local_addr().ok()?, *kind)))
            .collect()
    }

    /// Runs until asked to shut down and every stream has been ended.
    pub fn run(&mut self) -> io::Result<()> {
        info!(
            "serving with at most {} connections",
            self.hub.max_connections()
        );
        let mut events = Events::with_capacity(1024);
        loop {
            self.take_requests();
            if self.hub.shutdown_complete() && self.closing.is_empty() {
                return Ok(());
            }
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => self.hub.on_wake(),
                    Token(t) if t > LISTENER_BASE - 16 && t <= LISTENER_BASE => {
                        self.accept(LISTENER_BASE - t)
                    }
                    Token(key) => {
                        if event.is_writable() || event.is_write_closed() || event.is_error() {
                            self.hub.writable(key);
                        }
                        if event.is_readable() || event.is_read_closed() {
                            self.read_ready(key, event.is_read_closed());
                        }
                    }
                }
            }
            for key in self.hub.take_rerun() {
                self.read_ready(key, true);
            }
            if self
                .accept_paused_until
                .is_some_and(|t| t <= Instant::now())
            {
                self.accept_paused_until = None;
                for i in 0..self.listeners.len() {
                    self.accept(i);
                }
            }
            self.hub.run_timers();
            self.end_turn();
        }
    }

    /// Acts on what `Control` was asked since the last turn.
    fn take_requests(&mut self) {
        let asked = self.control.take();
        if asked.reload_acl {
            self.hub.reload_acl();
        }
        if asked.reload_config {
            self.reload_config();
        }
        if asked.shutdown && !self.hub.is_shutting_down() {
            for (mut l, _) in self.listeners.drain(..) {
                let _ = self.poll.registry().deregister(&mut l);
            }
            self.hub.begin_shutdown();
            self.end_turn();
        }
    }

    /// Flushes what the hub queued and closes what it doomed.
    fn end_turn(&mut self) {
        let sockets = &mut self.sockets;
        self.hub.flush(|key, out| {
            let Some(Some(socket)) = sockets.get_mut(key) else {
                return Err(io::ErrorKind::NotConnected.into());
            };
            let mut flushed = out.flush_to(socket)?;
            if !flushed.blocked {
                flushed.blocked = socket.flush_pending()?;
            }
            Ok(flushed)
        });
        let now = Instant::now();
        self.closing.retry(now);
        for key in self.hub.close_doomed() {
            if let Some(mut socket) = self.sockets.get_mut(key).and_then(Option::take) {
                let _ = self.poll.registry().deregister(socket.socket());
                self.closing.close(socket, now);
            }
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if self.hub.has_rerun() {
            return Some(Duration::ZERO);
        }
        let mut next = self.hub.next_deadline();
        if let Some(t) = self.accept_paused_until {
            next = next.min(t);
        }
        if let Some(t) = self.closing.next_retry(now) {
            next = next.min(t);
        }
        // Round up so a wake-up is never a millisecond early.
        Some(next.saturating_duration_since(now) + Duration::from_micros(500))
    }

    /// SIGHUP: re-reads the configuration file and applies what can change
    /// live (the rest is logged as needing a restart), then the TLS files.
    /// An invalid file keeps the running configuration.
    fn reload_config(&mut self) {
        match &self.config_file {
            Some(path) => {
                if let Some(next) = crate::setup::reload(path, self.hub.config()) {
                    self.hub.reconfigure(next);
                }
            }
            None => info!("SIGHUP: no configuration file to reload"),
        }
        self.reload_tls();
    }

    /// Re-reads the certificate and key (`setup::reload_tls`); a bad pair
    /// keeps the old one.
    fn reload_tls(&mut self) {
        if let Some(config) = crate::setup::reload_tls(self.hub.config().server.tls.as_ref()) {
            self.tls = Some(config);
        }
    }

    fn accept(&mut self, listener: usize) {
        if self.hub.is_shutting_down() || self.accept_paused_until.is_some() {
            return;
        }
        loop {
            let Some((l, kind)) = self.listeners.get(listener) else {
                return;
            };
            let kind = *kind;
            match l.accept() {
                Ok((socket, peer)) => self.admit(socket, peer, kind),
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

    /// Takes on a new connection, or refuses it with a 503 when full.
    fn admit(&mut self, mut socket: TcpStream, peer: SocketAddr, kind: ListenerKind) {
        let _ = socket.set_nodelay(true);
        let is_tls = kind == ListenerKind::Tls;
        let key = match self.hub.open(peer.ip(), kind == ListenerKind::Admin) {
            Admission::Open(key) => key,
            Admission::Refused(response) => {
                self.refused += 1;
                // One line per burst of refusals, not one per client.
                if self
                    .refused_logged
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
                {
                    warn!(
                        "refusing connections at the limit of {} (latest {peer}; {} refused so far)",
                        self.hub.max_connections(),
                        self.refused
                    );
                    self.refused_logged = Some(Instant::now());
                }
                // No handshake for a TLS connection we refuse.
                if !is_tls {
                    let _ = socket.write(&response);
                }
                return;
            }
        };
        if key >= LISTENER_BASE - 16 {
            self.hub.forget(key);
            return;
        }
        if let Err(e) = self.poll.registry().register(
            &mut socket,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("register {peer}: {e}");
            self.hub.forget(key);
            return;
        }
        let transport = match (&self.tls, is_tls) {
            (Some(config), true) => match Transport::tls(socket, config.clone()) {
                Ok(t) => t,
                Err(e) => {
                    // The socket is closed with the error, which also takes
                    // it out of the poll.
                    warn!("TLS for {peer}: {e}");
                    self.hub.forget(key);
                    return;
                }
            },
            _ => Transport::Plain(socket),
        };
        if self.sockets.len() <= key {
            self.sockets.resize_with(key + 1, || None);
        }
        self.sockets[key] = Some(transport);
        debug!("accepted {peer} as {key}");
    }

    /// Reads what the socket has and hands it to the hub, within the read
    /// budget. `until_would_block`: read until the socket says so (the peer
    /// may have closed, or earlier reads were cut short by a budget).
    fn read_ready(&mut self, key: usize, until_would_block: bool) {
        let mut budget = READ_BUDGET;
        let mut drained = false;
        loop {
            self.hub.process_input(key);
            if drained {
                return;
            }
            let room = self.hub.read_room(key, self.scratch.len());
            if room == 0 {
                // Gone, paused, or input full and nothing could be
                // processed (a head over the limit is refused by the hub).
                return;
            }
            if budget == 0 {
                self.hub.rerun(key);
                return;
            }
            let Some(Some(socket)) = self.sockets.get_mut(key) else {
                return;
            };
            let result = socket.read(&mut self.scratch[..room]);
            if let Some(ok) = socket.handshake_outcome(&result) {
                self.hub.count_tls_handshake(ok);
            }
            match result {
                Ok(0) => {
                    self.hub.peer_closed(key);
                    return;
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    // A short read took everything there was: this saves
                    // the read that would only say WouldBlock.
                    drained = !until_would_block && n < room && socket.short_read_drains();
                    self.hub.received(key, &self.scratch[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.hub.io_failed(key, "read", &e);
                    return;
                }
            }
        }
    }
}

fn is_out_of_fds(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
