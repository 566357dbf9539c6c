//! A subscriber's stream as lines: the body de-chunked (or taken raw)
//! into `\n`-ended lines (`StreamDecoder`), and what each line is
//! (`Line`: an event and its `Stamp`, a ping, anything else). Shared by
//! the protocols' decoders (`proto`) and the SSE decoder (`sse`), which
//! `proto` picks from.
//!
//! Invariant: a line is handed on once, whole, however the bytes were
//! split between reads; a "line" over 1 MiB is dropped, not buffered.

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

/// Turns a stream body (chunked or not, gzip-encoded or not) into lines.
#[derive(Debug)]
pub struct StreamDecoder {
    chunk: Option<Chunk>,
    /// An incomplete line carried over between reads.
    partial: Vec<u8>,
    /// A gzip body's inflater (a subscriber's own: about 40 KB each).
    gzip: Option<Box<Gunzip>>,
}

/// Inflating a gzip body as it arrives (its 10-byte header skipped; the
/// trailer is not checked here, the server's tests do that).
struct Gunzip {
    inflate: flate2::Decompress,
    header_left: usize,
    out: Vec<u8>,
}

impl std::fmt::Debug for Gunzip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gunzip")
    }
}

impl StreamDecoder {
    pub fn new(chunked: bool) -> StreamDecoder {
        StreamDecoder {
            chunk: chunked.then_some(Chunk::Size(0)),
            partial: Vec::new(),
            gzip: None,
        }
    }

    /// A decoder for a gzip-encoded body.
    pub fn gzip(chunked: bool) -> StreamDecoder {
        StreamDecoder {
            gzip: Some(Box::new(Gunzip {
                inflate: flate2::Decompress::new(false),
                header_left: 10,
                out: Vec::with_capacity(64 * 1024),
            })),
            ..StreamDecoder::new(chunked)
        }
    }

    /// Body bytes: inflated first for a gzip body, then split into lines.
    fn body(&mut self, data: &[u8], on_line: &mut impl FnMut(&[u8])) -> Result<(), String> {
        let Some(mut gz) = self.gzip.take() else {
            self.lines(data, on_line);
            return Ok(());
        };
        let skip = gz.header_left.min(data.len());
        gz.header_left -= skip;
        let mut input = &data[skip..];
        while !input.is_empty() {
            gz.out.clear();
            let before = gz.inflate.total_in();
            let g = &mut *gz;
            g.inflate
                .decompress_vec(input, &mut g.out, flate2::FlushDecompress::Sync)
                .map_err(|e| format!("gzip: {e}"))?;
            let used = (g.inflate.total_in() - before) as usize;
            input = &input[used..];
            let out = std::mem::take(&mut g.out);
            self.lines(&out, on_line);
            gz.out = out;
            if used == 0 {
                break;
            }
        }
        self.gzip = Some(gz);
        Ok(())
    }

    pub fn finished(&self) -> bool {
        self.chunk == Some(Chunk::Done)
    }

    /// Feeds bytes; calls `on_line` for every complete line. Returns an
    /// error on malformed chunk framing.
    pub fn feed(&mut self, mut data: &[u8], on_line: &mut impl FnMut(&[u8])) -> Result<(), String> {
        let Some(mut state) = self.chunk else {
            return self.body(data, on_line);
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
                    self.body(&data[..take], on_line)?;
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

    /// A gzip body as pubsubd sends it: the header, then each event's
    /// deflate up to a flush, one chunk each; decoded split anywhere.
    #[test]
    fn gzip_lines_split_anywhere() {
        let mut c = flate2::Compress::new(flate2::Compression::new(6), false);
        let mut wire = b"a\r\n".to_vec();
        wire.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
        wire.extend_from_slice(b"\r\n");
        for line in [&b"{\"a\":1}\n"[..], b"{\"stillalive\": 1.5}\n"] {
            let mut out = Vec::with_capacity(256);
            c.compress_vec(line, &mut out, flate2::FlushCompress::Full)
                .unwrap();
            wire.extend_from_slice(format!("{:x}\r\n", out.len()).as_bytes());
            wire.extend_from_slice(&out);
            wire.extend_from_slice(b"\r\n");
        }
        for split in 0..wire.len() {
            let mut d = StreamDecoder::gzip(true);
            let mut got = Vec::new();
            let mut on = |l: &[u8]| got.push(l.to_vec());
            d.feed(&wire[..split], &mut on).unwrap();
            d.feed(&wire[split..], &mut on).unwrap();
            let want = vec![b"{\"a\":1}".to_vec(), b"{\"stillalive\": 1.5}".to_vec()];
            assert_eq!(got, want, "split at {split}");
        }
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
}
