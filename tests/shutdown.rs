//! Graceful stop, black-box: SIGTERM (and SIGINT) end every chunked stream
//! with the terminating chunk `0\r\n\r\n`, close HTTP/1.0 streams and idle
//! connections, and the process exits 0 within a few seconds.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn stop_with(sig: &str) {
    let mut srv = Server::start("");
    let mut a = srv.subscribe("/a");
    let mut b = srv.subscribe("/");
    let mut old = Subscriber::open_raw(srv.addr, b"GET /a HTTP/1.0\r\n\r\n");
    let mut idle = srv.conn();
    srv.publish_ok("/a", &json!({"n": 1}));
    assert_eq!(a.next_event(T)["n"], json!(1));
    assert_eq!(b.next_event(T)["n"], json!(1));

    let start = Instant::now();
    srv.signal(sig);
    for (name, s) in [("a", &mut a), ("b", &mut b)] {
        // any pending pings may come first; then the exact terminator
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match s.next_chunk(left) {
                Ok(None) => break,
                Ok(Some(c)) => assert!(
                    is_ping(&parse_line(&c)),
                    "stream {name}: unexpected chunk {:?}",
                    String::from_utf8_lossy(&c)
                ),
                Err(e) => panic!("stream {name} did not end with 0\\r\\n\\r\\n: {e}"),
            }
        }
        let rest = s
            .conn
            .wait_closed(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("stream {name} not closed after the last chunk: {e}"));
        assert!(rest.is_empty(), "bytes after the last chunk: {rest:?}");
    }
    let rest = old
        .conn
        .wait_closed(Duration::from_secs(5))
        .expect("HTTP/1.0 stream closed");
    // the HTTP/1.0 stream holds the event and maybe pings, then just ends
    let mut events = 0;
    for line in rest.split_inclusive(|b| *b == b'\n') {
        let v = parse_line(line);
        if !is_ping(&v) {
            assert_eq!(v["n"], json!(1), "HTTP/1.0 stream: {v}");
            events += 1;
        }
    }
    assert_eq!(
        events,
        1,
        "HTTP/1.0 stream: {:?}",
        String::from_utf8_lossy(&rest)
    );
    idle.wait_closed(Duration::from_secs(5))
        .expect("idle connection closed");
    let status = srv
        .wait_exit(Duration::from_secs(5))
        .expect("pubsubd exits within 5 s of the signal");
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn sigterm_ends_streams_and_exits_zero() {
    stop_with("TERM");
}

#[test]
fn sigint_ends_streams_and_exits_zero() {
    stop_with("INT");
}

#[test]
fn sigterm_with_no_clients_exits_zero_quickly() {
    let mut srv = Server::start("");
    let start = Instant::now();
    srv.signal("TERM");
    let status = srv
        .wait_exit(Duration::from_secs(5))
        .expect("pubsubd exits within 5 s");
    assert_eq!(status.code(), Some(0));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn sigterm_with_a_stalled_subscriber_still_exits() {
    // a subscriber that reads nothing must not hold up the exit for long
    let mut srv = Server::start("max_payload_size: 200000");
    let _stalled = srv.subscribe("/s");
    let pad = "z".repeat(100_000);
    let mut c = srv.conn();
    for i in 0..60 {
        c.publish("/s", &json!({"n": i, "pad": pad}).to_string());
    }
    drop(c);
    srv.signal("TERM");
    let status = srv
        .wait_exit(Duration::from_secs(8))
        .expect("pubsubd exits despite a stalled subscriber");
    assert_eq!(status.code(), Some(0));
}
