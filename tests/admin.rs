//! The admin listener, black-box: where it binds (its log line, absent
//! without `server.admin`), `/healthz`, `/readyz` (LDAP unreachable, a bad
//! ACL reload and back), `/metrics` (OpenMetrics names and values, a
//! subscriber dropped for a full queue), that it never serves
//! subscriptions or publishes, and the status page with its `/stats` JSON
//! and `/events` feed (public events only).
#![cfg(all(feature = "admin", feature = "ldap"))] // the admin listener; /readyz with LDAP

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const ADMIN: &str = "admin: {bind: 127.0.0.1, port: 0}";

/// The admin listener's address, from its log line.
fn admin_addr(srv: &Server) -> SocketAddr {
    srv.admin_addr()
}

/// `GET path` on a fresh connection to `addr`, read fully.
fn get(addr: SocketAddr, path: &str) -> Response {
    let mut c = Conn::connect(addr);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n").as_bytes());
    c.read_response(false, T)
        .unwrap_or_else(|e| panic!("no response to GET {path}: {e}"))
}

fn get_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let r = get(addr, path);
    assert_eq!(
        r.header("Content-Type")
            .map(|t| t.starts_with("application/json")),
        Some(true),
        "{path}: {:?}",
        r.head_str()
    );
    let v = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{path} is not JSON ({e}): {:?}", r.body_str()));
    (r.status, v)
}

/// The value of the sample `name` (with its labels, exactly as written),
/// if `/metrics` has that line.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn metrics(addr: SocketAddr) -> String {
    let r = get(addr, "/metrics");
    assert_eq!(r.status, 200, "{:?}", r.head_str());
    let ct = r.header("Content-Type").unwrap_or("");
    assert!(
        ct.starts_with("application/openmetrics-text"),
        "Content-Type {ct:?}"
    );
    r.body_str()
}

fn admin_server() -> (Server, SocketAddr) {
    let srv = Server::builder().server(ADMIN).start();
    let addr = admin_addr(&srv);
    assert_ne!(addr.port(), srv.port(), "admin port is its own");
    (srv, addr)
}

#[test]
fn healthz_and_readyz_answer() {
    let (srv, admin) = admin_server();
    let r = get(admin, "/healthz");
    assert_eq!(
        (r.status, r.body_str().trim()),
        (200, "ok"),
        "{:?}",
        r.head_str()
    );

    let (status, v) = get_json(admin, "/readyz");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ready"], json!(true), "{v}");
    assert_eq!(v["not_ready"], json!([]), "{v}");
    let checks = v["checks"].as_object().expect("checks is an object");
    for name in ["listeners", "acl", "ldap"] {
        assert!(checks.contains_key(name), "no {name} in {v}");
    }
    assert_eq!(v["checks"]["ldap"], json!("not configured"), "{v}");
    // On the public port, /healthz is just a topic to subscribe to.
    let sub = srv.subscribe("/healthz");
    assert_eq!(sub.head.header("Content-Type"), Some(STREAM_CONTENT_TYPE));
}

#[test]
fn no_admin_section_no_admin_listener() {
    let srv = Server::builder().start();
    // The line would come right after the public one; a request answered
    // proves the server is past start-up.
    assert_eq!(srv.head("/").status, 204);
    assert!(
        !srv.wait_log("admin listener", Duration::from_millis(300)),
        "{}",
        srv.log()
    );
}

#[test]
fn readyz_is_503_while_ldap_is_unreachable() {
    // Port 1 on loopback: nothing listens there.
    let srv = Server::builder()
        .server(ADMIN)
        .clients(
            "ldap:\n  uri: ldap://127.0.0.1:1\n  user_dn: \"uid=%s,ou=people,dc=example,dc=org\"\n  \
             base_scope: \"dc=example,dc=org\"\n  timeout: 1\n  acl:\n    \"cn=x,dc=example,dc=org\": [x]\n",
        )
        .acl("alice:\n  password: pw\n  acl:\n    a: [x]\n")
        .start();
    let admin = admin_addr(&srv);
    let (status, v) = get_json(admin, "/readyz");
    assert_eq!(status, 200, "before any lookup: {v}");
    assert_eq!(v["checks"]["ldap"], json!("no lookup yet"), "{v}");

    // Not in the ACL file: the server asks LDAP, which cannot be reached;
    // the subscriber still gets a (public) stream.
    let mut sub = srv.subscribe_as("/", "stranger", "secret");
    srv.publish_ok("/pub", &sentinel());
    sub.next_event(T);

    let mut last = Value::Null;
    let ok = wait_until(T, || {
        let (status, v) = get_json(admin, "/readyz");
        last = v;
        status == 503
    });
    assert!(ok, "readyz never 503: {last}");
    assert_eq!(last["ready"], json!(false), "{last}");
    assert_eq!(last["not_ready"], json!(["ldap"]), "{last}");
    assert_eq!(last["checks"]["ldap"], json!("unreachable"), "{last}");
}

#[test]
fn readyz_follows_acl_reloads() {
    let srv = Server::builder()
        .server(ADMIN)
        .acl("alice:\n  password: pw\n  acl:\n    a: [x]\n")
        .start();
    let admin = admin_addr(&srv);
    let acl_path = srv.dir().join("pypubsub_acl.yaml");
    let mut srv = srv;
    assert_eq!(get_json(admin, "/readyz").0, 200);

    std::fs::write(&acl_path, "- not\n- a mapping\n").expect("break ACL");
    srv.signal("USR2");
    let mut last = Value::Null;
    let ok = wait_until(T, || {
        let (status, v) = get_json(admin, "/readyz");
        last = v;
        status == 503
    });
    assert!(
        ok,
        "readyz never 503 after a bad ACL: {last}\n{}",
        srv.log()
    );
    assert_eq!(last["not_ready"], json!(["acl"]), "{last}");

    std::fs::write(&acl_path, "bob:\n  password: pw2\n").expect("fix ACL");
    srv.signal("USR2");
    let ok = wait_until(T, || {
        let (status, v) = get_json(admin, "/readyz");
        last = v;
        status == 200
    });
    assert!(ok, "readyz still not 200 after a good ACL: {last}");
    assert_eq!(last["ready"], json!(true), "{last}");
}

#[test]
fn metrics_count_what_happened() {
    let (srv, admin) = admin_server();
    let before = metrics(admin);
    assert_eq!(
        sample(&before, "pubsubd_subscribers"),
        Some(0.0),
        "{before}"
    );
    assert!(
        before.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );

    let mut sub = srv.subscribe("/m");
    srv.publish_ok("/m/a", &json!({"n": 1}));
    srv.publish_ok("/m/b", &json!({"n": 2}));
    srv.publish_ok("/m", &sentinel());
    assert_eq!(sub.ns_until_sentinel(), vec![1, 2]);

    let text = metrics(admin);
    let want = [
        ("pubsubd_subscribers", 1.0),
        ("pubsubd_events_published_total{source=\"http\"}", 3.0),
        ("pubsubd_deliveries_total", 3.0),
        ("pubsubd_requests_total{status=\"202\"}", 3.0),
        ("pubsubd_connections{state=\"stream\"}", 1.0),
        ("pubsubd_backlog_events", 0.0),
    ];
    for (name, value) in want {
        assert_eq!(sample(&text, name), Some(value), "{name} in:\n{text}");
    }
    let rss = sample(&text, "process_resident_memory_bytes").expect("RSS");
    assert!(rss > 100_000.0, "RSS {rss}");
    let fds = sample(&text, "process_open_fds").expect("open fds");
    assert!(fds >= 4.0, "open fds {fds}");
    let cpu = sample(&text, "process_cpu_seconds_total").expect("CPU seconds");
    assert!((0.0..60.0).contains(&cpu), "CPU seconds {cpu}");
    let start = sample(&text, "process_start_time_seconds").expect("start time");
    let now = now_epoch();
    assert!(
        (now - 60.0..=now + 1.0).contains(&start),
        "start {start}, now {now}"
    );

    drop(sub);
    srv.wait_subscribers(0, T);
    let text = metrics(admin);
    assert_eq!(sample(&text, "pubsubd_subscribers"), Some(0.0), "{text}");
}

#[test]
fn metrics_count_a_subscriber_dropped_for_a_full_queue() {
    let srv = Server::builder()
        .server(ADMIN)
        .server("max_queued_bytes: 65536")
        .server("max_payload_size: 1000000")
        .start();
    let admin = admin_addr(&srv);
    let name = "pubsubd_subscribers_dropped_total{reason=\"queue_full\"}";
    assert_eq!(sample(&metrics(admin), name), Some(0.0));
    // Never read: the kernel buffers fill, then the server's queue.
    let stalled = srv.subscribe("/big");
    let big = "x".repeat(200_000);
    let mut dropped = false;
    for n in 0..200 {
        srv.publish_ok("/big", &json!({"n": n, "pad": big}));
        if srv.subscribers() == 0 {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the stalled subscriber was never dropped");
    let text = metrics(admin);
    assert_eq!(sample(&text, name), Some(1.0), "{text}");
    drop(stalled);
}

#[test]
fn admin_never_serves_subscriptions_or_publishes() {
    let (srv, admin) = admin_server();
    let mut sub = srv.subscribe("/");

    let r = get(admin, "/sometopic");
    assert_eq!(r.status, 404, "{:?}", r.head_str());
    assert_ne!(r.header("Content-Type"), Some(STREAM_CONTENT_TYPE));

    let body = json!({"n": 1}).to_string();
    let mut c = Conn::connect(admin);
    c.send(
        format!(
            "PUT /x HTTP/1.1\r\nHost: admin\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let r = c.read_response(false, T).expect("a response to PUT");
    assert_eq!(r.status, 405, "{:?}", r.head_str());
    c.wait_closed(T)
        .expect("the admin listener closes after a PUT");

    let r = {
        let mut c = Conn::connect(admin);
        c.send(b"POST /x HTTP/1.1\r\nHost: admin\r\nContent-Length: 2\r\n\r\n{}");
        c.read_response(false, T).expect("a response to POST")
    };
    assert_eq!(r.status, 405, "{:?}", r.head_str());

    // The next event the public subscriber sees is the sentinel.
    srv.publish_ok("/s", &sentinel());
    assert_eq!(sub.ns_until_sentinel(), Vec::<u64>::new());
    assert_eq!(srv.subscribers(), 1, "the GET on the admin port subscribed");
}

#[test]
fn status_page_is_small_and_self_contained() {
    let (_srv, admin) = admin_server();
    let r = get(admin, "/");
    assert_eq!(r.status, 200);
    let ct = r.header("Content-Type").unwrap_or("");
    assert!(ct.starts_with("text/html"), "Content-Type {ct:?}");
    assert!(r.body.len() <= 30 * 1024, "page is {} bytes", r.body.len());
    let page = r.body_str();
    assert!(page.to_ascii_lowercase().contains("<html"), "not HTML");
    for scheme in ["http://", "https://"] {
        assert!(!page.contains(scheme), "the page refers to {scheme}");
    }
}

#[test]
fn stats_counts_and_busiest_topics() {
    let (srv, admin) = admin_server();
    let mut sub = srv.subscribe("/git");
    for n in 0..3 {
        srv.publish_ok("/git/a", &json!({"n": n}));
    }
    srv.publish_ok("/svn/b", &json!({"n": 9}));
    srv.publish_ok("/git", &sentinel());
    assert_eq!(sub.ns_until_sentinel(), vec![0, 1, 2]);

    let (status, v) = get_json(admin, "/stats");
    assert_eq!(status, 200);
    assert_eq!(v["subscribers"], json!(1), "{v}");
    assert_eq!(v["events_published"], json!(5), "{v}");
    assert_eq!(v["deliveries"], json!(4), "{v}");
    let conns = v["connections"].as_u64().expect("connections");
    assert!((2..=3).contains(&conns), "subscriber + this request: {v}");
    assert!(v["history"].is_array(), "{v}");
    // The sentinel went to /git too.
    assert_eq!(v["topics"], json!([["git", 4], ["svn", 1]]), "{v}");
}

#[test]
fn busiest_topics_exactly() {
    let (srv, admin) = admin_server();
    for n in 0..3 {
        srv.publish_ok("/git/a", &json!({"n": n}));
    }
    srv.publish_ok("/svn/b", &json!({"n": 9}));
    let (_, v) = get_json(admin, "/stats");
    assert_eq!(v["topics"], json!([["git", 3], ["svn", 1]]), "{v}");
    assert_eq!(v["events_published"], json!(4), "{v}");
}

/// One SSE block from `/events`: `(id, data)`, skipping comments and `retry:`.
fn next_sse(conn: &mut Conn, deadline: Instant) -> (String, Value) {
    loop {
        let chunk = conn
            .read_chunk(deadline)
            .expect("an SSE chunk in time")
            .expect("the feed is still open");
        let text = String::from_utf8(chunk).expect("UTF-8");
        let (mut id, mut data) = (None, None);
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str(v).expect("data is JSON"));
            }
        }
        if let (Some(id), Some(data)) = (id, data) {
            return (id, data);
        }
    }
}

#[test]
fn events_feed_carries_public_events_only() {
    let srv = Server::builder()
        .server(ADMIN)
        .acl("alice:\n  password: pw\n  acl:\n    a: [x]\n")
        .start();
    let admin = admin_addr(&srv);
    // alice proves the private event was really delivered somewhere.
    let mut alice = srv.subscribe_as("/", "alice", "pw");

    let mut feed = Conn::connect(admin);
    feed.send(b"GET /events HTTP/1.1\r\nHost: admin\r\n\r\n");
    let head = feed.read_head(Instant::now() + T).expect("feed head");
    assert_eq!(head.status, 200, "{:?}", head.head_str());
    assert_eq!(head.header("Content-Type"), Some("text/event-stream"));
    assert!(wait_until(T, || srv.subscribers() == 2), "feed not counted");

    srv.publish_ok("/private/x/y", &json!({"n": 1, "secret": true}));
    srv.publish_ok("/pub/a", &json!({"n": 2}));
    srv.publish_ok("/private/x", &json!({"n": 3, "secret": true}));
    srv.publish_ok("/s", &sentinel());
    assert_eq!(alice.ns_until_sentinel(), vec![1, 2, 3]);

    let deadline = Instant::now() + T;
    let mut got = Vec::new();
    loop {
        let (id, v) = next_sse(&mut feed, deadline);
        assert_eq!(v["pubsub_cursor"].as_str(), Some(id.as_str()), "{v}");
        assert_ne!(v["secret"], json!(true), "private event on /events: {v}");
        if v["sentinel"] == json!(true) {
            break;
        }
        got.push(v["n"].as_u64().expect("n"));
    }
    assert_eq!(got, vec![2]);
}
