//! A subscriber worker process (`pubsub-load worker …`): holds up to a few
//! thousand streaming subscriptions on one mio loop, decodes every event,
//! and reports counts and latency histograms to the coordinator.
//!
//! Control is line-based: the coordinator writes commands on stdin
//! (`reset RUN`, `report ID`, `quit`) and reads JSON lines on stdout
//! (`{"kind":"ready",…}` once every connection has settled, then one
//! `{"kind":"report","id":ID,…}` per `report`). Only loopback addresses are
//! used: the target must be on 127.0.0.0/8 and each connection binds a
//! source address 127.0.0.x before connecting, so large counts do not run
//! out of ephemeral ports. With `--tls-ca FILE` every connection speaks
//! TLS (see `transport`), checking the server's certificate against FILE;
//! with `--sse` every subscription asks for Server-Sent Events (see `sse`),
//! with `--ws` for a WebSocket (see `ws`), with `--gzip` for gzip.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use serde::{Deserialize, Serialize};

use crate::clock::{now_ns, self_cpu_ns};
use crate::hist::{Hist, SparseHist};
use crate::lines::{Line, Stamp};
use crate::proto::{Ask, Decoder, Proto};
use crate::transport::{self, Conn};

/// Publisher connections whose sequence numbers are tracked per subscriber.
pub const MAX_PUB: usize = 8;
const STDIN: Token = Token(usize::MAX - 1);
const CONNECT_TIMEOUT_NS: u64 = 15_000_000_000;
/// Times a subscription refused with a 5xx status is tried again.
const SETUP_RETRIES: u8 = 5;
/// How often a subscriber whose protocol leaves keep-alive to the client
/// (MQTT) sends one: as often as pubsubd pings its subscribers.
const KEEPALIVE_EVERY_NS: u64 = 5_000_000_000;

#[derive(Debug, Clone)]
pub struct WorkerOpts {
    pub proto: Proto,
    pub addr: SocketAddr,
    pub chan: String,
    pub count: usize,
    /// The first `stalled` connections read their response head and then
    /// never read again.
    pub stalled: usize,
    /// Receive buffer for stalled connections (small, so they back up fast).
    pub stalled_rcvbuf: usize,
    /// Source addresses 127.0.0.`src_first` … 127.0.0.`src_first+src_count-1`.
    pub src_first: u8,
    pub src_count: u8,
    /// Connections being set up at once.
    pub concurrency: usize,
    /// Speak TLS, trusting the CA certificate(s) in this PEM file.
    pub tls_ca: Option<PathBuf>,
    /// Ask for Server-Sent Events (`Accept: text/event-stream`), a
    /// WebSocket or gzip, and refuse a subscription answered otherwise.
    pub ask: Ask,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    NotStarted,
    Connecting,
    Head,
    Live,
    Dead,
}

struct Sub {
    sock: Option<Conn>,
    st: St,
    stalled: bool,
    /// Counted in the current phase.
    in_phase: bool,
    started_ns: u64,
    head: Vec<u8>,
    dec: Option<Decoder>,
    /// When the last keep-alive was sent (MQTT PINGREQ).
    pinged_ns: u64,
    /// Setup attempts retried so far.
    retries: u8,
    /// Next expected sequence number per publisher connection.
    next: [u32; MAX_PUB],
}

/// Everything measured since the last `reset`.
#[derive(Default)]
struct Phase {
    run: u32,
    received: u64,
    stale: u64,
    pings: u64,
    other: u64,
    dups: u64,
    gaps: u64,
    bytes: u64,
    closed: u64,
    hist: Hist,
    window: Hist,
    first_ns: u64,
    last_ns: u64,
    start_cpu_ns: u64,
}

/// One report, as sent to the coordinator.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct Report {
    pub kind: String,
    pub id: u64,
    /// Healthy subscriptions open now / counted in this phase.
    pub live: u64,
    pub in_phase: u64,
    pub stalled_live: u64,
    pub failed: u64,
    /// Live healthy subscriptions the server closed during the phase.
    pub closed: u64,
    pub received: u64,
    pub stale: u64,
    pub pings: u64,
    pub other: u64,
    pub dups: u64,
    pub gaps: u64,
    pub bytes: u64,
    pub hist: SparseHist,
    /// Latencies since the previous report.
    pub window: SparseHist,
    pub first_ns: u64,
    pub last_ns: u64,
    pub cpu_ns: u64,
    pub errors: BTreeMap<String, u64>,
}

struct Worker {
    opts: WorkerOpts,
    poll: Poll,
    subs: Vec<Sub>,
    next_start: usize,
    /// Subscriptions to set up again (see `setup_failed`).
    retry: Vec<usize>,
    in_flight: usize,
    live: usize,
    stalled_live: usize,
    failed: usize,
    errors: BTreeMap<String, u64>,
    phase: Phase,
    buf: Vec<u8>,
    /// Decrypted bytes of one TLS read.
    plain: Vec<u8>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

fn fail(errors: &mut BTreeMap<String, u64>, what: String) {
    *errors.entry(what).or_insert(0) += 1;
}

impl Worker {
    fn source(&self, i: usize) -> Ipv4Addr {
        let x = self.opts.src_first as usize + i % self.opts.src_count.max(1) as usize;
        Ipv4Addr::new(127, 0, 0, x.clamp(1, 254) as u8)
    }

    fn start(&mut self, i: usize) {
        let stalled = i < self.opts.stalled;
        let src = self.source(i);
        match connect_from(
            src,
            self.opts.addr,
            stalled.then_some(self.opts.stalled_rcvbuf),
        ) {
            Ok(sock) => {
                let mut sock = match Conn::new(sock, self.tls.as_ref(), self.opts.addr.ip()) {
                    Ok(c) => c,
                    Err(e) => {
                        fail(&mut self.errors, format!("tls: {e}"));
                        self.subs[i].st = St::Dead;
                        self.failed += 1;
                        return;
                    }
                };
                if let Err(e) = self.poll.registry().register(
                    sock.socket_mut(),
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    fail(&mut self.errors, format!("register: {e}"));
                    self.subs[i].st = St::Dead;
                    self.failed += 1;
                    return;
                }
                let s = &mut self.subs[i];
                s.sock = Some(sock);
                s.st = St::Connecting;
                s.started_ns = now_ns();
                self.in_flight += 1;
            }
            Err(e) => {
                fail(&mut self.errors, format!("connect: {e}"));
                self.subs[i].st = St::Dead;
                self.failed += 1;
            }
        }
    }

    /// A connection that never became a live subscription.
    /// A server error status (Pushpin answers 502 to a few of a burst of
    /// new subscribers) is retried, as a real client would.
    fn setup_failed(&mut self, i: usize, why: String) {
        let s = &mut self.subs[i];
        if let Some(mut sock) = s.sock.take() {
            let _ = self.poll.registry().deregister(sock.socket_mut());
        }
        s.head = Vec::new();
        self.in_flight -= 1;
        if why.starts_with("subscribe status 5") && s.retries < SETUP_RETRIES {
            s.retries += 1;
            s.st = St::NotStarted;
            self.retry.push(i);
            fail(&mut self.errors, format!("{why} (retried)"));
            return;
        }
        s.st = St::Dead;
        self.failed += 1;
        fail(&mut self.errors, why);
    }

    /// A live subscription that ended.
    fn lost_live(&mut self, i: usize, why: String) {
        let s = &mut self.subs[i];
        if let Some(mut sock) = s.sock.take() {
            let _ = self.poll.registry().deregister(sock.socket_mut());
        }
        s.st = St::Dead;
        if s.stalled {
            self.stalled_live -= 1;
            fail(
                &mut self.errors,
                format!("stalled subscriber closed: {why}"),
            );
        } else {
            self.live -= 1;
            self.phase.closed += 1;
            fail(&mut self.errors, format!("subscriber closed: {why}"));
        }
    }

    fn on_event(&mut self, i: usize, ev: &mio::event::Event) {
        let Some(s) = self.subs.get(i) else {
            return;
        };
        match s.st {
            St::Connecting => {
                if !(ev.is_writable() || ev.is_error() || ev.is_read_closed()) {
                    return;
                }
                let sock = s.sock.as_ref().expect("connecting socket").socket();
                match sock.take_error() {
                    Ok(Some(e)) | Err(e) => return self.setup_failed(i, format!("connect: {e}")),
                    Ok(None) => {}
                }
                if let Err(e) = sock.peer_addr() {
                    if e.kind() == io::ErrorKind::NotConnected {
                        return; // still connecting
                    }
                    return self.setup_failed(i, format!("connect: {e}"));
                }
                let req = self
                    .opts
                    .proto
                    .subscribe_request(&self.opts.chan, self.opts.ask);
                let sock = self.subs[i].sock.as_mut().expect("socket");
                match sock.write(&req) {
                    Ok(n) if n == req.len() => self.subs[i].st = St::Head,
                    Ok(_) => self.setup_failed(i, "short request write".into()),
                    Err(e) => self.setup_failed(i, format!("request write: {e}")),
                }
                self.read_head(i);
            }
            St::Head => {
                if ev.is_writable() && !self.flush_tls(i) {
                    return;
                }
                self.read_head(i)
            }
            St::Live if s.stalled && ev.is_error() => self.lost_live(i, "error".into()),
            St::Live if s.stalled => {}
            St::Live => {
                if ev.is_writable() && !self.flush_tls(i) {
                    return;
                }
                self.read_stream(i)
            }
            _ => {}
        }
    }

    /// Sends TLS records still waiting (a handshake message, the request).
    /// False if the connection failed (and is now closed).
    fn flush_tls(&mut self, i: usize) -> bool {
        let Some(sock) = self.subs[i].sock.as_mut() else {
            return false;
        };
        match sock.flush_pending() {
            Ok(_) => true,
            Err(e) => {
                if self.subs[i].st == St::Live {
                    self.lost_live(i, format!("write: {e}"));
                } else {
                    self.setup_failed(i, format!("write: {e}"));
                }
                false
            }
        }
    }

    fn read_head(&mut self, i: usize) {
        let mut tmp = [0u8; 8192];
        let mut plain = Vec::new();
        loop {
            let s = &mut self.subs[i];
            let Some(sock) = s.sock.as_mut() else { return };
            match sock.recv(&mut tmp, &mut plain) {
                Ok(r) if r.eof && r.data.is_empty() => {
                    return self.setup_failed(i, "closed before response head".into())
                }
                Ok(r) if r.data.is_empty() => {} // TLS handshake records
                Ok(r) => {
                    s.head.extend_from_slice(r.data);
                    match self.opts.proto.subscribed(&s.head, self.opts.ask) {
                        Ok(None) => {
                            if s.head.len() > 64 * 1024 {
                                return self.setup_failed(i, "response head too long".into());
                            }
                        }
                        Err(e) => return self.setup_failed(i, e),
                        Ok(Some((head_len, dec))) => {
                            let rest = s.head.split_off(head_len);
                            s.head = Vec::new();
                            s.dec = Some(dec);
                            s.st = St::Live;
                            s.in_phase = false;
                            s.pinged_ns = now_ns();
                            self.in_flight -= 1;
                            if s.stalled {
                                self.stalled_live += 1;
                                return;
                            }
                            self.live += 1;
                            if !rest.is_empty() {
                                self.consume(i, &rest, now_ns());
                            }
                            return self.read_stream(i);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.setup_failed(i, format!("read head: {e}")),
            }
        }
    }

    fn read_stream(&mut self, i: usize) {
        let mut buf = std::mem::take(&mut self.buf);
        let mut plain = std::mem::take(&mut self.plain);
        while let Some(sock) = self.subs[i].sock.as_mut() {
            match sock.recv(&mut buf, &mut plain) {
                Ok(r) => {
                    let (wire, eof) = (r.wire, r.eof);
                    if !r.data.is_empty() {
                        self.consume(i, r.data, now_ns());
                    }
                    if eof {
                        if self.subs[i].st == St::Live {
                            self.lost_live(i, "eof".into());
                        }
                        break;
                    }
                    // A short read emptied the socket: edge-triggered
                    // readiness fires again when more arrives.
                    if wire < buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.lost_live(i, format!("read: {e}"));
                    break;
                }
            }
        }
        self.buf = buf;
        self.plain = plain;
    }

    fn consume(&mut self, i: usize, data: &[u8], now: u64) {
        let phase = &mut self.phase;
        phase.bytes += data.len() as u64;
        let Sub {
            dec,
            next,
            in_phase,
            ..
        } = &mut self.subs[i];
        let Some(dec) = dec.as_mut() else { return };
        let counted = *in_phase;
        let result = dec.feed(data, &mut |line: Line| match line {
            Line::Event(Stamp {
                run,
                publisher,
                seq,
                t_ns,
            }) => {
                if run != phase.run || !counted {
                    phase.stale += 1;
                    return;
                }
                phase.received += 1;
                let lat = now.saturating_sub(t_ns);
                phase.hist.record(lat);
                phase.window.record(lat);
                if phase.first_ns == 0 {
                    phase.first_ns = now;
                }
                phase.last_ns = now;
                if let Some(n) = next.get_mut(publisher as usize) {
                    if seq == *n {
                        *n += 1;
                    } else if seq > *n {
                        phase.gaps += u64::from(seq - *n);
                        *n = seq + 1;
                    } else {
                        phase.dups += 1;
                    }
                }
            }
            Line::Ping => phase.pings += 1,
            Line::Other => phase.other += 1,
        });
        if let Err(e) = result {
            self.lost_live(i, e);
        } else if self.subs[i].dec.as_ref().is_some_and(|d| d.finished()) {
            self.lost_live(i, "stream ended".into());
        }
    }

    fn reset(&mut self, run: u32) {
        self.phase = Phase {
            run,
            start_cpu_ns: self_cpu_ns(),
            ..Phase::default()
        };
        for s in &mut self.subs {
            s.in_phase = s.st == St::Live && !s.stalled;
            s.next = [0; MAX_PUB];
        }
    }

    fn report(&mut self, id: u64) -> Report {
        let r = Report {
            kind: "report".into(),
            id,
            live: self.live as u64,
            in_phase: self.subs.iter().filter(|s| s.in_phase).count() as u64,
            stalled_live: self.stalled_live as u64,
            failed: self.failed as u64,
            closed: self.phase.closed,
            received: self.phase.received,
            stale: self.phase.stale,
            pings: self.phase.pings,
            other: self.phase.other,
            dups: self.phase.dups,
            gaps: self.phase.gaps,
            bytes: self.phase.bytes,
            hist: self.phase.hist.sparse(),
            window: self.phase.window.sparse(),
            first_ns: self.phase.first_ns,
            last_ns: self.phase.last_ns,
            cpu_ns: self_cpu_ns().saturating_sub(self.phase.start_cpu_ns),
            errors: self.errors.clone(),
        };
        self.phase.window.clear();
        r
    }

    /// Sends the protocol's keep-alive on every live connection (stalled
    /// ones too: they stop reading, not writing) that has not sent one for
    /// `KEEPALIVE_EVERY_NS`.
    fn keepalive(&mut self, now: u64) {
        let Some(ping) = self.opts.proto.keepalive() else {
            return;
        };
        for i in 0..self.next_start {
            let s = &mut self.subs[i];
            if s.st != St::Live || now.saturating_sub(s.pinged_ns) < KEEPALIVE_EVERY_NS {
                continue;
            }
            s.pinged_ns = now;
            let Some(sock) = s.sock.as_mut() else {
                continue;
            };
            match sock.write(ping) {
                Ok(n) if n == ping.len() => {}
                // A full send buffer: the next round tries again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Ok(_) => fail(&mut self.errors, "short keep-alive write".into()),
                Err(e) => self.lost_live(i, format!("keep-alive write: {e}")),
            }
        }
    }

    /// Starts connections up to the concurrency limit and times out stuck ones.
    fn housekeeping(&mut self, now: u64) {
        self.keepalive(now);
        while self.in_flight < self.opts.concurrency {
            if let Some(i) = self.retry.pop() {
                self.start(i);
            } else if self.next_start < self.opts.count {
                let i = self.next_start;
                self.next_start += 1;
                self.start(i);
            } else {
                break;
            }
        }
        if self.in_flight > 0 {
            for i in 0..self.next_start {
                let s = &self.subs[i];
                if matches!(s.st, St::Connecting | St::Head)
                    && now.saturating_sub(s.started_ns) > CONNECT_TIMEOUT_NS
                {
                    self.setup_failed(i, "timed out setting up".into());
                }
            }
        }
    }
}

/// A non-blocking connect from `src` (any port) to `dst`.
fn connect_from(src: Ipv4Addr, dst: SocketAddr, rcvbuf: Option<usize>) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    // Let connect() pick the port per destination, not bind() per source.
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads `one` (a c_int) for its stated length.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size)?;
    }
    socket.bind(&SockAddr::from(SocketAddrV4::new(src, 0)))?;
    match socket.connect(&SockAddr::from(dst)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let std: std::net::TcpStream = socket.into();
    Ok(TcpStream::from_std(std))
}

fn emit<T: Serialize>(v: &T) {
    let mut out = io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, v);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// Runs a worker until `quit` or until stdin closes.
pub fn run(opts: WorkerOpts) -> io::Result<()> {
    if !opts.addr.ip().is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the load generator only targets loopback addresses",
        ));
    }
    let tls = match &opts.tls_ca {
        Some(ca) => Some(
            transport::client_config(ca)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        ),
        None => None,
    };
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), STDIN)?);
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
            let _ = waker.wake();
        }
        let _ = tx.send("quit".into());
        let _ = waker.wake();
    });
    let count = opts.count;
    let mut w = Worker {
        subs: (0..count)
            .map(|i| Sub {
                sock: None,
                st: St::NotStarted,
                stalled: i < opts.stalled,
                in_phase: false,
                started_ns: 0,
                head: Vec::new(),
                dec: None,
                pinged_ns: 0,
                retries: 0,
                next: [0; MAX_PUB],
            })
            .collect(),
        opts,
        poll,
        next_start: 0,
        retry: Vec::new(),
        in_flight: 0,
        live: 0,
        stalled_live: 0,
        failed: 0,
        errors: BTreeMap::new(),
        phase: Phase::default(),
        buf: vec![0; 256 * 1024],
        plain: Vec::with_capacity(512 * 1024),
        tls,
    };
    let mut events = Events::with_capacity(4096);
    let mut ready_sent = false;
    let mut last_housekeeping = 0;
    loop {
        let timeout = if ready_sent {
            Duration::from_millis(200)
        } else {
            Duration::from_millis(5)
        };
        if let Err(e) = w.poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        for ev in events.iter() {
            if ev.token() != STDIN {
                w.on_event(ev.token().0, ev);
            }
        }
        let now = now_ns();
        if !ready_sent || now - last_housekeeping > 100_000_000 {
            last_housekeeping = now;
            w.housekeeping(now);
        }
        if !ready_sent && w.in_flight == 0 && w.next_start == count && w.retry.is_empty() {
            ready_sent = true;
            let mut r = w.report(0);
            r.kind = "ready".into();
            emit(&r);
        }
        while let Ok(cmd) = rx.try_recv() {
            let mut parts = cmd.split_whitespace();
            match parts.next() {
                Some("reset") => {
                    let run = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                    w.reset(run);
                }
                Some("report") => {
                    let id = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                    let r = w.report(id);
                    emit(&r);
                }
                Some("quit") => return Ok(()),
                _ => {}
            }
        }
    }
}
