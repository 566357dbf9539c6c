//! The in-process tier: the hub driven the way the reactor drives it, with
//! bytes in memory instead of sockets and a manual clock instead of
//! sleeps. These tests cover the request logic (statuses, matching, ACL
//! decisions, replay seams, timers, limits); what is on the wire end to
//! end is covered by the black-box tests in `tests/`.

mod transports;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::{AclFile, Admission, Hub};
use crate::acl::Acl;
use crate::clock::ManualClock;
use crate::config::Config;
use crate::out_queue::Flushed;

const ACCEPTED: &str = "Payload received, thank you very much!\n";
const FORBIDDEN: &str = "You are not authorized to deliver payloads!\n";
const BAD_TYPE: &str = "Bad payload type. Payloads must be JSON dictionary objects, {..}!\n";
const TOO_LARGE: &str = "Payload is too large for me to serve, please make it shorter.\n";
const START: f64 = 1_800_000_000.0;

/// A hub, its clock, and what each connection has been sent.
struct Harness {
    hub: Hub,
    clock: ManualClock,
    sent: HashMap<usize, Vec<u8>>,
    /// Connections whose "socket" takes nothing.
    stalled: HashSet<usize>,
    closed: HashSet<usize>,
}

impl Harness {
    fn new(config_yaml: &str) -> Harness {
        Harness::with_acl(config_yaml, "")
    }

    fn with_acl(config_yaml: &str, acl_yaml: &str) -> Harness {
        let (config, warnings) = Config::parse(config_yaml).expect("test config");
        assert!(warnings.is_empty(), "{warnings:?}");
        let clock = ManualClock::new(START);
        let acl = AclFile {
            acl: Acl::parse(acl_yaml).expect("test ACL"),
            path: PathBuf::from("test-acl.yaml"),
        };
        // Built the way the reactor builds it: no feed is configured here,
        // so nothing needs waking.
        let wake = std::sync::Arc::new(|| {});
        let parts =
            crate::setup::hub_parts(config, acl, wake, Box::new(clock.clone())).expect("hub parts");
        let hub = Hub::new(parts);
        Harness {
            hub,
            clock,
            sent: HashMap::new(),
            stalled: HashSet::new(),
            closed: HashSet::new(),
        }
    }

    fn connect(&mut self, ip: &str) -> usize {
        let ip: IpAddr = ip.parse().expect("test address");
        match self.hub.open(ip, false) {
            Admission::Open(key) => key,
            Admission::Refused(_) => panic!("refused"),
        }
    }

    /// What the reactor does when bytes arrive, then the end of its turn.
    fn send(&mut self, key: usize, bytes: &[u8]) {
        self.hub.received(key, bytes);
        self.hub.process_input(key);
        self.end_turn();
    }

    fn end_turn(&mut self) {
        for key in self.hub.take_rerun() {
            self.hub.process_input(key);
        }
        self.hub.run_timers();
        let (sent, stalled) = (&mut self.sent, &self.stalled);
        self.hub.flush(|key, out| {
            if stalled.contains(&key) {
                return Ok(Flushed {
                    written: 0,
                    blocked: true,
                });
            }
            out.flush_to(sent.entry(key).or_default())
        });
        self.closed.extend(self.hub.close_doomed());
    }

    fn advance(&mut self, d: Duration) {
        self.clock.advance(d);
        self.end_turn();
    }

    /// Everything sent to `key` since the last call.
    fn take(&mut self, key: usize) -> String {
        let bytes = self.sent.remove(&key).unwrap_or_default();
        String::from_utf8(bytes).expect("UTF-8 output")
    }

    fn publish_from(&mut self, ip: &str, path: &str, body: &str) -> (usize, String) {
        let key = self.connect(ip);
        let request = format!(
            "PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.send(key, request.as_bytes());
        let out = self.take(key);
        (key, out)
    }

    fn publish(&mut self, path: &str, body: &str) -> String {
        self.publish_from("127.0.0.1", path, body).1
    }

    fn subscribe(&mut self, path: &str, headers: &[(&str, &str)]) -> usize {
        let key = self.connect("127.0.0.1");
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        self.send(key, request.as_bytes());
        key
    }
}

/// The status line's code and the body of a complete response.
fn status_and_body(response: &str) -> (u16, &str) {
    let code = response
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not a response: {response:?}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (code, body)
}

/// The JSON lines of a chunked stream (head skipped, pings included).
fn stream_lines(output: &str) -> Vec<Value> {
    let mut rest = match output.split_once("\r\n\r\n") {
        Some((head, rest)) if head.starts_with("HTTP/1.1 200") => rest,
        _ => output,
    };
    let mut lines = Vec::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size, 16).expect("chunk size");
        if size == 0 {
            break;
        }
        let data = &after[..size];
        lines.push(serde_json::from_str(data.trim_end()).expect("JSON line"));
        rest = &after[size + 2..];
    }
    lines
}

fn events(output: &str) -> Vec<Value> {
    stream_lines(output)
        .into_iter()
        .filter(|v| v.get("stillalive").is_none())
        .collect()
}

fn header<'a>(output: &'a str, name: &str) -> Option<&'a str> {
    let head = output.split_once("\r\n\r\n")?.0;
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn publish_reaches_matching_subscribers_only() {
    let mut h = Harness::new("");
    let fruits = h.subscribe("/fruits", &[]);
    let apples = h.subscribe("/fruits/apples", &[]);
    let veg = h.subscribe("/veg", &[]);
    let head = h.take(fruits);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(header(&head, "X-Subscribers"), Some("1"));
    h.take(apples);
    h.take(veg);
    assert_eq!(h.hub.subscribers(), 3);

    let out = h.publish("/fruits/apples", r#"{"colour": "red"}"#);
    assert_eq!(status_and_body(&out), (202, ACCEPTED));
    for key in [fruits, apples] {
        let got = events(&h.take(key));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["colour"], "red");
        assert_eq!(got[0]["pubsub_path"], "/fruits/apples");
        assert_eq!(
            got[0]["pubsub_topics"],
            serde_json::json!(["fruits", "apples"])
        );
        assert_eq!(got[0]["pubsub_timestamp"], START);
        assert!(got[0]["pubsub_cursor"].is_string());
    }
    assert!(h.take(veg).is_empty());
}

#[test]
fn publisher_address_and_payload_statuses() {
    let mut h = Harness::new("clients: {payloaders: [10.0.0.0/8]}");
    let (key, out) = h.publish_from("192.0.2.1", "/a", "{}");
    assert_eq!(status_and_body(&out), (403, FORBIDDEN));
    assert!(h.closed.contains(&key), "a refused publish closes");
    let (_, out) = h.publish_from("10.1.2.3", "/a", "{}");
    assert_eq!(status_and_body(&out), (202, ACCEPTED));
    let (_, out) = h.publish_from("10.1.2.3", "/a", "[1, 2]");
    assert_eq!(status_and_body(&out), (400, BAD_TYPE));
    let (_, out) = h.publish_from("10.1.2.3", "/a", "{nope");
    let (code, body) = status_and_body(&out);
    assert_eq!(code, 400);
    assert!(body.starts_with("I could not understand your request"));
}

#[test]
fn oversize_bodies_are_refused_before_they_are_read() {
    let mut h = Harness::new("server: {max_payload_size: 10}");
    let key = h.connect("127.0.0.1");
    h.send(key, b"PUT /a HTTP/1.1\r\nContent-Length: 11\r\n\r\n");
    assert_eq!(status_and_body(&h.take(key)), (400, TOO_LARGE));
    assert!(h.closed.contains(&key));
    // Chunked: refused as soon as the body passes the limit.
    let key = h.connect("127.0.0.1");
    h.send(
        key,
        b"PUT /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n{\"a\":\"bb\r\n",
    );
    h.send(key, b"8\r\nbbbbbbb\"\r\n");
    assert_eq!(status_and_body(&h.take(key)), (400, TOO_LARGE));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut h = Harness::new("");
    let key = h.connect("127.0.0.1");
    h.send(
        key,
        b"PUT /a HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}HEAD / HTTP/1.1\r\n\r\nPUT /b HTTP/1.1\r\nContent-Length: 1\r\n\r\n[",
    );
    let out = h.take(key);
    let codes: Vec<&str> = out
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &out[i + 9..i + 12])
        .collect();
    assert_eq!(codes, ["202", "204", "400"], "{out}");
}

#[test]
fn private_events_need_a_matching_grant() {
    let acl =
        "alice: {password: pw, acl: {repos: [git]}}\nbob: {password: pw2, acl: {other: [svn]}}\n";
    let mut h = Harness::with_acl("", acl);
    let auth = |user: &str, pass: &str| {
        use base64_for_tests::encode;
        format!("Basic {}", encode(format!("{user}:{pass}").as_bytes()))
    };
    let alice = h.subscribe("/git", &[("Authorization", &auth("alice", "pw"))]);
    let bob = h.subscribe("/git", &[("Authorization", &auth("bob", "pw2"))]);
    let wrong = h.subscribe("/git", &[("Authorization", &auth("alice", "nope"))]);
    let anon = h.subscribe("/git", &[]);
    for key in [alice, bob, wrong, anon] {
        h.take(key);
    }
    assert_eq!(
        status_and_body(&h.publish("/private/git/commit", r#"{"n": 1}"#)).0,
        202
    );
    assert_eq!(
        status_and_body(&h.publish("/git/commit", r#"{"n": 2}"#)).0,
        202
    );
    let ns = |h: &mut Harness, key| -> Vec<i64> {
        events(&h.take(key))
            .iter()
            .map(|e| e["n"].as_i64().unwrap_or(-1))
            .collect()
    };
    assert_eq!(ns(&mut h, alice), [1, 2]);
    assert_eq!(ns(&mut h, bob), [2]);
    assert_eq!(ns(&mut h, wrong), [2]);
    assert_eq!(ns(&mut h, anon), [2]);
}

#[test]
fn secured_topics_need_a_user_allowed_to_publish_them() {
    let acl = "carol: {password: pw, topics: [deploy]}\ndave: {password: pw}\n";
    let mut h = Harness::with_acl("clients: {secure_topics: [deploy]}", acl);
    let put = |h: &mut Harness, auth: Option<&str>| {
        let key = h.connect("127.0.0.1");
        let auth = auth
            .map(|a| {
                format!(
                    "Authorization: Basic {}\r\n",
                    base64_for_tests::encode(a.as_bytes())
                )
            })
            .unwrap_or_default();
        let request = format!("PUT /deploy/x HTTP/1.1\r\n{auth}Content-Length: 2\r\n\r\n{{}}");
        h.send(key, request.as_bytes());
        status_and_body(&h.take(key)).0
    };
    assert_eq!(put(&mut h, None), 403);
    assert_eq!(put(&mut h, Some("dave:pw")), 403);
    assert_eq!(put(&mut h, Some("carol:wrong")), 403);
    assert_eq!(put(&mut h, Some("carol:pw")), 202);
}

#[test]
fn pings_follow_the_injected_clock() {
    let mut h = Harness::new("server: {ping_interval: 5s}");
    let key = h.subscribe("/a", &[]);
    h.take(key);
    h.advance(Duration::from_secs(4));
    assert!(h.take(key).is_empty(), "no ping before the interval");
    h.advance(Duration::from_secs(1));
    let lines = stream_lines(&h.take(key));
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["stillalive"], START + 5.0);
}

#[test]
fn incomplete_requests_time_out() {
    let mut h = Harness::new("server: {request_timeout: 30s}");
    let key = h.connect("127.0.0.1");
    h.send(key, b"PUT /a HTTP/1.1\r\nContent-Len");
    h.advance(Duration::from_secs(29));
    assert!(!h.closed.contains(&key));
    h.advance(Duration::from_secs(2));
    assert!(h.closed.contains(&key), "the slow request is closed");
    assert_eq!(h.hub.connections(), 0);
}

#[test]
fn stalled_subscribers_are_dropped_after_the_write_timeout() {
    let mut h = Harness::new("server: {write_timeout: 10s, ping_interval: 1h}");
    let stuck = h.subscribe("/a", &[]);
    let fine = h.subscribe("/a", &[]);
    h.stalled.insert(stuck);
    h.publish("/a", "{}");
    h.advance(Duration::from_secs(9));
    assert!(!h.closed.contains(&stuck));
    h.advance(Duration::from_secs(2));
    assert!(h.closed.contains(&stuck));
    assert!(!h.closed.contains(&fine));
    assert_eq!(h.hub.subscribers(), 1, "the count follows the index");
}

#[test]
fn a_subscriber_past_its_queue_cap_is_dropped_at_once() {
    let mut h = Harness::new("server: {max_queued_bytes: 300}");
    let stuck = h.subscribe("/a", &[]);
    h.stalled.insert(stuck);
    let body = format!(r#"{{"pad": "{}"}}"#, "x".repeat(100));
    h.publish("/a", &body);
    assert!(!h.closed.contains(&stuck), "one frame always fits");
    h.publish("/a", &body);
    assert!(h.closed.contains(&stuck));
    assert_eq!(h.hub.subscribers(), 0);
}

#[test]
fn cursor_replay_has_no_gap_and_no_duplicate() {
    let mut h = Harness::new("server: {backlog: {size: 10}}");
    let watcher = h.subscribe("/a", &[]);
    for n in 1..=3 {
        h.publish("/a", &format!(r#"{{"n": {n}}}"#));
    }
    let seen = events(&h.take(watcher));
    let first = seen[0]["pubsub_cursor"].as_str().unwrap().to_owned();

    let key = h.subscribe("/a", &[("X-Fetch-Since-Cursor", &first)]);
    h.publish("/a", r#"{"n": 4}"#);
    let out = h.take(key);
    assert_eq!(header(&out, "X-Fetch-Since-Cursor-Status"), Some("found"));
    let ns: Vec<i64> = events(&out)
        .iter()
        .map(|e| e["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [2, 3, 4]);

    let key = h.subscribe("/a", &[("X-Fetch-Since-Cursor", "no-such-cursor")]);
    let out = h.take(key);
    assert_eq!(header(&out, "X-Fetch-Since-Cursor-Status"), Some("unknown"));
    assert!(events(&out).is_empty());
}

#[test]
fn time_replay_uses_event_timestamps_and_max_age() {
    let mut h = Harness::new("server: {backlog: {size: 10, max_age: 60s}, ping_interval: 1h}");
    for n in 0..3 {
        h.publish("/a", &format!(r#"{{"n": {n}}}"#));
        h.advance(Duration::from_secs(10));
    }
    let since = (START + 10.0).to_string();
    let key = h.subscribe("/a", &[("X-Fetch-Since", &since)]);
    let ns: Vec<i64> = events(&h.take(key))
        .iter()
        .map(|e| e["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [1, 2]);
    // 61 s after the first event it has aged out; the others have not.
    h.advance(Duration::from_secs(31));
    let key = h.subscribe("/a", &[("X-Fetch-Since", "0")]);
    let ns: Vec<i64> = events(&h.take(key))
        .iter()
        .map(|e| e["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [1, 2]);
}

#[test]
fn head_and_unknown_methods() {
    let mut h = Harness::new("");
    let key = h.connect("127.0.0.1");
    h.send(key, b"HEAD / HTTP/1.1\r\n\r\n");
    let out = h.take(key);
    assert!(out.starts_with("HTTP/1.1 204"), "{out}");
    assert!(!h.closed.contains(&key), "kept alive");
    h.send(key, b"DELETE /a HTTP/1.1\r\n\r\n");
    assert_eq!(status_and_body(&h.take(key)).0, 400);
    assert!(h.closed.contains(&key));
}

#[test]
fn connections_past_the_limit_are_refused_with_a_503() {
    let mut h = Harness::new("server:\n  max_connections: 8\n");
    for _ in 0..8 {
        h.connect("127.0.0.1");
    }
    match h.hub.open("127.0.0.1".parse().unwrap(), false) {
        Admission::Refused(bytes) => {
            let text = String::from_utf8(bytes).unwrap();
            assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        }
        Admission::Open(_) => panic!("not refused"),
    }
}

#[test]
fn shutdown_ends_streams_then_completes() {
    let mut h = Harness::new("");
    let key = h.subscribe("/a", &[]);
    h.take(key);
    assert!(!h.hub.shutdown_complete());
    h.hub.begin_shutdown();
    h.end_turn();
    assert_eq!(h.take(key), "0\r\n\r\n");
    assert!(h.closed.contains(&key));
    assert!(h.hub.shutdown_complete());
    let late = h.subscribe("/a", &[]);
    assert_eq!(status_and_body(&h.take(late)).0, 503);
}

#[test]
fn a_closed_subscriber_leaves_the_index() {
    let mut h = Harness::new("");
    let key = h.subscribe("/a", &[]);
    h.take(key);
    h.hub.peer_closed(key);
    h.end_turn();
    assert!(h.closed.contains(&key));
    assert_eq!(h.hub.subscribers(), 0);
    // Its key is reused by the next connection, which gets nothing of /a.
    let next = h.connect("127.0.0.1");
    assert_eq!(next, key);
    h.publish("/a", "{}");
    assert!(h.take(next).is_empty());
}

#[test]
fn large_requests_past_the_input_budget_get_503_small_ones_go_through() {
    let mut h = Harness::new("server: {max_input_bytes: 200000}");
    let partial = |h: &mut Harness| {
        let key = h.connect("127.0.0.1");
        let mut request = b"PUT /big HTTP/1.1\r\nContent-Length: 100000\r\n\r\n".to_vec();
        request.extend_from_slice(&[b'x'; 60_000]);
        h.send(key, &request);
        (key, h.take(key))
    };
    // Three stalled uploads of about 64 KB each fit in 200 000 bytes.
    for _ in 0..3 {
        let (key, out) = partial(&mut h);
        assert!(out.is_empty(), "{out}");
        assert!(!h.closed.contains(&key));
    }
    assert!(
        h.hub.conns.input_bytes() <= 200_000,
        "{}",
        h.hub.conns.input_bytes()
    );
    // The fourth would pass the budget: answered 503 and closed.
    let (key, out) = partial(&mut h);
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.contains("Retry-After: 1\r\n"), "{out}");
    assert!(h.closed.contains(&key));
    // A small publish still gets its 202 at once.
    assert_eq!(status_and_body(&h.publish("/small", "{}")), (202, ACCEPTED));
    // When a stalled upload goes, its bytes leave the count.
    let before = h.hub.conns.input_bytes();
    h.hub.peer_closed(0);
    h.end_turn();
    assert!(
        h.hub.conns.input_bytes() < before - 60_000,
        "{} vs {before}",
        h.hub.conns.input_bytes()
    );
}

/// The `(id, data)` of each SSE event in a chunked SSE stream, and the
/// comments (pings) and `retry:` fields seen.
fn sse_fields(output: &str) -> (Vec<(String, Value)>, Vec<String>, Vec<String>) {
    let mut rest = output.split_once("\r\n\r\n").map_or(output, |(_, r)| r);
    let mut text = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size, 16).expect("chunk size");
        if size == 0 {
            break;
        }
        text.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    let (mut events, mut comments, mut retries) = (Vec::new(), Vec::new(), Vec::new());
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        let mut id = None;
        let mut data = None;
        for line in block.lines() {
            if let Some(c) = line.strip_prefix(": ") {
                comments.push(c.to_owned());
            } else if let Some(v) = line.strip_prefix("retry: ") {
                retries.push(v.to_owned());
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str(v).expect("JSON data"));
            } else {
                panic!("unexpected SSE line {line:?}");
            }
        }
        if let (Some(id), Some(data)) = (id, data) {
            events.push((id, data));
        }
    }
    (events, comments, retries)
}

const SSE: (&str, &str) = ("Accept", "text/event-stream");

#[test]
fn sse_subscribers_get_ids_data_and_comment_pings() {
    let mut h = Harness::new("server: {ping_interval: 5s}");
    let key = h.subscribe("/a", &[SSE]);
    let plain = h.subscribe("/a", &[]);
    let head = h.take(key);
    assert_eq!(header(&head, "Content-Type"), Some("text/event-stream"));
    let plain_head = h.take(plain);
    assert_eq!(
        header(&plain_head, "Content-Type"),
        Some("application/vnd.pypubsub-stream")
    );
    h.publish("/a/b", r#"{"n": 1}"#);
    h.advance(Duration::from_secs(5));
    let out = head + &h.take(key);
    let (events, comments, retries) = sse_fields(&out);
    assert_eq!(retries, ["3000"]);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1["n"], 1);
    assert_eq!(events[0].0, events[0].1["pubsub_cursor"].as_str().unwrap());
    assert_eq!(comments, ["stillalive 1800000005.0"]);
    // The plain subscriber's stream is unchanged: JSON lines.
    let lines = stream_lines(&h.take(plain));
    assert_eq!(lines[0]["n"], 1);
    assert_eq!(lines[1]["stillalive"], START + 5.0);
}

#[test]
fn last_event_id_resumes_like_a_cursor() {
    let mut h = Harness::new("server: {backlog: {size: 10}}");
    let watcher = h.subscribe("/a", &[SSE]);
    for n in 1..=3 {
        h.publish("/a", &format!(r#"{{"n": {n}}}"#));
    }
    let (seen, _, _) = sse_fields(&h.take(watcher));
    let first = seen[0].0.clone();
    let second = seen[1].0.clone();

    // EventSource reconnecting: the header wins over the URL's first cursor.
    let key = h.subscribe(
        &format!("/a?lastEventID={first}"),
        &[SSE, ("Last-Event-ID", &second)],
    );
    h.publish("/a", r#"{"n": 4}"#);
    let out = h.take(key);
    assert_eq!(header(&out, "X-Fetch-Since-Cursor-Status"), Some("found"));
    let ns: Vec<i64> = sse_fields(&out)
        .0
        .iter()
        .map(|(_, e)| e["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [3, 4]);

    // A first connection can only use the URL.
    let key = h.subscribe(&format!("/a?x=1&lastEventID={first}"), &[SSE]);
    let ns: Vec<i64> = sse_fields(&h.take(key))
        .0
        .iter()
        .map(|(_, e)| e["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [2, 3, 4]);

    // Plain subscribers may use Last-Event-ID too.
    let key = h.subscribe("/a", &[("Last-Event-ID", &second)]);
    let ns: Vec<i64> = events(&h.take(key))
        .iter()
        .map(|e| e["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [3, 4]);
}

/// Basic-auth encoding for requests built by these tests.
mod base64_for_tests {
    use base64::Engine;

    pub fn encode(input: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(input)
    }
}

// ---------------------------------------------------------------------------
// tokens (`clients.tokens`; skipped in a build without them)

const TOKEN_SECRET: &str = "0123456789abcdef0123456789abcdef";

fn token_config(extra: &str) -> String {
    format!(
        "clients: {{secure_topics: [deploy], tokens: {{secret: {TOKEN_SECRET}, \
         cookie: pubsub_token, query: access_token{extra}}}}}"
    )
}

fn token(claims: Value) -> String {
    crate::tokens::hs256_for_tests(TOKEN_SECRET, &claims)
}

fn grant_token(exp: f64) -> String {
    token(serde_json::json!({"sub": "page", "exp": exp,
        "pubsub": {"acl": {"s": ["git"]}, "topics": ["deploy"]}}))
}

fn numbers(h: &mut Harness, key: usize) -> Vec<i64> {
    events(&h.take(key))
        .iter()
        .map(|e| e["n"].as_i64().unwrap_or(-1))
        .collect()
}

#[test]
fn a_token_in_each_carrier_grants_its_private_events() {
    if !crate::tokens::ENABLED {
        return;
    }
    let acl = "alice: {password: pw, acl: {repos: [git]}}\n";
    let mut h = Harness::with_acl(&token_config(""), acl);
    let good = grant_token(START + 600.0);
    let bearer = format!("Bearer {good}");
    let cookie = format!("theme=dark; pubsub_token={good}");
    let by_header = h.subscribe("/git", &[("Authorization", &bearer)]);
    let by_cookie = h.subscribe("/git", &[("Cookie", &cookie)]);
    let by_query = h.subscribe(&format!("/git?access_token={good}"), &[]);
    let alice = token(serde_json::json!({"sub": "alice", "exp": START + 600.0}));
    let as_alice = h.subscribe("/git", &[("Authorization", &format!("Bearer {alice}"))]);
    let nobody = token(serde_json::json!({"sub": "mallory", "exp": START + 600.0}));
    let unknown = h.subscribe("/git", &[("Authorization", &format!("Bearer {nobody}"))]);
    let anon = h.subscribe("/git", &[]);
    let all = [by_header, by_cookie, by_query, as_alice, unknown, anon];
    for key in all {
        assert!(h.take(key).starts_with("HTTP/1.1 200"));
    }
    assert_eq!(h.hub.subscribers(), all.len());
    h.publish("/private/git/commit", r#"{"n": 1}"#);
    h.publish("/git/commit", r#"{"n": 2}"#);
    for key in [by_header, by_cookie, by_query, as_alice] {
        assert_eq!(numbers(&mut h, key), [1, 2], "connection {key}");
    }
    assert_eq!(
        numbers(&mut h, unknown),
        [2],
        "a sub not in the ACL: no grant"
    );
    assert_eq!(numbers(&mut h, anon), [2]);
}

#[test]
fn a_bad_token_is_a_401_and_never_a_stream() {
    if !crate::tokens::ENABLED {
        return;
    }
    let mut h = Harness::new(&token_config(""));
    let expired = grant_token(START - 31.0);
    let forged = crate::tokens::hs256_for_tests(
        "another secret of at least 32 bytes!",
        &serde_json::json!({"exp": START + 600.0}),
    );
    for (bad, why) in [(expired, "expired"), (forged, "bad signature")] {
        for headers in [
            vec![("Authorization".to_owned(), format!("Bearer {bad}"))],
            vec![("Cookie".to_owned(), format!("pubsub_token={bad}"))],
        ] {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let key = h.subscribe("/git", &headers);
            let out = h.take(key);
            assert_eq!(
                status_and_body(&out),
                (401, format!("Invalid token: {why}.\n").as_str())
            );
            assert_eq!(
                header(&out, "WWW-Authenticate"),
                Some(r#"Bearer error="invalid_token""#)
            );
            assert!(!out.contains(TOKEN_SECRET) && !h.closed.contains(&key));
        }
    }
    assert_eq!(h.hub.subscribers(), 0);
    // Basic credentials beside a stale cookie: the header wins.
    let basic = format!("Basic {}", base64_for_tests::encode(b"a:b"));
    let stale = format!("pubsub_token={}", grant_token(START - 3600.0));
    let key = h.subscribe("/git", &[("Authorization", &basic), ("Cookie", &stale)]);
    assert!(h.take(key).starts_with("HTTP/1.1 200"));
}

#[test]
fn a_token_publishes_to_secured_topics_and_a_bad_one_is_a_401() {
    if !crate::tokens::ENABLED {
        return;
    }
    let mut h = Harness::new(&token_config(""));
    let put = |h: &mut Harness, ip: &str, auth: &str| {
        let key = h.connect(ip);
        let request = format!(
            "PUT /deploy/x HTTP/1.1\r\nAuthorization: {auth}\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        h.send(key, request.as_bytes());
        let out = h.take(key);
        (status_and_body(&out).0, h.closed.contains(&key), out)
    };
    let good = format!("Bearer {}", grant_token(START + 60.0));
    assert_eq!(
        put(&mut h, "192.0.2.7", &good).0,
        202,
        "its topics, from anywhere"
    );
    let bare = format!("Bearer {}", token(serde_json::json!({"exp": START + 60.0})));
    assert_eq!(put(&mut h, "127.0.0.1", &bare).0, 403);
    let stale = format!("Bearer {}", grant_token(START - 60.0));
    let (code, closed, out) = put(&mut h, "127.0.0.1", &stale);
    assert_eq!((code, closed), (401, true), "the unread body closes it");
    assert!(header(&out, "WWW-Authenticate").is_some());
    // A cookie does not publish: any site's page could send it.
    let key = h.connect("192.0.2.7");
    let cookie = format!("pubsub_token={}", grant_token(START + 60.0));
    let request =
        format!("PUT /deploy/x HTTP/1.1\r\nCookie: {cookie}\r\nContent-Length: 2\r\n\r\n{{}}");
    h.send(key, request.as_bytes());
    assert_eq!(status_and_body(&h.take(key)).0, 403);
}

#[test]
fn a_stream_ends_with_a_last_ping_when_its_token_expires() {
    if !crate::tokens::ENABLED {
        return;
    }
    // The default leeway (30 s) does not stretch the stream: it ends at
    // `exp`, and the same token within the leeway gets a 401.
    let mut h = Harness::new(&token_config(""));
    let exp = START + 20.0;
    let key = h.subscribe(
        "/git",
        &[("Cookie", &format!("pubsub_token={}", grant_token(exp)))],
    );
    let plain = h.subscribe("/git", &[]);
    h.take(key);
    h.take(plain);
    h.advance(Duration::from_secs(19));
    assert!(!h.closed.contains(&key), "open before exp");
    h.take(key);
    h.take(plain);
    h.advance(Duration::from_secs(1));
    let out = h.take(key);
    let lines = stream_lines(&out);
    assert_eq!(lines.len(), 1, "{out:?}");
    assert_eq!(lines[0]["stillalive"], exp);
    assert!(out.ends_with("0\r\n\r\n"), "{out:?}");
    assert!(h.closed.contains(&key));
    assert_eq!(h.hub.subscribers(), 1, "the stream without a token goes on");
    // Reconnecting with the same token is refused from then on, though a
    // publish would still be taken within the leeway.
    let again = h.subscribe(
        "/git",
        &[("Cookie", &format!("pubsub_token={}", grant_token(exp)))],
    );
    assert_eq!(status_and_body(&h.take(again)).0, 401);
}

#[test]
fn a_cookie_counts_only_without_an_origin_or_from_a_listed_one() {
    if !crate::tokens::ENABLED {
        return;
    }
    let config = token_config("").replace(
        "clients: {",
        "clients: {cors_origins: [\"*\", \"https://app.example\"], ",
    );
    let mut h = Harness::new(&config);
    let cookie = format!("pubsub_token={}", grant_token(START + 600.0));
    let from = |h: &mut Harness, origin: Option<&str>| {
        let mut headers = vec![("Cookie", cookie.as_str())];
        if let Some(origin) = origin {
            headers.push(("Origin", origin));
        }
        let key = h.subscribe("/git", &headers);
        assert!(h.take(key).starts_with("HTTP/1.1 200"));
        key
    };
    let same_site = from(&mut h, None);
    let listed = from(&mut h, Some("https://app.example"));
    // Any other site's page (a WebSocket handshake is answered whatever
    // its origin): the cookie is not looked at, "*" notwithstanding.
    let other = from(&mut h, Some("https://evil.example"));
    h.publish("/private/git/commit", r#"{"n": 1}"#);
    h.publish("/git/commit", r#"{"n": 2}"#);
    assert_eq!(numbers(&mut h, same_site), [1, 2]);
    assert_eq!(numbers(&mut h, listed), [1, 2]);
    assert_eq!(numbers(&mut h, other), [2]);
    // The header is the page's own doing: it counts from any origin.
    let bearer = format!("Bearer {}", grant_token(START + 600.0));
    let key = h.subscribe(
        "/git",
        &[
            ("Authorization", &bearer),
            ("Origin", "https://evil.example"),
        ],
    );
    h.take(key);
    h.publish("/private/git/commit", r#"{"n": 3}"#);
    assert_eq!(numbers(&mut h, key), [3]);
}
