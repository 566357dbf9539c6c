//! The in-process tier for the transports beyond PyPubSub's stream:
//! WebSocket (the handshake and its refusals, frames both ways,
//! permessage-deflate, replay, grants, limits, the end) and gzip streams
//! (decoded event by event and whole, with their trailer), through the
//! same `Harness` as the other hub tests.

use std::time::Duration;

use serde_json::Value;

use super::{base64_for_tests, header, status_and_body, stream_lines, Harness, START};
use crate::websocket::frames::client_frame;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const MASK: [u8; 4] = [1, 2, 3, 4];

fn upgrade<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", KEY),
    ];
    headers.extend_from_slice(extra);
    headers
}

/// A frame the server sent: FIN, RSV1, opcode, payload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    payload: Vec<u8>,
}

/// The head (if the output starts with one) and the frames after it.
fn frames(output: &[u8]) -> (String, Vec<Frame>) {
    let (head, mut rest) = match output.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) if output.starts_with(b"HTTP/1.1") => (
            String::from_utf8_lossy(&output[..i + 4]).into_owned(),
            &output[i + 4..],
        ),
        _ => (String::new(), output),
    };
    let mut out = Vec::new();
    while rest.len() >= 2 {
        assert_eq!(rest[1] & 0x80, 0, "server frames are not masked");
        let (len, at) = match rest[1] & 0x7f {
            126 => (usize::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
            127 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&rest[2..10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            n => (usize::from(n), 2),
        };
        out.push(Frame {
            fin: rest[0] & 0x80 != 0,
            rsv1: rest[0] & 0x40 != 0,
            opcode: rest[0] & 0x0f,
            payload: rest[at..at + len].to_vec(),
        });
        rest = &rest[at + len..];
    }
    assert!(rest.is_empty(), "a partial frame: {rest:?}");
    (head, out)
}

fn json(frame: &Frame) -> Value {
    assert_eq!((frame.fin, frame.opcode), (true, 1), "{frame:?}");
    serde_json::from_slice(&frame.payload).expect("a frame holds one JSON event")
}

impl Harness {
    fn take_bytes(&mut self, key: usize) -> Vec<u8> {
        self.sent.remove(&key).unwrap_or_default()
    }
}

#[test]
fn websocket_handshake_events_and_pings() {
    if !crate::websocket::AVAILABLE {
        return; // `upgrade_is_a_plain_stream_without_websocket`
    }
    let mut h = Harness::new("server: {ping_interval: 5s}");
    let ws = h.subscribe("/a", &upgrade(&[]));
    let plain = h.subscribe("/a", &[]);
    let (head, none) = frames(&h.take_bytes(ws));
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert_eq!(header(&head, "Upgrade"), Some("websocket"));
    assert_eq!(header(&head, "Connection"), Some("Upgrade"));
    assert_eq!(header(&head, "Sec-WebSocket-Accept"), Some(ACCEPT));
    assert_eq!(header(&head, "Sec-WebSocket-Extensions"), None);
    assert_eq!(header(&head, "X-Subscribers"), Some("1"));
    assert!(none.is_empty());
    h.take(plain);
    assert_eq!(h.hub.conns.transports().websocket, 1);
    assert_eq!(h.hub.conns.transports().stream, 1);

    h.publish("/a/b", r#"{"n": 1}"#);
    let (_, got) = frames(&h.take_bytes(ws));
    assert_eq!(got.len(), 1);
    let event = json(&got[0]);
    assert_eq!(event["n"], 1);
    assert_eq!(event["pubsub_path"], "/a/b");
    // Exactly the stream's line, without its newline.
    let line = stream_lines(&h.take(plain)).remove(0);
    assert_eq!(event, line);

    h.advance(Duration::from_secs(5));
    let (_, got) = frames(&h.take_bytes(ws));
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].fin, got[0].opcode), (true, 9), "a ping");
    let ping: Value = serde_json::from_slice(&got[0].payload).unwrap();
    assert_eq!(ping["stillalive"], START + 5.0);
}

#[test]
fn websocket_handshakes_that_are_refused() {
    if !crate::websocket::AVAILABLE {
        return; // `upgrade_is_a_plain_stream_without_websocket`
    }
    let mut h = Harness::new("clients: {cors_origins: [\"https://ok.example\"]}");
    let mut refused = |headers: &[(&str, &str)]| {
        let key = h.subscribe("/a", headers);
        let out = h.take(key);
        assert!(h.closed.contains(&key), "{out}");
        (
            status_and_body(&out).0,
            status_and_body(&out).1.to_owned(),
            out,
        )
    };
    let all = upgrade(&[]);
    let without = |name: &str| -> Vec<(&str, &str)> {
        all.iter().filter(|(n, _)| *n != name).copied().collect()
    };
    let (code, _, out) = refused(&[
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "8"),
        ("Sec-WebSocket-Key", KEY),
    ]);
    assert_eq!(code, 426);
    assert_eq!(header(&out, "Sec-WebSocket-Version"), Some("13"));
    let (code, body, _) = refused(&without("Connection"));
    assert_eq!(code, 400);
    assert!(body.contains("Connection: Upgrade"), "{body}");
    let (code, body, _) = refused(&without("Sec-WebSocket-Key"));
    assert_eq!(
        (code, body.contains("Sec-WebSocket-Key")),
        (400, true),
        "{body}"
    );
    let (code, body, _) = refused(&without("Sec-WebSocket-Version"));
    assert_eq!((code, body.contains("Version")), (400, true), "{body}");
    let mut bad_key = without("Sec-WebSocket-Key");
    bad_key.push(("Sec-WebSocket-Key", "c2hvcnQ="));
    let (code, body, _) = refused(&bad_key);
    assert_eq!((code, body.contains("16 bytes")), (400, true), "{body}");
    let mut foreign = all.clone();
    foreign.push(("Origin", "https://evil.example"));
    let (code, body, _) = refused(&foreign);
    assert_eq!((code, body.contains("Origin")), (403, true), "{body}");

    let mut listed = all.clone();
    listed.push(("Origin", "https://ok.example"));
    let key = h.subscribe("/a", &listed);
    assert!(h.take(key).starts_with("HTTP/1.1 101 "));
    // Without `Upgrade` nothing changes, whatever else is sent.
    let key = h.subscribe("/a", &without("Upgrade"));
    assert!(h.take(key).starts_with("HTTP/1.1 200 OK\r\n"));
    assert_eq!(h.hub.subscribers(), 2);
}

#[test]
fn websocket_control_frames_from_the_client() {
    if !crate::websocket::AVAILABLE {
        return; // `upgrade_is_a_plain_stream_without_websocket`
    }
    let mut h = Harness::new("");
    let ws = h.subscribe("/a", &upgrade(&[]));
    h.take_bytes(ws);
    // A ping is answered with a pong carrying its payload; a pong is not
    // answered; a ping split across reads waits for its last byte.
    let ping = client_frame(0x89, MASK, b"are you there");
    h.send(ws, &ping[..5]);
    assert!(h.take_bytes(ws).is_empty());
    h.send(
        ws,
        &[&ping[5..], &client_frame(0x8A, MASK, b"x")[..]].concat(),
    );
    let (_, got) = frames(&h.take_bytes(ws));
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].opcode, &got[0].payload[..]),
        (10, &b"are you there"[..])
    );
    assert_eq!(
        h.hub.conns.input_bytes(),
        0,
        "an idle WebSocket holds no input"
    );
    // Still a subscriber.
    h.publish("/a", "{}");
    assert_eq!(frames(&h.take_bytes(ws)).1.len(), 1);
    // A close is echoed with its code, then the connection closes.
    h.send(ws, &client_frame(0x88, MASK, b"\x03\xe8done"));
    let (_, got) = frames(&h.take_bytes(ws));
    assert_eq!((got[0].opcode, &got[0].payload[..]), (8, &b"\x03\xe8"[..]));
    assert!(h.closed.contains(&ws));
    assert_eq!(h.hub.subscribers(), 0);
}

#[test]
fn websocket_protocol_errors_close_with_their_code() {
    if !crate::websocket::AVAILABLE {
        return; // `upgrade_is_a_plain_stream_without_websocket`
    }
    let cases: [(&[u8], u16); 6] = [
        (&client_frame(0x81, MASK, b"hello"), 1003),
        (&client_frame(0x82, MASK, &[0; 70_000])[..20], 1003),
        (b"\x89\x00", 1002),
        (&client_frame(0xA9, MASK, b""), 1002),
        (&client_frame(0x09, MASK, b""), 1002),
        (&client_frame(0x89, MASK, &[0; 126]), 1002),
    ];
    for (bytes, code) in cases {
        let mut h = Harness::new("");
        let ws = h.subscribe("/a", &upgrade(&[]));
        h.take_bytes(ws);
        h.send(ws, bytes);
        let (_, got) = frames(&h.take_bytes(ws));
        assert_eq!(got.len(), 1, "{bytes:?}");
        assert_eq!(got[0].opcode, 8);
        assert_eq!(
            u16::from_be_bytes([got[0].payload[0], got[0].payload[1]]),
            code
        );
        assert!(std::str::from_utf8(&got[0].payload[2..]).is_ok());
        assert!(h.closed.contains(&ws), "{bytes:?}");
        assert_eq!(h.hub.conns.input_bytes(), 0);
    }
}

#[test]
fn websocket_replay_grants_and_the_status_header() {
    if !crate::websocket::AVAILABLE {
        return; // `upgrade_is_a_plain_stream_without_websocket`
    }
    let acl = "alice: {password: pw, acl: {x: [git]}}\n";
    let mut h = Harness::with_acl("server: {backlog: {size: 10}}", acl);
    let watcher = h.subscribe("/git", &[]);
    h.publish("/git", r#"{"n": 1}"#);
    h.publish("/private/git", r#"{"n": 2}"#);
    h.publish("/git", r#"{"n": 3}"#);
    let first = super::events(&h.take(watcher))[0]["pubsub_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let auth = format!("Basic {}", base64_for_tests::encode(b"alice:pw"));
    let alice = h.subscribe(
        "/git",
        &upgrade(&[("Authorization", &auth), ("X-Fetch-Since-Cursor", &first)]),
    );
    let anon = h.subscribe(&format!("/git?lastEventID={first}"), &upgrade(&[]));
    h.publish("/private/git", r#"{"n": 4}"#);
    let ns = |h: &mut Harness, key| {
        let (head, got) = frames(&h.take_bytes(key));
        assert_eq!(header(&head, "X-Fetch-Since-Cursor-Status"), Some("found"));
        got.iter()
            .map(|f| json(f)["n"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(ns(&mut h, alice), [2, 3, 4]);
    assert_eq!(ns(&mut h, anon), [3]);
}

#[test]
fn websocket_limits_and_the_end() {
    if !crate::websocket::AVAILABLE {
        return; // `upgrade_is_a_plain_stream_without_websocket`
    }
    let mut h = Harness::new("server: {max_queued_bytes: 300}");
    let stuck = h.subscribe("/a", &upgrade(&[]));
    let fine = h.subscribe("/a", &upgrade(&[]));
    h.take_bytes(fine);
    h.stalled.insert(stuck);
    let body = format!(r#"{{"pad": "{}"}}"#, "x".repeat(100));
    h.publish("/a", &body);
    h.publish("/a", &body);
    assert!(h.closed.contains(&stuck), "past its cap");
    assert_eq!(frames(&h.take_bytes(fine)).1.len(), 2);
    // A client that sends pings but never reads its pongs is dropped too.
    let pinger = h.subscribe("/a", &upgrade(&[]));
    h.stalled.insert(pinger);
    let ping = client_frame(0x89, MASK, &[b'p'; 120]);
    for _ in 0..10 {
        h.send(pinger, &ping);
    }
    assert!(h.closed.contains(&pinger));
    // Shutting down: a close frame with 1001, then the connection closes.
    h.hub.begin_shutdown();
    h.end_turn();
    let (_, got) = frames(&h.take_bytes(fine));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].opcode, 8);
    assert_eq!(&got[0].payload[..2], &1001u16.to_be_bytes());
    assert!(h.closed.contains(&fine));
}

/// Without the `websocket` feature an upgrade request is an ordinary
/// subscription: a plain stream, as before WebSocket was served.
#[test]
fn upgrade_is_a_plain_stream_without_websocket() {
    if crate::websocket::AVAILABLE {
        return; // the tests above
    }
    let mut h = Harness::new("");
    let key = h.subscribe("/a", &upgrade(&[]));
    let head = h.take(key);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(header(&head, "Transfer-Encoding"), Some("chunked"));
    h.publish("/a", r#"{"n": 1}"#);
    let lines = stream_lines(&h.take(key));
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["n"], 1);
}

/// Compression, in both builds: with the `compression` feature each offer
/// is taken; the core build declines every one and streams plain bytes.
mod compressed {
    use super::*;
    use std::io::Read;

    const COMPRESSING: bool = cfg!(feature = "compression");

    fn inflate_message(payload: &[u8]) -> Vec<u8> {
        let mut input = payload.to_vec();
        input.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut out = Vec::with_capacity(64 * 1024);
        flate2::Decompress::new(false)
            .decompress_vec(&input, &mut out, flate2::FlushDecompress::Sync)
            .unwrap();
        out
    }

    #[test]
    fn permessage_deflate_when_offered() {
        let mut h = Harness::new("");
        let offer = (
            "Sec-WebSocket-Extensions",
            "permessage-deflate; client_max_window_bits",
        );
        let deflate = h.subscribe("/a", &upgrade(&[offer]));
        let plain = h.subscribe("/a", &upgrade(&[]));
        let (head, _) = frames(&h.take_bytes(deflate));
        if !COMPRESSING {
            assert_eq!(header(&head, "Sec-WebSocket-Extensions"), None);
            assert_eq!(h.hub.conns.transports().compressed, 0);
            return;
        }
        assert_eq!(
            header(&head, "Sec-WebSocket-Extensions"),
            Some("permessage-deflate; server_no_context_takeover")
        );
        h.take_bytes(plain);
        assert_eq!(h.hub.conns.transports().compressed, 1);
        let body = format!(r#"{{"text": "{}"}}"#, "compressible ".repeat(50));
        h.publish("/a", &body);
        h.publish("/a", r#"{"n": 2}"#);
        let (_, got) = frames(&h.take_bytes(deflate));
        let (_, want) = frames(&h.take_bytes(plain));
        assert_eq!(got.len(), 2);
        for (compressed, plain) in got.iter().zip(&want) {
            assert!(compressed.rsv1 && !plain.rsv1);
            assert_eq!(inflate_message(&compressed.payload), plain.payload);
        }
        assert!(got[0].payload.len() * 4 < want[0].payload.len());
        // Pings are never compressed.
        h.advance(Duration::from_secs(5));
        let (_, got) = frames(&h.take_bytes(deflate));
        assert_eq!((got[0].opcode, got[0].rsv1), (9, false));
    }

    /// The data of each chunk of a chunked body (after the head, if the
    /// output starts with one).
    fn chunks(output: &[u8]) -> Vec<Vec<u8>> {
        let mut rest = match output.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(i) if output.starts_with(b"HTTP/") => &output[i + 4..],
            _ => output,
        };
        let mut out = Vec::new();
        while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = std::str::from_utf8(&rest[..i]).unwrap();
            let size = usize::from_str_radix(size, 16).unwrap();
            if size == 0 {
                break;
            }
            out.push(rest[i + 2..i + 2 + size].to_vec());
            rest = &rest[i + 4 + size..];
        }
        out
    }

    /// A gzip stream decoded chunk by chunk (every event must be readable
    /// when its chunk arrives), and whole for a decoder that checks the
    /// trailer.
    struct GzipReader {
        inflate: flate2::Decompress,
        header_left: usize,
        body: Vec<u8>,
    }

    impl GzipReader {
        fn new() -> GzipReader {
            GzipReader {
                inflate: flate2::Decompress::new(false),
                header_left: 10,
                body: Vec::new(),
            }
        }

        /// The text of each chunk in `output`, each decoded at once.
        fn feed(&mut self, output: &[u8]) -> Vec<String> {
            let mut texts = Vec::new();
            for chunk in chunks(output) {
                self.body.extend_from_slice(&chunk);
                let skip = self.header_left.min(chunk.len());
                self.header_left -= skip;
                let mut out = Vec::with_capacity(64 * 1024);
                self.inflate
                    .decompress_vec(&chunk[skip..], &mut out, flate2::FlushDecompress::Sync)
                    .unwrap();
                texts.push(String::from_utf8(out).unwrap());
            }
            texts
        }

        fn whole(&self) -> Result<String, std::io::Error> {
            let mut out = String::new();
            flate2::read::GzDecoder::new(&self.body[..]).read_to_string(&mut out)?;
            Ok(out)
        }
    }

    fn head_of(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[test]
    fn gzip_streams_decode_event_by_event_and_end_with_their_trailer() {
        let mut h = Harness::new("server: {ping_interval: 5s}");
        let gz = ("Accept-Encoding", "gzip, deflate, br");
        let early = h.subscribe("/a", &[gz]);
        h.publish("/a", r#"{"n": 0}"#);
        let late = h.subscribe("/a", &[gz]);
        let sse = h.subscribe("/a", &[gz, super::super::SSE]);
        let head = h.take_bytes(early);
        if !COMPRESSING {
            assert_eq!(header(&head_of(&head), "Content-Encoding"), None);
            assert_eq!(h.hub.conns.transports().compressed, 0);
            return;
        }
        assert_eq!(header(&head_of(&head), "Content-Encoding"), Some("gzip"));
        assert_eq!(header(&head_of(&head), "Vary"), Some("Accept-Encoding"));
        assert_eq!(
            header(&head_of(&head), "Transfer-Encoding"),
            Some("chunked")
        );
        assert_eq!(h.hub.conns.transports().compressed, 3);
        let mut readers = [GzipReader::new(), GzipReader::new(), GzipReader::new()];
        let mut decoded = vec![readers[0].feed(&head)];
        let late_head = h.take_bytes(late);
        let sse_head = h.take_bytes(sse);
        decoded.push(readers[1].feed(&late_head));
        decoded.push(readers[2].feed(&sse_head));
        assert_eq!(
            decoded[2].concat(),
            "retry: 3000\n\n",
            "the hint, compressed"
        );

        let body = format!(r#"{{"commit": "{}"}}"#, "abc ".repeat(100));
        h.publish("/a", &body);
        h.advance(Duration::from_secs(5));
        let outputs: Vec<Vec<u8>> = [early, late, sse].map(|k| h.take_bytes(k)).into();
        // The same event bytes went to both line subscribers, though their
        // streams started at different events.
        assert_eq!(chunks(&outputs[0])[0], chunks(&outputs[1])[0]);
        for (i, out) in outputs.iter().enumerate() {
            let texts = readers[i].feed(out);
            assert_eq!(texts.len(), 2, "one chunk per event and per ping");
            assert!(texts[0].contains("abc abc"), "{texts:?}");
            assert!(texts[1].contains("stillalive"), "{texts:?}");
        }
        assert!(
            outputs[0].len() * 2 < body.len(),
            "compressed: {}",
            outputs[0].len()
        );
        // Before the end the stream is incomplete; at shutdown it ends with
        // a trailer a checking decoder accepts.
        assert!(readers[0].whole().is_err());
        h.hub.begin_shutdown();
        h.end_turn();
        for (i, key) in [early, late, sse].into_iter().enumerate() {
            let out = h.take_bytes(key);
            assert!(out.ends_with(b"0\r\n\r\n"), "{out:?}");
            readers[i].feed(&out);
            let text = readers[i].whole().unwrap();
            assert!(text.contains("abc abc") && text.contains("stillalive"));
            assert_eq!(
                text.contains("\"n\": 0") || text.contains("\"n\":0"),
                i == 0,
                "{text}"
            );
        }
    }

    #[test]
    fn gzip_on_http_1_0_and_refused_by_q_0() {
        let mut h = Harness::new("");
        let key = h.connect("127.0.0.1");
        h.send(key, b"GET /a HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n");
        let head = h.take_bytes(key);
        if !COMPRESSING {
            assert_eq!(header(&head_of(&head), "Content-Encoding"), None);
            return;
        }
        assert_eq!(header(&head_of(&head), "Content-Encoding"), Some("gzip"));
        assert!(
            head.ends_with(&crate::compress::GZIP_HEADER),
            "raw gzip header"
        );
        let no = h.subscribe("/a", &[("Accept-Encoding", "gzip;q=0, br")]);
        let head = h.take(no);
        assert_eq!(header(&head, "Content-Encoding"), None);
        h.publish("/a", r#"{"n": 1}"#);
        let raw = h.take_bytes(key);
        let mut out = Vec::with_capacity(1024);
        flate2::Decompress::new(false)
            .decompress_vec(&raw, &mut out, flate2::FlushDecompress::Sync)
            .unwrap();
        assert!(String::from_utf8(out).unwrap().ends_with("}\n"));
    }
}
