//! WebSocket on the subscription URLs, black-box: a raw client checks the
//! handshake and its refusals, that each event is one text frame holding
//! exactly the stream's line, the pings, what the server does with each
//! frame a client may send (every protocol error with its close code),
//! replay and private grants, and the 1001 close on SIGTERM; Python's
//! `websockets` library subscribes with and without permessage-deflate;
//! chromium's `WebSocket` receives events and resumes after a reconnect
//! (tests/browser/websocket.mjs).
#![cfg(feature = "websocket")] // without it, an upgrade is a plain subscription (tests/stream.rs)

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

#[test]
fn each_event_is_one_text_frame_holding_the_streams_line() {
    let srv = Server::start("ping_interval: 1s");
    let mut ws = WsClient::open(srv.addr, "/ws/a,other", &[]);
    assert!(ws.head.header("X-Subscribers").is_some());
    assert_eq!(ws.head.header("Sec-WebSocket-Extensions"), None);
    let mut plain = srv.subscribe("/ws");
    srv.wait_subscribers(2, T);
    srv.publish_ok("/ws/a", &json!({"n": 1, "text": "héllo"}));
    let deadline = Instant::now() + T;
    let frame = loop {
        let f = ws.read_frame(deadline).unwrap().expect("open");
        if f.opcode != 9 {
            break f;
        }
    };
    assert!(frame.fin && !frame.rsv1 && frame.opcode == 1, "{frame:?}");
    let line = loop {
        let chunk = plain.next_chunk(T).unwrap().expect("open");
        if !String::from_utf8_lossy(&chunk).contains("stillalive") {
            break chunk;
        }
    };
    // Byte for byte the stream's line, without its newline.
    assert_eq!([&frame.payload[..], b"\n"].concat(), line);
    // The keep-alive is a ping control frame.
    let ping = loop {
        let f = ws.read_frame(deadline).unwrap().expect("open");
        if f.opcode == 9 {
            break f;
        }
    };
    let v: Value = serde_json::from_slice(&ping.payload).unwrap();
    assert!(v["stillalive"].as_f64().is_some(), "{v}");
}

#[test]
fn frames_from_the_client_and_every_protocol_error() {
    let srv = Server::start("");
    // A ping gets a pong with its payload; a pong gets nothing; a close
    // is echoed and the connection closed.
    let mut ws = WsClient::open(srv.addr, "/x", &[]);
    ws.send_frame(0x89, b"ping?");
    ws.send_frame(0x8A, b"unasked pong");
    ws.send_frame(0x88, &[0x03, 0xe8, b'o', b'k']);
    let frames = ws.read_to_close(T);
    let kinds: Vec<(u8, Vec<u8>)> = frames
        .iter()
        .map(|f| (f.opcode, f.payload.clone()))
        .collect();
    assert_eq!(kinds, [(10, b"ping?".to_vec()), (8, vec![0x03, 0xe8])]);

    let unmasked = |first: u8, payload: &[u8]| {
        let mut f = vec![first, payload.len() as u8];
        f.extend_from_slice(payload);
        f
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("a text frame", masked(0x81, b"{\"hi\": 1}"), 1003),
        ("a binary frame", masked(0x82, &[0; 100_000]), 1003),
        ("a continuation frame", masked(0x00, b"x"), 1003),
        ("an unmasked frame", unmasked(0x89, b"x"), 1002),
        ("reserved bit 1", masked(0xC9, b""), 1002),
        ("reserved bit 2", masked(0xA1, b"x"), 1002),
        ("reserved bit 3", masked(0x99, b""), 1002),
        ("an unknown opcode", masked(0x83, b""), 1002),
        ("a fragmented ping", masked(0x09, b"x"), 1002),
        ("a 126-byte ping", masked(0x89, &[b'p'; 126]), 1002),
        ("a close with one byte", masked(0x88, b"\x03"), 1002),
        (
            "close code 1005",
            masked(0x88, &1005u16.to_be_bytes()),
            1002,
        ),
        (
            "a close reason not UTF-8",
            masked(0x88, b"\x03\xe8\xff"),
            1007,
        ),
    ];
    for (what, bytes, code) in cases {
        let mut ws = WsClient::open(srv.addr, "/x", &[]);
        ws.conn.send(&bytes);
        let frames = ws.read_to_close(T);
        let closes: Vec<Option<u16>> = frames.iter().map(|f| f.close_code()).collect();
        assert_eq!(closes, [Some(code)], "{what}: {frames:?}");
        let reason = std::str::from_utf8(&frames[0].payload[2..]).expect("UTF-8 reason");
        assert!(!reason.is_empty(), "{what}: a reason is given");
    }
    // Nobody else noticed.
    assert_eq!(srv.head("/").status, 204);
    assert!(!srv.log().contains("panicked"), "{}", srv.log());
}

#[test]
fn handshakes_that_are_refused_say_why() {
    let srv = Server::builder()
        .clients("cors_origins: [\"https://ok.example\"]")
        .start();
    let answer = |request: &[u8]| {
        let mut c = srv.conn();
        c.send(request);
        c.read_response(false, T).expect("an answer")
    };
    let req = |headers: &str| {
        format!("GET /x HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n{headers}\r\n").into_bytes()
    };
    let key = format!("Sec-WebSocket-Key: {WS_KEY}\r\n");
    let r = answer(&req(&format!(
        "Connection: Upgrade\r\nSec-WebSocket-Version: 12\r\n{key}"
    )));
    assert_eq!(r.status, 426);
    assert_eq!(r.header("Sec-WebSocket-Version"), Some("13"));
    for (headers, needle) in [
        (
            format!("Sec-WebSocket-Version: 13\r\n{key}"),
            "Connection: Upgrade",
        ),
        (
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n".into(),
            "Sec-WebSocket-Key",
        ),
        (
            format!("Connection: Upgrade\r\n{key}"),
            "Sec-WebSocket-Version",
        ),
        (
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: abc\r\n".into(),
            "16 bytes",
        ),
    ] {
        let r = answer(&req(&headers));
        assert_eq!(r.status, 400, "{headers}");
        assert!(r.body_str().contains(needle), "{headers}: {}", r.body_str());
    }
    let r = answer(&ws_request("/x", &[("Origin", "https://evil.example")]));
    assert_eq!(r.status, 403);
    WsClient::open(srv.addr, "/x", &[("Origin", "https://ok.example")]);
    // Without Upgrade nothing changes.
    let sub = srv.subscribe_with("/x", &[("Sec-WebSocket-Key", WS_KEY)]);
    assert_eq!(sub.head.header("Content-Type"), Some(STREAM_CONTENT_TYPE));
}

#[test]
fn replay_private_grants_and_the_close_on_sigterm() {
    let mut srv = Server::builder()
        .server("backlog: {size: 100}")
        .acl("alice: {password: pw, acl: {seg: [git]}}\n")
        .start();
    let mut first = srv.subscribe("/git");
    for n in 1..=3 {
        srv.publish_ok("/git", &json!({"n": n}));
    }
    srv.publish_ok("/private/git", &json!({"n": 4}));
    srv.publish_ok("/git", &sentinel());
    let cursor = first.next_event(T)["pubsub_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let auth = basic_auth("alice", "pw");
    let mut alice = WsClient::open(
        srv.addr,
        "/git",
        &[("Authorization", &auth), ("X-Fetch-Since-Cursor", &cursor)],
    );
    assert_eq!(
        alice.head.header("X-Fetch-Since-Cursor-Status"),
        Some("found")
    );
    assert_eq!(alice.ns_until_sentinel(), [2, 3, 4]);
    let mut anon = WsClient::open(srv.addr, &format!("/git?lastEventID={cursor}"), &[]);
    assert_eq!(anon.ns_until_sentinel(), [2, 3]);
    let mut unknown = WsClient::open(srv.addr, "/git", &[("X-Fetch-Since-Cursor", "nope")]);
    assert_eq!(
        unknown.head.header("X-Fetch-Since-Cursor-Status"),
        Some("unknown")
    );

    srv.signal("TERM");
    for ws in [&mut alice, &mut anon, &mut unknown] {
        let frames = ws.read_to_close(T);
        let last = frames.last().expect("a close frame");
        assert_eq!(last.close_code(), Some(1001), "{frames:?}");
    }
    assert!(srv.wait_exit(T).is_some_and(|s| s.success()));
}

/// Runs tests/python/ws_client.py; returns its JSON lines.
fn python_ws(py: &std::path::Path, args: &[&str]) -> (Reaped, std::sync::mpsc::Receiver<String>) {
    spawn_lines(
        Command::new(py)
            .arg("-u")
            .arg(python_script("ws_client.py"))
            .args(args),
        "websockets",
    )
}

fn next_json(rx: &std::sync::mpsc::Receiver<String>) -> Value {
    let line = rx.recv_timeout(T).expect("a line from the client in time");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

#[test]
fn python_websockets_with_and_without_permessage_deflate() {
    let Some(py) = python_with("websockets", &["websockets.asyncio.client"]) else {
        return;
    };
    let mut srv = Server::start("");
    let url = format!("ws://{}/py", srv.addr);
    let (_plain, plain_rx) = python_ws(&py, &["--url", &url, "--count", "2"]);
    let (_deflate, deflate_rx) = python_ws(&py, &["--url", &url, "--deflate", "--until-close"]);
    assert_eq!(
        next_json(&plain_rx),
        json!({"open": true, "extensions": null})
    );
    let opened = next_json(&deflate_rx);
    // Without the `compression` feature the offer is declined.
    let want =
        cfg!(feature = "compression").then_some("permessage-deflate; server_no_context_takeover");
    assert_eq!(opened["extensions"].as_str(), want, "{opened}");
    srv.wait_subscribers(2, T);
    let big = "compressible text ".repeat(500);
    srv.publish_ok("/py", &json!({"n": 1, "big": big}));
    srv.publish_ok("/py/deeper", &json!({"n": 2}));
    for rx in [&plain_rx, &deflate_rx] {
        let one = next_json(rx);
        assert_eq!(one["message"]["n"], 1, "{one}");
        assert_eq!(one["message"]["big"].as_str(), Some(big.as_str()));
        assert_eq!(next_json(rx)["message"]["n"], 2);
    }
    // The plain client closed: its close was echoed (the library checks).
    assert_eq!(next_json(&plain_rx), json!({"closed": 1000}));
    srv.signal("TERM");
    assert_eq!(next_json(&deflate_rx), json!({"closed": 1001}));
}

#[test]
fn chromium_websocket_receives_events_and_resumes_after_a_reconnect() {
    let Some(dir) = browser_scripts() else {
        return;
    };
    let srv = Server::start("backlog: {size: 100}");
    let mut cmd = Command::new("node");
    let deflate = if cfg!(feature = "compression") {
        "deflate"
    } else {
        "plain"
    };
    cmd.arg(dir.join("websocket.mjs"))
        .arg(format!("http://{}", srv.addr))
        .arg(deflate);
    let (status, stdout, stderr) = output_within(&mut cmd, Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "browser test failed ({status:?})\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}",
        srv.log()
    );
    assert!(stdout.contains("WebSocket OK"), "{stdout}");
}
