//! Several nodes sharing one Redis stream (`cluster:`), black-box: real
//! `pubsubd` processes and a real `redis-server` (AOF, `appendfsync
//! always`) on loopback ports of their own.
//!
//! What is checked: every node delivers the same events in the same order
//! with the same cursors and timestamps wherever each was published; a
//! subscriber moves to another node with its cursor and misses nothing; a
//! node started late replays history from the stream; Redis killed, slow,
//! stopped, partitioned (a network namespace, when root) or disconnecting
//! gives publishers 503 + `Retry-After` within the timeout while streams
//! stay open, and afterwards nothing is lost or doubled; a stream that came
//! back empty is detected; Sentinel failover; AUTH and `rediss://`.
//!
//! Each test skips (with a message) when `redis-server` is not installed.

#![cfg(feature = "cluster")]

mod common;
#[path = "common/redis.rs"]
mod redis;

use std::time::{Duration, Instant};

use common::*;
use redis::Redis;
use serde_json::{json, Value};

const STATUS: &str = "X-Fetch-Since-Cursor-Status";

fn have_redis() -> bool {
    if redis::available() {
        return true;
    }
    eprintln!("skipped: redis-server / redis-cli not installed");
    false
}

/// A Redis of its own in a temporary directory (the directory is dropped
/// after the server), or `None` when redis-server is not installed.
fn fresh_redis() -> Option<(TempDir, Redis)> {
    if !have_redis() {
        return None;
    }
    let dir = TempDir::new();
    let r = Redis::start(dir.path());
    Some((dir, r))
}

/// A node of the cluster on `redis_url` (stream `test`, 1 s timeout,
/// pings every second, a backlog of 1000, an admin listener).
fn node_yaml(redis_url: &str, extra: &str) -> String {
    format!(
        "server:\n  bind: 127.0.0.1\n  port: 0\n  ping_interval: 1s\n  backlog: {{size: 1000}}\n  admin: {{bind: 127.0.0.1, port: 0}}\n\
         clients:\n  payloaders: [127.0.0.1/32]\n\
         cluster:\n  redis: {redis_url}\n  stream: test\n  timeout: 1s\n{extra}"
    )
}

/// Starts a node and waits until it has loaded the stream.
fn node(redis_url: &str) -> Server {
    start_node(node_yaml(redis_url, ""))
}

fn start_node(yaml: String) -> Server {
    let s = Server::builder().raw_config(&yaml).start();
    assert!(
        s.wait_log("cluster: loaded", T),
        "node did not load the stream:\n{}",
        s.log()
    );
    assert!(
        wait_until(T, || s.replay_status() == 200),
        "node did not take replays:\n{}",
        s.log()
    );
    s
}

fn n_of(v: &Value) -> i64 {
    v["n"].as_i64().unwrap_or_else(|| panic!("no n in {v}"))
}

fn cursor(v: &Value) -> String {
    v["pubsub_cursor"].as_str().expect("cursor").to_string()
}

fn ns(events: &[Value]) -> Vec<i64> {
    events.iter().map(n_of).collect()
}

/// Entries in the stream.
fn xlen(r: &Redis) -> usize {
    r.cli(&["XLEN", "test"])
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn three_nodes_deliver_the_same_sequence() {
    let Some((_dir, r)) = fresh_redis() else {
        return;
    };
    let nodes: Vec<Server> = (0..3).map(|_| node(&r.url())).collect();
    let mut subs: Vec<Subscriber> = nodes.iter().map(|n| n.subscribe("/")).collect();
    for i in 0..30 {
        nodes[i % 3].publish_ok(&format!("/t/{i}"), &json!({"n": i}));
    }
    nodes[1].publish_ok("/", &sentinel());
    let seen: Vec<Vec<Value>> = subs
        .iter_mut()
        .map(|s| s.events_until_sentinel(T))
        .collect();
    assert_eq!(ns(&seen[0]), (0..30).collect::<Vec<_>>(), "publish order");
    for other in &seen[1..] {
        assert_eq!(other, &seen[0], "same events, cursors and timestamps");
    }
    for (i, v) in seen[0].iter().enumerate() {
        check_event_meta(v, &["t", &i.to_string()], &format!("/t/{i}"));
    }
    assert_eq!(xlen(&r), 31);
}

#[test]
fn a_subscriber_moves_to_another_node_with_its_cursor() {
    let Some((_dir, r)) = fresh_redis() else {
        return;
    };
    let mut a = node(&r.url());
    let b = node(&r.url());
    let mut sub = a.subscribe("/");
    for i in 0..10 {
        b.publish_ok("/x", &json!({"n": i}));
    }
    let got: Vec<Value> = (0..10).map(|_| sub.next_event(T)).collect();
    assert_eq!(ns(&got), (0..10).collect::<Vec<_>>());
    let last = cursor(&got[9]);
    a.signal("KILL");
    assert!(a.wait_exit(T).is_some());
    for i in 10..20 {
        b.publish_ok("/x", &json!({"n": i}));
    }
    let mut moved = b.subscribe_with("/", &[("X-Fetch-Since-Cursor", &last)]);
    assert_eq!(moved.head.header(STATUS), Some("found"));
    b.publish_ok("/", &sentinel());
    let rest = moved.events_until_sentinel(T);
    assert_eq!(
        ns(&rest),
        (10..20).collect::<Vec<_>>(),
        "exactly the missed events"
    );
}

#[test]
fn a_late_node_replays_history_from_the_stream() {
    let Some((_dir, r)) = fresh_redis() else {
        return;
    };
    let a = node(&r.url());
    let mut watch = a.subscribe("/");
    for i in 1..=100 {
        a.publish_ok("/h", &json!({"n": i}));
    }
    let history: Vec<Value> = (0..100).map(|_| watch.next_event(T)).collect();
    let late = node(&r.url());
    assert!(late.log().contains("loaded 100 events"), "{}", late.log());
    let mut sub = late.subscribe_with("/", &[("X-Fetch-Since-Cursor", &cursor(&history[49]))]);
    assert_eq!(sub.head.header(STATUS), Some("found"));
    a.publish_ok("/", &sentinel());
    let replayed = sub.events_until_sentinel(T);
    assert_eq!(
        replayed,
        history[50..].to_vec(),
        "events 51..100 byte for byte"
    );
    // By time as well.
    let since = history[0]["pubsub_timestamp"].as_f64().expect("timestamp") - 0.0001;
    let mut by_time = late.subscribe_with("/", &[("X-Fetch-Since", &since.to_string())]);
    let first = by_time.next_event(T);
    assert_eq!(n_of(&first), 1);
}

#[test]
fn replays_wait_for_the_backlog_plain_subscriptions_do_not() {
    let Some((_dir, r)) = fresh_redis() else {
        return;
    };
    let a = node(&r.url());
    a.publish_ok("/k", &json!({"n": 1}));
    // A node that starts while Redis does not answer cannot load the
    // stream: a replay now would read its cursor as unknown.
    r.signal("STOP");
    let late = Server::builder()
        .raw_config(&node_yaml(&r.url(), ""))
        .start();
    let mut c = Conn::connect(late.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Fetch-Since-Cursor: abc\r\n\r\n");
    let resp = c.read_response(false, T).expect("a response");
    assert_eq!(resp.status, 503, "{}", resp.body_str());
    assert_eq!(resp.header("Retry-After"), Some("1"));
    assert!(
        resp.body_str().contains("still loading"),
        "{}",
        resp.body_str()
    );
    assert_eq!(late.replay_status(), 503, "by time too");
    // An EventSource gives up on a 503: it is told to reconnect instead.
    let mut c = Conn::connect(late.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nLast-Event-ID: abc\r\n\r\n");
    let resp = c.read_response(false, T).expect("a response");
    assert_eq!(resp.status, 200, "{}", resp.body_str());
    assert_eq!(resp.header("Content-Type"), Some("text/event-stream"));
    assert!(
        resp.body_str().contains("retry: 1000\n"),
        "{}",
        resp.body_str()
    );
    assert_eq!(resp.header("Connection"), Some("close"));
    let mut live = late.subscribe("/");
    r.signal("CONT");
    assert!(
        wait_until(T, || late.replay_status() == 200),
        "{}",
        late.log()
    );
    a.publish_ok("/k", &json!({"n": 2}));
    assert_eq!(
        n_of(&live.next_event(T)),
        2,
        "the plain subscription was live"
    );
}

#[test]
fn a_publish_waiting_for_redis_at_shutdown_still_gets_its_answer() {
    let Some((_dir, r)) = fresh_redis() else {
        return;
    };
    let mut a = node(&r.url());
    a.publish_ok("/k", &json!({"n": 0}));
    // The publish is parked waiting for Redis when SIGTERM arrives; Redis
    // answers inside the node's timeout (1 s) and the grace period.
    r.signal("STOP");
    let addr = a.addr;
    let publisher = std::thread::spawn(move || {
        let mut c = Conn::connect(addr);
        c.publish("/k", r#"{"n": 1}"#)
    });
    std::thread::sleep(Duration::from_millis(200)); // the publish is parked
    a.signal("TERM");
    std::thread::sleep(Duration::from_millis(200)); // shutdown has begun
    r.signal("CONT");
    let resp = publisher.join().expect("publisher");
    assert!(
        [202, 503, 504].contains(&resp.status),
        "an answer, not a dropped connection: {}",
        resp.status
    );
    assert_eq!(resp.header("Connection"), Some("close"));
    if resp.status == 202 {
        assert_eq!(xlen(&r), 2, "a 202 means it is in the stream");
    }
    assert!(a.wait_exit(T).is_some(), "the node stops:\n{}", a.log());
}

#[test]
fn sentinel_with_auth_on_the_master_and_on_the_sentinels() {
    let Some((dir, _plain)) = fresh_redis() else {
        return;
    };
    // A password that needs encoding in a URL.
    const PW: &str = "p@ss:w/rd";
    let master_port = free_port();
    let _master = Redis::start_with(
        &dir.path().join("master"),
        master_port,
        &["--requirepass", PW],
    );
    let sentinels: Vec<redis::Sentinel> = (0..2)
        .map(|_| {
            redis::Sentinel::start_with(
                dir.path(),
                "authtest",
                master_port,
                &format!("sentinel auth-pass authtest {PW}\nrequirepass s3ntinel\n"),
                Some("s3ntinel"),
            )
        })
        .collect();
    let nodes = sentinels
        .iter()
        .map(|s| format!("\"127.0.0.1:{}\"", s.port))
        .collect::<Vec<_>>()
        .join(", ");
    let yaml = |password: &str| {
        format!(
            "server:\n  bind: 127.0.0.1\n  port: 0\n  backlog: {{size: 1000}}\n\
             clients:\n  payloaders: [127.0.0.1/32]\n\
             cluster:\n  stream: test\n  timeout: 1s\n  sentinel: {{master: authtest, nodes: [{nodes}], \
             password: '{password}', sentinel_password: s3ntinel}}\n"
        )
    };
    let a = start_node(yaml(PW));
    let mut sub = a.subscribe("/");
    a.publish_ok("/k", &json!({"n": 1}));
    assert_eq!(n_of(&sub.next_event(T)), 1);
    assert!(
        !a.log().contains(PW),
        "the password is never logged:\n{}",
        a.log()
    );
    // The wrong password: the node never gets a link, and says why.
    let wrong = Server::builder().raw_config(&yaml("wrong")).start();
    assert!(
        wrong.wait_log("lost Redis", T),
        "a failed AUTH is logged:\n{}",
        wrong.log()
    );
    assert_eq!(wrong.publish_json("/k", &json!({"n": 2})).status, 503);
}

/// A publish on a fresh connection; the response and how long it took.
fn timed_publish(s: &Server, v: &Value) -> (Response, Duration) {
    let start = Instant::now();
    let r = s.publish_json("/k", v);
    (r, start.elapsed())
}

/// Publishes `v` with `key` until the answer is 202 (bounded): what a
/// publisher does after a 503 or a 504.
fn retry_until_202(s: &Server, v: &Value, key: &str) {
    let deadline = Instant::now() + T;
    loop {
        let r = s.publish_keyed("/k", v, key);
        if r.status == 202 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no 202 for {key}: {}",
            r.body_str()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Publishes `v` until 202 (bounded); how many 503s came first.
fn publish_through_503s(s: &Server, v: &Value) -> usize {
    let deadline = Instant::now() + T;
    let mut refused = 0;
    loop {
        let r = s.publish_json("/k", v);
        match r.status {
            202 => return refused,
            503 => refused += 1,
            other => panic!("{other}: {}", r.body_str()),
        }
        assert!(Instant::now() < deadline, "still 503: {}", r.body_str());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_publish_refused_after_kill9_never_shows_and_its_retry_shows_once() {
    let Some((_dir, mut r)) = fresh_redis() else {
        return;
    };
    let a = node(&r.url());
    let b = node(&r.url());
    let mut sub_b = b.subscribe("/");
    a.publish_ok("/k", &json!({"n": 0}));
    assert_eq!(n_of(&sub_b.next_event(T)), 0);
    // At once, before any idle check: the pending EOF on A's connection
    // is seen before the append is written, so it is not sent at all.
    r.kill9();
    let (resp, took) = timed_publish(&a, &json!({"n": 1}));
    assert_eq!(resp.status, 503, "{}", resp.body_str());
    assert_eq!(resp.header("Retry-After"), Some("1"));
    assert!(took < Duration::from_millis(2500), "503 after {took:?}");
    r.restart();
    // The publisher tries again, as any client would after a 503.
    publish_through_503s(&a, &json!({"n": 2}));
    a.publish_ok("/", &sentinel());
    assert_eq!(
        ns(&sub_b.events_until_sentinel(T)),
        vec![2],
        "the refused event never shows; its retry shows once"
    );
    let m = a.admin_get("/metrics").body_str();
    assert!(
        m.contains(r#"pubsubd_cluster_appends_total{outcome="refused"}"#),
        "{m}"
    );
}

#[test]
fn a_write_redis_refuses_is_503_and_never_shows() {
    let Some((_dir, r)) = fresh_redis() else {
        return;
    };
    let a = node(&r.url());
    let mut sub = a.subscribe("/");
    // No replica, so Redis answers every write with -NOREPLICAS.
    assert!(r
        .cli(&["CONFIG", "SET", "min-replicas-to-write", "1"])
        .is_some_and(|o| o.contains("OK")));
    let resp = a.publish_json("/k", &json!({"n": 1}));
    assert_eq!(resp.status, 503, "{}", resp.body_str());
    assert_eq!(resp.header("Retry-After"), Some("1"));
    assert!(a.wait_log("Redis refused an append", T), "{}", a.log());
    assert!(r
        .cli(&["CONFIG", "SET", "min-replicas-to-write", "0"])
        .is_some_and(|o| o.contains("OK")));
    a.publish_ok("/k", &json!({"n": 2}));
    a.publish_ok("/", &sentinel());
    assert_eq!(ns(&sub.events_until_sentinel(T)), vec![2]);
}

#[test]
fn kill9_with_32_publishers_in_flight_every_answer_holds() {
    let Some((_dir, mut r)) = fresh_redis() else {
        return;
    };
    let a = node(&r.url());
    let b = node(&r.url());
    let mut sub_a = a.subscribe("/");
    let mut sub_b = b.subscribe("/");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let outcomes: Vec<(i64, u16)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (1..=32i64)
            .map(|t| {
                let node = if t % 2 == 0 { &a } else { &b };
                let stop = &stop;
                scope.spawn(move || {
                    let mut out = Vec::new();
                    for k in 0..400 {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        let n = t * 1000 + k;
                        let resp = node.publish_json("/k", &json!({ "n": n }));
                        out.push((n, resp.status));
                    }
                    out
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(400));
        r.kill9();
        // Down for longer than the timeout: some publishers are refused.
        std::thread::sleep(Duration::from_millis(1300));
        r.restart();
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("publisher"))
            .collect()
    });
    let count = |status: u16| outcomes.iter().filter(|(_, s)| *s == status).count();
    assert_eq!(
        count(202) + count(503) + count(504),
        outcomes.len(),
        "only 202, 503, 504: {outcomes:?}"
    );
    assert!(
        count(202) > 0 && count(503) + count(504) > 0,
        "{outcomes:?}"
    );
    eprintln!(
        "202: {}, 503: {}, 504: {}",
        count(202),
        count(503),
        count(504)
    );
    publish_through_503s(&b, &sentinel());
    for sub in [&mut sub_a, &mut sub_b] {
        let got = sub.events_until_sentinel(T);
        let mut times = std::collections::HashMap::new();
        for v in &got {
            *times.entry(n_of(v)).or_insert(0) += 1;
        }
        for (n, status) in &outcomes {
            let seen = times.get(n).copied().unwrap_or(0);
            match status {
                202 => assert_eq!(seen, 1, "acknowledged {n} shows once"),
                503 => assert_eq!(seen, 0, "refused {n} never shows"),
                _ => assert!(seen <= 1, "unknown {n} shows at most once"),
            }
        }
    }
}

#[test]
fn the_same_key_on_two_nodes_at_once_makes_one_event() {
    let Some((_dir, r)) = fresh_redis() else {
        return;
    };
    let a = node(&r.url());
    let b = node(&r.url());
    let mut sub_a = a.subscribe("/");
    let mut sub_b = b.subscribe("/");
    for round in 0..10i64 {
        let key = format!("dup-{round}");
        let barrier = std::sync::Barrier::new(2);
        std::thread::scope(|scope| {
            for (via, node) in [("a", &a), ("b", &b)] {
                let (barrier, key) = (&barrier, &key);
                scope.spawn(move || {
                    barrier.wait();
                    let r = node.publish_keyed("/k", &json!({"n": round, "via": via}), key);
                    assert_eq!(r.status, 202, "{}", r.body_str());
                });
            }
        });
    }
    // A retry once the first copy is in the window: 202, no new event.
    let r = a.publish_keyed("/k", &json!({"n": 0}), "dup-0");
    assert_eq!(r.status, 202);
    a.publish_ok("/", &sentinel());
    let seen_a = sub_a.events_until_sentinel(T);
    let seen_b = sub_b.events_until_sentinel(T);
    assert_eq!(ns(&seen_a), (0..10).collect::<Vec<_>>(), "{seen_a:?}");
    assert_eq!(seen_a, seen_b, "both nodes deliver the same copy");
    // At least the retry; a copy that reached A after B's was already in
    // A's window is answered from it too.
    let m = a.admin_get("/metrics").body_str();
    let deduplicated = m
        .lines()
        .find_map(|l| l.strip_prefix(r#"pubsubd_cluster_appends_total{outcome="deduplicated"} "#))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(deduplicated.is_some_and(|n| n >= 1), "{m}");
}

#[test]
fn two_nodes_on_one_port_with_reuse_port_deliver_every_event_on_both() {
    let Some((_dir, r)) = fresh_redis() else {
        return;
    };
    let on_port = |port: u16| {
        node_yaml(&r.url(), "").replace(
            "port: 0\n  ping",
            &format!("port: {port}\n  reuse_port: true\n  ping"),
        )
    };
    let a = start_node(on_port(0));
    let b = start_node(on_port(a.port()));
    assert_eq!(a.port(), b.port());
    // Each node's own count, from its own admin listener (never shared).
    let live = |s: &Server| {
        let m = s.admin_get("/metrics").body_str();
        m.lines()
            .find_map(|l| l.strip_prefix("pubsubd_subscribers "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Subscribers on the shared port land on either node (the kernel
    // spreads connections); open them until both nodes have some.
    let mut subs = Vec::new();
    while subs.len() < 64 && (live(&a) == 0 || live(&b) == 0) {
        for _ in 0..4 {
            subs.push(a.subscribe("/"));
        }
    }
    let (on_a, on_b) = (live(&a), live(&b));
    assert!(on_a > 0 && on_b > 0, "{on_a} and {on_b} subscribers");
    assert_eq!(on_a + on_b, subs.len() as u64);
    // Publishes on the shared port land on either node too.
    for n in 0..20 {
        a.publish_ok("/k", &json!({ "n": n }));
    }
    a.publish_ok("/", &sentinel());
    for sub in &mut subs {
        assert_eq!(
            ns(&sub.events_until_sentinel(T)),
            (0..20).collect::<Vec<_>>()
        );
    }
}

#[test]
fn redis_killed_publishes_503_streams_stay_then_resume_and_reset_is_seen() {
    let Some((_dir, mut r)) = fresh_redis() else {
        return;
    };
    let a = node(&r.url());
    let b = node(&r.url());
    let mut sub_a = a.subscribe("/");
    let mut sub_b = b.subscribe("/");
    for i in 0..5 {
        a.publish_ok("/k", &json!({"n": i}));
    }
    for sub in [&mut sub_a, &mut sub_b] {
        let got: Vec<Value> = (0..5).map(|_| sub.next_event(T)).collect();
        assert_eq!(ns(&got), (0..5).collect::<Vec<_>>());
    }
    r.kill9();
    // Once a node knows Redis is gone, a publish is never sent: 503, and
    // never delivered.
    for s in [&a, &b] {
        assert!(s.wait_log("writer lost Redis", T), "{}", s.log());
    }
    let (resp, took) = timed_publish(&b, &json!({"n": -1}));
    assert_eq!(resp.status, 503, "{}", resp.body_str());
    assert_eq!(resp.header("Retry-After"), Some("1"));
    assert!(took < Duration::from_millis(2500), "503 after {took:?}");
    // The streams stay open and keep getting pings.
    for sub in [&mut sub_a, &mut sub_b] {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut pinged = false;
        while !pinged && Instant::now() < deadline {
            let chunk = sub.next_chunk(Duration::from_secs(3)).expect("stream open");
            let v = parse_line(&chunk.expect("stream not ended"));
            pinged = is_ping(&v);
        }
        assert!(pinged, "a ping while Redis is down");
    }
    r.restart();
    assert!(
        wait_until(T, || a.publish_json("/k", &json!({"n": 5})).status == 202),
        "publishing resumes"
    );
    for i in 6..10 {
        b.publish_ok("/k", &json!({"n": i}));
    }
    b.publish_ok("/", &sentinel());
    for sub in [&mut sub_a, &mut sub_b] {
        let got = sub.events_until_sentinel(T);
        assert_eq!(
            ns(&got),
            (5..10).collect::<Vec<_>>(),
            "nothing lost or doubled"
        );
    }
    assert_eq!(xlen(&r), 11, "the acknowledged events survived kill -9");
    // Redis comes back empty: both nodes notice, and go on.
    r.restart_empty();
    assert!(wait_until(T, || a
        .publish_json("/k", &json!({"n": 10}))
        .status
        == 202));
    for s in [&a, &b] {
        assert!(s.wait_log("Redis was reset", T), "{}", s.log());
    }
    b.publish_ok("/", &sentinel());
    for sub in [&mut sub_a, &mut sub_b] {
        assert_eq!(ns(&sub.events_until_sentinel(T)), vec![10]);
    }
}

#[test]
fn a_stopped_node_holds_publishes_back_and_misses_nothing() {
    let Some((_dir, r)) = fresh_redis() else {
        return;
    };
    // The overload, made certain: B stops reading (SIGSTOP, shorter than
    // node_timeout) while A takes publishes flat out; the stream keeps
    // ~200 entries. A must not acknowledge what the trim would take from B.
    let a = start_node(node_yaml(&r.url(), "  max_len: 200\n"));
    let mut b = start_node(node_yaml(&r.url(), "  max_len: 200\n"));
    let mut sub_b = b.subscribe("/");
    a.publish_ok("/k", &json!({"n": 0}));
    assert_eq!(n_of(&sub_b.next_event(T)), 0);
    b.signal("STOP");
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for n in 1..=400 {
        let resp = a.publish_json("/k", &json!({ "n": n }));
        match resp.status {
            202 => acknowledged.push(n),
            503 => {
                assert!(resp.body_str().contains("behind"), "{}", resp.body_str());
                assert_eq!(resp.header("Retry-After"), Some("1"));
                refused += 1;
            }
            other => panic!("{other}: {}", resp.body_str()),
        }
    }
    let m = a.admin_get("/metrics").body_str();
    b.signal("CONT");
    assert!(refused > 0, "back-pressure reached the publisher");
    assert!(
        acknowledged.len() > 100,
        "publishes went through until the margin: {}",
        acknowledged.len()
    );
    assert!(m.contains("pubsubd_cluster_held_back_total "), "{m}");
    assert!(m.contains("pubsubd_cluster_slowest_lag_entries "), "{m}");
    assert!(m.contains("pubsubd_cluster_node_lag_entries{"), "{m}");
    // B catches up; A takes publishes again.
    publish_through_503s(&a, &sentinel());
    let got = ns(&sub_b.events_until_sentinel(T));
    assert_eq!(got, acknowledged, "every acknowledged event, in order");
    assert!(!b.log().contains("trimmed past"), "{}", b.log());
}

#[test]
fn a_node_that_stops_cleanly_leaves_the_progress_hash_at_once() {
    let Some((_dir, r)) = fresh_redis() else {
        return;
    };
    let a = node(&r.url());
    let mut b = node(&r.url());
    let fields = || {
        r.cli(&["HKEYS", "test:nodes"]).map_or(0, |out| {
            out.lines().filter(|l| !l.trim().is_empty()).count()
        })
    };
    assert!(wait_until(T, || fields() == 2), "both nodes report");
    b.signal("TERM");
    assert!(b.wait_exit(T).is_some(), "{}", b.log());
    assert_eq!(fields(), 1, "gone at once, not after node_timeout");
    assert!(
        b.log().contains("left the stream's progress hash"),
        "{}",
        b.log()
    );
    a.publish_ok("/k", &json!({"n": 1}));
}

#[test]
fn a_node_stopped_past_node_timeout_stops_holding_back_then_sees_its_gap() {
    let Some((_dir, r)) = fresh_redis() else {
        return;
    };
    let extra = "  max_len: 100\n  node_timeout: 1s\n";
    let a = start_node(node_yaml(&r.url(), extra));
    let mut b = start_node(node_yaml(&r.url(), extra));
    let mut sub_b = b.subscribe("/");
    a.publish_ok("/k", &json!({"n": 0}));
    assert_eq!(n_of(&sub_b.next_event(T)), 0);
    // B stops with its connection to Redis open (its reader blocked in
    // XREAD). A is held back until B's progress is a second old, then
    // publishes on; the stream keeps only ~100 of the 600.
    b.signal("STOP");
    let started = Instant::now();
    let mut refused = 0;
    for i in 1..=600 {
        refused += publish_through_503s(&a, &json!({ "n": i }));
    }
    assert!(refused > 0, "held back while B was live");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "held back until node_timeout: {:?}",
        started.elapsed()
    );
    b.signal("CONT");
    a.publish_ok("/", &sentinel());
    let got = ns(&sub_b.events_until_sentinel(T));
    assert!(
        b.wait_log("trimmed past", T),
        "the gap is logged:\n{}",
        b.log()
    );
    assert_eq!(
        b.log().matches("trimmed past").count(),
        1,
        "reported once:\n{}",
        b.log()
    );
    assert!(got.len() < 600, "the trimmed events cannot arrive: {got:?}");
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, none twice: {got:?}"
    );
    assert_eq!(got.last(), Some(&600), "what is there is served: {got:?}");
    assert!(
        !a.log().contains("trimmed past"),
        "a node that kept up saw no gap:\n{}",
        a.log()
    );
}

#[test]
fn reload_signals_do_not_interrupt_the_redis_threads() {
    let Some((_dir, r)) = fresh_redis() else {
        return;
    };
    let a = node(&r.url());
    let mut sub = a.subscribe("/");
    // A burst of SIGHUP and SIGUSR2 (systemctl reload, ACL pushes) while
    // the reader blocks in XREAD and the writer appends: a signal taken by
    // either would fail its socket read with EINTR and drop the link.
    let pid = a.pid().to_string();
    for i in 0..10 {
        // bash's own `kill`, alternating, faster than the loop takes them
        // (a signal already pending is not queued twice; a second kind
        // arriving then goes to another thread that does not block it).
        let status = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "for _ in $(seq 100); do kill -HUP {pid}; kill -USR2 {pid}; done"
            ))
            .status()
            .expect("bash");
        assert!(status.success());
        a.publish_ok("/k", &json!({"n": i}));
    }
    a.publish_ok("/", &sentinel());
    assert_eq!(
        ns(&sub.events_until_sentinel(T)),
        (0..10).collect::<Vec<_>>()
    );
    assert!(
        !a.log().contains("lost Redis"),
        "a signal interrupted a Redis thread:\n{}",
        a.log()
    );
}

/// How many events with `n` a subscriber got before the next sentinel.
fn count_n(events: &[Value], n: i64) -> usize {
    events.iter().filter(|v| n_of(v) == n).count()
}

#[test]
fn slow_redis_gives_504_at_most_once_a_keyed_retry_once_client_kill_loses_nothing() {
    let Some((_dir, r)) = fresh_redis() else {
        return;
    };
    let a = node(&r.url());
    let b = node(&r.url());
    let mut sub_a = a.subscribe("/");
    let mut sub_b = b.subscribe("/");
    a.publish_ok("/k", &json!({"n": 0}));
    // Redis sleeps longer than the timeout while three publishers keep
    // going, each event with its own key: an append already written has
    // an unknown outcome (504), one not yet written is never written (503).
    let port = r.port;
    let sleeper = std::thread::spawn(move || redis::cli(port, &["DEBUG", "SLEEP", "2.5"]));
    let outcomes: Vec<(i64, u16, Duration)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (1..=3i64)
            .map(|t| {
                let a = &a;
                let sleeper = &sleeper;
                scope.spawn(move || {
                    let mut out = Vec::new();
                    for k in 0..100 {
                        if sleeper.is_finished() {
                            break;
                        }
                        let n = t * 1000 + k;
                        let start = Instant::now();
                        let resp = a.publish_keyed("/k", &json!({ "n": n }), &format!("s-{n}"));
                        out.push((n, resp.status, start.elapsed()));
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("publisher"))
            .collect()
    });
    let _ = sleeper.join();
    let refused: Vec<_> = outcomes.iter().filter(|(_, s, _)| *s != 202).collect();
    assert!(
        refused.iter().any(|(_, s, _)| *s == 504),
        "an append met the sleep: {outcomes:?}"
    );
    for (n, status, took) in &refused {
        assert!(*status == 503 || *status == 504, "publish {n}: {status}");
        assert!(*took < Duration::from_millis(2500), "answer after {took:?}");
    }
    publish_through_503s(&b, &json!({"n": 2}));
    b.publish_ok("/", &sentinel());
    let mut first: Vec<Vec<Value>> = Vec::new();
    for sub in [&mut sub_a, &mut sub_b] {
        let got = sub.events_until_sentinel(T);
        for (n, status, _) in &outcomes {
            let seen = count_n(&got, *n);
            match status {
                202 => assert_eq!(seen, 1, "acknowledged {n} shows once: {got:?}"),
                503 => assert_eq!(seen, 0, "refused {n} never shows: {got:?}"),
                _ => assert!(seen <= 1, "unknown {n} shows at most once: {got:?}"),
            }
        }
        assert_eq!(count_n(&got, 0), 1);
        first.push(got);
    }
    // Every publisher that did not get a 202 retries with its key: each
    // event then shows exactly once in all.
    for (n, _, _) in &refused {
        retry_until_202(&a, &json!({ "n": n }), &format!("s-{n}"));
    }
    b.publish_ok("/", &sentinel());
    for (sub, before) in [&mut sub_a, &mut sub_b].into_iter().zip(&first) {
        let got = sub.events_until_sentinel(T);
        for (n, _, _) in &refused {
            assert_eq!(
                count_n(before, *n) + count_n(&got, *n),
                1,
                "{n} exactly once with its retry"
            );
        }
    }
    // Every client connection cut: both threads reconnect; nothing is
    // lost or doubled, and the cut is seen before a batch is written.
    assert!(r.cli(&["CLIENT", "KILL", "TYPE", "normal"]).is_some());
    for i in 10..20 {
        let resp = a.publish_json("/k", &json!({"n": i}));
        assert_eq!(resp.status, 202, "publish {i} after CLIENT KILL");
    }
    b.publish_ok("/", &sentinel());
    for sub in [&mut sub_a, &mut sub_b] {
        let got = sub.events_until_sentinel(T);
        let tail: Vec<i64> = ns(&got).into_iter().filter(|&n| n >= 10).collect();
        assert_eq!(tail, (10..20).collect::<Vec<_>>());
    }
}

/// Redis stopped (SIGSTOP) and resumed (SIGCONT): what a network partition
/// looks like from the node (connections open, nothing answers).
#[test]
fn a_partition_gives_503_keeps_streams_and_heals() {
    let Some((_dir, r)) = fresh_redis() else {
        return;
    };
    let a = node(&r.url());
    let mut sub = a.subscribe("/");
    a.publish_ok("/k", &json!({"n": 0}));
    assert_eq!(n_of(&sub.next_event(T)), 0);
    r.signal("STOP");
    let start = Instant::now();
    let resp = a.publish_keyed("/k", &json!({"n": 1}), "part-1");
    let took = start.elapsed();
    r.signal("CONT");
    // Written into the open connection and never answered: 504 (or 503
    // had it not been written yet).
    assert!(
        resp.status == 504 || resp.status == 503,
        "{}",
        resp.body_str()
    );
    assert!(took < Duration::from_millis(2500), "answer after {took:?}");
    r.signal("STOP");
    // Still streaming: a ping arrives while Redis is stopped.
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut pinged = false;
    while !pinged && Instant::now() < deadline {
        let chunk = sub.next_chunk(Duration::from_secs(3)).expect("stream open");
        pinged = is_ping(&parse_line(&chunk.expect("not ended")));
    }
    r.signal("CONT");
    assert!(pinged);
    assert!(wait_until(T, || a
        .publish_json("/k", &json!({"n": 2}))
        .status
        == 202));
    a.publish_ok("/k", &json!({"n": 3}));
    // The publisher retries its unanswered event with the same key.
    retry_until_202(&a, &json!({"n": 1}), "part-1");
    a.publish_ok("/", &sentinel());
    let got = sub.events_until_sentinel(T);
    assert_eq!(count_n(&got, 1), 1, "exactly once with its key: {got:?}");
    assert!(count_n(&got, 2) >= 1 && count_n(&got, 3) == 1, "{got:?}");
}

#[test]
fn nodes_follow_a_sentinel_failover() {
    if !have_redis() {
        return;
    }
    let dir = TempDir::new();
    let master = Redis::start(&dir.path().join("master"));
    let replica_port = free_port();
    let replica = Redis::start_with(
        &dir.path().join("replica"),
        replica_port,
        &["--replicaof", "127.0.0.1", &master.port.to_string()],
    );
    let sentinels: Vec<redis::Sentinel> = (0..3)
        .map(|_| redis::Sentinel::start(dir.path(), "pubsubtest", master.port))
        .collect();
    let nodes_list = sentinels
        .iter()
        .map(|s| format!("\"127.0.0.1:{}\"", s.port))
        .collect::<Vec<_>>()
        .join(", ");
    let yaml = format!(
        "server:\n  bind: 127.0.0.1\n  port: 0\n  ping_interval: 1s\n  backlog: {{size: 1000}}\n\
         clients:\n  payloaders: [127.0.0.1/32]\n\
         cluster:\n  stream: test\n  timeout: 1s\n  sentinel: {{master: pubsubtest, nodes: [{nodes_list}]}}\n"
    );
    let a = start_node(yaml.clone());
    let b = start_node(yaml);
    let mut sub = b.subscribe("/");
    for i in 0..5 {
        a.publish_ok("/k", &json!({"n": i}));
    }
    // The Sentinels learn about the replica from the master's INFO.
    let s0 = sentinels[0].port;
    let failed_over = wait_until(Duration::from_secs(30), || {
        redis::cli(s0, &["SENTINEL", "FAILOVER", "pubsubtest"]).is_some_and(|o| o.trim() == "OK")
    });
    assert!(failed_over, "SENTINEL FAILOVER was refused");
    let promoted = wait_until(Duration::from_secs(20), || {
        redis::cli(s0, &["SENTINEL", "get-master-addr-by-name", "pubsubtest"])
            .is_some_and(|o| o.contains(&replica_port.to_string()))
            && replica
                .cli(&["ROLE"])
                .is_some_and(|o| o.starts_with("master"))
    });
    assert!(promoted, "the replica was not promoted");
    assert!(
        wait_until(Duration::from_secs(20), || a
            .publish_json("/k", &json!({"n": 5}))
            .status
            == 202),
        "publishing resumes on the new master:\n{}",
        a.log()
    );
    for i in 6..10 {
        a.publish_ok("/k", &json!({"n": i}));
    }
    a.publish_ok("/", &sentinel());
    let got = sub.events_until_sentinel(Duration::from_secs(20));
    assert_eq!(ns(&got), (0..10).collect::<Vec<_>>(), "{}", b.log());
    drop(master);
}

#[test]
fn private_events_travel_and_each_node_applies_its_acl() {
    if !have_redis() {
        return;
    }
    let dir = TempDir::new();
    // Redis with a password: the URL carries it.
    let r = Redis::start_with(dir.path(), free_port(), &["--requirepass", "pw"]);
    let url = format!("redis://:pw@127.0.0.1:{}/0", r.port);
    let a = node(&url);
    let acl = "alice:\n  password: s3cret\n  acl:\n    repo_access: [git]\n";
    let b = Server::builder()
        .raw_config(&node_yaml(&url, ""))
        .acl(acl)
        .start();
    assert!(b.wait_log("cluster: loaded", T), "{}", b.log());
    assert!(!a.log().contains("pw@"), "the password is not logged");
    let mut alice = b.subscribe_with("/git", &[("Authorization", &basic_auth("alice", "s3cret"))]);
    let mut anon = b.subscribe("/git");
    a.publish_ok("/private/git", &json!({"n": 1}));
    a.publish_ok("/git", &json!({"n": 2}));
    a.publish_ok("/git", &sentinel());
    assert_eq!(ns(&alice.events_until_sentinel(T)), vec![1, 2]);
    assert_eq!(ns(&anon.events_until_sentinel(T)), vec![2]);
}

#[test]
fn rediss_with_a_private_ca() {
    if !have_redis() {
        return;
    }
    let dir = TempDir::new();
    let d = dir.path();
    let ca = Ca::new("redis");
    let (leaf, leaf_key) = ca.leaf();
    dir.write("ca.pem", &ca.pem);
    dir.write("server.pem", &leaf);
    dir.write("server.key", &leaf_key);
    let tls_port = free_port().to_string();
    let path = |f: &str| d.join(f).display().to_string();
    let (cert, key, ca) = (path("server.pem"), path("server.key"), path("ca.pem"));
    let r = Redis::start_with(
        &d.join("redis"),
        free_port(),
        &[
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
        ],
    );
    let url = format!("rediss://127.0.0.1:{tls_port}/0");
    let a = start_node(node_yaml(&url, &format!("  ca_file: {ca}\n")));
    let mut sub = a.subscribe("/");
    a.publish_ok("/k", &json!({"n": 1}));
    assert_eq!(n_of(&sub.next_event(T)), 1);
    assert_eq!(xlen(&r), 1);
}

/// A real partition: Redis in a network namespace of the test's own, its
/// veth link cut and restored (root only; skipped otherwise).
#[test]
fn a_network_partition_in_a_namespace() {
    if !have_redis() {
        return;
    }
    let Some(net) = redis::Netns::create() else {
        eprintln!("skipped: no network namespaces here (needs root and ip)");
        return;
    };
    let dir = TempDir::new();
    let port = free_port();
    let child = net.redis(dir.path(), port);
    let url = format!("redis://{}:{port}/0", net.ns_ip);
    let a = node(&url);
    let b = node(&url);
    let mut sub_a = a.subscribe("/");
    let mut sub_b = b.subscribe("/");
    for i in 0..3 {
        a.publish_ok("/k", &json!({"n": i}));
    }
    for sub in [&mut sub_a, &mut sub_b] {
        let got: Vec<Value> = (0..3).map(|_| sub.next_event(T)).collect();
        assert_eq!(ns(&got), vec![0, 1, 2]);
    }
    net.link(false);
    let start = Instant::now();
    let resp = b.publish_keyed("/k", &json!({"n": -1}), "ns-1");
    let took = start.elapsed();
    assert!(
        resp.status == 504 || resp.status == 503,
        "{}",
        resp.body_str()
    );
    assert!(took < Duration::from_millis(2500), "answer after {took:?}");
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut pinged = false;
    while !pinged && Instant::now() < deadline {
        let chunk = sub_a
            .next_chunk(Duration::from_secs(3))
            .expect("stream open");
        pinged = is_ping(&parse_line(&chunk.expect("not ended")));
    }
    net.link(true);
    assert!(pinged, "a ping during the partition");
    assert!(wait_until(T, || a
        .publish_json("/k", &json!({"n": 3}))
        .status
        == 202));
    b.publish_ok("/k", &json!({"n": 4}));
    retry_until_202(&b, &json!({"n": -1}), "ns-1");
    b.publish_ok("/", &sentinel());
    for sub in [&mut sub_a, &mut sub_b] {
        let got = sub.events_until_sentinel(T);
        assert_eq!(count_n(&got, -1), 1, "exactly once with its key: {got:?}");
        let rest: Vec<i64> = ns(&got).into_iter().filter(|&n| n >= 0).collect();
        assert_eq!(rest.iter().filter(|&&n| n == 4).count(), 1, "{got:?}");
        assert!(
            rest.contains(&3) && rest.windows(2).all(|w| w[0] <= w[1]),
            "{got:?}"
        );
    }
    drop(child);
}
