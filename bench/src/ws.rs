//! WebSocket on a subscriber's connection (pubsubd's and nchan's
//! `nchan_subscriber websocket`): the opening handshake the generator
//! sends, and the server's frames turned back into the generator's
//! `Line`s: a text frame is one event, a ping control frame a keep-alive
//! (pubsubd's carry `{"stillalive": …}`; nchan's are counted the same), a
//! close ends the stream. The generator never answers pings: neither
//! server needs it to keep a subscriber.

use crate::lines::{parse_line, Line};

/// A fixed key is fine: the server only hashes it.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The handshake for `path`.
pub fn request(path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
    )
    .into_bytes()
}

/// Server frames in, lines out; a frame split across reads waits in `buf`.
#[derive(Debug, Default)]
pub struct WsDecoder {
    buf: Vec<u8>,
    closed: bool,
}

impl WsDecoder {
    pub fn finished(&self) -> bool {
        self.closed
    }

    pub fn feed(&mut self, data: &[u8], on_line: &mut impl FnMut(Line)) -> Result<(), String> {
        if self.buf.is_empty() {
            let used = self.frames(data, on_line)?;
            self.buf.extend_from_slice(&data[used..]);
        } else {
            self.buf.extend_from_slice(data);
            let buf = std::mem::take(&mut self.buf);
            let used = self.frames(&buf, on_line)?;
            self.buf = buf[used..].to_vec();
        }
        Ok(())
    }

    /// Handles every complete frame at the front of `data`; returns the
    /// bytes they took.
    fn frames(&mut self, data: &[u8], on_line: &mut impl FnMut(Line)) -> Result<usize, String> {
        let mut at = 0;
        while let Some((opcode, payload, len)) = frame(&data[at..])? {
            at += len;
            match opcode {
                1 => on_line(parse_line(payload)),
                9 => on_line(Line::Ping),
                8 => self.closed = true,
                _ => on_line(Line::Other),
            }
        }
        Ok(at)
    }
}

/// A frame: opcode, payload, its total length.
type Frame<'a> = (u8, &'a [u8], usize);

/// One complete unmasked frame at the front of `b`.
fn frame(b: &[u8]) -> Result<Option<Frame<'_>>, String> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[1] & 0x80 != 0 {
        return Err("a masked frame from the server".into());
    }
    let (len, at) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
        127 if b.len() >= 10 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[2..10]);
            (
                usize::try_from(u64::from_be_bytes(n)).map_err(|e| e.to_string())?,
                10,
            )
        }
        126 | 127 => return Ok(None),
        n => (usize::from(n), 2),
    };
    if b.len() < at + len {
        return Ok(None);
    }
    Ok(Some((b[0] & 0x0f, &b[at..at + len], at + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_anywhere() {
        let event = br#"{"r":1,"p":0,"s":7,"t":99,"pad":"xx"}"#;
        let mut wire = vec![0x81, event.len() as u8];
        wire.extend_from_slice(event);
        wire.extend_from_slice(b"\x89\x05hello\x81\x7e\x01\x00");
        wire.extend_from_slice(&[b'x'; 256]);
        wire.extend_from_slice(b"\x88\x02\x03\xe9");
        for step in 1..wire.len() {
            let mut d = WsDecoder::default();
            let mut got = Vec::new();
            for piece in wire.chunks(step) {
                d.feed(piece, &mut |l| got.push(l)).unwrap();
            }
            assert_eq!(got.len(), 3, "step {step}");
            assert!(matches!(got[0], Line::Event(s) if s.seq == 7));
            assert_eq!(got[1], Line::Ping);
            assert_eq!(got[2], Line::Other);
            assert!(d.finished());
        }
    }
}
