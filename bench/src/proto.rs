//! The "target" abstraction: how to publish to and subscribe on each kind of
//! server, and how to take a subscriber's byte stream apart into events.
//!
//! - `pubsubd` (and Apache PyPubSub): `PUT /bench/load` with a JSON body;
//!   subscribers `GET /bench` and get a chunked stream of `\n`-ended JSON
//!   lines (plus `{"stillalive": …}` pings), or, asking with
//!   `Accept: text/event-stream`, Server-Sent Events (see `sse`).
//! - `nchan`: `POST /pub?id=bench`; subscribers `GET /sub/bench` on an
//!   `nchan_subscriber http-raw-stream` location: the message bodies,
//!   each followed by `\n` (chunked or raw, whichever the server picks).
//! - `mqtt` (mosquitto): MQTT 3.1.1 (see `mqtt`): subscribers CONNECT and
//!   SUBSCRIBE to `bench`; a publish is a QoS 0 PUBLISH followed by a
//!   PINGREQ, answered by the PINGRESP.
//! - `pushpin`: subscribers `GET /bench` through the proxy (its origin
//!   answers with `Grip-Hold: stream`, `Grip-Channel: bench`); a publish is
//!   `POST /publish/` on the control port with the body as the
//!   `http-stream` content of one item, plus `\n`.
//!
//! Every published body starts `{"r":RUN,"p":PUB,"s":SEQ,"t":SEND_NS,` and
//! is padded to the configured size, so a receiver can tell which phase,
//! which publisher connection and which event it got, and how late.

use std::io::Write as _;

use crate::lines::{parse_line, Line, Stamp, StreamDecoder};
use crate::mqtt;
use crate::sse::SseDecoder;
use crate::ws::{self, WsDecoder};

/// What a subscriber asks an HTTP server for beyond the plain stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ask {
    /// Server-Sent Events (`Accept: text/event-stream`).
    pub sse: bool,
    /// A WebSocket (pubsubd: any subscription URL; nchan: `/ws/CHAN`).
    pub websocket: bool,
    /// `Accept-Encoding: gzip` (pubsubd), decoded as it arrives.
    pub gzip: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Pubsubd,
    Nchan,
    Mqtt,
    Pushpin,
}

impl Proto {
    pub fn parse(s: &str) -> Option<Proto> {
        match s {
            "pubsubd" | "pypubsub" => Some(Proto::Pubsubd),
            "nchan" => Some(Proto::Nchan),
            "mqtt" | "mosquitto" => Some(Proto::Mqtt),
            "pushpin" => Some(Proto::Pushpin),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Pubsubd => "pubsubd",
            Proto::Nchan => "nchan",
            Proto::Mqtt => "mqtt",
            Proto::Pushpin => "pushpin",
        }
    }

    /// Whether a publish is an HTTP request with an answer (the `publish`
    /// scenario measures those; an MQTT QoS 0 publish has no answer).
    pub fn http_publish(self) -> bool {
        self != Proto::Mqtt
    }

    /// What a subscriber sends first, for channel/topic `chan`; `ask.sse`
    /// asks an HTTP server for Server-Sent Events (what `EventSource`
    /// sends), `ask.websocket` for a WebSocket, `ask.gzip` for gzip.
    pub fn subscribe_request(self, chan: &str, ask: Ask) -> Vec<u8> {
        if ask.websocket {
            return match self {
                Proto::Nchan => ws::request(&format!("/ws/{chan}")),
                _ => ws::request(&format!("/{chan}")),
            };
        }
        let mut accept = String::new();
        if ask.sse {
            accept += "Accept: text/event-stream\r\n";
        }
        if ask.gzip {
            accept += "Accept-Encoding: gzip\r\n";
        }
        match self {
            Proto::Pubsubd | Proto::Pushpin => {
                format!("GET /{chan} HTTP/1.1\r\nHost: bench\r\n{accept}\r\n").into_bytes()
            }
            Proto::Nchan => {
                format!("GET /sub/{chan} HTTP/1.1\r\nHost: bench\r\n{accept}\r\n").into_bytes()
            }
            Proto::Mqtt => {
                let mut out = Vec::with_capacity(32);
                mqtt::connect(&mut out);
                mqtt::subscribe(&mut out, chan);
                out
            }
        }
    }

    /// What a subscriber sends now and then to stay connected (MQTT's
    /// keep-alive is the client's job), if anything.
    pub fn keepalive(self) -> Option<&'static [u8]> {
        (self == Proto::Mqtt).then_some(&mqtt::PINGREQ[..])
    }

    /// What a publisher connection sends before its first publish, and
    /// waits to have answered.
    pub fn publisher_hello(self) -> Option<Vec<u8>> {
        (self == Proto::Mqtt).then(|| {
            let mut out = Vec::with_capacity(16);
            mqtt::connect(&mut out);
            out
        })
    }

    /// The subscriber's answer at the start of `buf`: `Ok(Some((n, decoder)))`
    /// once it is complete in the first `n` bytes and the subscription is
    /// live; `Ok(None)` = need more. With `sse` (it was asked for), an
    /// answer that is not `text/event-stream` is an error, so a server that
    /// ignores the `Accept` is not measured as an SSE one.
    pub fn subscribed(self, buf: &[u8], ask: Ask) -> Result<Option<(usize, Decoder)>, String> {
        if self == Proto::Mqtt {
            return Ok(
                mqtt::subscribed(buf)?.map(|n| (n, Decoder::Mqtt(mqtt::StreamDecoder::default())))
            );
        }
        let sse = ask.sse;
        match parse_response_head(buf)? {
            None => Ok(None),
            Some(head) if ask.websocket && head.status == 101 => {
                Ok(Some((head.head_len, Decoder::Ws(WsDecoder::default()))))
            }
            Some(head) if ask.websocket => Err(format!("WebSocket handshake: {}", head.status)),
            Some(head) if ask.gzip && !head.gzip => {
                Err("asked for gzip, got a plain stream".into())
            }
            Some(head) if head.status != 200 => Err(format!("subscribe status {}", head.status)),
            Some(head) if sse && !head.event_stream => {
                Err("asked for text/event-stream, got another content type".into())
            }
            Some(head) if head.event_stream => Ok(Some((
                head.head_len,
                Decoder::Sse(SseDecoder::new(head.chunked)),
            ))),
            Some(head) if head.gzip => Ok(Some((
                head.head_len,
                Decoder::Http(StreamDecoder::gzip(head.chunked)),
            ))),
            Some(head) => Ok(Some((
                head.head_len,
                Decoder::Http(StreamDecoder::new(head.chunked)),
            ))),
        }
    }

    /// The answer to a publish (or to the hello) at the start of `buf`.
    pub fn answer(self, buf: &[u8]) -> Result<Option<Answer>, String> {
        if self == Proto::Mqtt {
            let Some(p) = mqtt::next_packet(buf)? else {
                return Ok(None);
            };
            let (status, hello) = match mqtt::answer(buf, &p) {
                mqtt::Answer::Connack(0) => (200, true),
                mqtt::Answer::Connack(rc) => (600 + u16::from(rc), true),
                mqtt::Answer::Pong => (200, false),
                mqtt::Answer::Other => (0, false),
            };
            return Ok(Some(Answer {
                len: p.len,
                status,
                close: false,
                hello,
            }));
        }
        let Some(head) = parse_response_head(buf)? else {
            return Ok(None);
        };
        let len = head.head_len + head.content_length.unwrap_or(0);
        if buf.len() < len {
            return Ok(None);
        }
        Ok(Some(Answer {
            len,
            status: head.status,
            close: head.close,
            hello: false,
        }))
    }
}

/// One answer on a publisher's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// Its length in bytes.
    pub len: usize,
    /// The HTTP status; MQTT: 200 for PINGRESP or an accepted CONNACK,
    /// 600 + the return code for a refused one, 0 for anything else.
    pub status: u16,
    /// The server closes the connection after it.
    pub close: bool,
    /// It answers the hello (MQTT CONNACK), not a publish.
    pub hello: bool,
}

/// A live subscription's stream decoder, by protocol.
#[derive(Debug)]
pub enum Decoder {
    Http(StreamDecoder),
    Sse(SseDecoder),
    Mqtt(mqtt::StreamDecoder),
    Ws(WsDecoder),
}

impl Decoder {
    /// Feeds bytes; calls `on_line` with every event, ping or other line
    /// (SSE: every event block) they complete.
    pub fn feed(&mut self, data: &[u8], on_line: &mut impl FnMut(Line)) -> Result<(), String> {
        match self {
            Decoder::Http(d) => d.feed(data, &mut |l: &[u8]| on_line(parse_line(l))),
            Decoder::Sse(d) => d.feed(data, on_line),
            Decoder::Mqtt(d) => d.feed(data, &mut |l: &[u8]| on_line(parse_line(l))),
            Decoder::Ws(d) => d.feed(data, on_line),
        }
    }

    pub fn finished(&self) -> bool {
        match self {
            Decoder::Http(d) => d.finished(),
            Decoder::Sse(d) => d.finished(),
            Decoder::Mqtt(_) => false,
            Decoder::Ws(d) => d.finished(),
        }
    }
}

/// Builds one publish request whose event body is exactly `size` bytes
/// when `size` is large enough for the fixed fields.
pub fn publish_request(proto: Proto, chan: &str, stamp: Stamp, size: usize, out: &mut Vec<u8>) {
    let Stamp {
        run,
        publisher,
        seq,
        t_ns,
    } = stamp;
    // Written straight into `out` (reused request after request): the
    // generator must stay cheaper per request than the servers it drives.
    let mut fields = [0u8; 96];
    let mut w = std::io::Cursor::new(&mut fields[..]);
    let _ = write!(
        w,
        "{{\"r\":{run},\"p\":{publisher},\"s\":{seq},\"t\":{t_ns},\"pad\":\""
    );
    let used = w.position() as usize;
    let fields = &fields[..used];
    let fill = size.saturating_sub(fields.len() + 2);
    let body_len = fields.len() + fill + 2;
    out.clear();
    match proto {
        Proto::Pubsubd => {
            let _ = write!(
                out,
                "PUT /{chan}/load HTTP/1.1\r\nHost: bench\r\nContent-Length: {body_len}\r\n\r\n"
            );
        }
        Proto::Nchan => {
            let _ = write!(
                out,
                "POST /pub?id={chan} HTTP/1.1\r\nHost: bench\r\nContent-Length: {body_len}\r\n\r\n"
            );
        }
        Proto::Mqtt => mqtt::publish_head(out, chan, body_len),
        Proto::Pushpin => {
            // The body goes in a JSON string: its quotes escaped, and the
            // line's `\n` written as an escape.
            // Every quote of the fields, and the closing one, gets a `\`.
            let quotes = fields.iter().filter(|&&b| b == b'"').count() + 1;
            let before = PUSHPIN_ITEM_HEAD.len() + chan.len() + PUSHPIN_ITEM_MID.len();
            let len = before + body_len + quotes + 2 + PUSHPIN_ITEM_TAIL.len();
            let _ = write!(
                out,
                "POST /publish/ HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
            );
            out.extend_from_slice(PUSHPIN_ITEM_HEAD.as_bytes());
            out.extend_from_slice(chan.as_bytes());
            out.extend_from_slice(PUSHPIN_ITEM_MID.as_bytes());
            for &b in fields {
                if b == b'"' {
                    out.push(b'\\');
                }
                out.push(b);
            }
            out.resize(out.len() + fill, b'x');
            out.extend_from_slice(b"\\\"}\\n");
            out.extend_from_slice(PUSHPIN_ITEM_TAIL.as_bytes());
            return;
        }
    }
    out.extend_from_slice(fields);
    out.resize(out.len() + fill, b'x');
    out.extend_from_slice(b"\"}");
    if proto == Proto::Mqtt {
        out.extend_from_slice(&mqtt::PINGREQ);
    }
}

/// Pushpin's publish body around the channel and the escaped content.
const PUSHPIN_ITEM_HEAD: &str = r#"{"items":[{"channel":""#;
const PUSHPIN_ITEM_MID: &str = r#"","formats":{"http-stream":{"content":""#;
const PUSHPIN_ITEM_TAIL: &str = r#""}}}]}"#;

/// A response head: status and how its body is delimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub head_len: usize,
    pub content_length: Option<usize>,
    pub chunked: bool,
    pub close: bool,
    /// `Content-Type: text/event-stream` (Server-Sent Events).
    pub event_stream: bool,
    /// `Content-Encoding: gzip`.
    pub gzip: bool,
}

/// Parses a response head from the start of `buf`; `Ok(None)` = need more.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<ResponseHead>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(head_len)) => {
            let mut head = ResponseHead {
                status: resp.code.unwrap_or(0),
                head_len,
                content_length: None,
                chunked: false,
                close: resp.version == Some(0),
                event_stream: false,
                gzip: false,
            };
            for h in resp.headers.iter() {
                // Only the four headers that matter are looked at (this
                // runs once per publish answer: no allocation for others).
                let value = || String::from_utf8_lossy(h.value).to_ascii_lowercase();
                if h.name.eq_ignore_ascii_case("content-length") {
                    head.content_length = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok());
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    head.chunked = value().contains("chunked");
                } else if h.name.eq_ignore_ascii_case("content-type") {
                    head.event_stream = value().starts_with("text/event-stream");
                } else if h.name.eq_ignore_ascii_case("content-encoding") {
                    head.gzip = value().trim() == "gzip";
                } else if h.name.eq_ignore_ascii_case("connection") {
                    let v = value();
                    if v.contains("close") {
                        head.close = true;
                    } else if v.contains("keep-alive") {
                        head.close = false;
                    }
                }
            }
            Ok(Some(head))
        }
        Err(e) => Err(format!(
            "bad response head ({e}): {:?}",
            String::from_utf8_lossy(&buf[..buf.len().min(120)])
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_round_trip() {
        let mut req = Vec::new();
        let stamp = Stamp {
            run: 3,
            publisher: 1,
            seq: 42,
            t_ns: 123456789,
        };
        publish_request(Proto::Pubsubd, "bench", stamp, 200, &mut req);
        let text = String::from_utf8(req).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("PUT /bench/load HTTP/1.1"));
        assert!(head.contains("Content-Length: 200"));
        assert_eq!(body.len(), 200);
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["s"], 42);
        // pubsubd appends its keys after the publisher's.
        let line = format!(
            "{},\"pubsub_topics\":[\"bench\"]}}",
            &body[..body.len() - 1]
        );
        assert_eq!(parse_line(line.as_bytes()), Line::Event(stamp));
        assert_eq!(parse_line(br#"{"stillalive":1.5}"#), Line::Ping);
        assert_eq!(parse_line(b"{}"), Line::Other);
    }

    #[test]
    fn every_protocol_carries_the_same_body() {
        let stamp = Stamp {
            run: 2,
            publisher: 7,
            seq: 9,
            t_ns: 5,
        };
        let mut req = Vec::new();
        publish_request(Proto::Pushpin, "bench", stamp, 200, &mut req);
        let text = String::from_utf8(req.clone()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("POST /publish/ HTTP/1.1"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        let content = v["items"][0]["formats"]["http-stream"]["content"]
            .as_str()
            .unwrap();
        assert_eq!(v["items"][0]["channel"], "bench");
        assert_eq!(content.len(), 201);
        assert!(content.ends_with('\n'));
        assert_eq!(parse_line(&content.as_bytes()[..200]), Line::Event(stamp));

        publish_request(Proto::Mqtt, "bench", stamp, 200, &mut req);
        let p = mqtt::next_packet(&req).unwrap().unwrap();
        assert_eq!(&req[p.len..], &mqtt::PINGREQ);
        let mut d = Decoder::Mqtt(mqtt::StreamDecoder::default());
        let mut got = Vec::new();
        d.feed(&req[..p.len], &mut |l| got.push(l)).unwrap();
        assert_eq!(got, vec![Line::Event(stamp)]);
        assert_eq!(
            Proto::Mqtt
                .answer(&[0xD0, 0])
                .unwrap()
                .map(|a| (a.len, a.status, a.hello)),
            Some((2, 200, false))
        );
    }

    #[test]
    fn response_heads() {
        let r = parse_response_head(
            b"HTTP/1.1 202 Accepted\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.status, r.content_length, r.close), (202, Some(5), false));
        assert_eq!(parse_response_head(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
    }

    #[test]
    fn sse_is_asked_for_and_checked() {
        let sse_ask = Ask {
            sse: true,
            ..Ask::default()
        };
        let req = Proto::Pubsubd.subscribe_request("bench", sse_ask);
        assert_eq!(
            req,
            b"GET /bench HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n"
        );
        let sse = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
        let plain = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (len, dec) = Proto::Pubsubd.subscribed(sse, sse_ask).unwrap().unwrap();
        assert_eq!(len, sse.len());
        assert!(matches!(dec, Decoder::Sse(_)));
        assert!(Proto::Pubsubd.subscribed(plain, sse_ask).is_err());
        let (_, dec) = Proto::Pubsubd
            .subscribed(plain, Ask::default())
            .unwrap()
            .unwrap();
        assert!(matches!(dec, Decoder::Http(_)));
    }
}
