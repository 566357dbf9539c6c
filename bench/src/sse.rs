//! Server-Sent Events on a subscriber's stream: pubsubd answers a
//! subscribe with `Accept: text/event-stream` with blocks of fields ended
//! by a blank line (`retry: 3000`, then `id: <cursor>` + `data: <event
//! JSON>` per event, and `: stillalive <time>` comments as pings), inside
//! the same HTTP/1.1 chunked framing as its plain stream. This turns those
//! blocks back into the generator's `Line`s: an event is the `data:` line
//! of a block, classified when the block ends.

use crate::lines::{parse_line, Line, StreamDecoder};

/// De-chunks the body into lines, then assembles SSE blocks from them.
#[derive(Debug)]
pub struct SseDecoder {
    lines: StreamDecoder,
    block: Block,
}

/// The fields of the block being read.
#[derive(Debug, Default)]
struct Block {
    /// `data:` lines seen in this block.
    data_lines: u32,
    /// What the block's data is, once it has one `data:` line.
    pending: Option<Line>,
}

impl SseDecoder {
    pub fn new(chunked: bool) -> SseDecoder {
        SseDecoder {
            lines: StreamDecoder::new(chunked),
            block: Block::default(),
        }
    }

    pub fn finished(&self) -> bool {
        self.lines.finished()
    }

    /// Feeds bytes; calls `on_line` for every event (at the blank line that
    /// ends its block), every ping comment and every field we do not know.
    pub fn feed(&mut self, data: &[u8], on_line: &mut impl FnMut(Line)) -> Result<(), String> {
        let block = &mut self.block;
        self.lines
            .feed(data, &mut |l: &[u8]| block.line(l, on_line))
    }
}

impl Block {
    fn line(&mut self, line: &[u8], on_line: &mut impl FnMut(Line)) {
        // The SSE grammar also allows CRLF line ends.
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.data_lines > 0 {
                on_line(self.pending.take().unwrap_or(Line::Other));
            }
            *self = Block::default();
            return;
        }
        if let Some(comment) = line.strip_prefix(b":") {
            if memchr::memmem::find(comment, b"stillalive").is_some() {
                on_line(Line::Ping);
            }
            return;
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                self.data_lines += 1;
                // pubsubd writes the event JSON on one line: a second
                // `data:` line means the block is not one of our events.
                self.pending = Some(if self.data_lines == 1 {
                    parse_line(value)
                } else {
                    Line::Other
                });
            }
            b"id" | b"retry" | b"event" => {}
            _ => on_line(Line::Other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lines::Stamp;

    fn chunk(out: &mut Vec<u8>, data: &str) {
        out.extend_from_slice(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes());
    }

    #[test]
    fn blocks_split_anywhere() {
        let body = r#"{"r":2,"p":1,"s":7,"t":99,"pad":"x","pubsub_cursor":"c1"}"#;
        let mut wire = Vec::new();
        chunk(&mut wire, "retry: 3000\n\n");
        chunk(&mut wire, &format!("id: c1\ndata: {body}\n\n"));
        chunk(&mut wire, ": stillalive 1800000005.0\n\n");
        // Two events in one chunk (a writev gathers queued frames).
        chunk(
            &mut wire,
            &format!("id: c2\ndata: {body}\n\nid: c3\r\ndata:{body}\r\n\r\n"),
        );
        chunk(&mut wire, "data: a\ndata: b\n\n");
        chunk(&mut wire, "what: ever\n\n");
        wire.extend_from_slice(b"0\r\n\r\n");
        let ev = Line::Event(Stamp {
            run: 2,
            publisher: 1,
            seq: 7,
            t_ns: 99,
        });
        for split in 0..wire.len() {
            let mut d = SseDecoder::new(true);
            let mut got = Vec::new();
            let mut on = |l: Line| got.push(l);
            d.feed(&wire[..split], &mut on).unwrap();
            d.feed(&wire[split..], &mut on).unwrap();
            assert_eq!(
                got,
                vec![ev, Line::Ping, ev, ev, Line::Other, Line::Other],
                "split at {split}"
            );
            assert!(d.finished());
        }
    }

    #[test]
    fn an_event_waits_for_its_blank_line() {
        let mut d = SseDecoder::new(false);
        let mut got = Vec::new();
        d.feed(
            b"id: c\ndata: {\"r\":1,\"p\":0,\"s\":0,\"t\":5}\n",
            &mut |l| got.push(l),
        )
        .unwrap();
        assert!(got.is_empty());
        d.feed(b"\n", &mut |l| got.push(l)).unwrap();
        assert_eq!(got.len(), 1);
        assert!(matches!(got[0], Line::Event(_)));
    }
}
