//! `WsClient`: a raw WebSocket client over `Conn`, for the black-box
//! tests: sends the opening handshake (with any extra headers), masks
//! every frame it sends, and reads the server's frames one at a time with
//! a deadline. Nothing here is clever on purpose: the tests check the
//! server's bytes, so the client must not paper over them.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Conn, Response, T};

/// The RFC 6455 §1.3 example key and its accept value.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// One frame the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsFrame {
    pub fin: bool,
    pub rsv1: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl WsFrame {
    /// A close frame's status code.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

pub struct WsClient {
    pub conn: Conn,
    pub head: Response,
}

/// The handshake request for `path` with extra headers.
pub fn ws_request(path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {WS_KEY}\r\n"
    );
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    req.into_bytes()
}

/// A frame as a client sends it: `first_byte` (FIN, RSV, opcode), masked
/// (the crate's helper; Python's websockets and chromium check the same
/// bytes from their side).
pub fn masked(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    pubsubd::websocket::frames::client_frame(first_byte, [0x5a, 0x13, 0xc7, 0x08], payload)
}

impl WsClient {
    /// Opens a WebSocket on `path`; asserts `101` and the accept key.
    pub fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> WsClient {
        let mut conn = Conn::connect(addr);
        conn.send(&ws_request(path, headers));
        let head = conn
            .read_head(Instant::now() + T)
            .unwrap_or_else(|e| panic!("no handshake answer for {path}: {e}"));
        assert_eq!(head.status, 101, "{}", head.head_str());
        assert_eq!(head.header("Sec-WebSocket-Accept"), Some(WS_ACCEPT));
        WsClient { conn, head }
    }

    pub fn send_frame(&mut self, first_byte: u8, payload: &[u8]) {
        self.conn.send(&masked(first_byte, payload));
    }

    /// The next frame; `Ok(None)` when the server closed the connection.
    pub fn read_frame(&mut self, deadline: Instant) -> io::Result<Option<WsFrame>> {
        let Some(b) = self.read_or_eof(2, deadline)? else {
            return Ok(None);
        };
        if b[1] & 0x80 != 0 {
            return Err(io::Error::other("the server masked a frame"));
        }
        let len = match b[1] & 0x7f {
            126 => {
                let n = self.conn.read_n(2, deadline)?;
                u64::from(u16::from_be_bytes([n[0], n[1]]))
            }
            127 => {
                let n = self.conn.read_n(8, deadline)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(&n);
                u64::from_be_bytes(a)
            }
            n => u64::from(n),
        };
        let len = usize::try_from(len).map_err(io::Error::other)?;
        let payload = self.conn.read_n(len, deadline)?;
        Ok(Some(WsFrame {
            fin: b[0] & 0x80 != 0,
            rsv1: b[0] & 0x40 != 0,
            opcode: b[0] & 0x0f,
            payload,
        }))
    }

    /// `n` bytes, or `None` at a clean end of stream before the first.
    fn read_or_eof(&mut self, n: usize, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
        match self.conn.read_n(n, deadline) {
            Ok(b) => Ok(Some(b)),
            Err(e)
                if e.kind() == io::ErrorKind::UnexpectedEof && self.conn.buffered().is_empty() =>
            {
                Ok(None)
            }
            Err(e) if super::is_reset(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The next text frame's JSON (pings skipped), or `None` when the
    /// server closed with a close frame or the connection ended.
    pub fn next_event(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let frame = self.read_frame(deadline).expect("a frame in time")?;
            match frame.opcode {
                9 => continue,
                1 => {
                    assert!(frame.fin && !frame.rsv1, "{frame:?}");
                    return Some(serde_json::from_slice(&frame.payload).expect("JSON"));
                }
                8 => return None,
                _ => panic!("unexpected frame {frame:?}"),
            }
        }
    }

    /// The `n` of each event up to the sentinel.
    pub fn ns_until_sentinel(&mut self) -> Vec<u64> {
        let mut out = Vec::new();
        loop {
            let v = self.next_event(T).expect("the stream ended early");
            if v["sentinel"] == Value::Bool(true) {
                return out;
            }
            out.push(v["n"].as_u64().expect("n"));
        }
    }

    /// Reads frames until the server closes the connection; returns them.
    pub fn read_to_close(&mut self, timeout: Duration) -> Vec<WsFrame> {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::new();
        while let Some(f) = self.read_frame(deadline).expect("frames, then the end") {
            frames.push(f);
        }
        frames
    }
}
