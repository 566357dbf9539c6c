//! The `tls-handshakes` scenario: TLS handshakes per second a server
//! completes on its one core, new sessions and resumed ones. Client
//! threads open connections flat out for a fixed time: connect, handshake,
//! close_notify and TCP FIN, read to the server's end of stream (which
//! also takes in its session tickets), close. The server's CPU is read
//! from /proc around each phase.
//!
//! The clients do not check the server's certificate: the figure is the
//! server's cost, and a client verifying two ECDSA signatures per full
//! handshake would be the bottleneck on its own core. Resumed sessions
//! keep rustls's in-memory session store (TLS 1.3 tickets); new ones have
//! resumption off.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, HandshakeKind, SignatureScheme,
};
use serde_json::{json, Value};

use crate::server::{clk_tck, sample};

/// Client threads per phase: enough handshakes in flight to keep one
/// server core busy across the round trips.
const THREADS: usize = 64;

/// How long one connection may take before it counts as failed.
const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// Accepts any certificate; the signatures are not checked (see the
/// module's comment).
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The clients' configuration: resumption kept (`resume`) or off.
fn client_config(resume: bool) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = if resume {
        Resumption::in_memory_sessions(1024)
    } else {
        Resumption::disabled()
    };
    Ok(Arc::new(config))
}

/// What one connection came to.
struct Done {
    resumed: bool,
    suite: String,
}

/// One connection: handshake, close_notify + FIN, read to end of stream.
fn one(addr: SocketAddr, config: &Arc<ClientConfig>) -> io::Result<Done> {
    let mut sock = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(IO_TIMEOUT))?;
    sock.set_write_timeout(Some(IO_TIMEOUT))?;
    let name = ServerName::IpAddress(addr.ip().into());
    let mut tls = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
    while tls.is_handshaking() {
        tls.complete_io(&mut sock)?;
    }
    let done = Done {
        resumed: tls.handshake_kind() == Some(HandshakeKind::Resumed),
        suite: match (tls.protocol_version(), tls.negotiated_cipher_suite()) {
            (Some(v), Some(s)) => format!("{v:?} {:?}", s.suite()),
            _ => String::new(),
        },
    };
    tls.send_close_notify();
    while tls.wants_write() {
        tls.write_tls(&mut sock)?;
    }
    sock.flush()?;
    sock.shutdown(std::net::Shutdown::Write)?;
    // The server's tickets, close_notify and end of stream. A server that
    // answered the close with a reset has still done the handshake.
    let mut buf = [0u8; 4096];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let mut data = &buf[..n];
                while !data.is_empty() {
                    tls.read_tls(&mut data)?;
                    if tls.process_new_packets().is_err() {
                        break;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// One phase: `THREADS` clients for `secs` seconds against `addr`.
fn phase(addr: SocketAddr, pid: Option<u32>, secs: f64, resume: bool) -> Value {
    let config = match client_config(resume) {
        Ok(c) => c,
        Err(e) => return json!({ "error": e }),
    };
    let ok = Arc::new(AtomicU64::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let suite = Arc::new(Mutex::new(String::new()));
    let first_error = Arc::new(Mutex::new(String::new()));
    // One connection first, so that the resumed phase starts with a ticket.
    if let Ok(d) = one(addr, &config) {
        if let Ok(mut s) = suite.lock() {
            *s = d.suite;
        }
    }
    let before = pid.map(sample).unwrap_or_default();
    let gen_before = self_cpu_s();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(secs);
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (config, ok, resumed, errors, first_error) = (
                config.clone(),
                ok.clone(),
                resumed.clone(),
                errors.clone(),
                first_error.clone(),
            );
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    match one(addr, &config) {
                        Ok(d) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            if d.resumed {
                                resumed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut f) = first_error.lock() {
                                if f.is_empty() {
                                    *f = e.to_string();
                                }
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let wall = t0.elapsed().as_secs_f64();
    let after = pid.map(sample).unwrap_or_default();
    let gen_cpu_s = self_cpu_s() - gen_before;
    let ok = ok.load(Ordering::Relaxed);
    let server_cpu_s = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / clk_tck();
    let suite = suite.lock().map(|s| s.clone()).unwrap_or_default();
    let first_error = first_error.lock().map(|s| s.clone()).unwrap_or_default();
    json!({
        "threads": THREADS,
        "secs": wall,
        "handshakes": ok,
        "handshakes_per_sec": ok as f64 / wall,
        "resumed": resumed.load(Ordering::Relaxed),
        "errors": errors.load(Ordering::Relaxed),
        "first_error": first_error,
        "server_cpu_percent": after.cpu_percent_since(&before),
        "server_sys_share": after.sys_share_since(&before),
        "handshakes_per_server_cpu_s": if server_cpu_s > 0.0 { ok as f64 / server_cpu_s } else { 0.0 },
        "generator_cpu_percent": gen_cpu_s / wall * 100.0,
        "tls": suite,
    })
}

/// User + system CPU of this process alone (all its threads, not the
/// servers it started), in seconds.
fn self_cpu_s() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF and a valid pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// New sessions, then resumed ones, `secs` seconds each, against the TLS
/// listener at `addr` of the server `pid`.
pub fn run(addr: SocketAddr, pid: Option<u32>, secs: f64) -> Value {
    json!({
        "new": phase(addr, pid, secs, false),
        "resumed": phase(addr, pid, secs, true),
    })
}
