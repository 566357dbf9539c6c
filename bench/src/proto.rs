//! The "target" abstraction: how to publish to and subscribe on each kind of
//! server, and how to take a subscriber's byte stream apart into events.
//!
//! - `pubsubd` (and Apache PyPubSub): `PUT /bench/load` with a JSON body;
//!   subscribers `GET /bench` and get a chunked stream of `\n`-ended JSON
//!   lines (plus `{"stillalive": …}` pings).
//! - `nchan`: `POST /pub?id=bench`; subscribers `GET /sub/bench` on an
//!   `nchan_subscriber http-raw-stream` location: the message bodies,
//!   each followed by `\n` (chunked or raw, whichever the server picks).
//!
//! Every published body starts `{"r":RUN,"p":PUB,"s":SEQ,"t":SEND_NS,` and
//! is padded to the configured size, so a receiver can tell which phase,
//! which publisher connection and which event it got, and how late.

use std::io::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Pubsubd,
    Nchan,
}

impl Proto {
    pub fn parse(s: &str) -> Option<Proto> {
        match s {
            "pubsubd" | "pypubsub" => Some(Proto::Pubsubd),
            "nchan" => Some(Proto::Nchan),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Pubsubd => "pubsubd",
            Proto::Nchan => "nchan",
        }
    }

    /// The subscribe request for channel/topic `chan`.
    pub fn subscribe_request(self, chan: &str) -> Vec<u8> {
        match self {
            Proto::Pubsubd => format!("GET /{chan} HTTP/1.1\r\nHost: bench\r\n\r\n"),
            Proto::Nchan => format!("GET /sub/{chan} HTTP/1.1\r\nHost: bench\r\n\r\n"),
        }
        .into_bytes()
    }

    /// Appends the head of a publish request carrying `len` body bytes.
    pub fn write_publish_head(self, chan: &str, len: usize, out: &mut Vec<u8>) {
        let _ = match self {
            Proto::Pubsubd => write!(
                out,
                "PUT /{chan}/load HTTP/1.1\r\nHost: bench\r\nContent-Length: {len}\r\n\r\n"
            ),
            Proto::Nchan => write!(
                out,
                "POST /pub?id={chan} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len}\r\n\r\n"
            ),
        };
    }
}

/// Builds one publish request (head + body of exactly `size` bytes when
/// `size` is large enough for the fixed fields).
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
    out.clear();
    proto.write_publish_head(chan, fields.len() + fill + 2, out);
    out.extend_from_slice(fields);
    out.resize(out.len() + fill, b'x');
    out.extend_from_slice(b"\"}");
}

/// What identifies an event: phase, publisher connection, its sequence
/// number on that connection, and the send time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub run: u32,
    pub publisher: u32,
    pub seq: u32,
    pub t_ns: u64,
}

/// What one line of a subscriber stream was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    Event(Stamp),
    Ping,
    Other,
}

fn take_num(s: &[u8], prefix: &[u8]) -> Option<(u64, usize)> {
    let rest = s.strip_prefix(prefix)?;
    let mut v: u64 = 0;
    let mut n = 0;
    for &b in rest {
        if !b.is_ascii_digit() {
            break;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        n += 1;
    }
    if n == 0 {
        return None;
    }
    Some((v, prefix.len() + n))
}

/// Classifies one line (without its `\n`).
pub fn parse_line(line: &[u8]) -> Line {
    let parse = || -> Option<Line> {
        let (run, a) = take_num(line, b"{\"r\":")?;
        let (publisher, b) = take_num(&line[a..], b",\"p\":")?;
        let (seq, c) = take_num(&line[a + b..], b",\"s\":")?;
        let (t_ns, _) = take_num(&line[a + b + c..], b",\"t\":")?;
        Some(Line::Event(Stamp {
            run: run as u32,
            publisher: publisher as u32,
            seq: seq as u32,
            t_ns,
        }))
    };
    if let Some(l) = parse() {
        return l;
    }
    if memchr::memmem::find(line, b"stillalive").is_some() {
        Line::Ping
    } else {
        Line::Other
    }
}

/// A response head: status and how its body is delimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub head_len: usize,
    pub content_length: Option<usize>,
    pub chunked: bool,
    pub close: bool,
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
            };
            for h in resp.headers.iter() {
                // Only the three headers that matter are looked at (this
                // runs once per publish answer: no allocation for others).
                let value = || String::from_utf8_lossy(h.value).to_ascii_lowercase();
                if h.name.eq_ignore_ascii_case("content-length") {
                    head.content_length = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok());
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    head.chunked = value().contains("chunked");
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size; the value so far.
    Size(usize),
    /// Skipping a chunk extension up to `\n`.
    Ext(usize),
    /// This many data bytes left in the chunk.
    Data(usize),
    /// Skipping the `\r\n` after a chunk's data.
    DataEnd,
    /// The last chunk was seen.
    Done,
}

/// Turns a stream body (chunked or not) into lines.
#[derive(Debug)]
pub struct StreamDecoder {
    chunk: Option<Chunk>,
    /// An incomplete line carried over between reads.
    partial: Vec<u8>,
}

impl StreamDecoder {
    pub fn new(chunked: bool) -> StreamDecoder {
        StreamDecoder {
            chunk: chunked.then_some(Chunk::Size(0)),
            partial: Vec::new(),
        }
    }

    pub fn finished(&self) -> bool {
        self.chunk == Some(Chunk::Done)
    }

    /// Feeds bytes; calls `on_line` for every complete line. Returns an
    /// error on malformed chunk framing.
    pub fn feed(&mut self, mut data: &[u8], on_line: &mut impl FnMut(&[u8])) -> Result<(), String> {
        let Some(mut state) = self.chunk else {
            self.lines(data, on_line);
            return Ok(());
        };
        while !data.is_empty() {
            match state {
                Chunk::Size(n) => {
                    let b = data[0];
                    data = &data[1..];
                    state = match b {
                        b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                            let d = (b as char).to_digit(16).unwrap_or(0) as usize;
                            Chunk::Size(
                                n.checked_mul(16)
                                    .and_then(|v| v.checked_add(d))
                                    .ok_or("chunk size overflow")?,
                            )
                        }
                        b'\r' | b';' | b' ' => Chunk::Ext(n),
                        b'\n' if n == 0 => Chunk::Done,
                        b'\n' => Chunk::Data(n),
                        _ => return Err(format!("bad chunk size byte {b:#x}")),
                    };
                }
                Chunk::Ext(n) => {
                    match memchr::memchr(b'\n', data) {
                        Some(i) => {
                            data = &data[i + 1..];
                            state = if n == 0 { Chunk::Done } else { Chunk::Data(n) };
                        }
                        None => data = &[],
                    };
                }
                Chunk::Data(n) => {
                    let take = n.min(data.len());
                    self.lines(&data[..take], on_line);
                    data = &data[take..];
                    state = if take == n {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(n - take)
                    };
                }
                Chunk::DataEnd => match memchr::memchr(b'\n', data) {
                    Some(i) => {
                        data = &data[i + 1..];
                        state = Chunk::Size(0);
                    }
                    None => data = &[],
                },
                Chunk::Done => break,
            }
        }
        self.chunk = Some(state);
        Ok(())
    }

    fn lines(&mut self, mut data: &[u8], on_line: &mut impl FnMut(&[u8])) {
        while let Some(i) = memchr::memchr(b'\n', data) {
            if self.partial.is_empty() {
                on_line(&data[..i]);
            } else {
                self.partial.extend_from_slice(&data[..i]);
                on_line(&self.partial);
                self.partial.clear();
            }
            data = &data[i + 1..];
        }
        if !data.is_empty() {
            if self.partial.len() + data.len() > 1 << 20 {
                // A "line" of a megabyte is not ours; drop it.
                self.partial.clear();
            }
            self.partial.extend_from_slice(data);
        }
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
    fn chunked_lines_split_anywhere() {
        let wire = b"7\r\n{\"a\":1\n\r\n4;x=y\r\n{}\n\n\r\n0\r\n\r\n";
        for split in 0..wire.len() {
            let mut d = StreamDecoder::new(true);
            let mut got = Vec::new();
            let mut on = |l: &[u8]| got.push(l.to_vec());
            d.feed(&wire[..split], &mut on).unwrap();
            d.feed(&wire[split..], &mut on).unwrap();
            assert_eq!(
                got,
                vec![b"{\"a\":1".to_vec(), b"{}".to_vec(), b"".to_vec()]
            );
            assert!(d.finished());
        }
    }

    #[test]
    fn raw_lines() {
        let mut d = StreamDecoder::new(false);
        let mut got = Vec::new();
        d.feed(b"ab\ncd", &mut |l: &[u8]| got.push(l.to_vec()))
            .unwrap();
        d.feed(b"e\n", &mut |l: &[u8]| got.push(l.to_vec()))
            .unwrap();
        assert_eq!(got, vec![b"ab".to_vec(), b"cde".to_vec()]);
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
}
