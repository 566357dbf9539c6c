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
