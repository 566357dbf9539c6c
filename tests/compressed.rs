//! gzip-encoded streams, black-box: `curl --compressed -sN` prints each
//! event as it comes and exits cleanly when the server ends the stream
//! (the trailer checks out); Python's `zlib` decodes a stream piece by
//! piece as it arrives (tests/python/gzip_stream.py), plain and SSE;
//! chromium's `EventSource` reads a gzip SSE stream
//! (tests/browser/sse_gzip.mjs).
#![cfg(feature = "compression")] // gzip streams

mod common;

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

#[test]
fn curl_compressed_prints_each_event_as_it_comes() {
    if !have_curl() {
        return;
    }
    let mut srv = Server::start("");
    let child = Command::new("curl")
        .args(["--compressed", "-sSN", "--max-time", "30", "-D", "-"])
        .arg(srv.url("/gz"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn curl");
    let mut child = Reaped(child);
    let rx = stdout_lines(&mut child.0);
    srv.wait_subscribers(1, T);
    let mut head = Vec::new();
    loop {
        let line = rx.recv_timeout(T).expect("curl prints the head");
        if line.trim().is_empty() {
            break;
        }
        head.push(line);
    }
    assert!(
        head.iter()
            .any(|h| h.trim().eq_ignore_ascii_case("content-encoding: gzip")),
        "{head:?}"
    );
    // Each event is printed before the next is published: nothing waits
    // in a compressor.
    for n in 1..=3 {
        srv.publish_ok("/gz", &json!({"n": n, "text": "repeat ".repeat(50)}));
        let line = rx.recv_timeout(T).expect("the event, at once");
        let v: Value = serde_json::from_str(&line).expect("one JSON line");
        assert_eq!(v["n"], n, "{line}");
    }
    // The server ends the stream: final block, trailer, last chunk; curl
    // checks them and exits 0.
    srv.signal("TERM");
    let status = wait_child(&mut child.0, T).expect("curl exits");
    let mut stderr = String::new();
    if let Some(mut e) = child.0.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(status.success(), "curl: {status:?} {stderr}");
}

/// Runs tests/python/gzip_stream.py against `path`; its lines.
fn python_reader(srv: &Server, path: &str, sse: bool) -> Option<(Reaped, mpsc::Receiver<String>)> {
    let py = python_with("gzip streams", &["zlib", "urllib.request"])?;
    let mut cmd = Command::new(py);
    cmd.arg("-u")
        .arg(python_script("gzip_stream.py"))
        .args(["--url", &srv.url(path)]);
    if sse {
        cmd.arg("--sse");
    }
    Some(spawn_lines(&mut cmd, "zlib"))
}

fn next_json(rx: &mpsc::Receiver<String>, deadline: Instant) -> Value {
    let left = deadline.saturating_duration_since(Instant::now());
    let line = rx
        .recv_timeout(left)
        .expect("a line from the reader in time");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

#[test]
fn python_zlib_decodes_each_event_when_it_arrives() {
    let mut srv = Server::start("ping_interval: 1s");
    let Some((_plain, plain)) = python_reader(&srv, "/py", false) else {
        return;
    };
    let Some((_sse, sse)) = python_reader(&srv, "/py", true) else {
        return;
    };
    let deadline = Instant::now() + T;
    for rx in [&plain, &sse] {
        let head = next_json(rx, deadline);
        assert_eq!(
            head["head"],
            json!({"content-encoding": "gzip", "vary": "Accept-Encoding"})
        );
    }
    srv.wait_subscribers(2, T);
    for n in 1..=3 {
        srv.publish_ok("/py/x", &json!({"n": n, "commit": "message ".repeat(20)}));
        // Every piece decodes to whole lines (a ping may come first).
        for (rx, sse) in [(&plain, false), (&sse, true)] {
            loop {
                let piece = next_json(rx, deadline);
                assert_eq!(piece["rest"], "", "a piece ended mid-line: {piece}");
                let lines = piece["lines"].as_array().expect("lines").clone();
                let data = lines.iter().filter_map(|l| {
                    let l = l.as_str()?;
                    if sse {
                        l.strip_prefix("data: ").map(str::to_owned)
                    } else {
                        Some(l.to_owned())
                    }
                });
                let events: Vec<Value> = data
                    .map(|l| serde_json::from_str::<Value>(&l).expect("JSON"))
                    .filter(|v| !is_ping(v))
                    .collect();
                if events.is_empty() {
                    continue;
                }
                assert_eq!(events.len(), 1, "{piece}");
                assert_eq!(events[0]["n"], n);
                break;
            }
        }
    }
    srv.signal("TERM");
    for rx in [&plain, &sse] {
        loop {
            let v = next_json(rx, deadline);
            if v.get("eof").is_some() {
                assert_eq!(
                    v,
                    json!({"eof": true, "unused": 0}),
                    "the trailer checks out"
                );
                break;
            }
        }
    }
}

#[test]
fn chromium_event_source_reads_a_gzip_stream() {
    let Some(dir) = browser_scripts() else {
        return;
    };
    let srv = Server::start("");
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("sse_gzip.mjs"))
        .arg(format!("http://{}", srv.addr));
    let (status, stdout, stderr) = output_within(&mut cmd, Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "browser test failed ({status:?})\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}",
        srv.log()
    );
    assert!(stdout.contains("gzip EventSource OK"), "{stdout}");
}
