//! SIGHUP reloads `pypubsub.yaml`, black-box: one test per key that can
//! change live (payloaders, oldschoolers, secure_topics, max_payload_size,
//! ping_interval, backlog limits, log_level, cors_origins), each checked
//! before and after the reload; an invalid or missing file keeps the running
//! configuration; a key that cannot change live (listen_backlog, bind) is
//! logged as needing a restart and the server goes on as it was. (TLS
//! files: tests/tls.rs.)

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const RELOADED: &str = "SIGHUP: reloaded";

/// Rewrites the server's `pypubsub.yaml` with `next` (a builder's config,
/// still on 127.0.0.1 port 0), sends SIGHUP and waits for one more
/// `reloaded` line than before.
fn reload_with(srv: &mut Server, next: common::Builder) {
    reload_text(srv, &next.config_yaml());
    let want = reloads(srv) + 1;
    srv.signal("HUP");
    assert!(
        wait_until(T, || reloads(srv) >= want),
        "no `{RELOADED}` after SIGHUP; log:\n{}",
        srv.log()
    );
}

fn reload_text(srv: &Server, text: &str) {
    std::fs::write(srv.dir().join("pypubsub.yaml"), text).expect("rewrite pypubsub.yaml");
}

fn reloads(srv: &Server) -> usize {
    srv.log().matches(RELOADED).count()
}

/// Sends SIGHUP after writing `text`, and waits for the `keeping` warning
/// (one more than before).
fn reload_invalid(srv: &mut Server, text: &str) {
    const KEEPING: &str = "keeping the running configuration";
    let before = srv.log().matches(KEEPING).count();
    reload_text(srv, text);
    srv.signal("HUP");
    assert!(
        wait_until(T, || srv.log().matches(KEEPING).count() > before),
        "no `{KEEPING}` after SIGHUP with {text:?}; log:\n{}",
        srv.log()
    );
}

#[test]
fn payloaders_reload() {
    let mut srv = Server::builder().start();
    srv.publish("/p", "{}").assert(202, MSG_ACCEPTED);
    reload_with(&mut srv, Server::builder().payloaders(&["10.0.0.0/8"]));
    srv.publish("/p", "{}").assert(403, MSG_FORBIDDEN);
    reload_with(&mut srv, Server::builder());
    srv.publish("/p", "{}").assert(202, MSG_ACCEPTED);
}

/// The first event chunk (pings skipped) of a stream, raw.
fn first_event_chunk(sub: &mut Subscriber) -> Vec<u8> {
    let deadline = Instant::now() + T;
    loop {
        let c = sub
            .conn
            .read_chunk(deadline)
            .expect("a chunk in time")
            .expect("stream open");
        if !String::from_utf8_lossy(&c).contains("stillalive") {
            return c;
        }
    }
}

#[test]
fn oldschoolers_reload() {
    let mut srv = Server::builder().start();
    let ua = [("User-Agent", "svnwcsub/1.14.2 (linux)")];
    let mut before = srv.subscribe_with("/o", &ua);
    reload_with(
        &mut srv,
        Server::builder().clients("oldschoolers: [svnwcsub]"),
    );
    let mut after = srv.subscribe_with("/o", &ua);
    srv.publish_ok("/o", &json!({"n": 1}));
    let c = first_event_chunk(&mut after);
    assert!(c.ends_with(b"}\n\0"), "{:?}", String::from_utf8_lossy(&c));
    // A stream opened before keeps the framing it started with.
    let c = first_event_chunk(&mut before);
    assert!(c.ends_with(b"}\n"), "{:?}", String::from_utf8_lossy(&c));
}

#[test]
fn secure_topics_reload() {
    let mut srv = Server::builder().start();
    srv.publish("/deploy/x", "{}").assert(202, MSG_ACCEPTED);
    reload_with(
        &mut srv,
        Server::builder().clients("secure_topics: [deploy]"),
    );
    srv.publish("/deploy/x", "{}").assert(403, MSG_FORBIDDEN);
    srv.publish("/other", "{}").assert(202, MSG_ACCEPTED);
}

#[test]
fn max_payload_size_reload() {
    let mut srv = Server::builder().start();
    let body = json!({"pad": "x".repeat(300)}).to_string();
    srv.publish("/big", &body).assert(202, MSG_ACCEPTED);
    reload_with(&mut srv, Server::builder().server("max_payload_size: 100"));
    srv.publish("/big", &body).assert(400, MSG_TOO_LARGE);
    srv.publish("/small", "{}").assert(202, MSG_ACCEPTED);
}

/// Whether a ping chunk arrives on `sub` within `timeout`.
fn ping_within(sub: &mut Subscriber, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while let Ok(Some(c)) = sub.conn.read_chunk(deadline) {
        if is_ping(&parse_line(&c)) {
            return true;
        }
    }
    false
}

#[test]
fn ping_interval_reload() {
    let mut srv = Server::start("ping_interval: 1h");
    let mut sub = srv.subscribe("/p");
    assert!(
        !ping_within(&mut sub, Duration::from_millis(1500)),
        "a ping within 1.5 s with ping_interval 1h"
    );
    reload_with(&mut srv, Server::builder().server("ping_interval: 1s"));
    assert!(
        ping_within(&mut sub, Duration::from_secs(4)),
        "no ping within 4 s of reloading ping_interval 1s"
    );
    assert!(ping_within(&mut sub, Duration::from_secs(3)), "second ping");
}

#[test]
fn backlog_limits_reload() {
    let mut srv = Server::start("backlog: {size: 10}");
    for n in 1..=5 {
        srv.publish_ok("/b", &json!({"n": n}));
    }
    let replay = |srv: &Server| {
        let mut sub = srv.subscribe_with("/b", &[("X-Fetch-Since", "0")]);
        srv.publish_ok("/b", &sentinel());
        sub.ns_until_sentinel()
    };
    assert_eq!(replay(&srv), vec![1, 2, 3, 4, 5]);
    reload_with(&mut srv, Server::builder().server("backlog: {size: 2}"));
    // The sentinel above went into the backlog too: the newest two are
    // event 5 and that sentinel.
    let mut sub = srv.subscribe_with("/b", &[("X-Fetch-Since", "0")]);
    let first = sub.next_event(T);
    assert_eq!(first["n"], json!(5), "{first}");
    let second = sub.next_event(T);
    assert_eq!(second["sentinel"], json!(true), "{second}");
    srv.publish_ok("/b", &json!({"n": 6}));
    assert_eq!(sub.next_event(T)["n"], json!(6), "live after the replay");
}

#[test]
fn log_level_reload() {
    let mut srv = Server::start("log_level: info");
    let _ = srv.head("/");
    assert!(
        !srv.wait_log("accepted 127.0.0.1", Duration::from_millis(300)),
        "debug line at info:\n{}",
        srv.log()
    );
    reload_with(&mut srv, Server::builder().server("log_level: debug"));
    let _ = srv.head("/");
    assert!(
        srv.wait_log("accepted 127.0.0.1", T),
        "no debug line for a new connection after log_level: debug:\n{}",
        srv.log()
    );
}

#[test]
fn invalid_file_keeps_the_running_configuration() {
    let mut srv = Server::builder()
        .clients("secure_topics: [deploy]")
        .server("max_payload_size: 100")
        .start();
    let check = |srv: &Server| {
        srv.publish("/deploy/x", "{}").assert(403, MSG_FORBIDDEN);
        srv.publish("/p", &json!({"pad": "x".repeat(300)}).to_string())
            .assert(400, MSG_TOO_LARGE);
        srv.publish("/p", "{}").assert(202, MSG_ACCEPTED);
    };
    check(&srv);
    // Each would lift both limits if it were applied.
    reload_invalid(&mut srv, "server: [unclosed\n  port: 0\n");
    check(&srv);
    reload_invalid(
        &mut srv,
        "server:\n  port: [1]\n  bind: 127.0.0.1\n  max_payload_size: 100000\n",
    );
    check(&srv);
    let log = srv.log();
    assert!(
        log.contains("server.port"),
        "the reason names the key:\n{log}"
    );
    assert_eq!(reloads(&srv), 0, "{log}");
}

#[test]
fn fixed_keys_need_a_restart() {
    let mut srv = Server::start("listen_backlog: 1024");
    let mut sub = srv.subscribe("/f");
    reload_with(
        &mut srv,
        Server::builder()
            .server("listen_backlog: 16")
            .server("max_payload_size: 100"),
    );
    assert!(
        srv.log()
            .contains("server.listen_backlog changed: it takes effect after a restart"),
        "{}",
        srv.log()
    );
    // The rest of the file was applied.
    srv.publish("/f", &json!({"pad": "x".repeat(300)}).to_string())
        .assert(400, MSG_TOO_LARGE);

    reload_with(&mut srv, Server::builder().bind("127.0.0.2"));
    assert!(
        srv.log()
            .contains("server.bind changed: it takes effect after a restart"),
        "{}",
        srv.log()
    );
    // Still serving where it was, with the live keys of the new file.
    srv.publish("/f", &json!({"n": 7, "pad": "x".repeat(300)}).to_string())
        .assert(202, MSG_ACCEPTED);
    srv.publish_ok("/f", &sentinel());
    assert_eq!(sub.ns_until_sentinel(), vec![7]);
}

#[test]
fn cors_origins_reload() {
    let mut srv = Server::builder().start();
    let preflight = "OPTIONS /x HTTP/1.1\r\nHost: t\r\nOrigin: https://status.example.org\r\n\
                     Access-Control-Request-Method: PUT\r\n\r\n";
    srv.request(preflight.as_bytes()).assert_bad_request();
    reload_with(
        &mut srv,
        Server::builder().clients("cors_origins: [\"https://status.example.org\"]"),
    );
    let r = srv.request(preflight.as_bytes());
    assert_eq!(r.status, 204, "{:?}", r.head_str());
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://status.example.org")
    );
}

#[test]
fn missing_file_keeps_the_running_configuration() {
    let mut srv = Server::builder().payloaders(&["10.0.0.0/8"]).start();
    std::fs::remove_file(srv.dir().join("pypubsub.yaml")).expect("remove pypubsub.yaml");
    srv.signal("HUP");
    assert!(
        srv.wait_log("does not exist; keeping the running configuration", T),
        "{}",
        srv.log()
    );
    srv.publish("/p", "{}").assert(403, MSG_FORBIDDEN);
}
