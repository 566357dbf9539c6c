//! Interoperability with the real `curl` binary: `curl -sN` as a streaming
//! subscriber, `curl -X PUT -d @file` publishing (small bodies, a >1 KiB body
//! that makes curl send `Expect: 100-continue`, and a chunked upload), and
//! `curl -I` as the health check.
//!
//! If `curl` is missing the tests fail under `CI` and are skipped otherwise.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn have_curl() -> bool {
    let ok = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "curl is not installed");
        eprintln!("skipped: curl is not installed");
    }
    ok
}

/// Runs curl to completion, bounded by `--max-time` and a wait deadline.
fn curl(args: &[&str]) -> Output {
    let (status, stdout, stderr) = output_within(
        Command::new("curl").args(["--max-time", "15"]).args(args),
        Duration::from_secs(20),
    );
    let status = status.unwrap_or_else(|| panic!("curl {args:?} did not finish: {stderr}"));
    Output {
        status,
        stdout: stdout.into_bytes(),
        stderr: stderr.into_bytes(),
    }
}

#[test]
fn curl_subscriber_receives_events() {
    if !have_curl() {
        return;
    }
    let srv = Server::start("");
    let (_curl, rx) = spawn_lines(
        Command::new("curl").args(["-sN", "--max-time", "20", &srv.url("/curl/topic")]),
        "curl",
    );
    srv.wait_subscribers(1, T);
    srv.publish_ok("/curl/topic/x", &json!({"n": 1, "s": "ü"}));
    srv.publish_ok("/curl/topic", &json!({"n": 2}));
    let deadline = Instant::now() + T;
    let mut got = Vec::new();
    while got.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("curl printed the event");
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("curl line is not JSON ({e}): {line:?}"));
        if !is_ping(&v) {
            got.push(v);
        }
    }
    assert_eq!(got[0]["n"], json!(1));
    assert_eq!(got[0]["s"], json!("ü"));
    check_event_meta(&got[0], &["curl", "topic", "x"], "/curl/topic/x");
    assert_eq!(got[1]["n"], json!(2));
}

#[test]
fn curl_put_small_file() {
    if !have_curl() {
        return;
    }
    let srv = Server::start("");
    let mut sub = srv.subscribe("/cp");
    let f = srv.dir().join("small.json");
    std::fs::write(&f, r#"{"small": true}"#).expect("write");
    let at = format!("@{}", f.display());
    let out = curl(&[
        "-sS",
        "-X",
        "PUT",
        "-d",
        &at,
        "-w",
        "%{http_code}",
        &srv.url("/cp"),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{MSG_ACCEPTED}202")
    );
    assert_eq!(sub.next_event(T)["small"], json!(true));
}

/// PUTs a `pad_len`-byte padded object with `curl -d @file`; asserts curl sent
/// `Expect: 100-continue`, got the interim `100 Continue` and did not wait
/// `--expect100-timeout` (5 s) for it.
fn curl_put_with_continue(pad_len: usize, extra: &[&str]) {
    let srv = Server::start("max_payload_size: 2000000\nmax_queued_bytes: 8000000");
    let mut sub = srv.subscribe("/cl");
    let f = srv.dir().join("large.json");
    let pad = "y".repeat(pad_len);
    std::fs::write(&f, format!(r#"{{"pad": "{pad}"}}"#)).expect("write");
    let at = format!("@{}", f.display());
    let start = Instant::now();
    let mut args = vec![
        "-sS",
        "-v",
        "--expect100-timeout",
        "5",
        "-X",
        "PUT",
        "-d",
        &at,
    ];
    args.extend_from_slice(extra);
    let url = srv.url("/cl");
    args.extend_from_slice(&["-w", "%{http_code}", &url]);
    let out = curl(&args);
    let took = start.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{MSG_ACCEPTED}202")
    );
    assert!(
        err.contains("> Expect: 100-continue"),
        "curl sent no Expect:\n{err}"
    );
    assert!(
        err.contains("< HTTP/1.1 100 Continue"),
        "no interim response:\n{err}"
    );
    assert!(took < Duration::from_millis(2500), "curl took {took:?}");
    assert_eq!(
        sub.next_event(T)["pad"].as_str().map(str::len),
        Some(pad_len)
    );
}

#[test]
fn curl_put_with_explicit_expect_gets_100_continue() {
    if !have_curl() {
        return;
    }
    curl_put_with_continue(4000, &["-H", "Expect: 100-continue"]);
}

#[test]
fn curl_put_over_1mib_sends_expect_by_itself() {
    // curl >= 7.8x adds `Expect: 100-continue` on its own only above 1 MiB
    // (older ones above 1 KiB).
    if !have_curl() {
        return;
    }
    curl_put_with_continue(1_100_000, &[]);
}

#[test]
fn curl_chunked_upload() {
    if !have_curl() {
        return;
    }
    let srv = Server::start("");
    let mut sub = srv.subscribe("/cc");
    let f = srv.dir().join("c.json");
    std::fs::write(&f, r#"{"chunked": "yes"}"#).expect("write");
    let at = format!("@{}", f.display());
    let out = curl(&[
        "-sS",
        "-X",
        "POST",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &at,
        "-w",
        "%{http_code}",
        &srv.url("/cc"),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{MSG_ACCEPTED}202")
    );
    assert_eq!(sub.next_event(T)["chunked"], json!("yes"));
}

#[test]
fn curl_forbidden_and_bad_payload_texts() {
    if !have_curl() {
        return;
    }
    let srv = Server::start("");
    let out = curl(&[
        "-sS",
        "-X",
        "PUT",
        "-d",
        "[1]",
        "-w",
        "%{http_code}",
        &srv.url("/x"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{MSG_BAD_TYPE}400")
    );
    let srv = Server::builder().payloaders(&["10.0.0.0/8"]).start();
    let out = curl(&[
        "-sS",
        "-X",
        "PUT",
        "-d",
        "{}",
        "-w",
        "%{http_code}",
        &srv.url("/x"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{MSG_FORBIDDEN}403")
    );
}

#[test]
fn curl_head_health_check() {
    if !have_curl() {
        return;
    }
    let srv = Server::start("");
    let out = curl(&["-sSI", &srv.url("/")]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 204"), "{text}");
    let has = |h: &str| text.lines().any(|l| l.trim_end().eq_ignore_ascii_case(h));
    assert!(has(&format!("Server: pubsubd/{VERSION}")), "{text}");
    assert!(has("X-Subscribers: 0"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.to_ascii_lowercase().starts_with("x-requests: ")),
        "{text}"
    );
}

#[test]
fn curl_too_large_file_gets_the_400_text() {
    if !have_curl() {
        return;
    }
    let srv = Server::start("");
    let f = srv.dir().join("big.json");
    std::fs::write(&f, format!(r#"{{"pad": "{}"}}"#, "x".repeat(200_000))).expect("write");
    let at = format!("@{}", f.display());
    for _ in 0..3 {
        let out = curl(&[
            "-sS",
            "-X",
            "PUT",
            "-d",
            &at,
            "-w",
            "%{http_code}",
            &srv.url("/big"),
        ]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{MSG_TOO_LARGE}400"),
            "curl stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
