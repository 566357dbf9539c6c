//! The soak driver (`bench/soak.sh` starts the server and runs this against
//! it): a publisher numbering its events, healthy subscribers that come and
//! go (resuming by cursor, so each must see one unbroken sequence), slow
//! readers, churn, hostile clients (garbage, slowloris, half-closed sockets,
//! oversize bodies), SIGHUP and SIGUSR2 every few seconds, and the server's
//! RSS and open fds sampled each second. Prints the figures; exits 1 when a
//! check fails. Loopback only; every loop ends at the deadline.
//!
//! With a TLS address and its CA, half the healthy subscribers come and go
//! over TLS (the server's own TLS 1.3 record layer after each handshake),
//! and the hostile clients also send forged records after a handshake.
//!
//!   soak ADDR PID SECONDS [TLS_ADDR CA_PEM]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const HEALTHY: usize = 8;
const SLOW: usize = 4;
const PUBLISH_EVERY: Duration = Duration::from_millis(5);

struct Shared {
    addr: SocketAddr,
    /// The TLS port and a client config trusting its certificate.
    tls: Option<(SocketAddr, Arc<rustls::ClientConfig>)>,
    stop: AtomicBool,
    /// Highest sequence number answered 202.
    acked: AtomicU64,
    /// Set once the publisher has published its last event.
    last: AtomicU64,
    failures: Mutex<Vec<String>>,
    hostile: AtomicU64,
    drops: AtomicU64,
    resumes: AtomicU64,
}

impl Shared {
    fn fail(&self, what: String) {
        eprintln!("soak: FAIL {what}");
        if let Ok(mut f) = self.failures.lock() {
            f.push(what);
        }
    }
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    // Closed with a reset, not into TIME_WAIT: thousands of short
    // connections must not use up the shared machine's ephemeral ports.
    socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// A stream a subscriber reads: plain TCP or rustls over TCP.
trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to the server's TLS port (the handshake happens on the
/// first read or write).
fn connect_tls(tls: &(SocketAddr, Arc<rustls::ClientConfig>)) -> io::Result<TlsStream> {
    let sock = connect(tls.0)?;
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(io::Error::other)?;
    let conn = rustls::ClientConnection::new(tls.1.clone(), name).map_err(io::Error::other)?;
    Ok(rustls::StreamOwned::new(conn, sock))
}

/// A client config trusting the certificates in the PEM file `ca`.
fn tls_client_config(ca: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// Reads one response head + Content-Length body; returns the status.
fn read_response(r: &mut BufReader<TcpStream>) -> io::Result<u16> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
    let mut len = 0usize;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(status)
}

fn publisher(sh: &Shared) {
    let mut seq = 0u64;
    let mut conn: Option<(TcpStream, BufReader<TcpStream>)> = None;
    while !sh.stop.load(Ordering::Relaxed) {
        seq += 1;
        if !publish_one(sh, &mut conn, seq) {
            return;
        }
        thread::sleep(PUBLISH_EVERY);
    }
    // The last event: every healthy subscriber reads up to it.
    seq += 1;
    if publish_one(sh, &mut conn, seq) {
        sh.last.store(seq, Ordering::SeqCst);
    }
}

/// One keep-alive publish (reconnecting once if the connection went away).
fn publish_one(
    sh: &Shared,
    conn: &mut Option<(TcpStream, BufReader<TcpStream>)>,
    seq: u64,
) -> bool {
    let body = format!("{{\"seq\":{seq},\"pad\":\"{}\"}}", "x".repeat(64));
    let req = format!(
        "PUT /soak/seq HTTP/1.1\r\nHost: s\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    for _attempt in 0..2 {
        if conn.is_none() {
            match connect(sh.addr).and_then(|s| Ok((s.try_clone()?, BufReader::new(s)))) {
                Ok(c) => *conn = Some(c),
                Err(e) => {
                    sh.fail(format!("publisher cannot connect: {e}"));
                    return false;
                }
            }
        }
        let Some((w, r)) = conn.as_mut() else {
            return false;
        };
        let result = w.write_all(req.as_bytes()).and_then(|_| read_response(r));
        match result {
            Ok(202) => {
                sh.acked.store(seq, Ordering::SeqCst);
                return true;
            }
            Ok(s) => {
                sh.fail(format!("publish {seq} answered {s}"));
                return false;
            }
            // A keep-alive connection the server closed: once more on a
            // fresh one (the request was not answered, so not accepted).
            Err(_) => *conn = None,
        }
    }
    sh.fail(format!("publish {seq}: no answer"));
    false
}

/// A chunked stream reader: the data of the next chunk, `None` at the end.
fn next_chunk(r: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let size = usize::from_str_radix(line.trim_end(), 16)
        .map_err(|_| io::Error::other(format!("bad chunk size {line:?}")))?;
    let mut data = vec![0; size + 2];
    r.read_exact(&mut data)?;
    data.truncate(size);
    Ok((size > 0).then_some(data))
}

/// Opens `GET /soak` (resuming after `cursor`), over TLS when `tls` is
/// given; returns the reader past the head.
fn subscribe(
    addr: SocketAddr,
    tls: Option<&(SocketAddr, Arc<rustls::ClientConfig>)>,
    cursor: Option<&str>,
) -> io::Result<BufReader<Box<dyn Conn>>> {
    let mut s: Box<dyn Conn> = match tls {
        Some(tls) => Box::new(connect_tls(tls)?),
        None => Box::new(connect(addr)?),
    };
    let resume = cursor
        .map(|c| format!("X-Fetch-Since-Cursor: {c}\r\n"))
        .unwrap_or_default();
    write!(s, "GET /soak HTTP/1.1\r\nHost: s\r\n{resume}\r\n")?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    if !line.starts_with("HTTP/1.1 200") {
        return Err(io::Error::other(format!("subscribe: {line:?}")));
    }
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    Ok(r)
}

/// Connects, stays 1-8 s, leaves, comes back resuming after the last
/// event seen: over the whole run it must see one unbroken sequence.
/// Odd ones connect over TLS when the server has a TLS port.
fn healthy(sh: &Shared, id: u64) {
    let tls = sh.tls.as_ref().filter(|_| id % 2 == 1);
    let mut rng = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut last_seq: Option<u64> = None;
    let mut cursor: Option<String> = None;
    let mut seen = 0u64;
    let end_by = |sh: &Shared| sh.last.load(Ordering::SeqCst);
    let mut final_deadline: Option<Instant> = None;
    'outer: loop {
        if let Some(d) = final_deadline {
            if Instant::now() > d {
                sh.fail(format!(
                    "healthy {id}: did not reach the last event (at {last_seq:?})"
                ));
                return;
            }
        }
        let mut r = match subscribe(sh.addr, tls, cursor.as_deref()) {
            Ok(r) => r,
            Err(e) => {
                sh.fail(format!("healthy {id}: {e}"));
                return;
            }
        };
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let leave_at = Instant::now() + Duration::from_millis(1000 + rng % 7000);
        loop {
            let stopping = sh.stop.load(Ordering::Relaxed);
            if stopping && final_deadline.is_none() {
                final_deadline = Some(Instant::now() + Duration::from_secs(30));
            }
            let last = end_by(sh);
            if last != 0 && last_seq.is_some_and(|s| s >= last) {
                break 'outer;
            }
            if !stopping && Instant::now() > leave_at {
                sh.resumes.fetch_add(1, Ordering::Relaxed);
                continue 'outer;
            }
            let chunk = match next_chunk(&mut r) {
                Ok(Some(c)) => c,
                Ok(None) | Err(_) => {
                    // Dropped (e.g. judged too slow on a loaded machine):
                    // resume by cursor; the sequence must still hold.
                    sh.drops.fetch_add(1, Ordering::Relaxed);
                    continue 'outer;
                }
            };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&chunk) else {
                sh.fail(format!("healthy {id}: not JSON: {chunk:?}"));
                return;
            };
            let Some(seq) = v.get("seq").and_then(|s| s.as_u64()) else {
                continue; // a ping
            };
            if let Some(prev) = last_seq {
                if seq != prev + 1 {
                    let what = if seq <= prev { "doubled" } else { "lost" };
                    sh.fail(format!("healthy {id}: after {prev} came {seq} ({what})"));
                    return;
                }
            }
            last_seq = Some(seq);
            seen += 1;
            cursor = v
                .get("pubsub_cursor")
                .and_then(|c| c.as_str())
                .map(String::from);
        }
    }
    if seen == 0 {
        sh.fail(format!("healthy {id}: saw nothing"));
    }
}

/// Reads a few bytes now and then: the server must drop it, not grow.
/// Every other one over TLS, when there is a TLS port.
fn slow_reader(sh: &Shared) {
    let mut round = 0u64;
    while !sh.stop.load(Ordering::Relaxed) {
        round += 1;
        let tls = sh.tls.as_ref().filter(|_| round.is_multiple_of(2));
        if let Ok(mut r) = subscribe(sh.addr, tls, None) {
            let mut b = [0u8; 16];
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until && !sh.stop.load(Ordering::Relaxed) {
                if matches!(r.get_mut().read(&mut b), Ok(0) | Err(_)) {
                    break;
                }
                thread::sleep(Duration::from_millis(200));
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Subscribes and leaves at once, over and over (every other time over
/// TLS, when there is a TLS port).
fn churn(sh: &Shared) {
    let mut round = 0u64;
    while !sh.stop.load(Ordering::Relaxed) {
        round += 1;
        let tls = sh.tls.as_ref().filter(|_| round.is_multiple_of(2));
        if let Ok(r) = subscribe(sh.addr, tls, None) {
            thread::sleep(Duration::from_millis(50));
            drop(r);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Over TLS: subscribes, then writes a forged record on the socket under
/// the session; the server must close just this connection.
fn forged_record(tls: &(SocketAddr, Arc<rustls::ClientConfig>)) -> io::Result<()> {
    let mut s = connect_tls(tls)?;
    s.write_all(b"GET /soak HTTP/1.1\r\nHost: s\r\n\r\n")?;
    let mut head = [0u8; 512];
    let _ = s.read(&mut head)?;
    let mut forged = vec![0x17, 3, 3, 0, 40];
    forged.extend_from_slice(&[0x5a; 40]);
    s.sock.write_all(&forged)?;
    let mut sink = [0u8; 4096];
    while s.read(&mut sink)? > 0 {}
    Ok(())
}

/// Garbage, slowloris, half-closed sockets and oversize bodies, in turn.
fn hostile(sh: &Shared) {
    let mut round = 0u64;
    let mut held: Vec<TcpStream> = Vec::new();
    while !sh.stop.load(Ordering::Relaxed) {
        round += 1;
        let Ok(mut s) = connect(sh.addr) else {
            thread::sleep(Duration::from_millis(50));
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = match round % 5 {
            // Garbage.
            0 => s.write_all(b"\x16\x03\x01\x00\xff\x00garbage\r\n\r\n\x00\x01"),
            // Slowloris: part of a head now, the rest never; held open.
            1 => {
                let r = s.write_all(b"GET /soak HTTP/1.1\r\nHost: s\r\nX-Slow: ");
                if let Ok(c) = s.try_clone() {
                    held.push(c);
                }
                if held.len() > 50 {
                    held.remove(0);
                }
                r
            }
            // Half-closed: a request, then our side shut for writing.
            2 => s
                .write_all(b"GET /soak HTTP/1.1\r\nHost: s\r\n\r\n")
                .map(|_| {
                    let _ = s.shutdown(Shutdown::Write);
                }),
            // A partial publish, then half-closed.
            3 => s
                .write_all(b"PUT /soak HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"a\":")
                .map(|_| {
                    let _ = s.shutdown(Shutdown::Write);
                }),
            // Oversize body: far past max_payload_size.
            _ => s
                .write_all(b"PUT /soak HTTP/1.1\r\nHost: s\r\nContent-Length: 50000000\r\n\r\n")
                .and_then(|_| {
                    let chunk = vec![b' '; 64 * 1024];
                    for _ in 0..4 {
                        s.write_all(&chunk)?;
                    }
                    Ok(())
                }),
        };
        if round % 5 != 1 {
            let mut sink = [0u8; 4096];
            let _ = s.read(&mut sink);
        }
        if let Some(tls) = sh.tls.as_ref().filter(|_| round.is_multiple_of(5)) {
            let _ = forged_record(tls);
        }
        sh.hostile.fetch_add(1, Ordering::Relaxed);
        thread::sleep(Duration::from_millis(10));
    }
}

fn proc_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn proc_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

fn third_ratio(samples: &[u64]) -> (f64, f64, f64) {
    let k = (samples.len() / 3).max(1);
    let avg = |s: &[u64]| s.iter().sum::<u64>() as f64 / s.len().max(1) as f64;
    let first = avg(&samples[..k.min(samples.len())]);
    let last = avg(&samples[samples.len().saturating_sub(k)..]);
    (first, last, if first > 0.0 { last / first } else { 1.0 })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(pid), Some(secs)) = (
        args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(2).and_then(|a| a.parse::<u32>().ok()),
        args.get(3).and_then(|a| a.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: soak ADDR PID SECONDS [TLS_ADDR CA_PEM]");
        std::process::exit(2);
    };
    let tls = match (args.get(4), args.get(5)) {
        (Some(tls_addr), Some(ca)) => {
            let tls_addr = tls_addr.parse::<SocketAddr>().unwrap_or_else(|e| {
                eprintln!("soak: bad TLS address {tls_addr}: {e}");
                std::process::exit(2);
            });
            let config = tls_client_config(ca).unwrap_or_else(|e| {
                eprintln!("soak: CA {ca}: {e}");
                std::process::exit(2);
            });
            Some((tls_addr, config))
        }
        _ => None,
    };
    let with_tls = tls.is_some();
    let sh = Arc::new(Shared {
        addr,
        tls,
        stop: AtomicBool::new(false),
        acked: AtomicU64::new(0),
        last: AtomicU64::new(0),
        failures: Mutex::new(Vec::new()),
        hostile: AtomicU64::new(0),
        drops: AtomicU64::new(0),
        resumes: AtomicU64::new(0),
    });
    let mut threads = Vec::new();
    let spawn = |f: Box<dyn FnOnce() + Send>| thread::spawn(f);
    {
        let sh = sh.clone();
        threads.push(spawn(Box::new(move || publisher(&sh))));
    }
    for id in 0..HEALTHY as u64 {
        let sh = sh.clone();
        threads.push(spawn(Box::new(move || healthy(&sh, id))));
    }
    for _ in 0..SLOW {
        let sh = sh.clone();
        threads.push(spawn(Box::new(move || slow_reader(&sh))));
    }
    {
        let (sh1, sh2) = (sh.clone(), sh.clone());
        threads.push(spawn(Box::new(move || churn(&sh1))));
        threads.push(spawn(Box::new(move || hostile(&sh2))));
    }

    let start = Instant::now();
    let (mut rss, mut fds) = (Vec::new(), Vec::new());
    let mut signals = 0u32;
    let mut tick = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        thread::sleep(Duration::from_secs(1));
        tick += 1;
        match (proc_rss_kib(pid), proc_fds(pid)) {
            (Some(r), Some(f)) => {
                rss.push(r);
                fds.push(f);
            }
            _ => {
                sh.fail("the server process is gone".into());
                break;
            }
        }
        // A reload every 3 s, SIGHUP and SIGUSR2 in turn.
        if tick.is_multiple_of(3) {
            let sig = if tick.is_multiple_of(6) {
                libc::SIGHUP
            } else {
                libc::SIGUSR2
            };
            // SAFETY: kill(2) with a PID and a signal number; no memory.
            unsafe { libc::kill(pid as libc::pid_t, sig) };
            signals += 1;
        }
        if tick.is_multiple_of(10) {
            eprintln!(
                "soak: {tick}s rss {} KiB fds {} acked {}",
                rss.last().unwrap_or(&0),
                fds.last().unwrap_or(&0),
                sh.acked.load(Ordering::Relaxed)
            );
        }
    }
    sh.stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }

    // The first 10 s are warm-up (the backlog filling up), not growth.
    let warm = rss.len().min(10);
    let (r1, r3, rr) = third_ratio(&rss[warm..]);
    let (f1, f3, fr) = third_ratio(&fds[warm..]);
    println!(
        "soak: {secs}s, {} events acknowledged, {HEALTHY} healthy subscribers{} ({} resumes by \
         cursor, {} drops), {} hostile connections, {signals} reloads (SIGHUP/SIGUSR2)",
        sh.acked.load(Ordering::SeqCst),
        if with_tls { ", half over TLS" } else { "" },
        sh.resumes.load(Ordering::Relaxed),
        sh.drops.load(Ordering::Relaxed),
        sh.hostile.load(Ordering::Relaxed)
    );
    println!("soak: after 10 s of warm-up, RSS first third {r1:.0} KiB, last third {r3:.0} KiB, ratio {rr:.3}");
    println!("soak: fds first third {f1:.1}, last third {f3:.1}, ratio {fr:.3}");
    // Flat: within 20% (and not only a few MiB / fds of noise).
    if rr > 1.2 && r3 - r1 > 4096.0 {
        sh.fail(format!("RSS grew: {r1:.0} → {r3:.0} KiB"));
    }
    if fr > 1.5 && f3 - f1 > 32.0 {
        sh.fail(format!("open fds grew: {f1:.1} → {f3:.1}"));
    }
    let failures = sh.failures.lock().map(|f| f.clone()).unwrap_or_default();
    if failures.is_empty() {
        println!("soak: no event lost or doubled for any healthy subscriber");
    } else {
        println!("soak: {} failures, first: {}", failures.len(), failures[0]);
        std::process::exit(1);
    }
}
