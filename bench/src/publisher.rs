//! The publisher: `conns` keep-alive connections, each with at most one
//! request in flight (pipelining depth 1), either at a fixed total rate
//! (open loop: events are scheduled at t0 + k/rate and sent on any idle
//! connection) or as fast as the server answers. With `tls` set, every
//! connection speaks TLS and finishes its handshake before the clock starts.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::clock::{now_ns, self_cpu_ns};
use crate::hist::Hist;
use crate::lines::Stamp;
use crate::proto::{publish_request, Proto};
use crate::transport::Conn as Transport;

#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Events per second over all connections.
    Rate(f64),
    /// Each connection sends its next request as soon as it has an answer.
    Max,
}

#[derive(Debug, Clone)]
pub struct PubOpts {
    pub proto: Proto,
    pub addr: SocketAddr,
    pub chan: String,
    pub conns: usize,
    pub size: usize,
    pub mode: Mode,
    pub duration: Duration,
    /// Phase id written into every event.
    pub run: u32,
    /// Speak TLS with this client configuration.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// What the publisher saw.
#[derive(Debug, Default, Clone)]
pub struct PubResult {
    pub sent: u64,
    /// 2xx answers.
    pub ok: u64,
    /// Accepted events per publisher connection index.
    pub ok_per_conn: Vec<u64>,
    pub status_errors: BTreeMap<u16, u64>,
    pub io_errors: BTreeMap<String, u64>,
    pub first_error_body: Option<String>,
    /// Request → response times.
    pub rtt: Hist,
    /// (end of the second since start, 2xx answers in it, errors in it),
    /// whole seconds only
    pub per_second: Vec<(f64, u64, u64)>,
    /// Scheduled events that found no idle connection on time.
    pub late: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    pub cpu_ns: u64,
    pub reconnects: u64,
    /// The negotiated TLS version and cipher suite, when TLS.
    pub tls: Option<String>,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum St {
    Connecting,
    /// TCP is up; the TLS handshake is not done.
    Handshaking,
    /// The protocol's hello (MQTT CONNECT) is sent, its answer not in.
    Greeting,
    Idle,
    Busy,
    Dead,
}

struct Conn {
    sock: Option<Transport>,
    st: St,
    out: Vec<u8>,
    written: usize,
    inbuf: Vec<u8>,
    sent_ns: u64,
    seq: u32,
    /// Reconnections after errors (capped); a server that closes after
    /// each answer (Pushpin's publish API) is reconnected without limit.
    reconnects: u32,
    /// The server closed the connection after a complete answer.
    closed_after_answer: bool,
}

const MAX_RECONNECTS: u32 = 1000;

fn connect(poll: &Poll, opts: &PubOpts, i: usize) -> io::Result<Transport> {
    let s = TcpStream::connect(opts.addr)?;
    let mut s = Transport::new(s, opts.tls.as_ref(), opts.addr.ip())?;
    poll.registry().register(
        s.socket_mut(),
        Token(i),
        Interest::READABLE | Interest::WRITABLE,
    )?;
    Ok(s)
}

/// Takes a new connection through TCP connect, (with TLS) the handshake
/// and (MQTT) the hello to `Idle`.
fn advance_setup(proto: Proto, c: &mut Conn, writable: bool, res: &mut PubResult) {
    let Some(s) = c.sock.as_mut() else { return };
    if c.st == St::Connecting && writable && s.socket().peer_addr().is_ok() {
        let _ = s.socket().set_nodelay(true);
        c.st = St::Handshaking;
    }
    if c.st != St::Handshaking {
        return;
    }
    match s.flush_pending() {
        Ok(_) if s.handshaking() => {}
        Ok(_) => {
            if res.tls.is_none() {
                res.tls = s.tls_description();
            }
            c.st = St::Idle;
            if let Some(hello) = proto.publisher_hello() {
                c.out = hello;
                c.written = 0;
                c.st = St::Greeting;
                flush(c, res);
            }
        }
        Err(e) => {
            *res.io_errors.entry(format!("handshake: {e}")).or_insert(0) += 1;
            c.st = St::Dead;
        }
    }
}

/// Publishes for `opts.duration`, calling `tick(seconds_since_start, &result)`
/// about once per `tick_every`; then waits (at most 10 s) for answers to the
/// requests still in flight.
pub fn publish(
    opts: &PubOpts,
    tick_every: Duration,
    mut tick: impl FnMut(f64, &PubResult),
) -> io::Result<PubResult> {
    let mut poll = Poll::new()?;
    let mut rbuf = ReadBuf {
        raw: vec![0; 16 * 1024],
        plain: Vec::new(),
    };
    let mut conns: Vec<Conn> = Vec::new();
    for i in 0..opts.conns {
        conns.push(Conn {
            sock: Some(connect(&poll, opts, i)?),
            st: St::Connecting,
            out: Vec::new(),
            written: 0,
            inbuf: Vec::new(),
            sent_ns: 0,
            seq: 0,
            reconnects: 0,
            closed_after_answer: false,
        });
    }
    let mut res = PubResult {
        ok_per_conn: vec![0; opts.conns],
        ..Default::default()
    };
    // Wait for every connection before the clock starts.
    let mut events = Events::with_capacity(1024);
    let setup_deadline = now_ns() + 10_000_000_000;
    let setting_up = |c: &Conn| matches!(c.st, St::Connecting | St::Handshaking | St::Greeting);
    while conns.iter().any(setting_up) && now_ns() < setup_deadline {
        poll.poll(&mut events, Some(Duration::from_millis(10)))?;
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut conns[i];
            if matches!(c.st, St::Handshaking | St::Greeting)
                && (ev.is_readable() || ev.is_read_closed())
            {
                read(opts.proto, c, i, &mut res, &mut rbuf);
            }
            advance_setup(opts.proto, c, ev.is_writable(), &mut res);
        }
    }
    for c in &mut conns {
        if setting_up(c) {
            c.st = St::Dead;
            *res.io_errors.entry("connect timeout".into()).or_insert(0) += 1;
        }
    }
    let cpu0 = self_cpu_ns();
    let start = now_ns();
    res.start_ns = start;
    let end = start + opts.duration.as_nanos() as u64;
    let tick_ns = tick_every.as_nanos().max(1) as u64;
    let mut next_tick = start + tick_ns;
    let mut scheduled: u64 = 0;
    let mut sec_ok = 0u64;
    let mut sec_err = 0u64;
    let mut next_sec = start + 1_000_000_000;
    let mut rr = 0usize;
    let mut draining_until: Option<u64> = None;
    loop {
        let now = now_ns();
        while now >= next_sec {
            res.per_second.push((
                (next_sec - start) as f64 / 1e9,
                std::mem::take(&mut sec_ok),
                std::mem::take(&mut sec_err),
            ));
            next_sec += 1_000_000_000;
        }
        if now >= next_tick {
            tick((now - start) as f64 / 1e9, &res);
            next_tick = now + tick_ns;
        }
        let sending = now < end;
        if !sending && draining_until.is_none() {
            draining_until = Some(now + 10_000_000_000);
        }
        if let Some(d) = draining_until {
            if now >= d || !conns.iter().any(|c| c.st == St::Busy) {
                break;
            }
        }
        // Send what is due.
        if sending {
            match opts.mode {
                Mode::Max => {
                    for (i, c) in conns.iter_mut().enumerate() {
                        if c.st == St::Idle {
                            send(opts, c, i, &mut res);
                        }
                    }
                }
                Mode::Rate(rate) => {
                    let due = ((now - start) as f64 / 1e9 * rate) as u64 + 1;
                    while scheduled < due {
                        let n = conns.len();
                        let Some(i) = (0..n)
                            .map(|k| (rr + k) % n)
                            .find(|&i| conns[i].st == St::Idle)
                        else {
                            break;
                        };
                        rr = i + 1;
                        send(opts, &mut conns[i], i, &mut res);
                        scheduled += 1;
                    }
                    if scheduled + 1 < due {
                        res.late += due - scheduled - 1;
                        // Drop what cannot be sent, rather than bursting later.
                        scheduled = due - 1;
                    }
                }
            }
        }
        let timeout = match opts.mode {
            Mode::Rate(rate) if sending => {
                let next_due = start + ((scheduled as f64) / rate * 1e9) as u64;
                Duration::from_nanos(next_due.saturating_sub(now_ns()).min(tick_ns))
            }
            _ => Duration::from_millis(50),
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut conns[i];
            if ev.is_writable() && c.st == St::Busy {
                flush(c, &mut res);
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                let before = res.ok;
                let errs_before = res.status_errors.values().sum::<u64>();
                read(opts.proto, c, i, &mut res, &mut rbuf);
                sec_ok += res.ok - before;
                sec_err += res.status_errors.values().sum::<u64>() - errs_before;
            }
            if c.st == St::Dead
                && (c.closed_after_answer || c.reconnects < MAX_RECONNECTS)
                && now_ns() < end
            {
                if !c.closed_after_answer {
                    c.reconnects += 1;
                }
                c.closed_after_answer = false;
                res.reconnects += 1;
                if let Some(mut s) = c.sock.take() {
                    let _ = poll.registry().deregister(s.socket_mut());
                }
                match connect(&poll, opts, i) {
                    Ok(s) => {
                        c.sock = Some(s);
                        c.st = St::Connecting;
                        c.inbuf.clear();
                    }
                    Err(e) => {
                        *res.io_errors.entry(format!("reconnect: {e}")).or_insert(0) += 1;
                    }
                }
            }
            advance_setup(opts.proto, c, ev.is_writable(), &mut res);
        }
    }
    // (The last, partial second is left out of the series.)
    let _ = (sec_ok, sec_err);
    res.end_ns = now_ns();
    res.cpu_ns = self_cpu_ns() - cpu0;
    Ok(res)
}

fn send(opts: &PubOpts, c: &mut Conn, i: usize, res: &mut PubResult) {
    let t = now_ns();
    let stamp = Stamp {
        run: opts.run,
        publisher: i as u32,
        seq: c.seq,
        t_ns: t,
    };
    publish_request(opts.proto, &opts.chan, stamp, opts.size, &mut c.out);
    c.seq += 1;
    c.written = 0;
    c.sent_ns = t;
    c.st = St::Busy;
    res.sent += 1;
    flush(c, res);
}

fn flush(c: &mut Conn, res: &mut PubResult) {
    let Some(sock) = c.sock.as_mut() else { return };
    while c.written < c.out.len() {
        match sock.write(&c.out[c.written..]) {
            Ok(0) => {
                c.st = St::Dead;
                return;
            }
            Ok(n) => c.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                *res.io_errors.entry(format!("write: {e}")).or_insert(0) += 1;
                c.st = St::Dead;
                return;
            }
        }
    }
    // TLS records the socket did not take yet.
    if let Err(e) = sock.flush_pending() {
        *res.io_errors.entry(format!("write: {e}")).or_insert(0) += 1;
        c.st = St::Dead;
    }
}

/// Read space shared by every connection (zeroed once, not per read).
struct ReadBuf {
    raw: Vec<u8>,
    plain: Vec<u8>,
}

fn read(proto: Proto, c: &mut Conn, i: usize, res: &mut PubResult, buf: &mut ReadBuf) {
    let Some(sock) = c.sock.as_mut() else { return };
    let ReadBuf { raw: buf, plain } = buf;
    loop {
        match sock.recv(buf, plain) {
            Ok(r) => {
                c.inbuf.extend_from_slice(r.data);
                if r.eof {
                    // Answers that came with the close still count.
                    take_answers(proto, c, i, res);
                    if c.st == St::Busy || c.st == St::Greeting {
                        *res.io_errors
                            .entry("closed with a request in flight".into())
                            .or_insert(0) += 1;
                    }
                    c.st = St::Dead;
                    return;
                }
                if r.wire < buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                *res.io_errors.entry(format!("read: {e}")).or_insert(0) += 1;
                c.st = St::Dead;
                return;
            }
        }
    }
    take_answers(proto, c, i, res);
}

/// Counts every complete answer in `c.inbuf`.
fn take_answers(proto: Proto, c: &mut Conn, i: usize, res: &mut PubResult) {
    loop {
        let answer = match proto.answer(&c.inbuf) {
            Ok(Some(a)) => a,
            Ok(None) => return,
            Err(e) => {
                *res.io_errors.entry(e).or_insert(0) += 1;
                c.st = St::Dead;
                return;
            }
        };
        let total = answer.len;
        if answer.hello {
            c.inbuf.drain(..total);
            if answer.status == 200 && c.st == St::Greeting {
                c.st = St::Idle;
                continue;
            }
            *res.status_errors.entry(answer.status).or_insert(0) += 1;
            c.st = St::Dead;
            return;
        }
        if c.st != St::Busy {
            // Nothing in flight (an MQTT packet we did not ask for, or a
            // connection already closed).
            c.inbuf.drain(..total);
            continue;
        }
        let now = now_ns();
        if (200..300).contains(&answer.status) {
            res.ok += 1;
            res.ok_per_conn[i] += 1;
        } else {
            *res.status_errors.entry(answer.status).or_insert(0) += 1;
            if res.first_error_body.is_none() {
                res.first_error_body =
                    Some(String::from_utf8_lossy(&c.inbuf[..total.min(400)]).into_owned());
            }
        }
        res.rtt.record(now.saturating_sub(c.sent_ns));
        c.inbuf.drain(..total);
        if answer.close {
            c.st = St::Dead;
            c.closed_after_answer = true;
            return;
        }
        c.st = St::Idle;
    }
}
