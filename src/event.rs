//! Events: turning a published JSON object into the event every subscriber
//! receives, and framing it once per wire format.
//!
//! An event is serialized exactly once; each of the framings a subscriber
//! can need — chunked or raw (HTTP/1.0), `\n` or old-school `\n\0`
//! endings, or Server-Sent Events, each plain or gzip-compressed, and
//! WebSocket text frames, plain or permessage-deflate — is built on first
//! use and then shared by reference between all subscribers that need it.
//! A compressed framing is compressed once per event (`compress`), never
//! per subscriber.

use std::cell::OnceCell;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::compress::{self, CrcPart};
use crate::http;
use crate::json_check;
use crate::websocket;

/// Bytes queued for a socket, shared between every subscriber that sends them.
pub type Frame = Rc<[u8]>;

/// How one subscriber's stream is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// Chunked transfer coding (HTTP/1.1) or raw lines (HTTP/1.0).
    pub chunked: bool,
    /// `\n\0` line endings for `clients.oldschoolers`.
    pub oldschool: bool,
    /// Server-Sent Events (`Accept: text/event-stream`): `id:` and `data:`
    /// fields, pings as comments; line endings are SSE's own.
    pub sse: bool,
    /// WebSocket text frames (the three above are then false); read through
    /// [`Framing::is_websocket`], which is false in a build without the
    /// `websocket` feature, so none of the WebSocket code is built there.
    websocket: bool,
    /// gzip (`Content-Encoding`) on a stream; permessage-deflate on a
    /// WebSocket.
    pub compressed: bool,
}

impl Framing {
    /// A stream framing: chunked or raw, old-school or not, SSE or not;
    /// uncompressed.
    pub fn stream(chunked: bool, oldschool: bool, sse: bool) -> Framing {
        Framing {
            chunked,
            oldschool,
            sse,
            websocket: false,
            compressed: false,
        }
    }

    /// This stream framing, gzip-encoded if `gzip`.
    pub fn gzip(self, gzip: bool) -> Framing {
        Framing {
            compressed: gzip,
            ..self
        }
    }

    /// WebSocket text frames, permessage-deflate if `deflate`.
    pub fn websocket(deflate: bool) -> Framing {
        Framing {
            websocket: true,
            compressed: deflate,
            ..Framing::stream(false, false, false)
        }
    }

    /// WebSocket text frames.
    #[inline]
    pub fn is_websocket(self) -> bool {
        websocket::AVAILABLE && self.websocket
    }

    /// A gzip-encoded stream (not a WebSocket).
    pub fn is_gzip(self) -> bool {
        self.compressed && !self.is_websocket()
    }

    /// The slot of a stream framing's bytes (compressed or not).
    fn slot(self) -> usize {
        if self.sse {
            4 + usize::from(self.chunked)
        } else {
            usize::from(self.chunked) * 2 + usize::from(self.oldschool)
        }
    }
}

/// One line of JSON and its framings, built lazily.
#[derive(Debug)]
pub struct Line {
    json: Box<str>,
    frames: [OnceCell<Frame>; 6],
    /// The WebSocket and compressed framings, allocated when one is first
    /// needed (most events never need one).
    more: OnceCell<Box<MoreFrames>>,
}

#[derive(Debug, Default)]
struct MoreFrames {
    /// Text frames: plain, permessage-deflate.
    websocket: [OnceCell<Frame>; 2],
    /// The stream framings gzip-compressed, with what each adds to a
    /// subscriber's gzip trailer.
    gzip: [OnceCell<(Frame, CrcPart)>; 6],
}

impl Line {
    pub fn new(json: impl Into<Box<str>>) -> Line {
        Line {
            json: json.into(),
            frames: Default::default(),
            more: OnceCell::new(),
        }
    }

    /// The JSON text, without a line ending.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The bytes one subscriber with this framing is sent; an SSE framing
    /// carries `sse_id` as the event's `id:` (none for a ping line, which
    /// SSE clients get as a comment).
    /// A gzip framing's part of the trailer comes with
    /// [`Line::gzip_frame`].
    pub fn frame(&self, framing: Framing, sse_id: Option<&str>) -> Frame {
        if framing.is_websocket() || framing.compressed {
            return self.more_frame(framing, sse_id);
        }
        self.frames[framing.slot()]
            .get_or_init(|| {
                let data = self.text(framing, sse_id);
                if framing.chunked {
                    http::chunk(&data).into()
                } else {
                    data.into()
                }
            })
            .clone()
    }

    /// A gzip framing's bytes, and what they add to the trailer.
    pub fn gzip_frame(&self, framing: Framing, sse_id: Option<&str>) -> (Frame, CrcPart) {
        let more = self.more.get_or_init(Default::default);
        let (frame, part) = more.gzip[framing.slot()].get_or_init(|| {
            let text = self.text(framing, sse_id);
            let segment = compress::segment(&text);
            let frame = if framing.chunked {
                http::chunk(&segment)
            } else {
                segment
            };
            (frame.into(), CrcPart::of(&text))
        });
        (frame.clone(), *part)
    }

    /// Out of line: the plain framings' path stays as short as it was.
    #[inline(never)]
    fn more_frame(&self, framing: Framing, sse_id: Option<&str>) -> Frame {
        if !framing.is_websocket() {
            return self.gzip_frame(framing, sse_id).0;
        }
        let more = self.more.get_or_init(Default::default);
        more.websocket[usize::from(framing.compressed)]
            .get_or_init(|| {
                let json = self.json.as_bytes();
                if framing.compressed {
                    websocket::frame(websocket::OP_TEXT, true, &compress::message(json)).into()
                } else {
                    websocket::frame(websocket::OP_TEXT, false, json).into()
                }
            })
            .clone()
    }

    /// The uncompressed text of a stream framing: the line and its ending,
    /// or the SSE block.
    fn text(&self, framing: Framing, sse_id: Option<&str>) -> Vec<u8> {
        if framing.sse {
            return self.sse_text(sse_id);
        }
        let ending: &[u8] = if framing.oldschool { b"\n\0" } else { b"\n" };
        let mut data = Vec::with_capacity(self.json.len() + 2);
        data.extend_from_slice(self.json.as_bytes());
        data.extend_from_slice(ending);
        data
    }

    /// `id: <cursor>` and `data: <json>` then a blank line; without an id,
    /// the line as an SSE comment (what pings are).
    fn sse_text(&self, id: Option<&str>) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.json.len() + 64);
        match id {
            Some(id) => {
                out.extend_from_slice(b"id: ");
                out.extend_from_slice(id.as_bytes());
                out.push(b'\n');
                // Event lines are one line; should one ever hold a line
                // break, each part is its own data field.
                for part in self.json.split('\n') {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(part.as_bytes());
                    out.push(b'\n');
                }
            }
            None => {
                out.extend_from_slice(b": ");
                out.extend_from_slice(self.json.replace('\n', " ").as_bytes());
                out.push(b'\n');
            }
        }
        out.push(b'\n');
        out
    }
}

/// A broadcast event.
#[derive(Debug)]
pub struct Event {
    /// Its place in the order events were accepted (1, 2, …).
    pub seq: u64,
    /// Topics without a leading `private`.
    pub topics: Vec<String>,
    pub private: bool,
    pub timestamp: f64,
    pub cursor: String,
    pub line: Line,
}

/// Why a body cannot become an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadError {
    /// Not JSON (or not UTF-8).
    Invalid,
    /// Valid JSON, but not an object.
    NotAnObject,
}

/// A publish body known to be one JSON object.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload<'a> {
    /// Already on one line and without keys of ours: the event is this
    /// text with the four keys appended, so it is neither built into a tree
    /// nor serialized again (and keeps the publisher's key order exactly).
    Verbatim(&'a str),
    /// Has to be re-serialized: spread over lines, or it sets `pubsub_*`
    /// keys itself that ours replace.
    Object(Map<String, Value>),
}

/// Checks a publish body: it must be one JSON object.
pub fn parse_payload(body: &[u8]) -> Result<Payload<'_>, PayloadError> {
    let shape = json_check::check(body).ok_or(PayloadError::Invalid)?;
    if !shape.object {
        return Err(PayloadError::NotAnObject);
    }
    let text = std::str::from_utf8(body).map_err(|_| PayloadError::Invalid)?;
    if shape.one_line && !shape.own_keys {
        return Ok(Payload::Verbatim(text));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(Payload::Object(map)),
        Ok(_) => Err(PayloadError::NotAnObject),
        Err(_) => Err(PayloadError::Invalid),
    }
}

/// `["private", "a"]` → (`["a"]`, true): the reference's private marker.
pub fn split_private(mut topics: Vec<String>) -> (Vec<String>, bool) {
    if topics.first().is_some_and(|t| t == "private") {
        topics.remove(0);
        (topics, true)
    } else {
        (topics, false)
    }
}

/// Seconds since the epoch, as the reference's `time.time()`.
pub fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Event {
    /// Adds the four `pubsub_*` keys to a published object and serializes it.
    pub fn publish(
        seq: u64,
        path: &str,
        topics: Vec<String>,
        private: bool,
        payload: Payload<'_>,
        timestamp: f64,
    ) -> Event {
        let cursor = new_cursor();
        let json = match payload {
            Payload::Object(mut object) => {
                object.insert("pubsub_topics".into(), topics.clone().into());
                object.insert("pubsub_path".into(), path.into());
                object.insert("pubsub_timestamp".into(), timestamp.into());
                object.insert("pubsub_cursor".into(), cursor.clone().into());
                Value::Object(object).to_string().into_boxed_str()
            }
            Payload::Verbatim(text) => with_scratch(|json| {
                // Valid object text: drop the closing brace, append ours.
                let open = text.trim().strip_suffix('}').unwrap_or("{").trim_end();
                if !open.ends_with('{') {
                    json.push(b',');
                }
                // Writing JSON strings and numbers into a Vec cannot fail.
                json.extend_from_slice(b"\"pubsub_topics\":");
                let _ = serde_json::to_writer(&mut *json, &topics);
                json.extend_from_slice(b",\"pubsub_path\":");
                let _ = serde_json::to_writer(&mut *json, path);
                json.extend_from_slice(b",\"pubsub_timestamp\":");
                let _ = serde_json::to_writer(&mut *json, &timestamp);
                json.extend_from_slice(b",\"pubsub_cursor\":\"");
                json.extend_from_slice(cursor.as_bytes());
                json.extend_from_slice(b"\"}");
                // Only our part needs checking (`open` is a str already,
                // and checking it again cost 190 instructions a publish);
                // copied out at its exact size, the buffer is reused.
                let ours = std::str::from_utf8(json).unwrap_or("}");
                let mut line = String::with_capacity(open.len() + ours.len());
                line.push_str(open);
                line.push_str(ours);
                line.into_boxed_str()
            }),
        };
        Event {
            seq,
            topics,
            private,
            timestamp,
            cursor,
            line: Line::new(json),
        }
    }
}

/// Runs `f` with this thread's empty scratch buffer, where event lines are
/// assembled (kept between events, so no growing allocation per event).
fn with_scratch<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    use std::cell::RefCell;
    thread_local! {
        static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    SCRATCH.with_borrow_mut(|json| {
        json.clear();
        let out = f(json);
        if json.capacity() > 1 << 20 {
            // One huge event does not pin its size for good.
            *json = Vec::new();
        }
        out
    })
}

/// A fresh cursor: a UUID v4 from a buffer of OS randomness refilled 256
/// cursors at a time, not one `getrandom` call per event.
fn new_cursor() -> String {
    use std::cell::RefCell;
    const CURSORS: usize = 256;
    thread_local! {
        static POOL: RefCell<(Vec<u8>, usize)> = const { RefCell::new((Vec::new(), 0)) };
    }
    let bytes = POOL.with_borrow_mut(|(pool, used)| {
        if *used >= pool.len() {
            pool.resize(16 * CURSORS, 0);
            if getrandom::fill(pool).is_err() {
                // No OS randomness (never seen on Linux): let uuid try.
                return *uuid::Uuid::new_v4().as_bytes();
            }
            *used = 0;
        }
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&pool[*used..*used + 16]);
        *used += 16;
        bytes
    });
    let uuid = uuid::Builder::from_random_bytes(bytes).into_uuid();
    uuid.hyphenated()
        .encode_lower(&mut uuid::Uuid::encode_buffer())
        .to_owned()
}

/// The keep-alive line `{"stillalive": <epoch>}`, spaced as the reference
/// sends it.
pub fn ping(now: f64) -> Ping {
    let now = serde_json::to_string(&now).unwrap_or_else(|_| "0.0".into());
    Ping {
        line: Line::new(format!("{{\"stillalive\": {now}}}")),
        comment: Line::new(format!("stillalive {now}")),
        websocket: OnceCell::new(),
    }
}

/// The keep-alive of one tick, in every framing: the JSON line, for SSE
/// subscribers the comment `: stillalive <time>`, for WebSocket ones a
/// ping control frame carrying the JSON line (never compressed).
pub struct Ping {
    pub line: Line,
    comment: Line,
    websocket: OnceCell<Frame>,
}

impl Ping {
    pub fn frame(&self, framing: Framing) -> Frame {
        if framing.is_websocket() {
            self.websocket
                .get_or_init(|| websocket::ping_frame(self.line.json().as_bytes()).into())
                .clone()
        } else {
            self.line_for(framing).frame(framing, None)
        }
    }

    /// A gzip framing's ping, and what it adds to the trailer.
    pub fn gzip_frame(&self, framing: Framing) -> (Frame, CrcPart) {
        self.line_for(framing).gzip_frame(framing, None)
    }

    fn line_for(&self, framing: Framing) -> &Line {
        if framing.sse {
            &self.comment
        } else {
            &self.line
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_must_be_an_object() {
        assert_eq!(
            parse_payload(br#"{"a": 1}"#),
            Ok(Payload::Verbatim(r#"{"a": 1}"#))
        );
        assert!(matches!(
            parse_payload(b"{\n\"a\": 1}"),
            Ok(Payload::Object(_))
        ));
        assert!(matches!(
            parse_payload(br#"{"pubsub_path": 1}"#),
            Ok(Payload::Object(_))
        ));
        assert_eq!(parse_payload(b" [1, {}] "), Err(PayloadError::NotAnObject));
        assert_eq!(parse_payload(b"[\n1]"), Err(PayloadError::NotAnObject));
        assert_eq!(parse_payload(b"{\"a\"\n"), Err(PayloadError::Invalid));
        assert_eq!(parse_payload(b"[1]"), Err(PayloadError::NotAnObject));
        assert_eq!(parse_payload(b"\"x\""), Err(PayloadError::NotAnObject));
        assert_eq!(parse_payload(b"3"), Err(PayloadError::NotAnObject));
        assert_eq!(parse_payload(b""), Err(PayloadError::Invalid));
        assert_eq!(parse_payload(b"{"), Err(PayloadError::Invalid));
        assert_eq!(parse_payload(b"{} x"), Err(PayloadError::Invalid));
        assert_eq!(
            parse_payload(b"{\"a\": \"\xff\"}"),
            Err(PayloadError::Invalid)
        );
        let deep = "[".repeat(100_000);
        assert_eq!(parse_payload(deep.as_bytes()), Err(PayloadError::Invalid));
    }

    #[test]
    fn publish_adds_keys_and_keeps_order() {
        let object = parse_payload(br#"{"z": 1, "a": {"b": "line\nbreak"}}"#).unwrap();
        let (topics, private) = split_private(vec!["private".into(), "x".into()]);
        assert!(private);
        let e = Event::publish(7, "/private/x", topics, private, object, 1588293679.5);
        let v: Value = serde_json::from_str(e.line.json()).unwrap();
        assert_eq!(v["pubsub_topics"], serde_json::json!(["x"]));
        assert_eq!(v["pubsub_path"], "/private/x");
        assert_eq!(v["pubsub_timestamp"], 1588293679.5);
        assert_eq!(v["pubsub_cursor"].as_str().unwrap().len(), 36);
        assert!(e.line.json().starts_with(r#"{"z": 1, "a":"#));
        assert!(!e.line.json().contains('\n'));
    }

    /// Both ways of building an event give the same JSON value.
    #[test]
    fn verbatim_and_rebuilt_events_agree() {
        for body in [
            r#"{}"#,
            r#" { } "#,
            r#"{"a": [1, {"b": null}], "c": "\u00e9\n"}  "#,
            r#"{"x":1.5e3}"#,
        ] {
            let verbatim = parse_payload(body.as_bytes()).unwrap();
            assert!(matches!(verbatim, Payload::Verbatim(_)), "{body}");
            let rebuilt = Payload::Object(serde_json::from_str(body).unwrap());
            let a = Event::publish(
                1,
                "/a/%62",
                vec!["a".into(), "b".into()],
                false,
                verbatim,
                2.5,
            );
            let b = Event::publish(
                1,
                "/a/%62",
                vec!["a".into(), "b".into()],
                false,
                rebuilt,
                2.5,
            );
            let mut a: Value = serde_json::from_str(a.line.json()).unwrap();
            let mut b: Value = serde_json::from_str(b.line.json()).unwrap();
            for v in [&mut a, &mut b] {
                assert_eq!(v["pubsub_cursor"].as_str().map(str::len), Some(36));
                v["pubsub_cursor"] = Value::Null;
            }
            assert_eq!(a, b, "{body}");
            assert_eq!(a["pubsub_path"], "/a/%62");
        }
    }

    #[test]
    fn cursors_are_distinct_uuid_v4() {
        let cursors: std::collections::HashSet<String> = (0..1000).map(|_| new_cursor()).collect();
        assert_eq!(cursors.len(), 1000);
        for c in cursors.iter().take(5) {
            let u = uuid::Uuid::parse_str(c).unwrap();
            assert_eq!(u.get_version_num(), 4);
        }
    }

    #[test]
    fn framings() {
        let line = Line::new("{}");
        let f = |chunked, oldschool| line.frame(Framing::stream(chunked, oldschool, false), None);
        assert_eq!(&*f(true, false), b"3\r\n{}\n\r\n");
        assert_eq!(&*f(true, true), b"4\r\n{}\n\0\r\n");
        assert_eq!(&*f(false, false), b"{}\n");
        assert_eq!(&*f(false, true), b"{}\n\0");
        // Built once, then shared.
        assert!(Rc::ptr_eq(&f(true, false), &f(true, false)));
        assert_eq!(ping(12.0).line.json(), r#"{"stillalive": 12.0}"#);
    }

    #[test]
    fn sse_framings() {
        let sse = |chunked| Framing::stream(chunked, true, true);
        let line = Line::new(r#"{"a":1}"#);
        assert_eq!(
            &*line.frame(sse(false), Some("c-1")),
            b"id: c-1\ndata: {\"a\":1}\n\n"
        );
        assert_eq!(
            &*line.frame(sse(true), Some("c-1")),
            b"17\r\nid: c-1\ndata: {\"a\":1}\n\n\r\n"
        );
        let plain = line.frame(Framing::stream(false, false, false), None);
        assert_eq!(
            &*plain, b"{\"a\":1}\n",
            "SSE frames do not displace the others"
        );
        assert_eq!(&*ping(12.5).frame(sse(false)), b": stillalive 12.5\n\n");
    }

    #[test]
    fn websocket_framings() {
        if !websocket::AVAILABLE {
            return;
        }
        let line = Line::new(r#"{"a":1}"#);
        let text = line.frame(Framing::websocket(false), Some("c"));
        assert_eq!(&*text, b"\x81\x07{\"a\":1}");
        assert!(Rc::ptr_eq(
            &text,
            &line.frame(Framing::websocket(false), None)
        ));
        let p = ping(12.5).frame(Framing::websocket(true));
        assert_eq!(&*p, b"\x89\x14{\"stillalive\": 12.5}");
    }

    #[cfg(feature = "compression")]
    #[test]
    fn compressed_framings_are_built_once() {
        let line = Line::new(r#"{"a":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#);
        let deflate = line.frame(Framing::websocket(true), None);
        assert_eq!(deflate[0], 0xC1, "FIN, RSV1, text");
        assert!(deflate.len() < line.json().len());
        let gzip = Framing {
            compressed: true,
            ..Framing::stream(true, false, false)
        };
        let (a, part) = line.gzip_frame(gzip, None);
        let (b, again) = line.gzip_frame(gzip, None);
        assert!(Rc::ptr_eq(&a, &b) && part == again);
        assert!(a.ends_with(b"\x00\x00\xff\xff\r\n"), "one chunk, flushed");
        assert!(Rc::ptr_eq(&a, &line.frame(gzip, None)));
        let plain = line.frame(Framing::stream(true, false, false), None);
        assert_eq!(
            &*plain,
            http::chunk(format!("{}\n", line.json()).as_bytes())
        );
    }
}
