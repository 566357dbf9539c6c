//! Interoperability with the real Python `asfpy` client (PyPI `asfpy`):
//! `asfpy.pubsub.listen()` (aiohttp) and the deprecated `Listener` (requests)
//! subscribe to pubsubd through `tests/python/test_asfpy.py` and must receive
//! published events.
//!
//! The interpreter is `$PUBSUBD_PYTHON`, else `.venv/bin/python` in the
//! package root (see `common::python_with`). Without one that imports
//! asfpy, the test fails under `CI` and is skipped otherwise.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Starts the asfpy script against `url`; returns the child and its stdout lines.
fn spawn_client(py: &Path, url: &str, mode: &str, count: u32) -> (Reaped, mpsc::Receiver<String>) {
    spawn_lines(
        Command::new(py)
            .arg("-u")
            .arg(python_script("test_asfpy.py"))
            .args([
                "--url",
                url,
                "--mode",
                mode,
                "--count",
                &count.to_string(),
                "--timeout",
                "25",
            ]),
        "asfpy",
    )
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
    let Some(py) = python_with("asfpy_listen_receives_events", &["asfpy"]) else {
        return;
    };
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
    let Some(py) = python_with("asfpy_deprecated_listener_receives_payloads", &["asfpy"]) else {
        return;
    };
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
