//! Interoperability with the real Python `asfpy` client (PyPI `asfpy`):
//! `asfpy.pubsub.listen()` (aiohttp) and the deprecated `Listener` (requests)
//! subscribe to pubsubd through `tests/python/test_asfpy.py` and must receive
//! published events.
//!
//! The interpreter is `$PUBSUBD_PYTHON`, else `.venv/bin/python` in the
//! package root. With neither, the test fails under `CI` and is skipped
//! otherwise.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PUBSUBD_PYTHON") {
        let p = PathBuf::from(p);
        assert!(p.exists(), "PUBSUBD_PYTHON={} does not exist", p.display());
        return Some(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() {
        return Some(venv);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "no Python for the asfpy test: set PUBSUBD_PYTHON or create {} with asfpy installed",
        venv.display()
    );
    eprintln!("skipped: no PUBSUBD_PYTHON and no {}", venv.display());
    None
}

/// The Python child, killed by PID and reaped on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the asfpy script against `url`; returns the child and its stdout lines.
fn spawn_client(
    py: &PathBuf,
    url: &str,
    mode: &str,
    count: u32,
) -> (Reaped, mpsc::Receiver<String>) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/test_asfpy.py");
    let mut child = Command::new(py)
        .arg("-u")
        .arg(&script)
        .args([
            "--url",
            url,
            "--mode",
            mode,
            "--count",
            &count.to_string(),
            "--timeout",
            "25",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", py.display()));
    let out = child.stdout.take().expect("stdout");
    let err = child.stderr.take().expect("stderr");
    thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            eprintln!("[asfpy] {line}");
        }
    });
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Reaped(child), rx)
}

fn recv_json(rx: &mpsc::Receiver<String>, deadline: Instant) -> Value {
    let left = deadline.saturating_duration_since(Instant::now());
    let line = rx
        .recv_timeout(left)
        .expect("the asfpy client printed a payload in time");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
}

/// Waits until the client's subscription is live, failing early (with a
/// hint) if the client exits first, e.g. because asfpy is not installed.
fn wait_subscribed(srv: &Server, child: &mut Reaped, py: &Path) {
    let mut exited = None;
    let ok = wait_until(Duration::from_secs(30), || {
        if let Ok(Some(st)) = child.0.try_wait() {
            exited = Some(st);
            return true;
        }
        srv.subscribers() == 1
    });
    if let Some(st) = exited {
        panic!(
            "the asfpy client exited early ({st}); see its [asfpy] stderr above. \
             Is asfpy installed for {}? (pip install -r tests/python/requirements.txt)",
            py.display()
        );
    }
    assert!(ok, "the asfpy client never subscribed");
}

fn finish(mut child: Reaped) {
    let st = wait_child(&mut child.0, Duration::from_secs(10)).expect("asfpy client exits");
    assert!(st.success(), "asfpy client exit status {st:?}");
}

#[test]
fn asfpy_listen_receives_events() {
    let Some(py) = python() else { return };
    let srv = Server::start("ping_interval: 1");
    let (mut child, rx) = spawn_client(&py, &srv.url("/asf/topic"), "listen", 2);
    wait_subscribed(&srv, &mut child, &py);
    srv.publish_ok("/asf/topic/x", &json!({"n": 1, "text": "héllo"}));
    srv.publish_ok("/asf", &json!({"n": 99})); // does not match
    srv.publish_ok("/asf/topic", &json!({"n": 2}));
    let deadline = Instant::now() + Duration::from_secs(10);
    let a = recv_json(&rx, deadline);
    assert_eq!(a["n"], json!(1));
    assert_eq!(a["text"], json!("héllo"));
    check_event_meta(&a, &["asf", "topic", "x"], "/asf/topic/x");
    let b = recv_json(&rx, deadline);
    assert_eq!(b["n"], json!(2));
    finish(child);
}

#[test]
fn asfpy_deprecated_listener_receives_payloads() {
    let Some(py) = python() else { return };
    let srv = Server::start("ping_interval: 1");
    let (mut child, rx) = spawn_client(&py, &srv.url("/legacy"), "listener", 1);
    wait_subscribed(&srv, &mut child, &py);
    // Listener(raw=False) hands over payload["payload"]
    srv.publish_ok(
        "/legacy",
        &json!({"payload": {"commit": "abc123", "files": ["a", "b"]}}),
    );
    let v = recv_json(&rx, Instant::now() + Duration::from_secs(10));
    assert_eq!(v, json!({"commit": "abc123", "files": ["a", "b"]}));
    finish(child);
}
