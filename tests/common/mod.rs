//! Black-box test harness for the real `pubsubd` binary.
//!
//! Owns: starting the server on an ephemeral loopback port in a temp dir of
//! its own (config + ACL written there), draining its stdout/stderr into a
//! shared log, stopping it by PID, and a small raw HTTP/1.1 client (`Conn`,
//! `Subscriber`) that parses exactly what goes over the wire.
//!
//! Invariants: every wait has a deadline (no unbounded loop, no fixed sleep
//! where a condition can be polled); every process started here is stopped by
//! its PID on drop (SIGTERM, then SIGKILL after a bound); only loopback
//! addresses are ever connected to.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_pubsubd");
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Default bound for a single wait (a response, an event, a start-up).
pub const T: Duration = Duration::from_secs(10);

pub const MSG_ACCEPTED: &str = "Payload received, thank you very much!\n";
pub const MSG_FORBIDDEN: &str = "You are not authorized to deliver payloads!\n";
pub const MSG_BAD_TYPE: &str =
    "Bad payload type. Payloads must be JSON dictionary objects, {..}!\n";
pub const MSG_TOO_LARGE: &str = "Payload is too large for me to serve, please make it shorter.\n";
pub const MSG_BAD_REQUEST_PREFIX: &str = "I could not understand your request, sorry!";

pub const STREAM_CONTENT_TYPE: &str = "application/vnd.pypubsub-stream";

// ---------------------------------------------------------------------------
// small utilities

pub fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Polls `cond` every few milliseconds until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Lower-case hyphenated UUID version 4 (RFC 4122 variant).
pub fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 36 {
        return false;
    }
    for (i, c) in b.iter().enumerate() {
        let ok = match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        };
        if !ok {
            return false;
        }
    }
    b[14] == b'4' && matches!(b[19], b'8' | b'9' | b'a' | b'b')
}

/// Asserts the four keys the server adds to every event.
pub fn check_event_meta(ev: &Value, topics: &[&str], path: &str) {
    let want: Vec<Value> = topics.iter().map(|t| Value::from(*t)).collect();
    assert_eq!(
        ev["pubsub_topics"],
        Value::Array(want),
        "pubsub_topics of {ev}"
    );
    assert_eq!(ev["pubsub_path"], Value::from(path), "pubsub_path of {ev}");
    let ts = &ev["pubsub_timestamp"];
    assert!(ts.is_f64(), "pubsub_timestamp must be a JSON float: {ev}");
    let ts = ts.as_f64().expect("f64");
    let now = now_epoch();
    assert!(
        (now - 60.0..=now + 5.0).contains(&ts),
        "pubsub_timestamp {ts} is not close to now {now}"
    );
    let cursor = ev["pubsub_cursor"].as_str().unwrap_or("");
    assert!(is_uuid_v4(cursor), "pubsub_cursor must be a UUID v4: {ev}");
}

pub fn is_ping(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|o| o.len() == 1 && o.contains_key("stillalive"))
}

/// True if `[::1]` can be bound on this machine.
pub fn have_ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

// ---------------------------------------------------------------------------
// temp dir

pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "pubsubd-test-{}-{}-{}",
            std::process::id(),
            n,
            nanos
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).expect("write temp file");
        p
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// server process

/// Builds a `pypubsub.yaml` and starts the server with it.
pub struct Builder {
    bind: String,
    server: Vec<String>,
    clients: Vec<String>,
    payloaders: Vec<String>,
    acl: Option<String>,
    raw_config: Option<String>,
    dir: Option<PathBuf>,
    open_files: Option<u64>,
}

fn indent(block: &str) -> String {
    block
        .lines()
        .map(|l| format!("  {l}\n"))
        .collect::<String>()
}

impl Builder {
    /// `bind` address (`127.0.0.1`, `::1`, ...).
    pub fn bind(mut self, addr: &str) -> Self {
        self.bind = addr.to_string();
        self
    }

    /// Extra YAML under `server:` (may span lines; indented for you).
    pub fn server(mut self, yaml: &str) -> Self {
        self.server.push(yaml.to_string());
        self
    }

    /// Extra YAML under `clients:` (may span lines; indented for you).
    pub fn clients(mut self, yaml: &str) -> Self {
        self.clients.push(yaml.to_string());
        self
    }

    /// Replaces the default payloaders (`127.0.0.1/32`, `::1/128`).
    pub fn payloaders(mut self, cidrs: &[&str]) -> Self {
        self.payloaders = cidrs.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Contents of the ACL file passed with `--acl`.
    pub fn acl(mut self, yaml: &str) -> Self {
        self.acl = Some(yaml.to_string());
        self
    }

    /// Run in this existing directory (kept after the server stops), e.g. to
    /// restart a server on the files a previous one left.
    /// Start the server with this open-files limit (through `prlimit`,
    /// which execs the server, so the PID is still the server's).
    pub fn open_files(mut self, n: u64) -> Self {
        self.open_files = Some(n);
        self
    }

    pub fn in_dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_path_buf());
        self
    }

    /// Use this text verbatim as the config file.
    pub fn raw_config(mut self, yaml: &str) -> Self {
        self.raw_config = Some(yaml.to_string());
        self
    }

    pub fn config_yaml(&self) -> String {
        if let Some(raw) = &self.raw_config {
            return raw.clone();
        }
        let mut y = String::from("server:\n");
        y += &format!("  bind: \"{}\"\n  port: 0\n", self.bind);
        for s in &self.server {
            y += &indent(s);
        }
        y += "clients:\n  payloaders:\n";
        for p in &self.payloaders {
            y += &format!("    - \"{p}\"\n");
        }
        for c in &self.clients {
            y += &indent(c);
        }
        y
    }

    /// Starts the server; panics (with its log) if it does not come up.
    pub fn start(self) -> Server {
        match self.try_start() {
            Ok(s) => s,
            Err(e) => panic!(
                "pubsubd did not start (exit {:?}); config:\n{}\n--- log ---\n{}",
                e.status, e.config, e.log
            ),
        }
    }

    /// Starts the server; `Err` if it exits or never logs `listening on`.
    pub fn try_start(self) -> Result<Server, StartError> {
        let (owned, path) = match &self.dir {
            Some(p) => (None, p.clone()),
            None => {
                let d = TempDir::new();
                let p = d.path().to_path_buf();
                (Some(d), p)
            }
        };
        let config = self.config_yaml();
        let cfg_path = path.join("pypubsub.yaml");
        std::fs::write(&cfg_path, &config).expect("write config");
        let acl_path = path.join("pypubsub_acl.yaml");
        if let Some(acl) = &self.acl {
            std::fs::write(&acl_path, acl).expect("write acl");
        }
        let mut args = vec![
            "--config".to_string(),
            cfg_path.display().to_string(),
            "--acl".to_string(),
            acl_path.display().to_string(),
        ];
        let program = match self.open_files {
            Some(n) => {
                args.splice(0..0, [format!("--nofile={n}:{n}"), BIN.to_string()]);
                "prlimit"
            }
            None => BIN,
        };
        Server::launch(owned, path, program, &args, config)
    }
}

#[derive(Debug)]
pub struct StartError {
    pub status: Option<ExitStatus>,
    pub log: String,
    pub config: String,
}

pub struct Server {
    child: Child,
    pid: u32,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
    dir: PathBuf,
    _owned: Option<TempDir>,
}

/// Spawns a thread appending each line of `r` to `log` and forwarding it on `tx`.
fn drain<R: Read + Send + 'static>(r: R, log: Arc<Mutex<String>>, tx: mpsc::Sender<String>) {
    thread::spawn(move || {
        let mut r = io::BufReader::new(r);
        let mut line = Vec::new();
        loop {
            line.clear();
            match io::BufRead::read_until(&mut r, b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let s = String::from_utf8_lossy(&line).into_owned();
                    if std::env::var_os("PUBSUBD_TEST_ECHO").is_some() {
                        eprint!("[pubsubd] {s}");
                    }
                    log.lock().unwrap_or_else(|e| e.into_inner()).push_str(&s);
                    let _ = tx.send(s);
                }
            }
        }
    });
}

fn parse_listening(line: &str) -> Option<SocketAddr> {
    let i = line.find("listening on ")?;
    let rest = &line[i + "listening on ".len()..];
    let tok = rest.split_whitespace().next()?;
    let tok = tok.trim_end_matches([',', '.', ';', ')', '"', '\'']);
    let tok = tok.trim_start_matches(['"', '\'', '(']);
    tok.parse().ok()
}

/// Runs `pubsubd ARGS` to completion (bounded); returns (status, stdout, stderr).
pub fn run_to_exit(args: &[&str], timeout: Duration) -> (Option<ExitStatus>, String, String) {
    let dir = TempDir::new();
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pubsubd");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let to = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let te = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let status = wait_child(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let out = to.join().unwrap_or_default();
    let err = te.join().unwrap_or_default();
    (status, out, err)
}

/// Waits for `child` to exit, at most `timeout`.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `sig` (e.g. "TERM") to a child that has not been reaped yet.
pub fn signal_child(child: &mut Child, sig: &str) {
    if let Ok(None) = child.try_wait() {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Server {
    pub fn builder() -> Builder {
        Builder {
            bind: "127.0.0.1".to_string(),
            server: Vec::new(),
            clients: Vec::new(),
            payloaders: vec!["127.0.0.1/32".to_string(), "::1/128".to_string()],
            acl: None,
            raw_config: None,
            dir: None,
            open_files: None,
        }
    }

    /// A server with the default test config plus `server_extra` under `server:`.
    pub fn start(server_extra: &str) -> Server {
        let mut b = Server::builder();
        if !server_extra.is_empty() {
            b = b.server(server_extra);
        }
        b.start()
    }

    fn launch(
        owned: Option<TempDir>,
        dir: PathBuf,
        program: &str,
        args: &[String],
        config: String,
    ) -> Result<Server, StartError> {
        let mut child = Command::new(program)
            .args(args)
            .current_dir(&dir)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pubsubd");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        drain(
            child.stderr.take().expect("stderr"),
            log.clone(),
            tx.clone(),
        );
        drain(child.stdout.take().expect("stdout"), log.clone(), tx);
        let deadline = Instant::now() + T;
        let found = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = parse_listening(&line) {
                        break Some(a);
                    }
                }
                Err(_) => break None,
            }
        };
        let snapshot =
            |log: &Arc<Mutex<String>>| log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match found {
            Some(addr) => Ok(Server {
                pid: child.id(),
                child,
                addr,
                log,
                dir,
                _owned: owned,
            }),
            None => {
                let status = wait_child(&mut child, Duration::from_secs(2));
                if status.is_none() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                // let the drain threads flush what is left
                thread::sleep(Duration::from_millis(50));
                Err(StartError {
                    status,
                    log: snapshot(&log),
                    config,
                })
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Everything the server printed so far (stdout and stderr).
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }

    pub fn signal(&mut self, sig: &str) {
        signal_child(&mut self.child, sig);
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, timeout)
    }

    /// Resident set size of the server process, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// User + system CPU time the server has used so far (Linux, 100 Hz ticks).
    pub fn cpu_time(&self) -> Option<Duration> {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        let after = &s[s.rfind(')')? + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(Duration::from_millis(ticks * 10))
    }

    pub fn conn(&self) -> Conn {
        Conn::connect(self.addr)
    }

    /// One request on a fresh connection; the response is read fully.
    pub fn request(&self, raw: &[u8]) -> Response {
        let mut c = self.conn();
        c.send(raw);
        let head = raw.starts_with(b"HEAD ");
        c.read_response(head, T)
            .unwrap_or_else(|e| panic!("no response to {:?}: {e}", String::from_utf8_lossy(raw)))
    }

    /// `PUT path` with `body` on a fresh connection.
    pub fn publish(&self, path: &str, body: &str) -> Response {
        let mut c = self.conn();
        c.publish(path, body)
    }

    pub fn publish_json(&self, path: &str, v: &Value) -> Response {
        self.publish(path, &v.to_string())
    }

    /// Publishes and asserts the 202.
    pub fn publish_ok(&self, path: &str, v: &Value) {
        let r = self.publish_json(path, v);
        assert_eq!(r.status, 202, "publish {path}: {}", r.body_str());
        assert_eq!(r.body_str(), MSG_ACCEPTED);
    }

    pub fn head(&self, path: &str) -> Response {
        self.request(format!("HEAD {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
    }

    /// The server's `X-Subscribers` count, read from a HEAD request.
    pub fn subscribers(&self) -> u64 {
        self.head("/").x_subscribers()
    }

    /// Waits until `X-Subscribers` equals `n`; panics after `timeout`.
    pub fn wait_subscribers(&self, n: u64, timeout: Duration) {
        let mut last = u64::MAX;
        let ok = wait_until(timeout, || {
            last = self.subscribers();
            last == n
        });
        assert!(ok, "X-Subscribers stayed {last}, wanted {n}");
    }

    pub fn subscribe(&self, path: &str) -> Subscriber {
        Subscriber::open(self.addr, path, &[])
    }

    pub fn subscribe_with(&self, path: &str, headers: &[(&str, &str)]) -> Subscriber {
        Subscriber::open(self.addr, path, headers)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        signal_child(&mut self.child, "TERM");
        if wait_child(&mut self.child, Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP client

#[derive(Debug, Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub raw_head: Vec<u8>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .count()
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn x_subscribers(&self) -> u64 {
        self.num_header("X-Subscribers")
    }

    pub fn x_requests(&self) -> u64 {
        self.num_header("X-Requests")
    }

    fn num_header(&self, name: &str) -> u64 {
        let v = self
            .header(name)
            .unwrap_or_else(|| panic!("missing {name} in {:?}", self.head_str()));
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number: {v:?}"))
    }

    pub fn head_str(&self) -> String {
        String::from_utf8_lossy(&self.raw_head).into_owned()
    }

    /// `Server`, `X-Subscribers`, `X-Requests`, each exactly once.
    pub fn assert_std_headers(&self) {
        assert_eq!(
            self.header("Server"),
            Some(format!("pubsubd/{VERSION}").as_str()),
            "Server header in {:?}",
            self.head_str()
        );
        for h in ["Server", "X-Subscribers", "X-Requests"] {
            assert_eq!(self.header_count(h), 1, "{h} once in {:?}", self.head_str());
        }
        let _ = self.x_subscribers();
        let _ = self.x_requests();
    }

    /// Status and exact body text, plus the standard headers.
    pub fn assert(&self, status: u16, body: &str) {
        assert_eq!(
            (self.status, self.body_str().as_str()),
            (status, body),
            "head: {:?}",
            self.head_str()
        );
        self.assert_std_headers();
    }

    /// A 400 whose body starts with "I could not understand your request, sorry!".
    pub fn assert_bad_request(&self) {
        assert_eq!(
            self.status,
            400,
            "{:?} {:?}",
            self.head_str(),
            self.body_str()
        );
        assert!(
            self.body_str().starts_with(MSG_BAD_REQUEST_PREFIX),
            "body {:?}",
            self.body_str()
        );
        assert!(
            self.body_str().ends_with('\n'),
            "body {:?}",
            self.body_str()
        );
        self.assert_std_headers();
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "deadline passed")
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A client connection with its own read buffer; every read has a deadline.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        Conn::try_connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    }

    pub fn try_connect(addr: SocketAddr) -> io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        Ok(Conn::from_stream(s))
    }

    pub fn connect_to(addr: impl ToSocketAddrs) -> io::Result<Conn> {
        let a = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| invalid("no address".into()))?;
        Conn::try_connect(a)
    }

    pub fn from_stream(s: TcpStream) -> Conn {
        let _ = s.set_nodelay(true);
        let _ = s.set_write_timeout(Some(T));
        Conn {
            stream: s,
            buf: Vec::new(),
            start: 0,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|e| panic!("send {} bytes: {e}", bytes.len()));
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Bytes received but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) -> Vec<u8> {
        let out = self.buf[self.start..self.start + n].to_vec();
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 1 << 20 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        out
    }

    /// Reads more bytes; `Ok(0)` is EOF; `TimedOut` once `deadline` passes.
    fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut tmp = [0u8; 65536];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return Err(timed_out())
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads up to and including `delim`; fails past `max` bytes.
    pub fn read_until(
        &mut self,
        delim: &[u8],
        max: usize,
        deadline: Instant,
    ) -> io::Result<Vec<u8>> {
        let mut scanned: usize = 0;
        loop {
            let have = &self.buf[self.start..];
            let from = scanned.saturating_sub(delim.len());
            if let Some(i) = find(&have[from..], delim) {
                return Ok(self.consume(from + i + delim.len()));
            }
            scanned = have.len();
            if scanned > max {
                return Err(invalid(format!("no {delim:?} within {max} bytes")));
            }
            if self.fill(deadline)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "EOF before {delim:?}; had {:?}",
                        String::from_utf8_lossy(self.buffered())
                    ),
                ));
            }
        }
    }

    pub fn read_n(&mut self, n: usize, deadline: Instant) -> io::Result<Vec<u8>> {
        while self.buffered().len() < n {
            if self.fill(deadline)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF in body"));
            }
        }
        Ok(self.consume(n))
    }

    /// Reads until EOF (a reset also counts as the end); `TimedOut` if still open.
    pub fn read_to_eof(&mut self, deadline: Instant) -> io::Result<Vec<u8>> {
        loop {
            match self.fill(deadline) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if is_reset(&e) => break,
                Err(e) => return Err(e),
            }
        }
        let n = self.buffered().len();
        Ok(self.consume(n))
    }

    /// Like `read_to_eof` but counts the bytes instead of keeping them.
    pub fn drain_to_eof(&mut self, deadline: Instant) -> io::Result<u64> {
        let mut total = self.buffered().len() as u64;
        self.buf.clear();
        self.start = 0;
        loop {
            match self.fill(deadline) {
                Ok(0) => return Ok(total),
                Ok(n) => {
                    total += n as u64;
                    self.buf.clear();
                }
                Err(e) if is_reset(&e) => return Ok(total),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads a response head (status line + headers, up to the blank line).
    pub fn read_head(&mut self, deadline: Instant) -> io::Result<Response> {
        let raw = self.read_until(b"\r\n\r\n", 64 * 1024, deadline)?;
        let text = String::from_utf8(raw.clone())
            .map_err(|_| invalid(format!("non-UTF-8 head {raw:?}")))?;
        let mut lines = text[..text.len() - 4].split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        if !version.starts_with("HTTP/1.") {
            return Err(invalid(format!("bad status line {status_line:?}")));
        }
        let status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
        let reason = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        for l in lines {
            let (k, v) = l
                .split_once(':')
                .ok_or_else(|| invalid(format!("bad header line {l:?}")))?;
            headers.push((k.to_string(), v.trim().to_string()));
        }
        Ok(Response {
            version,
            status,
            reason,
            headers,
            raw_head: raw,
            body: Vec::new(),
        })
    }

    /// Reads one complete response (interim 1xx responses are returned as is).
    pub fn read_response(&mut self, head_request: bool, timeout: Duration) -> io::Result<Response> {
        let deadline = Instant::now() + timeout;
        let mut r = self.read_head(deadline)?;
        if head_request || r.status < 200 || r.status == 204 || r.status == 304 {
            return Ok(r);
        }
        let chunked = r
            .header("Transfer-Encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if chunked {
            let mut body = Vec::new();
            while let Some(c) = self.read_chunk(deadline)? {
                body.extend_from_slice(&c);
            }
            r.body = body;
        } else if let Some(cl) = r.header("Content-Length") {
            let n: usize = cl
                .trim()
                .parse()
                .map_err(|_| invalid(format!("bad Content-Length {cl:?}")))?;
            r.body = self.read_n(n, deadline)?;
        } else {
            r.body = self.read_to_eof(deadline)?;
        }
        Ok(r)
    }

    /// One chunk of a chunked body: `Some(data)`, or `None` for the exact
    /// terminator `0\r\n\r\n`.
    pub fn read_chunk(&mut self, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
        let line = self.read_until(b"\r\n", 32, deadline)?;
        let hex = std::str::from_utf8(&line[..line.len() - 2])
            .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
        let size = usize::from_str_radix(hex, 16)
            .map_err(|_| invalid(format!("bad chunk size line {hex:?}")))?;
        if size == 0 {
            let end = self.read_n(2, deadline)?;
            if end != b"\r\n" {
                return Err(invalid(format!("bad last chunk end {end:?}")));
            }
            return Ok(None);
        }
        let mut data = self.read_n(size + 2, deadline)?;
        if !data.ends_with(b"\r\n") {
            return Err(invalid(format!(
                "chunk data not followed by CRLF: {:?}",
                String::from_utf8_lossy(&data)
            )));
        }
        data.truncate(size);
        Ok(Some(data))
    }

    /// Keep-alive `PUT path` with a Content-Length body; reads the response.
    pub fn publish(&mut self, path: &str, body: &str) -> Response {
        let req = format!(
            "PUT {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.send(req.as_bytes());
        self.read_response(false, T)
            .unwrap_or_else(|e| panic!("no response to PUT {path}: {e}"))
    }

    /// Waits for the peer to close; returns what arrived before; `TimedOut` if it did not.
    pub fn wait_closed(&mut self, timeout: Duration) -> io::Result<Vec<u8>> {
        self.read_to_eof(Instant::now() + timeout)
    }
}

pub fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

// ---------------------------------------------------------------------------
// subscriber

/// A `GET` stream whose head has been read; yields decoded chunks.
pub struct Subscriber {
    pub conn: Conn,
    pub head: Response,
}

impl Subscriber {
    /// Opens `GET path` with extra headers and asserts a `200` stream head.
    pub fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Subscriber {
        let mut extra = String::new();
        let mut has_ua = false;
        for (k, v) in headers {
            has_ua |= k.eq_ignore_ascii_case("User-Agent");
            extra += &format!("{k}: {v}\r\n");
        }
        if !has_ua {
            extra += "User-Agent: pubsubd-tests/1\r\n";
        }
        let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n");
        Subscriber::open_raw(addr, req.as_bytes())
    }

    /// Sends `request` verbatim and asserts a `200` head.
    pub fn open_raw(addr: SocketAddr, request: &[u8]) -> Subscriber {
        let mut conn = Conn::connect(addr);
        conn.send(request);
        let head = conn.read_head(Instant::now() + T).unwrap_or_else(|e| {
            panic!(
                "no stream head for {:?}: {e}",
                String::from_utf8_lossy(request)
            )
        });
        assert_eq!(
            head.status,
            200,
            "subscribe {:?} got {:?}",
            String::from_utf8_lossy(request),
            head.head_str()
        );
        Subscriber { conn, head }
    }

    /// The next chunk's data; `Ok(None)` is the terminating `0\r\n\r\n`.
    pub fn next_chunk(&mut self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        self.conn.read_chunk(Instant::now() + timeout)
    }

    /// The next event (pings skipped), parsed; `Ok(None)` if the stream ended.
    /// Asserts each chunk is exactly one JSON line ending in `\n`.
    pub fn try_next_event(&mut self, timeout: Duration) -> io::Result<Option<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(chunk) = self.conn.read_chunk(deadline)? else {
                return Ok(None);
            };
            let v = parse_line(&chunk);
            if !is_ping(&v) {
                return Ok(Some(v));
            }
        }
    }

    /// The next event (pings skipped); panics on timeout or end of stream.
    pub fn next_event(&mut self, timeout: Duration) -> Value {
        match self.try_next_event(timeout) {
            Ok(Some(v)) => v,
            Ok(None) => panic!("stream ended while waiting for an event"),
            Err(e) => panic!("no event within {timeout:?}: {e}"),
        }
    }

    /// Events up to (not including) the first one with `"sentinel": true`.
    pub fn events_until_sentinel(&mut self, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.next_event(left);
            if v["sentinel"] == Value::Bool(true) {
                return out;
            }
            out.push(v);
        }
    }
}

/// Parses one chunk as a single JSON line: exactly one `\n`, at the end.
pub fn parse_line(chunk: &[u8]) -> Value {
    assert!(
        chunk.ends_with(b"\n"),
        "chunk must end with \\n: {:?}",
        String::from_utf8_lossy(chunk)
    );
    assert_eq!(
        chunk.iter().filter(|b| **b == b'\n').count(),
        1,
        "chunk must be one line: {:?}",
        String::from_utf8_lossy(chunk)
    );
    serde_json::from_slice(chunk).unwrap_or_else(|e| {
        panic!(
            "chunk is not JSON ({e}): {:?}",
            String::from_utf8_lossy(chunk)
        )
    })
}

/// `{"n": n, "sentinel": true}` — publish to a path every subscription matches.
pub fn sentinel() -> Value {
    serde_json::json!({"sentinel": true})
}

/// `Basic base64(user:pass)` for an `Authorization` header.
pub fn basic_auth(user: &str, pass: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{pass}").into_bytes();
    let mut out = String::new();
    for c in input.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

/// A connection to the server from the loopback address `local` (e.g.
/// `127.0.0.2`: outside the payloaders `127.0.0.1/32`).
pub fn conn_from(srv: &Server, local: &str) -> Conn {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let local: SocketAddr = format!("{local}:0").parse().expect("local address");
    sock.bind(&local.into())
        .unwrap_or_else(|e| panic!("bind {local}: {e}"));
    sock.connect_timeout(&srv.addr.into(), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {} from {local}: {e}", srv.addr));
    Conn::from_stream(sock.into())
}

/// `method path` with a JSON body from `local`, with an optional
/// `Authorization` header value; the response, read fully.
pub fn publish_from(
    srv: &Server,
    local: &str,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &Value,
) -> Response {
    let body = body.to_string();
    let auth_line = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let mut c = conn_from(srv, local);
    c.send(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\n{auth_line}Content-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    c.read_response(false, T)
        .unwrap_or_else(|e| panic!("no response to {method} {path} from {local}: {e}"))
}
