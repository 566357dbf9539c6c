//! The replay backlog, black-box: `X-Fetch-Since` (by time) and
//! `X-Fetch-Since-Cursor` (by cursor) replay the matching backlog before
//! going live, with no gap or duplicate at the seam even while publishers
//! keep going; private events are not replayed to anonymous clients; size
//! and age limits; a large replay does not hold up other subscribers; the
//! storage file survives SIGTERM and SIGKILL restarts, skips bad lines and
//! reads the reference's format.
//!
//! Each test runs its own server; storage files live in a temp dir of the
//! test's own so that a second server can be started on the same file.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const STATUS: &str = "X-Fetch-Since-Cursor-Status";

fn server(server_yaml: &str) -> Server {
    Server::builder().server(server_yaml).start()
}

/// `backlog:` settings with a storage file.
fn stored_backlog(size: usize, path: &Path) -> String {
    format!("backlog: {{size: {size}, storage: \"{}\"}}", path.display())
}

fn n_of(v: &Value) -> i64 {
    v["n"]
        .as_i64()
        .unwrap_or_else(|| panic!("event without an integer n: {v}"))
}

/// The `n` of each event; an end marker (see `replay`) counts as -1.
fn ns_or_marker(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .map(|v| if is_marker(v) { -1 } else { n_of(v) })
        .collect()
}

fn cursor(v: &Value) -> String {
    v["pubsub_cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("event without a cursor: {v}"))
        .to_string()
}

fn is_marker(v: &Value) -> bool {
    v.get("end").is_some()
}

/// Publishes `v` to `path` and returns the event as the live `watcher`
/// (subscribed to `/`) receives it, server keys included; end markers
/// published meanwhile are skipped.
fn publish_seen(srv: &Server, watcher: &mut Subscriber, path: &str, v: &Value) -> Value {
    srv.publish_ok(path, v);
    let deadline = Instant::now() + T;
    let got = loop {
        let got = watcher.next_event(deadline.saturating_duration_since(Instant::now()));
        if !is_marker(&got) {
            break got;
        }
    };
    for (k, want) in v.as_object().expect("object") {
        assert_eq!(&got[k], want, "watcher got {got}, expected {v}");
    }
    got
}

/// The next event's raw line as sent (pings and end markers skipped),
/// without its newline.
fn next_raw(s: &mut Subscriber) -> String {
    let deadline = Instant::now() + T;
    loop {
        let chunk = s
            .next_chunk(deadline.saturating_duration_since(Instant::now()))
            .expect("an event chunk")
            .expect("stream open");
        let v = parse_line(&chunk);
        if !is_ping(&v) && !is_marker(&v) {
            let text = String::from_utf8(chunk).expect("UTF-8 event");
            return text.trim_end_matches('\n').to_string();
        }
    }
}

/// The text of `pubsub_timestamp` in a raw event line.
fn raw_timestamp(raw: &str) -> &str {
    let key = "\"pubsub_timestamp\":";
    let at = raw
        .find(key)
        .unwrap_or_else(|| panic!("no timestamp in {raw}"))
        + key.len();
    let rest = raw[at..].trim_start();
    let end = rest.find([',', '}']).expect("timestamp ends");
    &rest[..end]
}

fn parse(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|e| panic!("not JSON ({e}): {raw}"))
}

/// Subscribes to `path` with `headers`, then publishes a unique end marker
/// `{"end": id}` to `marker_path` (which the subscription must match) and
/// returns the subscriber and every event that came before the marker:
/// the replay. Markers of earlier calls are events like any other.
fn replay(
    srv: &Server,
    path: &str,
    headers: &[(&str, &str)],
    marker_path: &str,
) -> (Subscriber, Vec<Value>) {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut s = srv.subscribe_with(path, headers);
    srv.publish_ok(marker_path, &json!({ "end": id }));
    let deadline = Instant::now() + T;
    let mut events = Vec::new();
    loop {
        let v = s.next_event(deadline.saturating_duration_since(Instant::now()));
        if v["end"] == json!(id) {
            return (s, events);
        }
        events.push(v);
    }
}

/// Sends `bodies` as pipelined keep-alive PUTs to `path`, `batch` at a
/// time, and asserts every answer is 202.
fn publish_pipelined(addr: SocketAddr, path: &str, bodies: &[String], batch: usize) {
    let mut c = Conn::connect(addr);
    for group in bodies.chunks(batch) {
        let mut raw = Vec::new();
        for body in group {
            raw.extend_from_slice(
                format!(
                    "PUT {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
        c.send(&raw);
        for _ in group {
            let r = c
                .read_response(false, T)
                .unwrap_or_else(|e| panic!("pipelined PUT {path}: {e}"));
            r.assert(202, MSG_ACCEPTED);
        }
    }
}

/// Reads events until the one with `n == last`; returns every n seen.
fn collect_until(s: &mut Subscriber, last: i64, timeout: Duration) -> Vec<i64> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = match s.try_next_event(left) {
            Ok(Some(v)) => n_of(&v),
            Ok(None) => panic!("stream ended after {} events", out.len()),
            Err(e) => panic!(
                "no event n={last} within {timeout:?} ({e}); got {} events, last {:?}",
                out.len(),
                out.last()
            ),
        };
        out.push(n);
        if n == last {
            return out;
        }
    }
}

/// One parsed line of the storage file.
#[derive(Debug)]
struct Stored {
    timestamp: f64,
    topics: Vec<String>,
    json: Value,
    private: bool,
}

/// Reads the storage file; every line must be a complete record.
fn read_storage(path: &Path) -> Vec<Stored> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "storage file does not end with a newline: {text:?}"
    );
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("storage line {} is not JSON ({e}): {line:?}", i + 1));
            let keys: Vec<&str> = v
                .as_object()
                .expect("storage line is an object")
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(keys, ["timestamp", "topics", "json", "private"], "{line}");
            Stored {
                timestamp: v["timestamp"].as_f64().expect("numeric timestamp"),
                topics: v["topics"]
                    .as_array()
                    .expect("topics list")
                    .iter()
                    .map(|t| t.as_str().expect("string topic").to_string())
                    .collect(),
                json: v["json"].clone(),
                private: v["private"].as_bool().expect("boolean private"),
            }
        })
        .collect()
}

/// The parsed file once it holds exactly `want` lines (polled, bounded).
fn wait_storage(path: &Path, want: usize, timeout: Duration) -> Vec<Stored> {
    let mut seen = None;
    let ok = wait_until(timeout, || {
        let lines = std::fs::read_to_string(path).map(|t| t.lines().count());
        let done = matches!(lines, Ok(n) if n == want);
        seen = Some(lines.map_err(|e| e.to_string()));
        done
    });
    assert!(
        ok,
        "{} never held {want} lines within {timeout:?}; last: {seen:?}",
        path.display()
    );
    read_storage(path)
}

fn assert_stored_matches(stored: &Stored, live: &Value, topics: &[&str], private: bool) {
    assert_eq!(
        &stored.json, live,
        "stored json differs from the live event"
    );
    assert_eq!(
        stored.timestamp,
        live["pubsub_timestamp"].as_f64().expect("timestamp"),
        "stored timestamp of {live}"
    );
    assert_eq!(stored.topics, topics, "stored topics of {live}");
    assert_eq!(stored.private, private, "stored private flag of {live}");
}

/// Everything but the float digits of a raw line: `timestamp` and
/// `pubsub_timestamp` values are cut out (their exactness across a restart
/// is `stored_timestamps_come_back_exactly`'s business).
fn without_timestamps(raw: &str) -> String {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(i) = rest.find("timestamp\":") {
        let value_at = i + "timestamp\":".len();
        out += &rest[..value_at];
        let tail = &rest[value_at..];
        let end = tail.find([',', '}']).unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out + rest
}

/// The same event, but for timestamps, which may differ by a microsecond.
fn assert_same_event(got: &Value, want: &Value) {
    assert_eq!(
        without_timestamps(&got.to_string()),
        without_timestamps(&want.to_string()),
        "event"
    );
    let (a, b) = (
        got["pubsub_timestamp"].as_f64().expect("timestamp"),
        want["pubsub_timestamp"].as_f64().expect("timestamp"),
    );
    assert!((a - b).abs() < 1e-6, "timestamps {a} and {b} of {want}");
}

fn stop(srv: &mut Server) {
    srv.signal("TERM");
    let st = srv
        .wait_exit(Duration::from_secs(10))
        .expect("server exits after SIGTERM");
    assert_eq!(st.code(), Some(0), "exit status after SIGTERM: {st:?}");
}

// ---------------------------------------------------------------------------
// replay

#[test]
fn replay_since_time_includes_the_boundary_and_filters_topics() {
    let srv = server("backlog: {size: 100}");
    let mut w = srv.subscribe("/");
    let mut raws: Vec<String> = Vec::new();
    for (n, path) in [
        (1, "/fruit/apple"),
        (2, "/fruit/apple/red"),
        (3, "/fruit/orange"),
        (4, "/apple/fruit"),
    ] {
        if let Some(prev) = raws.last() {
            // Distinct timestamps, so that "since event 2" can exclude event 1:
            // wait until the clock is past the previous one (1 ms of margin
            // in case the server's clock is coarser than ours).
            let prev: f64 = raw_timestamp(prev).parse().expect("numeric timestamp");
            assert!(wait_until(T, || now_epoch() > prev + 0.001));
        }
        srv.publish_ok(path, &json!({ "n": n }));
        raws.push(next_raw(&mut w));
    }
    let [a1, a2, o3, a4] = [0, 1, 2, 3].map(|i| parse(&raws[i]));
    assert_eq!(
        ns_or_marker(&[a1.clone(), a2.clone(), o3.clone(), a4.clone()]),
        [1, 2, 3, 4]
    );

    // exactly the timestamp of event 2, as sent: event 2 is included (>=)
    let since = raw_timestamp(&raws[1]);
    let (s, got) = replay(
        &srv,
        "/fruit/apple",
        &[("X-Fetch-Since", since)],
        "/fruit/apple",
    );
    assert_eq!(
        got,
        vec![a2.clone(), a4.clone()],
        "replay of /fruit/apple since {since}"
    );
    assert_eq!(
        s.head.header(STATUS),
        None,
        "no cursor status without a cursor"
    );

    // since 0, two subscriptions on one stream: each event once
    let (_s, got) = replay(
        &srv,
        "/apple/red,orange",
        &[("X-Fetch-Since", "0")],
        "/apple/red/orange",
    );
    assert_eq!(
        got,
        vec![a2.clone(), o3.clone()],
        "replay of /apple/red,orange"
    );

    // everything: in publish order, identical to the live copies, earlier
    // end markers included
    let (_s, got) = replay(&srv, "/", &[("X-Fetch-Since", "0.0")], "/");
    assert_eq!(got.len(), 6, "{got:?}");
    assert_eq!(got[..4], [a1, a2, o3, a4]);
    assert_eq!(got[4]["pubsub_path"], json!("/fruit/apple"));
    assert_eq!(got[5]["pubsub_path"], json!("/apple/red/orange"));
    assert!(is_marker(&got[4]) && is_marker(&got[5]), "{got:?}");

    // a time after the newest event: nothing replayed, then live
    let later = (now_epoch() + 3600.0).to_string();
    let (_s, got) = replay(&srv, "/", &[("X-Fetch-Since", &later)], "/");
    assert!(got.is_empty(), "replayed {got:?}");
}

#[test]
fn replay_after_cursor_filters_topics_and_then_goes_live() {
    let srv = server("backlog: {size: 100}");
    let mut w = srv.subscribe("/");
    let e1 = publish_seen(&srv, &mut w, "/c/x", &json!({"n": 1}));
    let e2 = publish_seen(&srv, &mut w, "/c/x", &json!({"n": 2}));
    let e3 = publish_seen(&srv, &mut w, "/c/y", &json!({"n": 3}));
    let e4 = publish_seen(&srv, &mut w, "/c/x/z", &json!({"n": 4}));

    let (mut s, got) = replay(
        &srv,
        "/c/x",
        &[("X-Fetch-Since-Cursor", &cursor(&e1))],
        "/c/x",
    );
    assert_eq!(
        s.head.header(STATUS),
        Some("found"),
        "{}",
        s.head.head_str()
    );
    assert_eq!(s.head.header_count(STATUS), 1);
    assert_eq!(got, vec![e2.clone(), e4.clone()]);
    // live after the replay, nothing repeated
    let e5 = publish_seen(&srv, &mut w, "/c/x", &json!({"n": 5}));
    assert_eq!(s.next_event(T), e5);

    // the cursor of an event this subscription does not match still marks
    // the place: everything after e3 that matches /c
    let (s, got) = replay(&srv, "/c", &[("X-Fetch-Since-Cursor", &cursor(&e3))], "/c");
    assert_eq!(s.head.header(STATUS), Some("found"));
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0], e4);
    assert!(is_marker(&got[1]), "{got:?}");
    assert_eq!(got[2], e5);

    // the cursor of the newest event: nothing to replay, found
    let newest = publish_seen(&srv, &mut w, "/c/x", &json!({"n": 6}));
    let (s, got) = replay(
        &srv,
        "/c/x",
        &[("X-Fetch-Since-Cursor", &cursor(&newest))],
        "/c/x",
    );
    assert_eq!(s.head.header(STATUS), Some("found"));
    assert!(got.is_empty(), "{got:?}");
}

#[test]
fn private_events_are_kept_but_not_replayed_to_anonymous_clients() {
    let dir = TempDir::new();
    let path = dir.path().join("backlog.json");
    let mut srv = server(&stored_backlog(100, &path));
    let mut w = srv.subscribe("/");
    srv.publish_ok("/private/sec/x", &json!({"n": 1}));
    // the live watcher gets the public event first: the private one was
    // not delivered to it either
    let e2 = publish_seen(&srv, &mut w, "/sec/x", &json!({"n": 2}));
    srv.publish_ok("/private/sec", &json!({"n": 3}));
    let e4 = publish_seen(&srv, &mut w, "/sec/x/y", &json!({"n": 4}));

    let (_s, got) = replay(&srv, "/sec", &[("X-Fetch-Since", "0")], "/sec/end");
    assert_eq!(got, vec![e2.clone(), e4.clone()]);
    let (_s, got) = replay(
        &srv,
        "/sec/x",
        &[("X-Fetch-Since-Cursor", &cursor(&e2))],
        "/sec/x",
    );
    assert_eq!(got, vec![e4.clone()]);
    // with Basic credentials that no ACL knows: still nothing private
    let (_s, got) = replay(
        &srv,
        "/sec",
        &[
            ("X-Fetch-Since", "0"),
            ("Authorization", "Basic YWxpY2U6czNjcmV0"),
        ],
        "/sec/end",
    );
    assert_eq!(ns_or_marker(&got[..2]), [2, 4], "{got:?}");
    assert!(got[2..].iter().all(is_marker), "{got:?}");

    // the private events are in the backlog all the same
    stop(&mut srv);
    let stored = read_storage(&path);
    assert_eq!(stored.len(), 7, "{stored:?}");
    let private: Vec<&Stored> = stored.iter().filter(|s| s.private).collect();
    assert_eq!(private.len(), 2, "{stored:?}");
    assert_eq!(private[0].json["n"], json!(1));
    assert_eq!(private[0].json["pubsub_path"], json!("/private/sec/x"));
    assert_eq!(private[0].json["pubsub_topics"], json!(["sec", "x"]));
    assert_eq!(private[0].topics, ["sec", "x"]);
    assert_eq!(private[1].json["n"], json!(3));
    assert_eq!(private[1].topics, ["sec"]);
    assert!(is_uuid_v4(
        private[1].json["pubsub_cursor"].as_str().unwrap_or("")
    ));
}

#[test]
fn size_limit_keeps_only_the_newest() {
    let srv = server("backlog: {size: 3}");
    let mut w = srv.subscribe("/");
    let e: Vec<Value> = (1..=5)
        .map(|n| publish_seen(&srv, &mut w, "/sz", &json!({ "n": n })))
        .collect();
    let (_s, got) = replay(&srv, "/sz", &[("X-Fetch-Since", "0")], "/sz");
    assert_eq!(got, e[2..].to_vec());
    // now kept: e4, e5, the marker
    let (s, got) = replay(
        &srv,
        "/sz",
        &[("X-Fetch-Since-Cursor", &cursor(&e[3]))],
        "/sz",
    );
    assert_eq!(s.head.header(STATUS), Some("found"));
    assert_eq!(ns_or_marker(&got), [5, -1], "{got:?}");
    assert_eq!(got[0], e[4]);
    // now kept: e5 and two markers; e3 and e4 are gone
    for gone in [&e[2], &e[3]] {
        let (s, got) = replay(
            &srv,
            "/sz",
            &[("X-Fetch-Since-Cursor", &cursor(gone))],
            "/sz",
        );
        assert_eq!(s.head.header(STATUS), Some("unknown"), "{gone} was evicted");
        assert!(got.is_empty(), "{got:?}");
    }
}

/// Waits until everything published before `since` (epoch seconds, read
/// after the publishes were acknowledged) is older than `age`: the server
/// stamps events with the same clock.
fn wait_aged(since: f64, age: Duration) {
    let at = since + age.as_secs_f64();
    assert!(
        wait_until(age + T, || now_epoch() > at),
        "the clock never passed {at}"
    );
}

#[test]
fn max_age_drops_old_events() {
    let srv = server("backlog: {size: 100, max_age: 1s}");
    let mut w = srv.subscribe("/");
    let e1 = publish_seen(&srv, &mut w, "/age", &json!({"n": 1}));
    let e2 = publish_seen(&srv, &mut w, "/age", &json!({"n": 2}));
    let (_s, got) = replay(&srv, "/age", &[("X-Fetch-Since", "0")], "/age/end");
    assert_eq!(got, vec![e1.clone(), e2.clone()], "fresh events replay");

    // Await the age limit itself rather than a guessed sleep: e1, e2 and the
    // replay's end marker are all older than this.
    wait_aged(now_epoch(), Duration::from_secs(1));
    let e3 = publish_seen(&srv, &mut w, "/age", &json!({"n": 3}));
    let (_s, got) = replay(&srv, "/age", &[("X-Fetch-Since", "0")], "/age/end");
    assert_eq!(got, vec![e3.clone()], "only the event younger than 1 s");
    let (s, got) = replay(
        &srv,
        "/age",
        &[("X-Fetch-Since-Cursor", &cursor(&e1))],
        "/age/end",
    );
    assert_eq!(s.head.header(STATUS), Some("unknown"), "e1 aged out");
    assert!(got.is_empty(), "{got:?}");

    // once everything (e3 and the end markers) is older than 1 s, nothing at all
    wait_aged(now_epoch(), Duration::from_secs(1));
    let (_s, got) = replay(&srv, "/", &[("X-Fetch-Since", "0")], "/age/end");
    assert!(got.is_empty(), "replayed {got:?}");
}

#[test]
fn unknown_cursor_replays_nothing_and_goes_live() {
    let srv = server("backlog: {size: 100}");
    for n in 1..=3 {
        srv.publish_ok("/u", &json!({ "n": n }));
    }
    for bad in ["00000000-0000-4000-8000-000000000000", "not-a-cursor"] {
        let mut s = srv.subscribe_with("/u", &[("X-Fetch-Since-Cursor", bad)]);
        assert_eq!(s.head.header(STATUS), Some("unknown"), "{bad}");
        assert_eq!(s.head.header_count(STATUS), 1);
        let live = json!({"n": 100, "cursor": bad});
        srv.publish_ok("/u", &live);
        let got = s.next_event(T);
        assert_eq!(got["n"], json!(100), "first event after {bad}: {got}");
        assert_eq!(got["cursor"], json!(bad));
        check_event_meta(&got, &["u"], "/u");
    }
}

#[test]
fn disabled_backlog_replays_nothing() {
    let srv = server("backlog: {size: 0}");
    srv.publish_ok("/d", &json!({"n": 1}));
    let (_s, got) = replay(&srv, "/d", &[("X-Fetch-Since", "0")], "/d");
    assert!(got.is_empty(), "{got:?}");
}

// ---------------------------------------------------------------------------
// the seam between replay and live

#[test]
fn replay_seam_has_no_gap_or_duplicate_under_concurrent_publishing() {
    const PREFILL: i64 = 3000;
    const LAST: i64 = PREFILL + 399;
    let srv = server("backlog: {size: 10000}");
    // a backlog big enough that each replay takes several turns and pauses
    // at the output high-water mark
    let pad = "p".repeat(300);
    let bodies: Vec<String> = (0..PREFILL)
        .map(|n| json!({ "n": n, "pad": pad }).to_string())
        .collect();
    publish_pipelined(srv.addr, "/seam", &bodies, 200);
    let c0 = {
        let mut s = srv.subscribe_with("/seam", &[("X-Fetch-Since", "0")]);
        let first = s.next_event(T);
        assert_eq!(n_of(&first), 0);
        cursor(&first)
    };

    let progress = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let (addr, progress, pad) = (srv.addr, progress.clone(), pad.clone());
        thread::spawn(move || {
            let mut c = Conn::connect(addr);
            for n in PREFILL..=LAST {
                let r = c.publish("/seam/live", &json!({ "n": n, "pad": pad }).to_string());
                r.assert(202, MSG_ACCEPTED);
                progress.fetch_add(1, Ordering::SeqCst);
                // Pacing, not waiting: spreads the live publishes over more
                // than a second so that the subscribers below join mid-stream.
                thread::sleep(Duration::from_millis(3));
            }
        })
    };
    let mut readers = Vec::new();
    let mut joined_at = Vec::new();
    for i in 0..5 {
        // join at fixed points of the live stream: after 30, 100, ... events
        let at = 30 + 70 * i;
        assert!(
            wait_until(T, || progress.load(Ordering::SeqCst) >= at),
            "the publisher stalled before {at} events"
        );
        let by_cursor = i % 2 == 0;
        joined_at.push(progress.load(Ordering::SeqCst));
        let mut s = if by_cursor {
            srv.subscribe_with("/seam", &[("X-Fetch-Since-Cursor", &c0)])
        } else {
            srv.subscribe_with("/seam", &[("X-Fetch-Since", "0")])
        };
        if by_cursor {
            assert_eq!(s.head.header(STATUS), Some("found"));
        }
        readers.push((
            i,
            by_cursor,
            thread::spawn(move || collect_until(&mut s, LAST, Duration::from_secs(60))),
        ));
    }
    publisher.join().expect("publisher thread");
    for (i, by_cursor, r) in readers {
        let got = r
            .join()
            .unwrap_or_else(|_| panic!("subscriber {i} failed (see its panic above)"));
        let first = if by_cursor { 1 } else { 0 };
        let want: Vec<i64> = (first..=LAST).collect();
        if got != want {
            let dup = got.windows(2).find(|w| w[1] <= w[0]);
            let gap = got.windows(2).find(|w| w[1] > w[0] + 1);
            panic!(
                "subscriber {i} (joined after {} live events, by cursor: {by_cursor}): \
                 {} events, first {:?}, first non-increase {dup:?}, first gap {gap:?}",
                joined_at[i],
                got.len(),
                got.first()
            );
        }
    }
    let mid = joined_at.iter().filter(|&&p| p > 0 && p < 400).count();
    assert!(
        mid >= 3,
        "too few subscribers joined while the publisher was running: {joined_at:?}"
    );
}

#[test]
fn large_replay_streams_fully_and_does_not_delay_live_events() {
    const BIG: usize = 19_900;
    let srv = server("backlog: {size: 20000}");
    let pad = "x".repeat(430);
    let bodies: Vec<String> = (0..BIG)
        .map(|n| json!({ "n": n, "pad": pad }).to_string())
        .collect();
    publish_pipelined(srv.addr, "/big", &bodies, 200);

    let mut live = srv.subscribe("/live");
    let mut big = srv.subscribe_with("/big", &[("X-Fetch-Since", "0")]);
    let progress = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (progress, done) = (progress.clone(), done.clone());
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut bytes = 0usize;
            for i in 0..BIG {
                let left = deadline.saturating_duration_since(Instant::now());
                let v = big
                    .try_next_event(left)
                    .unwrap_or_else(|e| panic!("replay stopped after {i} events: {e}"))
                    .unwrap_or_else(|| panic!("replay stream ended after {i} events"));
                assert_eq!(n_of(&v), i as i64, "replayed event {i}");
                assert_eq!(v["pad"].as_str().map(str::len), Some(430));
                bytes += v.to_string().len();
                progress.store(i + 1, Ordering::SeqCst);
                if i % 20 == 19 {
                    // A reader slower than the loopback, so the replay takes a
                    // while: this pause is the behaviour under test, not a wait.
                    thread::sleep(Duration::from_millis(1));
                }
            }
            done.store(true, Ordering::SeqCst);
            (big, bytes)
        })
    };

    let mut during = 0;
    let mut worst = Duration::ZERO;
    for k in 0..100 {
        if done.load(Ordering::SeqCst) {
            break;
        }
        let before = progress.load(Ordering::SeqCst);
        let t0 = Instant::now();
        srv.publish_ok("/live", &json!({ "n": k }));
        let v = live
            .try_next_event(Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("live event {k} not within 1 s of publishing: {e}"))
            .expect("live stream open");
        let took = t0.elapsed();
        assert_eq!(n_of(&v), k);
        worst = worst.max(took);
        if before > 0 && !done.load(Ordering::SeqCst) {
            during += 1;
        }
        // Pacing, not waiting: spread the live probes over the replay.
        thread::sleep(Duration::from_millis(20));
    }
    let (mut big, bytes) = reader.join().expect("replay reader");
    assert!(bytes > 10_000_000, "replayed only {bytes} bytes");
    assert!(
        during >= 3,
        "only {during} live events were published during the replay"
    );
    assert!(
        worst < Duration::from_secs(1),
        "slowest live event {worst:?}"
    );
    // then live on the replayed stream, nothing repeated
    srv.publish_ok("/big", &json!({ "n": BIG }));
    assert_eq!(n_of(&big.next_event(T)), BIG as i64);
}

// ---------------------------------------------------------------------------
// persistence

#[test]
fn backlog_survives_a_sigterm_restart() {
    let dir = TempDir::new();
    let path = dir.path().join("backlog.json");
    let yaml = stored_backlog(100, &path);
    let mut srv = server(&yaml);
    assert!(srv.wait_log("does not exist yet", T), "{}", srv.log());
    let mut w = srv.subscribe("/");
    srv.publish_ok("/p/a", &json!({"n": 1, "text": "héllo\u{2028}"}));
    let raw1 = next_raw(&mut w);
    srv.publish_ok("/private/p/b", &json!({"n": 2}));
    srv.publish_ok("/p", &json!({"n": 3}));
    let raw3 = next_raw(&mut w);
    let (e1, e3) = (parse(&raw1), parse(&raw3));
    assert_eq!((n_of(&e1), n_of(&e3)), (1, 3));
    // SIGTERM well within the 2 s write interval: the file is written on exit
    stop(&mut srv);
    let before = std::fs::read_to_string(&path).expect("storage");
    let stored = read_storage(&path);
    assert_eq!(stored.len(), 3, "{stored:?}");
    assert_stored_matches(&stored[0], &e1, &["p", "a"], false);
    assert_eq!(stored[1].json["n"], json!(2));
    assert_eq!(stored[1].json["pubsub_path"], json!("/private/p/b"));
    assert_eq!(stored[1].topics, ["p", "b"]);
    assert!(stored[1].private);
    assert_stored_matches(&stored[2], &e3, &["p"], false);
    let lines: Vec<&str> = before.lines().collect();
    assert!(
        lines[0].contains(&format!("\"json\": {raw1}, ")),
        "{}",
        lines[0]
    );
    assert!(
        lines[2].contains(&format!("\"json\": {raw3}, ")),
        "{}",
        lines[2]
    );

    let mut srv = server(&yaml);
    assert!(srv.wait_log("loaded 3 events", T), "{}", srv.log());
    // what was sent live before the restart
    let mut s = srv.subscribe_with("/p", &[("X-Fetch-Since", "0")]);
    for live in [&raw1, &raw3] {
        let replayed = next_raw(&mut s);
        assert_eq!(
            without_timestamps(&replayed),
            without_timestamps(live),
            "replayed after a restart"
        );
        assert_same_event(&parse(&replayed), &parse(live));
    }
    drop(s);
    let (s, got) = replay(&srv, "/p", &[("X-Fetch-Since-Cursor", &cursor(&e1))], "/p");
    assert_eq!(s.head.header(STATUS), Some("found"), "a pre-restart cursor");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_same_event(&got[0], &e3);
    let mut w = srv.subscribe("/");
    let e4 = publish_seen(&srv, &mut w, "/p/a", &json!({"n": 4}));
    stop(&mut srv);

    let stored = read_storage(&path);
    assert_eq!(stored.len(), 5, "{stored:?}");
    assert!(is_marker(&stored[3].json), "{stored:?}");
    assert_stored_matches(&stored[4], &e4, &["p", "a"], false);
    let after = std::fs::read_to_string(&path).expect("storage");
    assert!(
        without_timestamps(&after).starts_with(&without_timestamps(&before)),
        "stored lines changed across a restart:\n{before}\n---\n{after}"
    );
}

/// Timestamps are floats with 17 significant digits; what was stored is
/// what comes back, digit for digit (and so `X-Fetch-Since` with the exact
/// timestamp a client saw still includes that event after a restart).
#[test]
fn stored_timestamps_come_back_exactly() {
    let dir = TempDir::new();
    let path = dir.path().join("backlog.json");
    let mut text = String::new();
    // timestamps seen drifting by one unit in the last place
    for (n, ts) in [(1, "1795821591.4948177"), (2, "1795821591.4955347")] {
        let json = format!(
            "{{\"n\":{n},\"pubsub_topics\":[\"t\"],\"pubsub_path\":\"/t\",\
             \"pubsub_timestamp\":{ts},\"pubsub_cursor\":\"1b4e28ba-2fa1-4d2b-8835-0e1e0b4c0a1{n}\"}}"
        );
        text += &format!(
            "{{\"timestamp\": {ts}, \"topics\": [\"t\"], \"json\": {json}, \"private\": false}}\n"
        );
    }
    std::fs::write(&path, &text).expect("write storage");
    let srv = server(&stored_backlog(100, &path));
    assert!(srv.wait_log("loaded 2 events", T), "{}", srv.log());
    let mut s = srv.subscribe_with("/t", &[("X-Fetch-Since", "1795821591.4948177")]);
    srv.publish_ok("/t", &json!({"end": 0}));
    let mut raws = Vec::new();
    let deadline = Instant::now() + T;
    loop {
        let chunk = s
            .next_chunk(deadline.saturating_duration_since(Instant::now()))
            .expect("an event chunk")
            .expect("stream open");
        let v = parse_line(&chunk);
        if is_marker(&v) {
            break;
        }
        if !is_ping(&v) {
            raws.push(
                String::from_utf8(chunk)
                    .expect("UTF-8")
                    .trim_end()
                    .to_string(),
            );
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        raws.iter()
            .map(|r| parse(r)["n"].clone())
            .collect::<Vec<_>>(),
        [json!(1), json!(2)],
        "X-Fetch-Since with the exact stored timestamp of event 1 must replay it; got {raws:?}"
    );
    for (i, (line, raw)) in lines.iter().zip(&raws).enumerate() {
        assert!(
            line.contains(&format!("\"json\": {raw}, ")),
            "event {} comes back as\n  {raw}\nbut was stored as\n  {line}",
            i + 1
        );
    }
}

#[test]
fn backlog_file_is_complete_and_parses_after_sigkill() {
    let dir = TempDir::new();
    let path = dir.path().join("backlog.json");
    let yaml = stored_backlog(10_000, &path);
    let mut srv = server(&yaml);
    let mut w = srv.subscribe("/");
    let batch: Vec<Value> = (0..20)
        .map(|n| publish_seen(&srv, &mut w, "/k", &json!({ "n": n })))
        .collect();
    drop(w);
    // written within the 2 s interval, without any shutdown
    let stored = wait_storage(&path, 20, Duration::from_secs(6));
    for (s, live) in stored.iter().zip(&batch) {
        assert_stored_matches(s, live, &["k"], false);
    }

    // keep publishing and kill the server in the middle of it
    let stop_flag = Arc::new(AtomicBool::new(false));
    let live_acks = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let (addr, stop_flag, live_acks) = (srv.addr, stop_flag.clone(), live_acks.clone());
        thread::spawn(move || {
            let mut c = Conn::connect(addr);
            let mut acked = 0;
            for n in 20..9_000 {
                if stop_flag.load(Ordering::SeqCst) {
                    break;
                }
                // Pacing, not waiting: at most ~1 000 events a second, so
                // that the backlog (10 000) never evicts before the kill.
                thread::sleep(Duration::from_millis(1));
                let body = json!({ "n": n }).to_string();
                let req = format!(
                    "PUT /k HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if c.try_send(req.as_bytes()).is_err() {
                    break;
                }
                match c.read_response(false, T) {
                    Ok(r) if r.status == 202 => {
                        acked += 1;
                        live_acks.store(acked, Ordering::SeqCst);
                    }
                    _ => break,
                }
            }
            acked
        })
    };
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&path).is_ok_and(|t| t.lines().count() > 20)
    }));
    // kill only once publishing has demonstrably gone on past that write
    let flushed_at = live_acks.load(Ordering::SeqCst);
    assert!(
        wait_until(T, || live_acks.load(Ordering::SeqCst) >= flushed_at + 100),
        "the publisher stalled"
    );
    srv.signal("KILL");
    let st = srv.wait_exit(T).expect("killed server exits");
    stop_flag.store(true, Ordering::SeqCst);
    let acked = publisher.join().expect("publisher");
    assert_eq!(st.code(), None, "killed by a signal: {st:?}");

    let stored = read_storage(&path);
    assert!(stored.len() > 20, "{} lines", stored.len());
    assert!(
        stored.len() <= 20 + acked,
        "{} lines, {acked} acknowledged after the first 20",
        stored.len()
    );
    for (s, live) in stored.iter().zip(&batch) {
        assert_stored_matches(s, live, &["k"], false);
    }
    for (i, s) in stored.iter().enumerate().skip(20) {
        assert_eq!(s.json["n"], json!(i), "line {}", i + 1);
        assert_eq!(s.topics, ["k"]);
        assert!(is_uuid_v4(s.json["pubsub_cursor"].as_str().unwrap_or("")));
    }

    let srv = server(&yaml);
    let loaded = format!("loaded {} events", stored.len());
    assert!(srv.wait_log(&loaded, T), "{}", srv.log());
    assert!(!srv.log().contains("skipped"), "{}", srv.log());
    let (_s, got) = replay(&srv, "/k", &[("X-Fetch-Since", "0")], "/k");
    let want: Vec<Value> = stored.iter().map(|s| s.json.clone()).collect();
    assert_eq!(got.len(), want.len());
    for (got, want) in got.iter().zip(&want) {
        assert_same_event(got, want);
    }
    let (s, got) = replay(
        &srv,
        "/k",
        &[("X-Fetch-Since-Cursor", &cursor(&batch[5]))],
        "/k",
    );
    assert_eq!(s.head.header(STATUS), Some("found"));
    assert_eq!(
        got.len(),
        stored.len() - 6 + 1,
        "events after n=5 and a marker"
    );
    assert_eq!(
        ns_or_marker(&got[..got.len() - 1]),
        (6..stored.len() as i64).collect::<Vec<_>>()
    );
}

/// A storage record in the reference's format (`json` without a cursor).
fn reference_line(ts: f64, topics: &[&str], json: Value, private: bool) -> String {
    format!(
        "{{\"timestamp\": {ts}, \"topics\": {}, \"json\": {json}, \"private\": {private}}}\n",
        json!(topics)
    )
}

#[test]
fn corrupt_lines_are_skipped_with_a_warning_naming_the_line() {
    let dir = TempDir::new();
    let path = dir.path().join("backlog.json");
    let ts = now_epoch() - 10.0;
    let c1 = "1b4e28ba-2fa1-4d2b-8835-0e1e0b4c0a11";
    let j1 = json!({"n": 1, "pubsub_topics": ["q"], "pubsub_path": "/q",
                    "pubsub_timestamp": ts, "pubsub_cursor": c1});
    let j3 =
        json!({"n": 3, "pubsub_topics": ["q"], "pubsub_path": "/q", "pubsub_timestamp": ts + 1.0});
    let j5 = json!({"n": 5, "pubsub_topics": ["q", "r"], "pubsub_path": "/q/r", "pubsub_timestamp": ts + 2.0});
    let text = [
        reference_line(ts, &["q"], j1.clone(), false),
        "{\"timestamp\": 12, \"topics\": [\"q\"], \"json\": {\"n\": 2\n".to_string(),
        reference_line(ts + 1.0, &["q"], j3.clone(), false),
        "{\"timestamp\": 13, \"topics\": \"q\", \"json\": {\"n\": 4}}\n".to_string(),
        reference_line(ts + 2.0, &["q", "r"], j5.clone(), false),
    ]
    .concat();
    std::fs::write(&path, text).expect("write storage");

    let srv = server(&stored_backlog(100, &path));
    assert!(srv.wait_log("loaded 3 events", T), "{}", srv.log());
    let log = srv.log();
    for bad in [2, 4] {
        let needle = format!("line {bad}: skipped");
        let line = log
            .lines()
            .find(|l| l.contains(&needle))
            .unwrap_or_else(|| panic!("no {needle:?} in the log:\n{log}"));
        assert!(line.contains("WARN"), "not a warning: {line}");
        assert!(line.contains(&path.display().to_string()), "{line}");
    }
    for good in [1, 3, 5] {
        assert!(!log.contains(&format!("line {good}: skipped")), "{log}");
    }

    let (_s, got) = replay(&srv, "/q", &[("X-Fetch-Since", "0")], "/q");
    assert_eq!(ns_or_marker(&got), [1, 3, 5], "{got:?}");
    assert_same_event(&got[0], &j1);
    let (s, got) = replay(&srv, "/q", &[("X-Fetch-Since-Cursor", c1)], "/q");
    assert_eq!(s.head.header(STATUS), Some("found"));
    assert_eq!(ns_or_marker(&got), [3, 5, -1]);
}

/// Three events in the reference's format: public, private, public.
fn write_reference_file(path: &Path) -> [Value; 3] {
    let a = json!({"commit": "abc", "n": 1, "pubsub_topics": ["git", "repo"],
                   "pubsub_path": "/git/repo", "pubsub_timestamp": 1588293679.54});
    let b = json!({"n": 2, "pubsub_topics": ["git", "secret"],
                   "pubsub_path": "/private/git/secret", "pubsub_timestamp": 1588293680.25});
    let c = json!({"n": 3, "pubsub_topics": ["git"], "pubsub_path": "/git",
                   "pubsub_timestamp": 1588293681.75});
    let text = [
        reference_line(1588293679.54, &["git", "repo"], a.clone(), false),
        reference_line(1588293680.25, &["git", "secret"], b.clone(), true),
        reference_line(1588293681.75, &["git"], c.clone(), false),
    ]
    .concat();
    std::fs::write(path, text).expect("write storage");
    [a, b, c]
}

/// `got` is `want` plus a fresh `pubsub_cursor`, other keys unchanged and in order.
fn assert_with_fresh_cursor(got: &Value, want: &Value) -> String {
    let c = cursor(got);
    assert!(is_uuid_v4(&c), "fresh cursor {c:?}");
    let mut rest = got.as_object().expect("object").clone();
    rest.remove("pubsub_cursor");
    assert_eq!(&Value::Object(rest.clone()), want);
    let keys: Vec<&String> = rest.keys().collect();
    let want_keys: Vec<&String> = want.as_object().expect("object").keys().collect();
    assert_eq!(keys, want_keys, "key order");
    c
}

#[test]
fn reference_format_file_without_cursors_loads() {
    let dir = TempDir::new();
    let path = dir.path().join("backlog.json");
    let [a, _b, c] = write_reference_file(&path);
    let srv = server(&stored_backlog(100, &path));
    assert!(srv.wait_log("loaded 3 events", T), "{}", srv.log());

    let (_s, got) = replay(&srv, "/git", &[("X-Fetch-Since", "0")], "/git/end");
    assert_eq!(got.len(), 2, "the private one is not replayed: {got:?}");
    let ca = assert_with_fresh_cursor(&got[0], &a);
    let cc = assert_with_fresh_cursor(&got[1], &c);
    assert_ne!(ca, cc);
    // the record's timestamp places the events in time
    let (_s, got) = replay(
        &srv,
        "/git",
        &[("X-Fetch-Since", "1588293681.75")],
        "/git/end",
    );
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(cursor(&got[0]), cc);
    assert!(is_marker(&got[1]));
    // the fresh cursors work as cursors
    let (s, got) = replay(
        &srv,
        "/git/repo",
        &[("X-Fetch-Since-Cursor", &ca)],
        "/git/repo",
    );
    assert_eq!(s.head.header(STATUS), Some("found"));
    assert!(got.is_empty(), "{got:?}");
    let (s, got) = replay(&srv, "/git", &[("X-Fetch-Since-Cursor", &ca)], "/git/end");
    assert_eq!(s.head.header(STATUS), Some("found"));
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(cursor(&got[0]), cc);
}

#[test]
fn cursors_given_to_loaded_events_survive_a_restart() {
    let dir = TempDir::new();
    let path = dir.path().join("backlog.json");
    let [a, _b, c] = write_reference_file(&path);
    let yaml = stored_backlog(100, &path);
    let mut srv = server(&yaml);
    assert!(srv.wait_log("loaded 3 events", T), "{}", srv.log());
    // read the replay without publishing anything
    let mut s = srv.subscribe_with("/git", &[("X-Fetch-Since", "0")]);
    let ca = assert_with_fresh_cursor(&s.next_event(T), &a);
    let cc = assert_with_fresh_cursor(&s.next_event(T), &c);
    drop(s);
    stop(&mut srv);

    let srv = server(&yaml);
    assert!(srv.wait_log("loaded 3 events", T), "{}", srv.log());
    let (s, got) = replay(&srv, "/git", &[("X-Fetch-Since-Cursor", &ca)], "/git");
    assert_eq!(
        s.head.header(STATUS),
        Some("found"),
        "a cursor handed out before the restart is unknown after it"
    );
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(cursor(&got[0]), cc);
}
