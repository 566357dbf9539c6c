//! The server process: `Builder` writes a `pypubsub.yaml` (and ACL) into a
//! temp dir, starts the real binary on `127.0.0.1:0` with `--ready-file`,
//! learns every address it listens on from that file (`Ready`: the file
//! names the process, so a file of an earlier run is never taken for this
//! one's), sends its stdout and stderr to a log file of the harness's own,
//! and stops it by PID on drop (SIGTERM, then SIGKILL after a bound).
//!
//! Invariant: when `start` returns, `log()` has everything the server
//! logged before it wrote its ready file (the log is a file the server
//! writes itself, so nothing lags behind a reader).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{
    basic_auth, signal_child, wait_child, wait_until, Conn, Response, Subscriber, TempDir, BIN,
    MSG_ACCEPTED, T,
};

/// Builds a `pypubsub.yaml` and starts the server with it.
#[derive(Clone)]
pub struct Builder {
    bind: String,
    server: Vec<String>,
    clients: Vec<String>,
    sections: Vec<String>,
    payloaders: Vec<String>,
    acl: Option<String>,
    raw_config: Option<String>,
    dir: Option<PathBuf>,
    open_files: Option<u64>,
    env: Vec<(String, String)>,
    ready_file: Option<PathBuf>,
}

/// Proxy variables removed from the server's environment: it only ever
/// talks to loopback helpers (moto), and no proxy may come between.
const PROXY_VARS: [&str; 6] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

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

    /// A top-level section, verbatim (e.g. `cluster:` and its keys).
    pub fn section(mut self, yaml: &str) -> Self {
        self.sections.push(yaml.to_string());
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

    /// Start the server with this open-files limit (through `prlimit`,
    /// which execs the server, so the PID is still the server's).
    pub fn open_files(mut self, n: u64) -> Self {
        self.open_files = Some(n);
        self
    }

    /// An environment variable for the server, e.g. `RUST_LOG` (which is
    /// otherwise removed, so the server logs at its default level).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Run in this existing directory (kept after the server stops), e.g. to
    /// restart a server on the files a previous one left.
    pub fn in_dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_path_buf());
        self
    }

    /// Where the server writes its ready file (default: a temp dir of the
    /// harness's own, outside the server's directory).
    pub fn ready_file(mut self, path: &Path) -> Self {
        self.ready_file = Some(path.to_path_buf());
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
        for section in &self.sections {
            y += section;
            if !section.ends_with('\n') {
                y.push('\n');
            }
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

    /// Starts the server; `Err` if it exits or never writes its ready file.
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
        let ready_dir = TempDir::new();
        let ready_path = match &self.ready_file {
            Some(p) => p.clone(),
            None => ready_dir.path().join("ready.json"),
        };
        let mut args = vec![
            "--config".to_string(),
            cfg_path.display().to_string(),
            "--acl".to_string(),
            acl_path.display().to_string(),
            "--ready-file".to_string(),
            ready_path.display().to_string(),
        ];
        let program = match self.open_files {
            Some(n) => {
                args.splice(0..0, [format!("--nofile={n}:{n}"), BIN.to_string()]);
                "prlimit"
            }
            None => BIN,
        };
        let files = Files {
            owned,
            dir: path,
            ready_dir,
            ready_path,
        };
        Server::launch(files, program, &args, &self.env, config)
    }
}

/// What the server's ready file says (`--ready-file`; the format is in
/// src/ready_file.rs).
#[derive(Debug, Clone, PartialEq)]
pub struct Ready {
    pub pid: u32,
    /// (kind, address) in the file's order: `plain`, then `tls`, `admin`.
    pub listeners: Vec<(String, SocketAddr)>,
}

impl Ready {
    /// `None` unless `text` is a whole ready file.
    pub fn parse(text: &str) -> Option<Ready> {
        let v: Value = serde_json::from_str(text).ok()?;
        let pid = u32::try_from(v["pid"].as_u64()?).ok()?;
        let listeners = v["listeners"]
            .as_array()?
            .iter()
            .map(|l| {
                Some((
                    l["kind"].as_str()?.to_string(),
                    l["addr"].as_str()?.parse().ok()?,
                ))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Ready { pid, listeners })
    }

    /// The file at `path`, if it is there and whole.
    pub fn read(path: &Path) -> Option<Ready> {
        Ready::parse(&std::fs::read_to_string(path).ok()?)
    }

    /// The address of the first listener of `kind` (`plain`, `tls`, `admin`).
    pub fn addr(&self, kind: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, a)| *a)
    }
}

/// The directories a server runs with.
struct Files {
    /// The server's directory, when the harness made it.
    owned: Option<TempDir>,
    dir: PathBuf,
    /// The harness's own: the log file, and the ready file unless the
    /// builder named a path.
    ready_dir: TempDir,
    ready_path: PathBuf,
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
    ready: Ready,
    ready_path: PathBuf,
    /// stdout and stderr, in the order written.
    log_path: PathBuf,
    /// Set on drop: stops the `PUBSUBD_TEST_ECHO` thread.
    stopped: Arc<AtomicBool>,
    dir: PathBuf,
    _owned: Option<TempDir>,
    _ready_dir: TempDir,
}

/// What the log file holds so far.
fn read_log(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// `PUBSUBD_TEST_ECHO`: copies the log file to stderr as it grows (polled,
/// until `stopped`), each line prefixed `[pubsubd] `.
fn echo(path: PathBuf, stopped: Arc<AtomicBool>) {
    thread::spawn(move || {
        let mut shown = 0;
        loop {
            let done = stopped.load(Ordering::Relaxed);
            let bytes = std::fs::read(&path).unwrap_or_default();
            if let Some(end) = bytes[shown.min(bytes.len())..]
                .iter()
                .rposition(|&b| b == b'\n')
                .map(|i| shown + i + 1)
            {
                for line in String::from_utf8_lossy(&bytes[shown..end]).lines() {
                    eprintln!("[pubsubd] {line}");
                }
                shown = end;
            }
            if done {
                break;
            }
            // poll interval
            thread::sleep(Duration::from_millis(50));
        }
    });
}

impl Server {
    pub fn builder() -> Builder {
        Builder {
            bind: "127.0.0.1".to_string(),
            server: Vec::new(),
            clients: Vec::new(),
            sections: Vec::new(),
            payloaders: vec!["127.0.0.1/32".to_string(), "::1/128".to_string()],
            acl: None,
            raw_config: None,
            dir: None,
            open_files: None,
            env: Vec::new(),
            ready_file: None,
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
        files: Files,
        program: &str,
        args: &[String],
        env: &[(String, String)],
        config: String,
    ) -> Result<Server, StartError> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(&files.dir)
            .env_remove("RUST_LOG");
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let log_path = files.ready_dir.path().join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("create the server's log file");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn pubsubd");
        let stopped = Arc::new(AtomicBool::new(false));
        if std::env::var_os("PUBSUBD_TEST_ECHO").is_some() {
            echo(log_path.clone(), stopped.clone());
        }
        // The ready file, once it names this process (prlimit execs the
        // server, so its PID is the child's); or the child's exit.
        let pid = child.id();
        let deadline = Instant::now() + T;
        let mut status = None;
        let ready = loop {
            if let Some(ready) = Ready::read(&files.ready_path).filter(|r| r.pid == pid) {
                break Some(ready);
            }
            if let Ok(Some(st)) = child.try_wait() {
                status = Some(st);
                break None;
            }
            if Instant::now() >= deadline {
                break None;
            }
            // poll interval
            thread::sleep(Duration::from_millis(5));
        };
        let plain = ready.as_ref().and_then(|r| r.addr("plain"));
        match (ready, plain) {
            (Some(ready), Some(addr)) => Ok(Server {
                pid,
                child,
                addr,
                ready,
                ready_path: files.ready_path,
                log_path,
                stopped,
                dir: files.dir,
                _owned: files.owned,
                _ready_dir: files.ready_dir,
            }),
            _ => {
                if status.is_none() {
                    status = wait_child(&mut child, Duration::from_secs(2));
                }
                if status.is_none() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                stopped.store(true, Ordering::Relaxed);
                Err(StartError {
                    status,
                    log: read_log(&log_path),
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

    /// What the server's ready file said at start-up.
    pub fn ready(&self) -> &Ready {
        &self.ready
    }

    /// Where the server wrote its ready file.
    pub fn ready_path(&self) -> &Path {
        &self.ready_path
    }

    /// The TLS listener's address, if `server.tls` is configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.ready.addr("tls")
    }

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Everything the server printed so far (stdout and stderr).
    pub fn log(&self) -> String {
        read_log(&self.log_path)
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

    /// `PUT path` with `Idempotency-Key: key` on a fresh connection.
    pub fn publish_keyed(&self, path: &str, v: &Value, key: &str) -> Response {
        let body = v.to_string();
        let raw = format!(
            "PUT {path} HTTP/1.1\r\nHost: x\r\nIdempotency-Key: {key}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        self.request(raw.as_bytes())
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

    /// The admin listener's address (from the ready file); panics if
    /// there is none.
    pub fn admin_addr(&self) -> SocketAddr {
        self.ready
            .addr("admin")
            .unwrap_or_else(|| panic!("no admin listener: {:?}\n{}", self.ready, self.log()))
    }

    /// `GET path` on the admin listener, read fully.
    pub fn admin_get(&self, path: &str) -> Response {
        let mut c = Conn::connect(self.admin_addr());
        c.send(format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n").as_bytes());
        c.read_response(false, T)
            .unwrap_or_else(|e| panic!("no response to admin GET {path}: {e}"))
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

    /// The status a replay request gets now (`X-Fetch-Since` in the future:
    /// nothing to send); a cluster node answers 503 until it has loaded
    /// the stream.
    pub fn replay_status(&self) -> u16 {
        let mut c = Conn::connect(self.addr);
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Fetch-Since: 99999999999\r\n\r\n");
        c.read_head(Instant::now() + T).map_or(0, |r| r.status)
    }

    pub fn subscribe(&self, path: &str) -> Subscriber {
        Subscriber::open(self.addr, path, &[])
    }

    pub fn subscribe_with(&self, path: &str, headers: &[(&str, &str)]) -> Subscriber {
        Subscriber::open(self.addr, path, headers)
    }

    /// Subscribes with Basic credentials for `user`.
    pub fn subscribe_as(&self, path: &str, user: &str, pass: &str) -> Subscriber {
        self.subscribe_with(path, &[("Authorization", &basic_auth(user, pass))])
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        signal_child(&mut self.child, "TERM");
        if wait_child(&mut self.child, Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // The echo thread shows the last lines, then ends.
        self.stopped.store(true, Ordering::Relaxed);
    }
}
