//! TLS on its own port, black-box: curl and a rustls client subscribe and
//! publish over HTTPS (100-continue and pings included); a bad key or a
//! missing certificate stops start-up with a message naming the file;
//! stalled, truncated and plaintext handshakes do not disturb other TLS
//! clients; SIGHUP swaps the certificate for new connections while old
//! streams go on; the chain file is served; asfpy listens over HTTPS.
//! After a TLS 1.3 handshake the server seals and opens records itself
//! (src/tls/records.rs) unless `record_layer: rustls`: every test here runs
//! on both layers (`compact::…` and `rustls_layer::…`). curl streams over
//! each TLS 1.3 cipher suite (and TLS 1.2, which stays on rustls); OpenSSL
//! (`s_client`) and GnuTLS (`gnutls-cli`) update their keys, alone or
//! asking the server to, before a request and between keep-alive requests
//! (issue 23's bug: before the server's first write) and keep their
//! streams; with `testing_records_per_key`, OpenSSL, GnuTLS and curl cross
//! the server's own key updates; streams end with close_notify on
//! shutdown, on a timeout, after `Connection: close`, and when a slow
//! subscriber is dropped (whole records first); hostile records after the
//! handshake close only their own connection; chromium (BoringSSL)
//! receives Server-Sent Events over TLS (tests/browser/sse_tls.mjs);
//! Python's `websockets` subscribes over `wss://`.
//!
//! Certificates come from throw-away CAs made at test time (the harness's
//! `Ca`, tests/common/pki.rs) and written to the test's own temp dir.
//! Clients are killed by PID.
#![cfg(feature = "tls")] // TLS listeners

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::*;
use pki_types::pem::PemObject;
use pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// certificates

/// Who seals and opens a TLS 1.3 connection's records after the
/// handshake (`server.tls.record_layer`): every test runs on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    Compact,
    Rustls,
}

impl Layer {
    fn yaml(self) -> &'static str {
        match self {
            Layer::Compact => "compact",
            Layer::Rustls => "rustls",
        }
    }
}

/// Each test, once on each record layer: `compact::NAME` (the default
/// layer) and `rustls_layer::NAME` (`record_layer: rustls`).
macro_rules! on_both_record_layers {
    ($($(#[$attr:meta])* $name:ident,)*) => {
        mod compact {
            $( $(#[$attr])* #[test] fn $name() { super::$name(super::Layer::Compact) } )*
        }
        mod rustls_layer {
            $( $(#[$attr])* #[test] fn $name() { super::$name(super::Layer::Rustls) } )*
        }
    };
}

/// Files of one test: `ca.pem`, `cert.pem`, `key.pem` (and more) in a temp
/// dir; and the record layer its servers use.
struct Pki {
    dir: TempDir,
    layer: Layer,
}

impl Pki {
    /// A fresh CA and a leaf for it, written out.
    fn new(layer: Layer) -> (Pki, Ca) {
        let pki = Pki {
            dir: TempDir::new(),
            layer,
        };
        let ca = Ca::new("A");
        pki.install(&ca, "ca.pem");
        (pki, ca)
    }

    /// Writes `ca`'s certificate to `ca_name` and a new leaf of it to
    /// `cert.pem` / `key.pem`.
    fn install(&self, ca: &Ca, ca_name: &str) {
        let (cert, key) = ca.leaf();
        self.dir.write(ca_name, &ca.pem);
        self.dir.write("cert.pem", &cert);
        self.dir.write("key.pem", &key);
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("read PEM")
    }

    /// `tls:` settings naming files of this dir.
    fn yaml(&self, cert: &str, key: &str, chain: Option<&str>) -> String {
        let mut y = format!(
            "tls: {{port: 0, cert: \"{}\", key: \"{}\", record_layer: {}",
            self.path(cert).display(),
            self.path(key).display(),
            self.layer.yaml()
        );
        if let Some(chain) = chain {
            y += &format!(", chain: \"{}\"", self.path(chain).display());
        }
        y + "}"
    }
}

/// Starts a server with `tls_yaml` (plus `extra` under `server:`); returns
/// it and its TLS address.
fn tls_server(tls_yaml: &str, extra: &str) -> (Server, SocketAddr) {
    let mut b = Server::builder().server(tls_yaml);
    if !extra.is_empty() {
        b = b.server(extra);
    }
    let srv = b.start();
    let addr = srv
        .tls_addr()
        .unwrap_or_else(|| panic!("no TLS listener: {:?}\n{}", srv.ready(), srv.log()));
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), srv.port());
    (srv, addr)
}

// ---------------------------------------------------------------------------
// curl

/// Runs curl to completion (bounded): (status, stdout, stderr).
fn curl(args: &[&str]) -> (ExitStatus, String, String) {
    let (status, out, err) = output_within(
        Command::new("curl")
            .args(["--max-time", "10", "--noproxy", "*"])
            .args(args),
        Duration::from_secs(20),
    );
    let status = status.unwrap_or_else(|| panic!("curl {args:?} did not finish; stderr: {err}"));
    (status, out, err)
}

/// `curl -X PUT` over TLS; returns (HTTP status, body).
fn curl_publish(ca: &Path, url: &str, body: &str) -> (u16, String) {
    let ca = ca.display().to_string();
    let (st, out, err) = curl(&[
        "-sS",
        "--cacert",
        &ca,
        "-X",
        "PUT",
        "--data-binary",
        body,
        "-w",
        "\n%{http_code}",
        url,
    ]);
    assert!(st.success(), "curl PUT {url}: {st:?} {err}");
    let (body, code) = out.rsplit_once('\n').expect("status line from -w");
    (code.parse().expect("numeric status"), body.to_string())
}

/// A `curl -N` subscriber; each stdout line is sent on `lines`. Killed by
/// PID on drop.
struct CurlStream {
    _child: Reaped,
    lines: mpsc::Receiver<String>,
}

impl CurlStream {
    fn open(ca: &Path, url: &str) -> CurlStream {
        CurlStream::open_with(ca, url, &[])
    }

    /// With more curl options (TLS versions, cipher suites).
    fn open_with(ca: &Path, url: &str, options: &[&str]) -> CurlStream {
        let (child, lines) = spawn_lines(
            Command::new("curl")
                .args([
                    "-sS",
                    "-N",
                    "--max-time",
                    "60",
                    "--noproxy",
                    "*",
                    "--cacert",
                ])
                .arg(ca)
                .args(options)
                .arg(url),
            "curl",
        );
        CurlStream {
            _child: child,
            lines,
        }
    }

    /// The next event line (pings skipped), parsed.
    fn next_event(&self, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("curl printed no event within {timeout:?}: {e}"));
            let v: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
            if !is_ping(&v) {
                return v;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// a rustls client that reads the wire exactly

fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("add root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// The first TLS record a client sends: its ClientHello.
fn client_hello(ca_pem: &str) -> Vec<u8> {
    let name = ServerName::from(std::net::IpAddr::from([127, 0, 0, 1]));
    let mut conn = rustls::ClientConnection::new(client_config(ca_pem), name).expect("client");
    let mut out = Vec::new();
    conn.write_tls(&mut out).expect("ClientHello");
    assert_eq!(&out[..3], [0x16, 0x03, 0x01], "a handshake record");
    out
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "deadline passed")
}

struct TlsClient {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl TlsClient {
    /// Connects and completes the handshake, verifying against `ca_pem`.
    fn connect(addr: SocketAddr, ca_pem: &str) -> io::Result<TlsClient> {
        let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(T))?;
        sock.set_write_timeout(Some(T))?;
        let name = ServerName::from(addr.ip());
        let mut conn =
            rustls::ClientConnection::new(client_config(ca_pem), name).map_err(io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)?;
        }
        Ok(TlsClient {
            tls: rustls::StreamOwned::new(conn, sock),
            buf: Vec::new(),
        })
    }

    /// `GET path` over TLS; asserts a 200 stream head.
    fn subscribe(addr: SocketAddr, ca_pem: &str, path: &str) -> TlsClient {
        let mut c = TlsClient::connect(addr, ca_pem)
            .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"));
        c.send(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
        let head = c
            .read_until(b"\r\n\r\n", Instant::now() + T)
            .unwrap_or_else(|e| panic!("no stream head over TLS: {e}"));
        let head = String::from_utf8_lossy(&head).into_owned();
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        assert!(
            head.contains(&format!("\r\nContent-Type: {STREAM_CONTENT_TYPE}\r\n")),
            "{head}"
        );
        assert!(
            head.contains("\r\nTransfer-Encoding: chunked\r\n"),
            "{head}"
        );
        c
    }

    fn send(&mut self, bytes: &[u8]) {
        self.tls.write_all(bytes).expect("TLS write");
        self.tls.flush().expect("TLS flush");
    }

    fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        self.tls.sock.set_read_timeout(Some(left))?;
        let mut tmp = [0u8; 16 * 1024];
        match self.tls.read(&mut tmp) {
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                Err(timed_out())
            }
            Err(e) => Err(e),
        }
    }

    fn read_until(&mut self, delim: &[u8], deadline: Instant) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(delim.len()).position(|w| w == delim) {
                return Ok(self.buf.drain(..i + delim.len()).collect());
            }
            if self.fill(deadline)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    fn read_n(&mut self, n: usize, deadline: Instant) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill(deadline)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// One chunk's data; `None` for the last chunk.
    fn next_chunk(&mut self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        let line = self.read_until(b"\r\n", deadline)?;
        let hex = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
        let size = usize::from_str_radix(&hex, 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, hex.clone()))?;
        let mut data = self.read_n(size + 2, deadline)?;
        assert!(data.ends_with(b"\r\n"), "chunk not followed by CRLF");
        data.truncate(size);
        Ok((size > 0).then_some(data))
    }

    /// Reads (and drops) everything up to the end of the connection: true
    /// if it ended with close_notify, false if TCP ended without it (rustls
    /// reports that as an unexpected EOF) or TLS failed.
    fn ends_with_close_notify(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.buf.clear();
        let mut tmp = [0u8; 16 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the connection did not end within {timeout:?}"
            );
            self.tls
                .sock
                .set_read_timeout(Some(left))
                .expect("read timeout");
            match self.tls.read(&mut tmp) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                Err(_) => return false,
            }
        }
    }

    /// The next event (pings skipped); panics after `timeout`.
    fn next_event(&mut self, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = self
                .next_chunk(left)
                .unwrap_or_else(|e| panic!("no event over TLS within {timeout:?}: {e}"))
                .expect("stream still open");
            let v = parse_line(&chunk);
            if !is_ping(&v) {
                return v;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// tests

fn curl_subscribes_and_publishes_over_tls(layer: Layer) {
    let (pki, _ca) = Pki::new(layer);
    let (srv, tls) = tls_server(&pki.yaml("cert.pem", "key.pem", None), "");
    let ca = pki.path("ca.pem");
    let stream = CurlStream::open(&ca, &format!("https://{tls}/tls/topic"));
    let mut plain = srv.subscribe("/tls");
    srv.wait_subscribers(2, T);

    let url = format!("https://{tls}/tls/topic/x");
    let (code, body) = curl_publish(&ca, &url, r#"{"n": 1, "via": "tls"}"#);
    assert_eq!((code, body.as_str()), (202, MSG_ACCEPTED));
    let v = stream.next_event(T);
    assert_eq!((&v["n"], &v["via"]), (&json!(1), &json!("tls")), "{v}");
    check_event_meta(&v, &["tls", "topic", "x"], "/tls/topic/x");
    assert_eq!(
        plain.next_event(T),
        v,
        "the plain subscriber gets the same event"
    );

    // published over plain HTTP, received over TLS
    srv.publish_ok("/tls/topic", &json!({"n": 2}));
    let v = stream.next_event(T);
    assert_eq!(v["n"], json!(2));
    check_event_meta(&v, &["tls", "topic"], "/tls/topic");

    // the DNS name in the certificate, and the health check, over TLS
    let resolve = format!("localhost:{}:127.0.0.1", tls.port());
    let (st, out, err) = curl(&[
        "-sS",
        "-I",
        "--cacert",
        &ca.display().to_string(),
        "--resolve",
        &resolve,
        &format!("https://localhost:{}/", tls.port()),
    ]);
    assert!(st.success(), "curl -I: {st:?} {err}");
    assert!(out.starts_with("HTTP/1.1 204"), "{out}");
    assert!(
        out.contains(&format!("Server: pubsubd/{VERSION}\r\n")),
        "{out}"
    );
    assert!(out.contains("X-Subscribers: 2\r\n"), "{out}");

    // without the CA, curl refuses the certificate (exit 60)
    let (st, _, _) = curl(&["-sS", "-I", &format!("https://{tls}/")]);
    assert_eq!(st.code(), Some(60), "an unknown CA must not verify");
}

fn large_publish_with_100_continue_over_tls(layer: Layer) {
    let (pki, _ca) = Pki::new(layer);
    let (_srv, tls) = tls_server(&pki.yaml("cert.pem", "key.pem", None), "");
    let ca_pem = pki.read("ca.pem");
    let mut sub = TlsClient::subscribe(tls, &ca_pem, "/big");
    let pad = "y".repeat(4900);
    let body = json!({"n": 1, "pad": pad}).to_string();
    let body_file = pki.dir.write("body.json", &body);
    let (st, out, err) = curl(&[
        "-sS",
        "-v",
        "--cacert",
        &pki.path("ca.pem").display().to_string(),
        "--expect100-timeout",
        "5",
        // curl 7.88 sends this on its own only past 1 MiB
        "-H",
        "Expect: 100-continue",
        "-X",
        "PUT",
        "--data-binary",
        &format!("@{}", body_file.display()),
        "-w",
        "\n%{http_code} %{time_total}",
        &format!("https://{tls}/big"),
    ]);
    assert!(st.success(), "curl: {st:?} {err}");
    assert!(err.contains("> Expect: 100-continue"), "{err}");
    assert!(err.contains("< HTTP/1.1 100 Continue"), "{err}");
    let (text, stats) = out.rsplit_once('\n').expect("-w output");
    assert_eq!(text, MSG_ACCEPTED);
    let (code, secs) = stats.split_once(' ').expect("code and time");
    assert_eq!(code, "202");
    let secs: f64 = secs.parse().expect("time_total");
    assert!(
        secs < 4.0,
        "took {secs} s: curl waited out its 5 s expect timeout"
    );
    let v = sub.next_event(T);
    assert_eq!(v["n"], json!(1));
    assert_eq!(v["pad"], json!(pad));
    check_event_meta(&v, &["big"], "/big");
}

fn pings_over_tls(layer: Layer) {
    let (pki, _ca) = Pki::new(layer);
    let (_srv, tls) = tls_server(&pki.yaml("cert.pem", "key.pem", None), "ping_interval: 0.2");
    let mut sub = TlsClient::subscribe(tls, &pki.read("ca.pem"), "/quiet");
    let start = Instant::now();
    let mut stamps: Vec<f64> = Vec::new();
    while stamps.len() < 4 {
        let chunk = sub
            .next_chunk(Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("only {} pings over TLS: {e}", stamps.len()))
            .expect("stream open");
        let v = parse_line(&chunk);
        assert!(is_ping(&v), "unexpected chunk {v}");
        let ts = v["stillalive"].as_f64().expect("float stillalive");
        let now = now_epoch();
        assert!((now - 5.0..=now + 1.0).contains(&ts), "stillalive {ts}");
        if let Some(last) = stamps.last() {
            assert!(ts > *last, "pings not increasing: {stamps:?} then {ts}");
        }
        stamps.push(ts);
    }
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "4 pings at 0.2 s took {:?}",
        start.elapsed()
    );
}

/// Starts a server that must fail; returns its exit status and log once
/// the log mentions `needle`.
fn start_fails(tls_yaml: &str, needle: &str) -> (ExitStatus, String) {
    match Server::builder().server(tls_yaml).try_start() {
        Err(e) => (e.status.expect("the server exited"), e.log),
        Ok(mut srv) => {
            // the plain listener may be announced before the TLS setup fails
            let st = srv
                .wait_exit(T)
                .unwrap_or_else(|| panic!("server still running:\n{}", srv.log()));
            srv.wait_log(needle, Duration::from_secs(2));
            (st, srv.log())
        }
    }
}

fn a_key_that_does_not_fit_the_certificate_stops_startup(layer: Layer) {
    let (pki, ca) = Pki::new(layer);
    let (_other_cert, other_key) = ca.leaf();
    pki.dir.write("other.key", &other_key);
    let key = pki.path("other.key").display().to_string();
    let (st, log) = start_fails(&pki.yaml("cert.pem", "other.key", None), &key);
    assert!(!st.success(), "exit status {st:?}");
    assert!(st.code().is_some(), "exited, not killed: {st:?}");
    assert!(log.contains(&key), "no mention of {key} in:\n{log}");
    assert!(!log.contains("listening for TLS"), "{log}");
}

fn a_missing_certificate_or_key_file_stops_startup(layer: Layer) {
    let (pki, _ca) = Pki::new(layer);
    for (cert, key, missing) in [
        ("nope-cert.pem", "key.pem", "nope-cert.pem"),
        ("cert.pem", "nope-key.pem", "nope-key.pem"),
    ] {
        let path = pki.path(missing).display().to_string();
        let (st, log) = start_fails(&pki.yaml(cert, key, None), &path);
        assert!(!st.success(), "{missing}: exit status {st:?}");
        assert!(st.code().is_some(), "exited, not killed: {st:?}");
        assert!(log.contains(&path), "no mention of {path} in:\n{log}");
    }
}

fn stalled_garbage_and_truncated_handshakes_do_not_disturb_others(layer: Layer) {
    let (pki, _ca) = Pki::new(layer);
    let (srv, tls) = tls_server(&pki.yaml("cert.pem", "key.pem", None), "request_timeout: 2");
    let ca_pem = pki.read("ca.pem");
    let mut sub = TlsClient::subscribe(tls, &ca_pem, "/h");

    let opened = Instant::now();
    // connects and says nothing
    let mut silent = Conn::connect(tls);
    // speaks plaintext HTTP to the TLS port
    let mut plain = Conn::connect(tls);
    plain.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    // the first 20 bytes of a real ClientHello, then nothing
    let hello = client_hello(&ca_pem);
    assert!(hello.len() > 100, "ClientHello of {} bytes", hello.len());
    let mut truncated = Conn::connect(tls);
    truncated.send(&hello[..20]);

    for n in 0..5 {
        let t0 = Instant::now();
        srv.publish_ok("/h", &json!({ "n": n }));
        assert_eq!(sub.next_event(Duration::from_secs(1))["n"], json!(n));
        assert!(t0.elapsed() < Duration::from_secs(1));
    }
    // new TLS clients are served meanwhile
    let mut sub2 = TlsClient::subscribe(tls, &ca_pem, "/h");
    srv.publish_ok("/h", &json!({"n": 5}));
    assert_eq!(sub.next_event(Duration::from_secs(1))["n"], json!(5));
    assert_eq!(sub2.next_event(Duration::from_secs(1))["n"], json!(5));

    // the plaintext client gets no HTTP answer, at most a TLS alert, and is closed
    let got = plain
        .wait_closed(Duration::from_secs(5))
        .expect("the plaintext client is closed");
    assert!(
        got.is_empty() || got[0] == 0x15,
        "plaintext client got {:?}",
        String::from_utf8_lossy(&got)
    );
    // the stalled handshakes are closed after the request timeout (2 s)
    for (name, c) in [("silent", &mut silent), ("truncated", &mut truncated)] {
        let got = c
            .wait_closed(Duration::from_secs(8))
            .unwrap_or_else(|e| panic!("{name} handshake still open: {e}"));
        assert!(
            got.is_empty() || got[0] == 0x15,
            "{name} got {:?}",
            String::from_utf8_lossy(&got)
        );
        assert!(
            opened.elapsed() >= Duration::from_millis(1500),
            "{name} closed before the request timeout"
        );
    }
    srv.publish_ok("/h", &json!({"n": 6}));
    assert_eq!(sub.next_event(Duration::from_secs(1))["n"], json!(6));
    assert_eq!(sub2.next_event(Duration::from_secs(1))["n"], json!(6));
}

fn sighup_swaps_the_certificate_for_new_connections_only(layer: Layer) {
    let (pki, ca_a) = Pki::new(layer);
    let (mut srv, tls) = tls_server(&pki.yaml("cert.pem", "key.pem", None), "");
    let pem_a = ca_a.pem.clone();
    let mut old = TlsClient::subscribe(tls, &pem_a, "/hup");
    srv.publish_ok("/hup", &json!({"n": 1}));
    assert_eq!(old.next_event(T)["n"], json!(1));

    let ca_b = Ca::new("B");
    pki.install(&ca_b, "ca-b.pem");
    srv.signal("HUP");
    assert!(
        srv.wait_log("SIGHUP: reloaded the TLS certificate and key", T),
        "{}",
        srv.log()
    );

    // new connections: the new CA verifies, the old one does not
    let mut new = TlsClient::subscribe(tls, &ca_b.pem, "/hup");
    let err = TlsClient::connect(tls, &pem_a)
        .err()
        .expect("the old CA must not verify the new certificate");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    let url = format!("https://{tls}/hup");
    let (code, body) = curl_publish(&pki.path("ca-b.pem"), &url, r#"{"n": 2}"#);
    assert_eq!((code, body.as_str()), (202, MSG_ACCEPTED));
    let ca_a_path = pki.path("ca.pem").display().to_string();
    let (st, _, _) = curl(&["-sS", "-I", "--cacert", &ca_a_path, &url]);
    assert_eq!(st.code(), Some(60), "curl with the old CA");
    // the stream opened before the reload carries on
    assert_eq!(old.next_event(T)["n"], json!(2));
    assert_eq!(new.next_event(T)["n"], json!(2));

    // a reload with a key that does not fit keeps the current pair
    let (_, stray_key) = ca_b.leaf();
    pki.dir.write("key.pem", &stray_key);
    srv.signal("HUP");
    assert!(
        srv.wait_log("SIGHUP: keeping the old TLS certificate", T),
        "{}",
        srv.log()
    );
    let mut again = TlsClient::subscribe(tls, &ca_b.pem, "/hup");
    srv.publish_ok("/hup", &json!({"n": 3}));
    for s in [&mut old, &mut new, &mut again] {
        assert_eq!(s.next_event(T)["n"], json!(3));
    }
}

fn the_chain_file_is_sent_with_the_certificate(layer: Layer) {
    let pki = Pki {
        dir: TempDir::new(),
        layer,
    };
    let root = Ca::new("root");
    let inter = root.intermediate("I");
    let (cert, key) = inter.leaf();
    pki.dir.write("root.pem", &root.pem);
    pki.dir.write("chain.pem", &inter.pem);
    pki.dir.write("cert.pem", &cert);
    pki.dir.write("key.pem", &key);
    let root_path = pki.path("root.pem").display().to_string();

    let (srv, tls) = tls_server(&pki.yaml("cert.pem", "key.pem", Some("chain.pem")), "");
    let (st, out, err) = curl(&[
        "-sS",
        "-I",
        "--cacert",
        &root_path,
        &format!("https://{tls}/"),
    ]);
    assert!(st.success(), "with the chain: {st:?} {err}");
    assert!(out.starts_with("HTTP/1.1 204"), "{out}");
    let mut sub = TlsClient::subscribe(tls, &root.pem, "/chain");
    srv.publish_ok("/chain", &json!({"n": 1}));
    assert_eq!(sub.next_event(T)["n"], json!(1));

    // without it, a client that trusts only the root cannot verify
    let (_srv2, tls2) = tls_server(&pki.yaml("cert.pem", "key.pem", None), "");
    let (st, _, _) = curl(&[
        "-sS",
        "-I",
        "--cacert",
        &root_path,
        &format!("https://{tls2}/"),
    ]);
    assert_eq!(st.code(), Some(60), "without the chain file");
}

// ---------------------------------------------------------------------------
// asfpy over HTTPS

fn asfpy_over_https(layer: Layer, mode: &str, ca_env: &str) {
    let Some(py) = python_with(&format!("asfpy_over_https({mode})"), &["asfpy"]) else {
        return;
    };
    let (pki, _ca) = Pki::new(layer);
    let (srv, tls) = tls_server(&pki.yaml("cert.pem", "key.pem", None), "ping_interval: 1");
    let url = format!("https://{tls}/asf");
    let (mut child, rx) = spawn_lines(
        Command::new(&py)
            .arg("-u")
            .arg(python_script("test_asfpy.py"))
            .args([
                "--url",
                &url,
                "--mode",
                mode,
                "--count",
                "1",
                "--timeout",
                "25",
            ])
            .env(ca_env, pki.path("ca.pem")),
        "asfpy",
    );
    srv.wait_subscribers(1, Duration::from_secs(30));
    srv.publish_ok("/asf/x", &json!({"payload": {"n": 1, "via": "https"}}));
    let line = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("the asfpy client printed the payload");
    let v: Value = serde_json::from_str(&line).expect("JSON line");
    if mode == "listen" {
        assert_eq!(v["payload"], json!({"n": 1, "via": "https"}), "{v}");
        check_event_meta(&v, &["asf", "x"], "/asf/x");
    } else {
        // Listener hands over payload["payload"] only
        assert_eq!(v, json!({"n": 1, "via": "https"}));
    }
    let st = wait_child(&mut child.0, Duration::from_secs(10)).expect("asfpy exits");
    assert!(st.success(), "asfpy exit status {st:?}");
}

fn asfpy_listen_over_https(layer: Layer) {
    // aiohttp verifies with ssl.create_default_context(), which honours SSL_CERT_FILE
    asfpy_over_https(layer, "listen", "SSL_CERT_FILE");
}

fn asfpy_deprecated_listener_over_https(layer: Layer) {
    // requests verifies with certifi unless REQUESTS_CA_BUNDLE names a bundle
    asfpy_over_https(layer, "listener", "REQUESTS_CA_BUNDLE");
}

/// `wss://`: Python's `websockets` library on the TLS port, with
/// permessage-deflate (nothing special beyond the transport).
fn python_websockets_over_wss(layer: Layer) {
    let Some(py) = python_with("python_websockets_over_wss", &["websockets.asyncio.client"]) else {
        return;
    };
    let (pki, _ca) = Pki::new(layer);
    let (srv, tls) = tls_server(&pki.yaml("cert.pem", "key.pem", None), "");
    let ca = pki.path("ca.pem");
    let url = format!("wss://{tls}/wss");
    let (mut child, rx) = spawn_lines(
        Command::new(&py)
            .arg("-u")
            .arg(python_script("ws_client.py"))
            .args(["--url", &url, "--deflate", "--count", "1"])
            .arg("--ca")
            .arg(&ca),
        "websockets",
    );
    let line = |rx: &mpsc::Receiver<String>| -> Value {
        serde_json::from_str(&rx.recv_timeout(T).expect("a line")).expect("JSON")
    };
    let deflate = line(&rx)["extensions"]
        .as_str()
        .is_some_and(|e| e.starts_with("permessage-deflate"));
    assert_eq!(deflate, cfg!(feature = "compression"));
    srv.wait_subscribers(1, T);
    srv.publish_ok("/wss", &json!({"over": "wss", "pad": "y".repeat(20_000)}));
    let got = line(&rx);
    assert_eq!(got["message"]["over"], "wss", "{got}");
    assert_eq!(line(&rx), json!({"closed": 1000}));
    let st = wait_child(&mut child.0, T).expect("the client exits");
    assert!(st.success(), "{st:?}");
}

/// `/metrics` counts completed and failed TLS handshakes.
#[cfg(feature = "admin")]
fn handshakes_are_counted_in_metrics(layer: Layer) {
    let (pki, _ca) = Pki::new(layer);
    let (srv, tls) = tls_server(
        &pki.yaml("cert.pem", "key.pem", None),
        "admin: {bind: 127.0.0.1, port: 0}",
    );
    let ca_pem = pki.read("ca.pem");
    let _a = TlsClient::subscribe(tls, &ca_pem, "/m");
    let _b = TlsClient::subscribe(tls, &ca_pem, "/m");
    // plaintext HTTP to the TLS port: a failed handshake
    let mut plain = Conn::connect(tls);
    plain.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    plain
        .wait_closed(Duration::from_secs(5))
        .expect("the plaintext client is closed");
    let metric = |name: &str| -> Option<u64> {
        let text = srv.admin_get("/metrics").body_str();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    };
    assert!(
        wait_until(T, || metric("pubsubd_tls_handshakes_total ") == Some(2)),
        "handshakes: {:?}",
        metric("pubsubd_tls_handshakes_total ")
    );
    assert!(metric("pubsubd_tls_handshake_failures_total ").is_some_and(|n| n >= 1));
}

/// 300 clients, each with its own session store, connect once and then
/// come back: every one resumes its session. (With rustls's default
/// 256-entry server-side session cache, holding two tickets per client,
/// the first ~170 would fall back to a full handshake.)
fn many_clients_resume_their_sessions(layer: Layer) {
    let (pki, _ca) = Pki::new(layer);
    let (_srv, tls) = tls_server(&pki.yaml("cert.pem", "key.pem", None), "");
    let ca_pem = pki.read("ca.pem");
    let configs: Vec<Arc<rustls::ClientConfig>> =
        (0..300).map(|_| client_config(&ca_pem)).collect();
    let handshake = |config: &Arc<rustls::ClientConfig>| -> rustls::HandshakeKind {
        let sock = TcpStream::connect_timeout(&tls, Duration::from_secs(5)).expect("connect");
        sock.set_nodelay(true).expect("nodelay");
        sock.set_read_timeout(Some(T)).expect("timeout");
        let conn = rustls::ClientConnection::new(config.clone(), ServerName::from(tls.ip()))
            .expect("client");
        let mut stream = rustls::StreamOwned::new(conn, sock);
        // A request and its answer: the session tickets come before it.
        stream
            .write_all(b"HEAD / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .expect("TLS write");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        assert!(answer.starts_with(b"HTTP/1.1 204 "), "{answer:?}");
        stream.conn.handshake_kind().expect("handshake done")
    };
    for config in &configs {
        assert_eq!(handshake(config), rustls::HandshakeKind::Full);
    }
    let resumed = configs
        .iter()
        .filter(|config| handshake(config) == rustls::HandshakeKind::Resumed)
        .count();
    assert_eq!(resumed, configs.len(), "sessions resumed");
}

fn curl_streams_over_every_tls13_cipher_suite_and_tls12(layer: Layer) {
    let (pki, _ca) = Pki::new(layer);
    let (srv, tls) = tls_server(&pki.yaml("cert.pem", "key.pem", None), "");
    let ca = pki.path("ca.pem");
    let url = format!("https://{tls}/suites");
    let clients: [(&str, &[&str]); 4] = [
        (
            "AES-128-GCM",
            &["--tlsv1.3", "--tls13-ciphers", "TLS_AES_128_GCM_SHA256"],
        ),
        (
            "AES-256-GCM",
            &["--tlsv1.3", "--tls13-ciphers", "TLS_AES_256_GCM_SHA384"],
        ),
        (
            "ChaCha20",
            &[
                "--tlsv1.3",
                "--tls13-ciphers",
                "TLS_CHACHA20_POLY1305_SHA256",
            ],
        ),
        ("TLS 1.2", &["--tls-max", "1.2"]),
    ];
    let streams: Vec<_> = clients
        .iter()
        .map(|(name, options)| (name, CurlStream::open_with(&ca, &url, options)))
        .collect();
    srv.wait_subscribers(clients.len() as u64, T);
    // The second event is larger than one record (16 KiB).
    let big = "x".repeat(40_000);
    for (n, pad) in [(1, ""), (2, big.as_str()), (3, "")] {
        srv.publish_ok("/suites", &json!({"n": n, "pad": pad}));
    }
    for (name, stream) in &streams {
        for (n, len) in [(1, 0), (2, big.len()), (3, 0)] {
            let v = stream.next_event(T);
            assert_eq!(v["n"], json!(n), "{name}: {v}");
            assert_eq!(v["pad"].as_str().map(str::len), Some(len), "{name}");
        }
    }
}

/// An interactive TLS client: `openssl s_client` or `gnutls-cli`, stdin
/// piped (its commands need an open stdin), every line it prints on stdout
/// or stderr in one channel; or `curl -v`, for what it prints. Killed by
/// PID on drop.
struct Cli {
    kind: Kind,
    child: Reaped,
    lines: mpsc::Receiver<String>,
    /// Every line read so far.
    seen: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    OpenSsl,
    GnuTls,
    Curl,
}

/// Which side a client's KeyUpdate moves: its own keys only (`k`,
/// `^rekey1^`), or the server's too (`K`, `^rekey^`: update_requested).
#[derive(Debug, Clone, Copy)]
enum Update {
    Own,
    Both,
}

impl Cli {
    fn openssl(addr: SocketAddr, ca: &Path) -> Cli {
        let mut cmd = Command::new("openssl");
        cmd.args(["s_client", "-tls1_3", "-crlf"])
            // Non-blocking: a blocking SSL_read that has just taken a
            // post-handshake message waits for the next application
            // record, and stdin (the command letters) with it.
            .arg("-nbio")
            // Every TLS message, KeyUpdate from the server included.
            .arg("-msg")
            .args(["-connect", &addr.to_string(), "-CAfile"])
            .arg(ca);
        Cli::spawn(Kind::OpenSsl, &mut cmd)
    }

    fn gnutls(addr: SocketAddr, ca: &Path) -> Cli {
        let mut cmd = Command::new("gnutls-cli");
        cmd.arg("--x509cafile")
            .arg(ca)
            .args(["-p", &addr.port().to_string(), &addr.ip().to_string()])
            // ^rekey^ and ^rekey1^ on lines of their own (so no --crlf,
            // which would make them data); -d 4 logs each KeyUpdate.
            .args(["--inline-commands", "-d", "4"]);
        Cli::spawn(Kind::GnuTls, &mut cmd)
    }

    fn curl(ca: &Path, url: &str) -> Cli {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "-N",
            "-v",
            "--max-time",
            "60",
            "--noproxy",
            "*",
            "--cacert",
        ])
        .arg(ca)
        .arg(url);
        Cli::spawn(Kind::Curl, &mut cmd)
    }

    fn spawn(kind: Kind, cmd: &mut Command) -> Cli {
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?} (gnutls-bin, openssl, curl: .ci/run): {e}"));
        let (tx, rx) = mpsc::channel();
        let forward = |from: Box<dyn Read + Send>| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in io::BufRead::split(io::BufReader::new(from), b'\n') {
                    let Ok(line) = line else { break };
                    let line = String::from_utf8_lossy(&line).trim_end().to_string();
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        };
        forward(Box::new(child.stdout.take().expect("stdout")));
        forward(Box::new(child.stderr.take().expect("stderr")));
        Cli {
            kind,
            child: Reaped(child),
            lines: rx,
            seen: Vec::new(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Sends one line of the protocol, CRLF-terminated on the wire.
    fn line(&mut self, text: &str) {
        let stdin = self.child.0.stdin.as_mut().expect("stdin");
        match self.kind {
            // s_client -crlf turns LF into CRLF.
            Kind::OpenSsl => writeln!(stdin, "{text}"),
            Kind::GnuTls => write!(stdin, "{text}\r\n"),
            Kind::Curl => unreachable!("curl takes no input"),
        }
        .expect("type into the client");
        stdin.flush().expect("flush");
    }

    /// A request: its lines, then an empty one.
    fn request(&mut self, lines: &[&str]) {
        for l in lines {
            self.line(l);
        }
        self.line("");
    }

    /// `PUT path` with a JSON body on this connection (kept alive); the
    /// body's line end is part of the body (JSON allows it).
    fn publish(&mut self, path: &str, body: &Value) {
        let body = body.to_string();
        let length = format!("Content-Length: {}", body.len() + 2);
        self.request(&[&format!("PUT {path} HTTP/1.1"), "Host: localhost", &length]);
        self.line(&body);
    }

    /// Sends a KeyUpdate and waits until the client has written it (s_client
    /// says KEYUPDATE before it writes; -msg traces the write).
    fn key_update(&mut self, update: Update) {
        const SENT: &str = ">>> TLS 1.3, Handshake [length 0005], KeyUpdate";
        let (command, said) = match (self.kind, update) {
            (Kind::OpenSsl, Update::Own) => ("k", SENT),
            (Kind::OpenSsl, Update::Both) => ("K", SENT),
            (Kind::GnuTls, Update::Own) => ("^rekey1^", "Rekey was completed"),
            (Kind::GnuTls, Update::Both) => ("^rekey^", "Rekey was completed"),
            (Kind::Curl, _) => unreachable!("curl takes no input"),
        };
        let stdin = self.child.0.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{command}").expect("type into the client");
        stdin.flush().expect("flush");
        self.wait(said, |l| l.contains(said));
    }

    /// Waits (bounded) for a line `matches`; returns it.
    fn wait(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + T;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|e| {
                panic!(
                    "{:?} never printed {what} ({e}); it printed:\n{}",
                    self.kind,
                    self.tail()
                )
            });
            let found = matches(&line);
            self.seen.push(line);
            if found {
                return self.seen.last().cloned().unwrap_or_default();
            }
        }
    }

    /// Waits for the event with this `n`.
    fn wait_event(&mut self, n: u64) {
        self.wait(&format!("event {n}"), |l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| v["n"] == json!(n))
        });
    }

    /// Waits (bounded) until at least `n` KeyUpdates from the server have
    /// been printed (stdout and stderr come in no set order); returns how
    /// many there are.
    fn wait_server_key_updates(&mut self, n: usize) -> usize {
        let deadline = Instant::now() + T;
        while self.server_key_updates() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => break,
            }
        }
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.server_key_updates()
    }

    /// The KeyUpdates from the server among the lines read so far.
    fn server_key_updates(&self) -> usize {
        let from_server = |l: &str| match self.kind {
            Kind::OpenSsl => l.starts_with("<<< TLS 1.3, Handshake [length 0005], KeyUpdate"),
            Kind::GnuTls => l.contains("received TLS 1.3 key update"),
            Kind::Curl => l.contains("TLSv1.3 (IN), TLS handshake, Key update"),
        };
        self.seen.iter().filter(|l| from_server(l)).count()
    }

    /// Waits for gnutls-cli to say how the connection ended, and asserts
    /// it was with close_notify.
    fn assert_clean_end(&mut self) {
        let end = self.wait("the end", |l| {
            l.starts_with("- Peer has") || l.starts_with("***")
        });
        assert_eq!(end, GNUTLS_CLEAN_END, "{}", self.tail());
    }

    /// The last lines read, each cut to 200 characters.
    fn tail(&self) -> String {
        let from = self.seen.len().saturating_sub(30);
        let cut = |l: &String| l.chars().take(200).collect::<String>();
        self.seen[from..]
            .iter()
            .map(cut)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn openssl_key_updates_both_ways_keep_a_stream_going(layer: Layer) {
    let (pki, _ca) = Pki::new(layer);
    let (srv, tls) = tls_server(&pki.yaml("cert.pem", "key.pem", None), "");
    let mut client = Cli::openssl(tls, &pki.path("ca.pem"));
    client.request(&["GET /ku HTTP/1.1", "Host: localhost"]);
    srv.wait_subscribers(1, T);
    srv.publish_ok("/ku", &json!({"n": 1}));
    client.wait_event(1);

    // K: a KeyUpdate asking the server to update too; the server's next
    // records are sealed under its new key. (Event 2 may be sealed before
    // the server reads K, which comes on another socket; by event 3, K has
    // long been there: s_client wrote it before it read event 2.)
    client.key_update(Update::Both);
    srv.publish_ok("/ku", &json!({"n": 2}));
    client.wait_event(2);
    srv.publish_ok("/ku", &json!({"n": 3}));
    client.wait_event(3);
    assert_eq!(
        client.wait_server_key_updates(1),
        1,
        "the server answered K:\n{}",
        client.tail()
    );

    // k: the client alone moves on; then a line sealed under its new key
    // (a streaming connection reads and ignores it).
    client.key_update(Update::Own);
    client.line("ignored");
    srv.publish_ok("/ku", &json!({"n": 4}));
    client.wait_event(4);
    assert_eq!(client.wait_server_key_updates(1), 1, "k asks for nothing");
    assert_eq!(srv.subscribers(), 1, "the stream is still open");
}

/// Issue 23's bug: a KeyUpdate before the server's first write (which
/// rustls still handles) killed the connection. KeyUpdates of both kinds
/// before a subscriber's request, before a keep-alive publisher's first
/// request and between its requests: every request is answered, every
/// event arrives, and every KeyUpdate asking for the server's is answered.
fn key_updates_before_and_between_requests(layer: Layer, kind: Kind) {
    let (pki, _ca) = Pki::new(layer);
    let (srv, tls) = tls_server(&pki.yaml("cert.pem", "key.pem", None), "");
    let ca = pki.path("ca.pem");
    let connect = || match kind {
        Kind::OpenSsl => Cli::openssl(tls, &ca),
        _ => Cli::gnutls(tls, &ca),
    };
    let mut sub = connect();
    sub.key_update(Update::Own);
    sub.key_update(Update::Both);
    sub.request(&["GET /ku HTTP/1.1", "Host: localhost"]);
    sub.wait("the stream head", |l| l.starts_with("HTTP/1.1 200 "));
    srv.wait_subscribers(1, T);

    let mut publisher = connect();
    let steps = [
        (1, Some(Update::Both)),
        (2, Some(Update::Own)),
        (3, Some(Update::Both)),
        (4, None),
        (5, Some(Update::Own)),
        (6, Some(Update::Both)),
    ];
    for (n, update) in steps {
        if let Some(update) = update {
            publisher.key_update(update);
        }
        publisher.publish("/ku", &json!({ "n": n }));
        publisher.wait(&format!("202 for {n}"), |l| l.starts_with("HTTP/1.1 202 "));
        sub.wait_event(n);
    }
    // Each update_requested was answered by one KeyUpdate of the server's.
    let counts = (
        publisher.wait_server_key_updates(3),
        sub.wait_server_key_updates(1),
    );
    assert_eq!(
        counts,
        (3, 1),
        "{kind:?}:\n{}\n---\n{}",
        publisher.tail(),
        sub.tail()
    );
    assert!(!srv.log().contains("do not match"), "{}", srv.log());
    assert_eq!(srv.subscribers(), 1);
}

fn openssl_key_updates_before_and_between_requests(layer: Layer) {
    key_updates_before_and_between_requests(layer, Kind::OpenSsl);
}

fn gnutls_key_updates_before_and_between_requests(layer: Layer) {
    key_updates_before_and_between_requests(layer, Kind::GnuTls);
}

/// `server.tls.testing_records_per_key: 64`: the server's own KeyUpdate
/// (at its record limit) comes every 64 records; OpenSSL, GnuTLS and curl
/// each cross it several times and receive every event.
fn the_servers_own_key_updates_cross_openssl_gnutls_and_curl(layer: Layer) {
    let (pki, _ca) = Pki::new(layer);
    let tls_yaml = pki.yaml("cert.pem", "key.pem", None);
    let tls_yaml = tls_yaml.replace('}', ", testing_records_per_key: 64}");
    let (srv, tls) = tls_server(&tls_yaml, "");
    assert!(srv
        .log()
        .contains("testing_records_per_key is set: for tests only"));
    let ca = pki.path("ca.pem");
    let mut clients = [Cli::openssl(tls, &ca), Cli::gnutls(tls, &ca)];
    for c in &mut clients {
        c.request(&["GET /own HTTP/1.1", "Host: localhost"]);
    }
    let mut curl = Cli::curl(&ca, &format!("https://{tls}/own"));
    srv.wait_subscribers(3, T);
    // 300 events, each answered before the next is sent: a record each
    // (small, so no event line is cut by s_client's record traces).
    for n in 1..=300 {
        srv.publish_ok("/own", &json!({ "n": n }));
    }
    for c in clients.iter_mut().chain([&mut curl]) {
        for n in 1..=300 {
            c.wait_event(n);
        }
        let updates = c.wait_server_key_updates(3);
        assert!(updates >= 3, "{:?} crossed {updates} key updates", c.kind);
    }
    assert_eq!(srv.subscribers(), 3);
}

/// Lines gnutls-cli prints at the end of a connection: close_notify, or not.
const GNUTLS_CLEAN_END: &str = "- Peer has closed the GnuTLS connection";

/// An orderly close sends close_notify (RFC 8446 §6.1): SIGTERM ends each
/// stream with its last chunk, then close_notify, for rustls's client and
/// GnuTLS's.
fn streams_end_with_close_notify_on_shutdown(layer: Layer) {
    let (pki, _ca) = Pki::new(layer);
    let (mut srv, tls) = tls_server(&pki.yaml("cert.pem", "key.pem", None), "");
    let mut sub = TlsClient::subscribe(tls, &pki.read("ca.pem"), "/bye");
    let mut gnutls = Cli::gnutls(tls, &pki.path("ca.pem"));
    gnutls.request(&["GET /bye HTTP/1.1", "Host: localhost"]);
    srv.wait_subscribers(2, T);
    srv.signal("TERM");
    assert_eq!(sub.next_chunk(T).expect("the last chunk"), None);
    assert!(sub.ends_with_close_notify(T), "rustls: no close_notify");
    gnutls.assert_clean_end();
    assert!(
        srv.wait_exit(T).is_some_and(|s| s.success()),
        "{}",
        srv.log()
    );
}

/// close_notify also ends a connection that timed out (no request within
/// `request_timeout`; idle between keep-alive requests) and one whose
/// response said `Connection: close`.
fn idle_and_finished_connections_end_with_close_notify(layer: Layer) {
    let (pki, _ca) = Pki::new(layer);
    let (_srv, tls) = tls_server(&pki.yaml("cert.pem", "key.pem", None), "request_timeout: 1");
    let ca_pem = pki.read("ca.pem");
    let mut silent = TlsClient::connect(tls, &ca_pem).expect("handshake");
    let mut keep_alive = TlsClient::connect(tls, &ca_pem).expect("handshake");
    keep_alive.send(b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let head = keep_alive
        .read_until(b"\r\n\r\n", Instant::now() + T)
        .expect("response");
    assert!(head.starts_with(b"HTTP/1.1 204 "));
    let mut once = TlsClient::connect(tls, &ca_pem).expect("handshake");
    once.send(b"HEAD / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    for (what, c) in [
        ("silent", &mut silent),
        ("keep-alive", &mut keep_alive),
        ("once", &mut once),
    ] {
        assert!(c.ends_with_close_notify(T), "{what}: no close_notify");
    }
}

/// A slow subscriber dropped at its queue limit gets the rest of the
/// records already begun, then close_notify, not a record cut off (which
/// GnuTLS reported as "Error decoding the received TLS packet").
fn a_dropped_slow_subscriber_gets_whole_records_then_close_notify(layer: Layer) {
    let (pki, _ca) = Pki::new(layer);
    let (srv, tls) = tls_server(
        &pki.yaml("cert.pem", "key.pem", None),
        "max_queued_bytes: 262144",
    );
    // One client that does not read, one stopped (SIGSTOP by its PID).
    let mut sub = TlsClient::subscribe(tls, &pki.read("ca.pem"), "/slow");
    let mut gnutls = Cli::gnutls(tls, &pki.path("ca.pem"));
    gnutls.request(&["GET /slow HTTP/1.1", "Host: localhost"]);
    gnutls.wait("the stream head", |l| l.starts_with("HTTP/1.1 200 "));
    srv.wait_subscribers(2, T);
    signal_pid(gnutls.pid(), "STOP");
    let pad = "s".repeat(40_000);
    let mut n = 0;
    while srv.log().matches("dropping slow subscriber").count() < 2 {
        n += 1;
        assert!(
            n <= 1000,
            "no subscriber dropped after {n} events:\n{}",
            srv.log()
        );
        srv.publish_ok("/slow", &json!({"n": n, "pad": pad}));
    }
    signal_pid(gnutls.pid(), "CONT");
    assert!(
        sub.ends_with_close_notify(T),
        "rustls: no close_notify after {n} events"
    );
    gnutls.assert_clean_end();
    assert!(
        !gnutls.seen.iter().any(|l| l.contains("Error")),
        "{}",
        gnutls.tail()
    );
}

fn hostile_records_after_the_handshake_close_only_their_connection(layer: Layer) {
    let (pki, _ca) = Pki::new(layer);
    let (srv, tls) = tls_server(&pki.yaml("cert.pem", "key.pem", None), "");
    let ca_pem = pki.read("ca.pem");
    let mut good = TlsClient::subscribe(tls, &ca_pem, "/h");
    // Raw bytes on a subscriber's socket, past its TLS session (which the
    // server now runs in its own record layer).
    let mut forged = vec![0x17, 3, 3, 0, 40];
    forged.extend_from_slice(&[0x5a; 40]);
    let cases: [(&str, Vec<u8>); 4] = [
        ("a record that fails to decrypt", forged),
        (
            "a length past the limit, its body never sent",
            vec![0x17, 3, 3, 0x48, 0x01],
        ),
        ("an unprotected alert", vec![0x15, 3, 3, 0, 2, 2, 40]),
        (
            "a change_cipher_spec after the handshake",
            vec![0x14, 3, 3, 0, 1, 1],
        ),
    ];
    for (n, (what, bytes)) in cases.into_iter().enumerate() {
        let mut hostile = TlsClient::subscribe(tls, &ca_pem, "/h");
        hostile.tls.sock.write_all(&bytes).expect("send raw bytes");
        // Closed at once: an alert (rustls reports it as an error) or EOF,
        // whatever was queued for it before.
        let deadline = Instant::now() + Duration::from_secs(5);
        let closed = loop {
            match hostile.fill(deadline) {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => break Err(e),
                Err(_) => break Ok(()),
            }
        };
        assert!(closed.is_ok(), "{what}: the connection is still open");
        srv.publish_ok("/h", &json!({ "n": n }));
        assert_eq!(good.next_event(T)["n"], json!(n), "after {what}");
    }
    srv.wait_subscribers(1, T);
    assert!(!srv.log().contains("panicked"), "{}", srv.log());
}

fn chromium_receives_server_sent_events_over_tls(layer: Layer) {
    let Some(dir) = browser_scripts() else {
        return;
    };
    let (pki, _ca) = Pki::new(layer);
    let (srv, tls) = tls_server(&pki.yaml("cert.pem", "key.pem", None), "");
    let (status, stdout, stderr) = output_within(
        Command::new("node")
            .arg(dir.join("sse_tls.mjs"))
            .arg(format!("https://{tls}"))
            .arg(format!("http://{}", srv.addr)),
        Duration::from_secs(60),
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "browser test failed ({status:?})\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}",
        srv.log()
    );
    assert!(stdout.contains("SSE over TLS OK"), "{stdout}");
}

on_both_record_layers! {
    curl_subscribes_and_publishes_over_tls,
    large_publish_with_100_continue_over_tls,
    pings_over_tls,
    a_key_that_does_not_fit_the_certificate_stops_startup,
    a_missing_certificate_or_key_file_stops_startup,
    stalled_garbage_and_truncated_handshakes_do_not_disturb_others,
    sighup_swaps_the_certificate_for_new_connections_only,
    the_chain_file_is_sent_with_the_certificate,
    asfpy_listen_over_https,
    asfpy_deprecated_listener_over_https,
    #[cfg(feature = "admin")]
    handshakes_are_counted_in_metrics,
    many_clients_resume_their_sessions,
    curl_streams_over_every_tls13_cipher_suite_and_tls12,
    openssl_key_updates_both_ways_keep_a_stream_going,
    openssl_key_updates_before_and_between_requests,
    gnutls_key_updates_before_and_between_requests,
    the_servers_own_key_updates_cross_openssl_gnutls_and_curl,
    streams_end_with_close_notify_on_shutdown,
    idle_and_finished_connections_end_with_close_notify,
    a_dropped_slow_subscriber_gets_whole_records_then_close_notify,
    hostile_records_after_the_handshake_close_only_their_connection,
    chromium_receives_server_sent_events_over_tls,
    python_websockets_over_wss,
}
