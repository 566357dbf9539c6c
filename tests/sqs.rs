//! The SQS feed against a real SQS-compatible server: `moto_server` (PyPI
//! `moto[server]`) on a free loopback port, queues driven by
//! `tests/python/sqs_helper.py` (boto3), and the real `pubsubd` binary with
//! an `sqs:` section pointing at it.
//!
//! Python comes from `PUBSUBD_PYTHON` (default: the project's `.venv`).
//! Without moto the tests print "skipped" and pass, unless `CI` is set.
//!
//! Every wait is bounded; every process started here is killed by its PID
//! on drop; only 127.0.0.1 is used.
#![cfg(feature = "sqs")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_pubsubd");
/// Bound for one expected event or condition on a loaded 2-core machine.
const T: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Helpers: temp dirs, python, moto, the server, raw HTTP

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pubsubd-sqs-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn python() -> PathBuf {
    match std::env::var_os("PUBSUBD_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    }
}

fn helper_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/sqs_helper.py")
}

/// Whether moto and boto3 can be used; without them the test is skipped,
/// except in CI.
fn moto_available(test: &str) -> bool {
    let ok = Command::new(python())
        .args(["-c", "import moto.server, boto3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let why = format!(
            "{test}: moto[server] and boto3 are not importable by {} \
             (set PUBSUBD_PYTHON or pip install -r tests/python/requirements.txt)",
            python().display()
        );
        if std::env::var_os("CI").is_some() {
            panic!("{why}");
        }
        eprintln!("skipped: {why}");
    }
    ok
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (by PID) and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `moto_server` on 127.0.0.1.
struct Moto {
    port: u16,
    proc: Option<Proc>,
    log: PathBuf,
}

impl Moto {
    fn start(dir: &Path) -> Moto {
        let mut moto = Moto {
            port: free_port(),
            proc: None,
            log: dir.join("moto.log"),
        };
        moto.restart();
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts moto (again) on the same port and waits until it answers.
    fn restart(&mut self) {
        assert!(self.proc.is_none(), "moto is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("moto log");
        let child = Command::new(python())
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start moto_server");
        self.proc = Some(Proc(child));
        let port = self.port;
        let up = wait_until(Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            up,
            "moto_server did not listen on {port}:\n{}",
            self.log_text()
        );
    }

    fn kill(&mut self) {
        self.proc = None;
        let port = self.port;
        assert!(
            wait_until(T, || TcpStream::connect(("127.0.0.1", port)).is_err()),
            "moto still answers on {port} after being killed"
        );
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs helper commands; returns one output line per command.
    fn helper(&self, args: &[&str]) -> Vec<String> {
        let mut child = Command::new(python())
            .arg(helper_script())
            .arg(self.endpoint())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run sqs_helper.py");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for helper") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("sqs_helper.py {args:?} took over 60 s");
            }
            thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut s) = child.stdout.take() {
            let _ = s.read_to_string(&mut out);
        }
        if let Some(mut s) = child.stderr.take() {
            let _ = s.read_to_string(&mut err);
        }
        assert!(status.success(), "sqs_helper.py {args:?} failed:\n{err}");
        out.lines().map(str::to_owned).collect()
    }

    /// Visible and in-flight message counts, e.g. "0 0".
    fn count(&self, queue: &str) -> String {
        self.helper(&["count", queue]).concat()
    }
}

/// The real `pubsubd`, its stderr collected in the background.
struct Server {
    _proc: Proc,
    port: u16,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(dir: &Path, config: &str) -> Server {
        let path = dir.join("pypubsub.yaml");
        std::fs::write(&path, config).expect("write config");
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&path)
            .arg("--acl")
            .arg(dir.join("no-acl.yaml"))
            .current_dir(dir)
            .env("RUST_LOG", "info,sqs_feed=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Loopback only: no proxy may come between the server and moto.
        for var in [
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            cmd.env_remove(var);
        }
        let mut child = cmd.spawn().expect("start pubsubd");
        let stderr = child.stderr.take().expect("piped stderr");
        let proc = Proc(child);
        let log = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let sink = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on 127.0.0.1:").nth(1) {
                    if let Ok(port) = rest.trim().parse::<u16>() {
                        let _ = port_tx.send(port);
                    }
                }
                let mut log = sink.lock().expect("log lock");
                log.push_str(&line);
                log.push('\n');
            }
        });
        let port = match port_rx.recv_timeout(T) {
            Ok(port) => port,
            Err(_) => panic!(
                "pubsubd did not report its port:\n{}",
                log.lock().expect("log lock")
            ),
        };
        Server {
            _proc: proc,
            port,
            log,
        }
    }

    fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }

    /// One request on a fresh connection; returns the status and body.
    fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(T)).expect("timeout");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("send request");
        let mut response = String::new();
        let _ = s.read_to_string(&mut response);
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP response: {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    fn subscribe(&self, path: &str) -> Subscriber {
        Subscriber::open(self.port, path, "")
    }

    /// Subscribes with extra request headers (each ending in CRLF).
    fn subscribe_with(&self, path: &str, headers: &str) -> Subscriber {
        Subscriber::open(self.port, path, headers)
    }
}

/// A streaming subscriber over raw HTTP/1.1; a thread decodes the chunked
/// stream into JSON events (keep-alive pings dropped).
struct Subscriber {
    socket: TcpStream,
    events: mpsc::Receiver<Value>,
}

impl Subscriber {
    fn open(port: u16, path: &str, headers: &str) -> Subscriber {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(120)))
            .expect("timeout");
        write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n").expect("send GET");
        let socket = s.try_clone().expect("clone socket");
        let mut reader = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).expect("read response head");
            assert!(n > 0, "stream closed before its head: {head:?}");
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        assert!(head.starts_with("HTTP/1.1 200"), "subscribe {path}: {head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "{head}"
        );
        let (tx, events) = mpsc::channel();
        thread::spawn(move || {
            let mut pending = Vec::new();
            loop {
                let mut size = String::new();
                if reader.read_line(&mut size).unwrap_or(0) == 0 {
                    return;
                }
                let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
                    return;
                };
                if size == 0 {
                    return;
                }
                let mut data = vec![0; size + 2];
                if reader.read_exact(&mut data).is_err() {
                    return;
                }
                data.truncate(size);
                pending.extend_from_slice(&data);
                while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=i).collect();
                    let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                        continue;
                    };
                    if v.get("stillalive").is_none() && tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        Subscriber { socket, events }
    }

    fn next(&self, timeout: Duration) -> Option<Value> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Collects events until `done` holds for the collection, or `timeout`.
    fn collect_until(&self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while !done(&got) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Some(v) = self.next(left) {
                got.push(v);
            }
        }
        got
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

fn config(moto: &Moto, queues: &[(&str, &str, bool)]) -> String {
    let mut c = String::from(
        "server:\n  bind: 127.0.0.1\n  port: 0\n  backlog: {size: 100}\n\
         clients:\n  payloaders: [127.0.0.1/32]\nsqs:\n",
    );
    for (name, queue, delete) in queues {
        c.push_str(&format!(
            "  {name}:\n    queue: {queue}\n    region: us-east-1\n    delete: {delete}\n    \
             key: testing\n    secret: testing\n    endpoint: {}\n    wait_time: 1\n",
            moto.endpoint()
        ));
    }
    c
}

fn numbers(events: &[Value]) -> Vec<i64> {
    let mut n: Vec<i64> = events.iter().filter_map(|e| e["n"].as_i64()).collect();
    n.sort_unstable();
    n
}

fn find(events: &[Value], n: i64) -> &Value {
    events
        .iter()
        .find(|e| e["n"] == n)
        .unwrap_or_else(|| panic!("no event n={n} in {events:?}"))
}

// ---------------------------------------------------------------------------
// Tests

/// Messages become events on the right topics; private stays private; bad
/// bodies are skipped (and deleted); `delete: true` empties the queue; a
/// message SQS hands out again (same MessageId) is not published again.
#[test]
fn sqs_messages_are_published_like_publishes() {
    if !moto_available("sqs_messages_are_published_like_publishes") {
        return;
    }
    let dir = TempDir::new("feed");
    let moto = Moto::start(&dir.0);
    // "again" hands an undeleted message out anew every second.
    moto.helper(&[
        "create",
        "events",
        "create",
        "events.fifo",
        "create-visibility",
        "again",
        "1",
    ]);
    let server = Server::start(
        &dir.0,
        &config(
            &moto,
            &[
                ("plain", "events", true),
                ("fifo", "events.fifo", true),
                ("again", "again", false),
            ],
        ),
    );
    for name in ["plain", "fifo", "again"] {
        assert!(
            server.wait_for_log(&format!("sqs.{name}: polling queue"), T),
            "{}",
            server.log()
        );
    }
    let fruits = server.subscribe("/fruits");
    let all = server.subscribe("/");
    let secret = server.subscribe("/secret");
    let dup = server.subscribe("/dup");

    moto.helper(&[
        "send",
        "events",
        r#"{"n": 1, "pubsub_path": "/fruits/apples", "text": "line\nbreak"}"#,
        "send",
        "events",
        "this is not JSON",
        "send",
        "events",
        "[1, 2, 3]",
        "send",
        "events",
        r#"{"n": 2}"#,
        "send",
        "events",
        r#"{"n": 3, "pubsub_path": "/private/secret/x"}"#,
        "send",
        "events.fifo",
        r#"{"n": 4, "pubsub_path": "/fruits/oranges"}"#,
        "send",
        "again",
        r#"{"n": 5, "pubsub_path": "/dup"}"#,
    ]);

    // Topic matching, and the keys a publish adds.
    let got = fruits.collect_until(T, |e| numbers(e) == [1, 4]);
    assert_eq!(numbers(&got), [1, 4], "{got:?}\n{}", server.log());
    let apples = find(&got, 1);
    assert_eq!(apples["pubsub_topics"], json!(["fruits", "apples"]));
    assert_eq!(apples["pubsub_path"], "/fruits/apples");
    assert_eq!(apples["text"], "line\nbreak");
    assert_eq!(apples["pubsub_cursor"].as_str().map(str::len), Some(36));
    assert!(apples["pubsub_timestamp"]
        .as_f64()
        .is_some_and(|t| t > 1.5e9));
    assert_eq!(find(&got, 4)["pubsub_topics"], json!(["fruits", "oranges"]));

    // "/" sees everything public; the private event and bad bodies never.
    let got = all.collect_until(T, |e| numbers(e) == [1, 2, 4, 5]);
    assert_eq!(numbers(&got), [1, 2, 4, 5], "{got:?}\n{}", server.log());
    assert_eq!(find(&got, 2)["pubsub_topics"], json!([]));
    assert_eq!(find(&got, 2)["pubsub_path"], "/");
    assert_eq!(find(&got, 5)["pubsub_topics"], json!(["dup"]));

    // Bad bodies: logged as skipped.
    assert!(
        server.wait_for_log("skipped: body is not JSON", T)
            && server.wait_for_log("skipped: body is not a JSON object", T),
        "{}",
        server.log()
    );

    // delete: true leaves nothing behind, bad bodies included.
    for queue in ["events", "events.fifo"] {
        assert!(
            wait_until(T, || moto.count(queue) == "0 0"),
            "{queue} still holds {}",
            moto.count(queue)
        );
    }

    // The undeleted message comes back every second (visibility timeout
    // 1 s) with the same MessageId: it is not published again.
    assert!(
        dup.next(Duration::from_secs(3))
            .is_some_and(|e| e["n"] == 5),
        "first delivery on /dup"
    );
    assert!(
        dup.next(Duration::from_secs(4)).is_none(),
        "n=5 published twice"
    );
    let later: Vec<Value> = std::iter::from_fn(|| all.next(Duration::from_millis(200))).collect();
    assert!(
        later.iter().all(|e| e["n"] != 5),
        "n=5 published twice: {later:?}"
    );
    // It was handed out again: the poller logs each one it ignores.
    assert!(
        server.wait_for_log("seen before; not published again", T),
        "no redelivery seen:\n{}",
        server.log()
    );

    // Private: not for unauthenticated subscribers, even matching ones.
    assert!(secret.next(Duration::from_millis(500)).is_none());
    assert!(later.iter().all(|e| e["n"] != 3), "{later:?}");
}

/// With moto gone the server keeps serving and the poller backs off; when
/// moto comes back on the same port (queue recreated), events flow again.
#[test]
fn sqs_outage_does_not_stop_the_server() {
    if !moto_available("sqs_outage_does_not_stop_the_server") {
        return;
    }
    let dir = TempDir::new("outage");
    let mut moto = Moto::start(&dir.0);
    moto.helper(&["create", "q"]);
    let server = Server::start(&dir.0, &config(&moto, &[("q", "q", true)]));
    assert!(
        server.wait_for_log("sqs.q: polling queue", T),
        "{}",
        server.log()
    );
    let all = server.subscribe("/");

    moto.helper(&[
        "send",
        "q",
        r#"{"phase": "before", "pubsub_path": "/phase"}"#,
    ]);
    let e = all
        .next(T)
        .unwrap_or_else(|| panic!("no event:\n{}", server.log()));
    assert_eq!(e["phase"], "before");
    assert_eq!(e["pubsub_topics"], json!(["phase"]));
    // It entered the backlog like a publish.
    let replay = server.subscribe_with("/phase", "X-Fetch-Since: 0\r\n");
    let e = replay.next(T).expect("replayed SQS event");
    assert_eq!(e["phase"], "before");
    drop(replay);

    moto.kill();
    assert!(
        server.wait_for_log("; retrying in 2s", Duration::from_secs(30)),
        "no back-off logged:\n{}",
        server.log()
    );

    // Still serving: health check, publish and subscribe.
    assert_eq!(server.request("HEAD", "/", "").0, 204);
    let (status, body) = server.request("PUT", "/phase", r#"{"phase": "during"}"#);
    assert_eq!(
        (status, body.as_str()),
        (202, "Payload received, thank you very much!\n")
    );
    let e = all.next(T).expect("published event during the outage");
    assert_eq!(e["phase"], "during");
    let late = server.subscribe("/phase");

    moto.restart();
    moto.helper(&[
        "create",
        "q",
        "send",
        "q",
        r#"{"phase": "after", "pubsub_path": "/phase"}"#,
    ]);
    // The back-off is at most 16 s by now.
    let wait = Duration::from_secs(45);
    let e = all
        .next(wait)
        .unwrap_or_else(|| panic!("no event after restart:\n{}", server.log()));
    assert_eq!(e["phase"], "after");
    assert_eq!(late.next(T).expect("late subscriber")["phase"], "after");
    assert!(
        server.wait_for_log("sqs.q: receiving from", T),
        "{}",
        server.log()
    );
    assert!(wait_until(T, || moto.count("q") == "0 0"));
}
