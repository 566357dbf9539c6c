//! Hostile and careless clients, black-box: garbage, oversized heads, bodies
//! and heads that never finish (request_timeout), idle connections, 10 000
//! pipelined requests, connection churn and resets, a subscriber that never
//! reads while ~20 MB is published (dropped; the others keep up; RSS stays
//! bounded), and max_connections.
//!
//! Every loop here is bounded in count and in time.

mod common;

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Reads one response (any status) and then requires the connection to close.
fn response_then_close(c: &mut Conn) -> Response {
    let r = c
        .read_response(false, Duration::from_secs(5))
        .expect("a response before the close");
    match c.wait_closed(Duration::from_secs(5)) {
        Ok(rest) => assert!(rest.is_empty(), "bytes after the response: {rest:?}"),
        Err(e) => panic!("connection not closed after {}: {e}", r.status),
    }
    r
}

#[test]
fn malformed_requests_get_400_and_close() {
    let srv = Server::start("");
    let cases: [&[u8]; 6] = [
        b"\x00\x01\x02\x03garbage\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n",
        b"PUT /a HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"PUT /a HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"PUT /a HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    ];
    for raw in cases {
        let mut c = srv.conn();
        c.send(raw);
        let r = response_then_close(&mut c);
        assert_eq!(r.status, 400, "for {:?}", String::from_utf8_lossy(raw));
        r.assert_bad_request();
    }
    // the server is fine afterwards
    srv.publish("/a", "{}").assert(202, MSG_ACCEPTED);
}

#[test]
fn oversized_head_is_rejected_and_closed() {
    let srv = Server::start("max_head_size: 8192\nmax_headers: 20");
    // one endless header line: 12 KiB, never terminated
    let mut c = srv.conn();
    c.send(format!("GET /a HTTP/1.1\r\nX-Long: {}", "a".repeat(12 * 1024)).as_bytes());
    let r = response_then_close(&mut c);
    assert!(matches!(r.status, 400 | 431), "status {}", r.status);
    r.assert_std_headers();
    // an endless request line
    let mut c = srv.conn();
    c.send(format!("GET /{} HTTP/1.1\r\n", "b".repeat(12 * 1024)).as_bytes());
    let r = response_then_close(&mut c);
    assert!(matches!(r.status, 400 | 414 | 431), "status {}", r.status);
    // too many headers, each small, head complete and under max_head_size
    let mut c = srv.conn();
    let mut req = String::from("GET /a HTTP/1.1\r\n");
    for i in 0..100 {
        req += &format!("X-H{i}: v\r\n");
    }
    req += "\r\n";
    c.send(req.as_bytes());
    let r = response_then_close(&mut c);
    assert!(matches!(r.status, 400 | 431), "status {}", r.status);
    srv.publish("/a", "{}").assert(202, MSG_ACCEPTED);
}

#[test]
fn endless_header_stream_is_cut_off_within_bounded_bytes() {
    let srv = Server::start("max_head_size: 8192");
    let c = srv.conn();
    let mut w = c.stream.try_clone().expect("clone");
    let limit: u64 = 32 << 20;
    let written = Arc::new(AtomicU64::new(0));
    let written2 = written.clone();
    let writer = thread::spawn(move || {
        let _ = w.write_all(b"GET /a HTTP/1.1\r\nX-Endless: ");
        let piece = vec![b'a'; 16 * 1024];
        let deadline = Instant::now() + Duration::from_secs(8);
        while written2.load(Ordering::Relaxed) < limit && Instant::now() < deadline {
            match w.write(&piece) {
                Ok(n) => {
                    written2.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(_) => return true, // the server closed on us
            }
        }
        false
    });
    let mut c = c;
    let got = c.wait_closed(Duration::from_secs(8));
    let cut = writer.join().expect("writer");
    assert!(
        got.is_ok(),
        "connection still open after the head limit: {got:?}"
    );
    if let Ok(bytes) = got {
        if !bytes.is_empty() {
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                text.starts_with("HTTP/1.1 400") || text.starts_with("HTTP/1.1 431"),
                "{text:?}"
            );
        }
    }
    assert!(
        cut,
        "the server kept taking header bytes: {} written",
        written.load(Ordering::Relaxed)
    );
}

/// Asserts the connection is closed by the server between `min` and `max` from now.
fn closed_between(c: &mut Conn, min: Duration, max: Duration) -> Vec<u8> {
    let start = Instant::now();
    let got = c.wait_closed(max);
    let took = start.elapsed();
    let bytes = got.unwrap_or_else(|e| panic!("not closed within {max:?}: {e}"));
    assert!(took >= min, "closed too early, after {took:?}");
    if !bytes.is_empty() {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.starts_with("HTTP/1.1 400") || text.starts_with("HTTP/1.1 408"),
            "unexpected bytes before the close: {text:?}"
        );
    }
    bytes
}

#[test]
fn body_that_never_ends_is_closed_after_request_timeout() {
    let srv = Server::start("request_timeout: 1");
    let mut c = srv.conn();
    c.send(b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\": ");
    closed_between(&mut c, Duration::from_millis(700), Duration::from_secs(4));
    let mut c = srv.conn();
    c.send(b"PUT /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n");
    closed_between(&mut c, Duration::from_millis(700), Duration::from_secs(4));
}

#[test]
fn slowloris_head_is_closed_after_request_timeout() {
    let srv = Server::start("request_timeout: 1");
    let mut c = srv.conn();
    c.send(b"PUT /a HTTP/1.1\r\nX-Slow: ");
    let mut w = c.stream.try_clone().expect("clone");
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let writer = thread::spawn(move || {
        // One byte every 100 ms: the server sees steady progress, never a
        // full head. The slow writer is the behaviour under test, not a wait.
        for _ in 0..60 {
            if stop2.load(Ordering::Relaxed) || w.write_all(b"a").is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    closed_between(&mut c, Duration::from_millis(700), Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
}

#[test]
fn idle_connections_are_closed_after_request_timeout() {
    let srv = Server::start("request_timeout: 1");
    let mut fresh = srv.conn();
    let mut used = srv.conn();
    used.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(used.read_response(true, T).expect("HEAD").status, 204);
    closed_between(
        &mut fresh,
        Duration::from_millis(700),
        Duration::from_secs(4),
    );
    used.wait_closed(Duration::from_secs(3))
        .expect("idle keep-alive connection closed");
}

#[test]
fn ten_thousand_pipelined_heads_written_before_reading() {
    let srv = Server::start("");
    let c = srv.conn();
    let mut w = c.stream.try_clone().expect("clone");
    let n = 10_000;
    let mut batch = Vec::with_capacity(n * 40);
    for _ in 0..n {
        batch.extend_from_slice(b"HEAD /p HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    let (tx, rx) = mpsc::channel();
    let writer = thread::spawn(move || {
        let r = w.write_all(&batch);
        let _ = tx.send(r.is_ok());
    });
    // The client reads nothing until it has written everything.
    let wrote_all = rx.recv_timeout(Duration::from_secs(20));
    let mut c = c;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = 0;
    for i in 0..n {
        let r = c
            .read_head(deadline)
            .unwrap_or_else(|e| panic!("response {i} of {n}: {e}"));
        assert_eq!(r.status, 204, "response {i}: {:?}", r.head_str());
        let xr = r.x_requests();
        assert!(xr > last, "X-Requests must increase: {xr} after {last}");
        last = xr;
    }
    writer.join().expect("writer");
    assert_eq!(
        wrote_all,
        Ok(true),
        "the server stopped reading 300 KB of pipelined requests (deadlock)"
    );
    assert!(c.buffered().is_empty());
    c.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response(true, T).expect("after").status, 204);
}

#[test]
fn ten_thousand_pipelined_publishes_all_answered_and_delivered() {
    let srv = Server::start("");
    let mut sub = srv.subscribe("/pp");
    let n: u64 = 10_000;
    let reader = thread::spawn(move || {
        for i in 0..n {
            let ev = sub.next_event(Duration::from_secs(20));
            assert_eq!(ev["n"], json!(i), "event order");
        }
    });
    let c = srv.conn();
    let mut w = c.stream.try_clone().expect("clone");
    let writer = thread::spawn(move || {
        let mut batch = Vec::new();
        for i in 0..n {
            let body = json!({"n": i}).to_string();
            batch.extend_from_slice(
                format!(
                    "PUT /pp HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
        w.write_all(&batch).expect("write pipeline");
    });
    let mut c = c;
    for i in 0..n {
        let r = c
            .read_response(false, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("response {i}: {e}"));
        assert_eq!(r.status, 202, "response {i}: {}", r.body_str());
        assert_eq!(r.body_str(), MSG_ACCEPTED);
    }
    writer.join().expect("writer");
    reader.join().expect("every event delivered in order");
}

#[test]
fn connection_churn_and_resets_do_not_hurt() {
    let srv = Server::start("");
    let mut keep = srv.subscribe("/churn");
    for i in 0..1000 {
        let c = std::net::TcpStream::connect(srv.addr).expect("connect");
        if i % 2 == 0 {
            // abortive close: RST instead of FIN
            let s = socket2::Socket::from(c);
            s.set_linger(Some(Duration::ZERO)).expect("linger");
            drop(s);
        } else {
            drop(c);
        }
    }
    // subscribers that vanish with a reset while events are in flight
    for _ in 0..20 {
        let s = srv.subscribe("/churn");
        let sock = socket2::Socket::from(s.conn.stream.try_clone().expect("clone"));
        srv.publish_ok("/churn", &json!({"x": 1}));
        sock.set_linger(Some(Duration::ZERO)).expect("linger");
        drop(sock);
        drop(s);
    }
    srv.publish_ok("/churn", &sentinel());
    let got = keep.events_until_sentinel(T);
    assert_eq!(got.len(), 20);
    srv.wait_subscribers(1, T);
}

#[test]
fn slow_subscriber_is_dropped_others_keep_up() {
    let srv = Server::start(
        "max_payload_size: 200000\nmax_queued_bytes: 1048576\nwrite_timeout: 2\nlog_level: debug",
    );
    let slow = srv.subscribe("/big");
    let mut fast = srv.subscribe("/big");
    let events: u64 = 320; // 320 x 64 KiB = 20 MiB
    let (tx, rx) = mpsc::channel::<(u64, Instant)>();
    let reader = thread::spawn(move || {
        for i in 0..events {
            let ev = fast.next_event(Duration::from_secs(15));
            assert_eq!(ev["n"], json!(i), "fast subscriber order");
            let _ = tx.send((i, Instant::now()));
        }
        fast // keep the fast subscriber connected
    });
    let pad = "x".repeat(64 * 1024);
    let mut publisher = srv.conn();
    let mut sent_at = Vec::new();
    let mut max_rss = 0;
    let mut worst = Duration::ZERO;
    let mut received = 0u64;
    let mut take = |rx: &mpsc::Receiver<(u64, Instant)>, sent_at: &[Instant]| {
        let (i, at) = rx
            .recv_timeout(Duration::from_secs(15))
            .expect("the fast subscriber kept receiving");
        worst = worst.max(at.saturating_duration_since(sent_at[i as usize]));
    };
    // The publisher stays at most WINDOW events (512 KiB) ahead of the
    // fast reader, so on a loaded machine the fast one never nears its
    // 1 MiB cap; the slow one, which reads nothing, passes it.
    const WINDOW: u64 = 8;
    let start = Instant::now();
    for i in 0..events {
        while i >= WINDOW && received <= i - WINDOW {
            take(&rx, &sent_at);
            received += 1;
        }
        let body = json!({"n": i, "pad": pad}).to_string();
        publisher.publish("/big", &body).assert(202, MSG_ACCEPTED);
        sent_at.push(Instant::now());
        if i % 10 == 0 {
            max_rss = max_rss.max(srv.rss_kib().unwrap_or(0));
        }
    }
    while received < events {
        take(&rx, &sent_at);
        received += 1;
    }
    let _fast = reader.join().expect("fast reader");
    max_rss = max_rss.max(srv.rss_kib().unwrap_or(0));
    eprintln!(
        "published 20 MiB in {:?} (server CPU {:?}); worst fast latency {worst:?}; max RSS {max_rss} KiB",
        start.elapsed(),
        srv.cpu_time()
    );
    assert!(
        worst < Duration::from_millis(1500),
        "the fast subscriber lagged {worst:?} behind"
    );
    assert!(max_rss < 200 * 1024, "server RSS grew to {max_rss} KiB");

    // the slow one is gone: its stream ends after whatever the kernel held
    srv.wait_subscribers(1, Duration::from_secs(5));
    let mut slow_conn = slow.conn;
    let total = slow_conn
        .drain_to_eof(Instant::now() + Duration::from_secs(10))
        .expect("the slow subscriber's connection was closed");
    assert!(
        total < 20 << 20,
        "slow subscriber got {total} bytes: not dropped"
    );
    assert!(
        srv.log().to_lowercase().contains("slow"),
        "no log line about the dropped slow subscriber:\n{}",
        srv.log()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn stalled_subscriber_is_dropped_after_write_timeout() {
    // The queue cap is far away (64 MiB); only the stall deadline can drop it.
    let srv =
        Server::start("max_payload_size: 200000\nmax_queued_bytes: 67108864\nwrite_timeout: 1");
    let stalled = srv.subscribe("/st");
    let pad = "s".repeat(64 * 1024);
    let mut c = srv.conn();
    // 12 MiB: more than loopback socket buffers take from a reader that reads nothing
    for i in 0..192 {
        c.publish("/st", &json!({"n": i, "pad": pad}).to_string())
            .assert(202, MSG_ACCEPTED);
    }
    let published = Instant::now();
    let dropped = wait_until(Duration::from_secs(5), || {
        c.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
        c.read_response(true, T).expect("HEAD").x_subscribers() == 0
    });
    assert!(
        dropped,
        "a subscriber stalled for {:?} was not dropped (write_timeout 1 s)",
        published.elapsed()
    );
    let mut conn = stalled.conn;
    let total = conn
        .drain_to_eof(Instant::now() + Duration::from_secs(10))
        .expect("the stalled subscriber's connection was closed");
    assert!(total < 12 << 20, "got {total} bytes");
    let rss = srv.rss_kib().unwrap_or(0);
    assert!(rss < 200 * 1024, "server RSS {rss} KiB");
}

#[test]
fn max_connections_refuses_extra_clients_cleanly() {
    let srv = Server::start("max_connections: 5");
    let mut subs: Vec<Subscriber> = (0..4).map(|_| srv.subscribe("/mc")).collect();
    let mut idle = srv.conn(); // the fifth
    idle.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(idle.read_response(true, T).expect("HEAD").status, 204);
    // the sixth is refused: closed, optionally after a 503
    for _ in 0..3 {
        let Ok(mut extra) = Conn::try_connect(srv.addr) else {
            continue; // refused at connect: fine too
        };
        let _ = extra.try_send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
        let bytes = extra
            .wait_closed(Duration::from_secs(5))
            .expect("an excess connection is closed");
        if !bytes.is_empty() {
            let text = String::from_utf8_lossy(&bytes);
            assert!(text.starts_with("HTTP/1.1 503"), "{text:?}");
        }
    }
    // existing clients keep working
    idle.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = idle
        .read_response(true, T)
        .expect("HEAD on an existing connection");
    assert_eq!(r.status, 204);
    assert_eq!(r.x_subscribers(), 4);
    idle.publish("/mc", r#"{"n": 1}"#).assert(202, MSG_ACCEPTED);
    for s in subs.iter_mut() {
        assert_eq!(s.next_event(T)["n"], json!(1));
    }
    // a freed slot can be used again
    drop(idle);
    let ok = wait_until(Duration::from_secs(5), || {
        let Ok(mut c) = Conn::try_connect(srv.addr) else {
            return false;
        };
        if c.try_send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").is_err() {
            return false;
        }
        matches!(c.read_response(true, Duration::from_secs(2)), Ok(r) if r.status == 204)
    });
    assert!(ok, "a slot freed by a closed connection is never reused");
}

#[test]
fn sending_after_a_stream_request_is_harmless() {
    // A subscriber that keeps talking (junk, another request) must not break
    // the stream or the server.
    let srv = Server::start("");
    let mut sub = srv.subscribe("/talk");
    sub.conn
        .send(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\njunk junk junk\r\n");
    srv.publish_ok("/talk", &json!({"n": 1}));
    match sub.try_next_event(T) {
        Ok(Some(ev)) => assert_eq!(ev["n"], json!(1)),
        Ok(None) => {}
        Err(e) => assert!(
            is_reset(&e) || e.kind() == ErrorKind::UnexpectedEof,
            "stream broke oddly: {e}"
        ),
    }
    srv.publish("/talk", "{}").assert(202, MSG_ACCEPTED);
}

/// At the open-files limit the excess is refused with a 503, not left
/// waiting in the listen backlog, even when `max_connections` asks for more
/// than the limit allows; the clients already in keep being served.
#[test]
fn the_open_files_limit_refuses_the_excess_cleanly() {
    // 100 descriptors: 64 are kept in reserve, so 36 clients fit.
    let srv = Server::builder()
        .server("max_connections: 1000")
        .open_files(100)
        .start();
    assert!(
        srv.log().contains("above what the open-files limit allows"),
        "{}",
        srv.log()
    );
    let mut subs: Vec<Subscriber> = (0..30).map(|_| srv.subscribe("/fd")).collect();
    let mut refused = 0;
    let mut kept = Vec::new();
    for _ in 0..40 {
        let mut c = Conn::connect(srv.addr);
        c.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
        match c.read_response(true, T) {
            Ok(r) if r.status == 204 => kept.push(c),
            Ok(r) => {
                assert_eq!(r.status, 503);
                refused += 1;
            }
            Err(e) => panic!("an excess client got no answer: {e:?}"),
        }
    }
    assert_eq!(kept.len(), 6, "30 streams + 6 idle fill the 36 slots");
    assert_eq!(refused, 34);
    // A client already in publishes to those already in.
    kept[0]
        .publish("/fd", r#"{"n": 7}"#)
        .assert(202, MSG_ACCEPTED);
    for s in subs.iter_mut() {
        assert_eq!(s.next_event(T)["n"], json!(7));
    }
}
