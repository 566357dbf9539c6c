//! Subscriber streams, black-box: the exact response head, keep-alive pings
//! (`ping_interval` as a number and as a string), old-school `\n\0` framing,
//! HTTP/1.0 raw streams, per-subscriber event order, X-Subscribers after a
//! disconnect, a stream outliving `request_timeout`, and 1 000 concurrent
//! subscribers all receiving an event.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

#[test]
fn stream_head_is_exact() {
    let srv = Server::start("");
    let sub = srv.subscribe("/h/i");
    let h = &sub.head;
    assert!(
        h.raw_head.starts_with(b"HTTP/1.1 200 "),
        "status line: {:?}",
        h.head_str()
    );
    assert_eq!(h.header("Content-Type"), Some(STREAM_CONTENT_TYPE));
    assert_eq!(h.header("Transfer-Encoding"), Some("chunked"));
    assert_eq!(h.header("Cache-Control"), Some("no-cache"));
    assert_eq!(h.header("X-Accel-Buffering"), Some("no"));
    assert_eq!(h.header("Content-Length"), None, "{:?}", h.head_str());
    h.assert_std_headers();
}

fn check_ping(chunk: &[u8], suffix: &[u8]) -> f64 {
    // pypubsub writes `{"stillalive": 1588293679.54}`; any JSON spacing is accepted
    assert!(
        (chunk.starts_with(b"{\"stillalive\": ") || chunk.starts_with(b"{\"stillalive\":"))
            && chunk.ends_with(suffix),
        "ping chunk {:?}",
        String::from_utf8_lossy(chunk)
    );
    let line = chunk.strip_suffix(b"\0").unwrap_or(chunk);
    let v = parse_line(line);
    assert!(is_ping(&v), "{v}");
    assert!(v["stillalive"].is_f64(), "stillalive must be a float: {v}");
    let t = v["stillalive"].as_f64().expect("f64");
    let now = now_epoch();
    assert!(
        (now - 60.0..=now + 5.0).contains(&t),
        "stillalive {t} vs now {now}"
    );
    t
}

fn pings_arrive(interval_yaml: &str) {
    let srv = Server::start(&format!("ping_interval: {interval_yaml}"));
    let mut sub = srv.subscribe("/quiet");
    let start = Instant::now();
    let mut times = Vec::new();
    let mut stamps = Vec::new();
    while times.len() < 4 {
        let c = sub
            .next_chunk(Duration::from_secs(3))
            .expect("a ping within 3 s")
            .expect("stream still open");
        stamps.push(check_ping(&c, b"}\n"));
        times.push(start.elapsed());
    }
    // 4 pings at 0.2 s intervals: the last three span ~0.6 s
    let span = times[3] - times[0];
    assert!(
        span >= Duration::from_millis(350) && span <= Duration::from_millis(2000),
        "pings at {times:?}"
    );
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{stamps:?}");
}

#[test]
fn pings_with_numeric_interval() {
    pings_arrive("0.2");
}

#[test]
fn pings_with_string_interval() {
    pings_arrive("\"200ms\"");
}

#[test]
fn oldschoolers_get_nul_terminated_chunks() {
    let srv = Server::builder()
        .server("ping_interval: 0.2")
        .clients("oldschoolers: [svnwcsub, gitwcsub]")
        .start();
    let mut old = srv.subscribe_with("/o", &[("User-Agent", "svnwcsub/1.9.4 (linux)")]);
    let mut new = srv.subscribe_with("/o", &[("User-Agent", "asfpy/0.60")]);
    srv.publish_ok("/o", &json!({"n": 1}));

    // old-school: every chunk (pings and the event) ends "\n\0"
    let mut saw_ping = false;
    let mut saw_event = false;
    let deadline = Instant::now() + T;
    while !(saw_ping && saw_event) {
        let c = old
            .conn
            .read_chunk(deadline)
            .expect("chunk")
            .expect("open stream");
        assert!(c.ends_with(b"\n\0"), "{:?}", String::from_utf8_lossy(&c));
        let v = parse_line(&c[..c.len() - 1]);
        if is_ping(&v) {
            check_ping(&c, b"}\n\0");
            saw_ping = true;
        } else {
            assert_eq!(v["n"], json!(1));
            check_event_meta(&v, &["o"], "/o");
            saw_event = true;
        }
    }

    // a normal client on the same server: no NUL
    let deadline = Instant::now() + T;
    loop {
        let c = new
            .conn
            .read_chunk(deadline)
            .expect("chunk")
            .expect("open stream");
        assert!(!c.contains(&0), "{:?}", String::from_utf8_lossy(&c));
        if !is_ping(&parse_line(&c)) {
            break;
        }
    }
}

#[test]
fn http10_subscriber_gets_raw_lines() {
    let srv = Server::start("ping_interval: 0.3");
    let mut sub = Subscriber::open_raw(
        srv.addr,
        b"GET /ten HTTP/1.0\r\nUser-Agent: old-client\r\n\r\n",
    );
    assert_eq!(
        sub.head.header("Transfer-Encoding"),
        None,
        "{:?}",
        sub.head.head_str()
    );
    assert_eq!(sub.head.header("Content-Type"), Some(STREAM_CONTENT_TYPE));
    srv.publish_ok("/ten", &json!({"n": 1}));
    srv.publish_ok("/ten", &json!({"n": 2}));
    let deadline = Instant::now() + T;
    let mut events = Vec::new();
    let mut pings = 0;
    while events.len() < 2 || pings < 1 {
        let line = sub
            .conn
            .read_until(b"\n", 1 << 20, deadline)
            .expect("a raw line");
        let v = parse_line(&line);
        if is_ping(&v) {
            check_ping(&line, b"}\n");
            pings += 1;
        } else {
            events.push(v);
        }
    }
    assert_eq!(events[0]["n"], json!(1));
    assert_eq!(events[1]["n"], json!(2));
    check_event_meta(&events[0], &["ten"], "/ten");
}

#[test]
fn events_arrive_in_publish_order() {
    let srv = Server::start("");
    let mut a = srv.subscribe("/ord");
    let mut b = srv.subscribe("/");
    let mut c = srv.conn();
    for n in 0..300 {
        c.publish("/ord/x", &json!({"n": n}).to_string())
            .assert(202, MSG_ACCEPTED);
    }
    for sub in [&mut a, &mut b] {
        for n in 0..300 {
            assert_eq!(sub.next_event(T)["n"], json!(n));
        }
    }
}

#[test]
fn concurrent_publishers_keep_per_publisher_order() {
    let srv = Server::start("");
    let mut sub = srv.subscribe("/cc");
    let addr = srv.addr;
    let handles: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|src| {
            thread::spawn(move || {
                let mut c = Conn::connect(addr);
                for n in 0..100 {
                    c.publish("/cc", &json!({"src": src, "n": n}).to_string())
                        .assert(202, MSG_ACCEPTED);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("publisher thread");
    }
    let mut next = std::collections::HashMap::new();
    for _ in 0..300 {
        let ev = sub.next_event(T);
        let src = ev["src"].as_str().expect("src").to_string();
        let want = next.entry(src.clone()).or_insert(0u64);
        assert_eq!(ev["n"], json!(*want), "order from publisher {src}");
        *want += 1;
    }
}

#[test]
fn disconnected_subscriber_is_forgotten() {
    let srv = Server::start("");
    let a = srv.subscribe("/d");
    let mut b = srv.subscribe("/d");
    assert_eq!(srv.subscribers(), 2);
    drop(a);
    srv.wait_subscribers(1, T);
    let r = srv.publish("/d", r#"{"n": 1}"#);
    r.assert(202, MSG_ACCEPTED);
    assert_eq!(r.x_subscribers(), 1);
    assert_eq!(b.next_event(T)["n"], json!(1));
}

#[test]
fn stream_outlives_request_timeout() {
    let srv = Server::start("request_timeout: 0.5\nping_interval: 10");
    let mut sub = srv.subscribe("/long");
    // An idle connection opened after the stream: once the server has closed
    // it for request_timeout, the stream's own deadline (had it one) is past
    // too. Nothing was sent either way on the stream meanwhile.
    let mut idle = srv.conn();
    idle.wait_closed(T)
        .expect("an idle connection is closed after request_timeout");
    srv.wait_subscribers(1, T);
    srv.publish_ok("/long", &json!({"n": 1}));
    assert_eq!(sub.next_event(T)["n"], json!(1));
}

#[test]
fn a_thousand_subscribers_all_receive() {
    let srv = Server::start("max_connections: 5000");
    let mut subs: Vec<Subscriber> = (0..1000)
        .map(|i| {
            let path = if i % 2 == 0 { "/many" } else { "/many/more" };
            srv.subscribe(path)
        })
        .collect();
    let r = srv.publish("/many/more", r#"{"n": 1}"#);
    r.assert(202, MSG_ACCEPTED);
    assert_eq!(r.x_subscribers(), 1000);
    let deadline = Instant::now() + Duration::from_secs(20);
    for (i, s) in subs.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev: Value = s.next_event(left);
        assert_eq!(ev["n"], json!(1), "subscriber {i}");
        check_event_meta(&ev, &["many", "more"], "/many/more");
    }
}
