//! Server-Sent Events on the subscription URLs, on the wire: a raw client
//! sends what `EventSource` sends (`Accept: text/event-stream`, then
//! `Last-Event-ID` on reconnect) and reads the chunked SSE stream; `curl`
//! reads one too. The resume seam loses nothing and repeats nothing.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const SSE: (&str, &str) = ("Accept", "text/event-stream");

/// One SSE block: its `id:` and parsed `data:`, or `None` for a block that
/// carries no event (a comment, the `retry:` hint).
fn next_sse_event(sub: &mut Subscriber, timeout: Duration) -> (String, Value) {
    let deadline = Instant::now() + timeout;
    loop {
        let chunk = sub
            .conn
            .read_chunk(deadline)
            .expect("an SSE chunk in time")
            .expect("the stream is still open");
        let text = String::from_utf8(chunk).expect("UTF-8");
        assert!(text.ends_with("\n\n"), "one block per chunk: {text:?}");
        let (mut id, mut data) = (None, None);
        for line in text.trim_end().lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str(v).expect("data is one JSON line"));
            } else {
                assert!(
                    line.starts_with(": stillalive ") || line.starts_with("retry: "),
                    "unexpected line {line:?}"
                );
            }
        }
        if let (Some(id), Some(data)) = (id, data) {
            return (id, data);
        }
    }
}

/// Events up to the sentinel, as (id, n).
fn until_sentinel(sub: &mut Subscriber) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    loop {
        let (id, v) = next_sse_event(sub, T);
        if v["sentinel"] == json!(true) {
            return out;
        }
        assert_eq!(v["pubsub_cursor"].as_str(), Some(id.as_str()));
        out.push((id, v["n"].as_i64().expect("n")));
    }
}

#[test]
fn sse_stream_head_retry_hint_and_events() {
    let srv = Server::start("ping_interval: 1s");
    let mut sub = srv.subscribe_with("/sse", &[SSE]);
    assert_eq!(sub.head.header("Content-Type"), Some("text/event-stream"));
    assert_eq!(sub.head.header("Transfer-Encoding"), Some("chunked"));
    let first = sub.conn.read_chunk(Instant::now() + T).unwrap().unwrap();
    assert_eq!(first, b"retry: 3000\n\n");
    srv.publish_ok("/sse/a", &json!({"n": 1}));
    let (id, v) = next_sse_event(&mut sub, T);
    assert_eq!(v["n"], 1);
    assert_eq!(v["pubsub_path"], "/sse/a");
    assert_eq!(v["pubsub_cursor"].as_str(), Some(id.as_str()));
    // Pings are comments, so EventSource ignores them.
    let deadline = Instant::now() + T;
    loop {
        let chunk = sub.conn.read_chunk(deadline).unwrap().unwrap();
        let text = String::from_utf8(chunk).unwrap();
        if let Some(time) = text.strip_prefix(": stillalive ") {
            assert!(time.trim_end().parse::<f64>().is_ok(), "{text:?}");
            break;
        }
    }
}

#[test]
fn last_event_id_resumes_without_loss_or_duplicate() {
    let srv = Server::start("backlog: {size: 100}");
    let mut first = srv.subscribe_with("/seam", &[SSE]);
    for n in 1..=5 {
        srv.publish_ok("/seam", &json!({"n": n}));
    }
    srv.publish_ok("/seam", &sentinel());
    let seen = until_sentinel(&mut first);
    assert_eq!(
        seen.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    drop(first);

    // Reconnect after event 2, as EventSource does; 6 arrives live.
    let mut again = srv.subscribe_with("/seam", &[SSE, ("Last-Event-ID", &seen[1].0)]);
    assert_eq!(
        again.head.header("X-Fetch-Since-Cursor-Status"),
        Some("found")
    );
    srv.publish_ok("/seam", &json!({"n": 6}));
    srv.publish_ok("/seam", &sentinel());
    let got: Vec<i64> = until_sentinel(&mut again).iter().map(|(_, n)| *n).collect();
    // The first sentinel is in the backlog too: skip past it.
    assert_eq!(got, [3, 4, 5]);
    let got: Vec<i64> = until_sentinel(&mut again).iter().map(|(_, n)| *n).collect();
    assert_eq!(got, [6]);

    // A first connection names the cursor in the URL.
    let path = format!("/seam?lastEventID={}", seen[3].0);
    let mut url = srv.subscribe_with(&path, &[SSE]);
    assert_eq!(
        url.head.header("X-Fetch-Since-Cursor-Status"),
        Some("found")
    );
    let got: Vec<i64> = until_sentinel(&mut url).iter().map(|(_, n)| *n).collect();
    assert_eq!(got, [5]);

    // An unknown id replays nothing and goes live.
    let mut unknown = srv.subscribe_with("/seam", &[SSE, ("Last-Event-ID", "nope")]);
    assert_eq!(
        unknown.head.header("X-Fetch-Since-Cursor-Status"),
        Some("unknown")
    );
    srv.publish_ok("/seam", &sentinel());
    assert!(until_sentinel(&mut unknown).is_empty());
}

#[test]
fn curl_reads_an_sse_stream() {
    if !have_curl() {
        return;
    }
    let srv = Server::start("");
    let mut child = std::process::Command::new("curl")
        .args([
            "-sN",
            "--max-time",
            "20",
            "-H",
            "Accept: text/event-stream",
            &srv.url("/curl-sse"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn curl");
    srv.wait_subscribers(1, T);
    srv.publish_ok("/curl-sse", &json!({"from": "curl"}));
    let rx = stdout_lines(&mut child);
    let mut lines = Vec::new();
    let deadline = Instant::now() + T;
    while !lines.iter().any(|l: &String| l.starts_with("data: ")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(lines.first().map(String::as_str), Some("retry: 3000"));
    let id = lines
        .iter()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("an id line");
    let data = lines
        .iter()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("a data line");
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["from"], "curl");
    assert_eq!(v["pubsub_cursor"].as_str(), Some(id));
}
