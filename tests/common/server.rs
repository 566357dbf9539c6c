//! The server process: `Builder` writes a `pypubsub.yaml` (and ACL) into a
//! temp dir, starts the real binary on `127.0.0.1:0`, learns the port from
//! its `listening on ADDR` line, drains stdout/stderr into a shared log, and
//! stops it by PID on drop (SIGTERM, then SIGKILL after a bound).

use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
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
        Server::launch(owned, path, program, &args, &self.env, config)
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
        env: &[(String, String)],
        config: String,
    ) -> Result<Server, StartError> {
        let mut cmd = Command::new(program);
        cmd.args(args).current_dir(&dir).env_remove("RUST_LOG");
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd
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
                // The process is gone, so both pipes close: the drain threads
                // end once they have logged what was left, and the channel
                // disconnects.
                let flushed = Instant::now() + Duration::from_secs(2);
                while rx
                    .recv_timeout(flushed.saturating_duration_since(Instant::now()))
                    .is_ok()
                {}
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

    /// The admin listener's address, from its log line
    /// `pubsubd admin listener on http://ADDR/ (...)`.
    pub fn admin_addr(&self) -> SocketAddr {
        const LINE: &str = "pubsubd admin listener on http://";
        assert!(self.wait_log(LINE, T), "no admin line:\n{}", self.log());
        let log = self.log();
        let line = log.lines().find(|l| l.contains(LINE)).expect("admin line");
        let rest = &line[line.find(LINE).expect("admin line") + LINE.len()..];
        let addr = rest.split('/').next().unwrap_or("");
        assert!(
            rest[addr.len()..].starts_with("/ ("),
            "admin line {line:?} should be `http://ADDR/ (...)`"
        );
        addr.parse()
            .unwrap_or_else(|e| panic!("admin address in {line:?}: {e}"))
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
    }
}
