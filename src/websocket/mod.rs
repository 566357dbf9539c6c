//! WebSocket (RFC 6455) as a framing of the event stream, without I/O:
//! the opening handshake (`handshake.rs`: what a valid upgrade request is,
//! the accept key, permessage-deflate negotiation), the frames a client
//! may send (`frames.rs`: a pure parser with limits), and here the frames
//! the server sends.
//!
//! The stream is one-way: the server sends one text frame per event (the
//! event's JSON, exactly the stream's line without its newline), a ping
//! control frame per keep-alive tick, and a close frame at the end; from
//! the client it takes pings (answered with pongs), pongs (ignored) and a
//! close (echoed). Server frames are never masked (RFC 6455 §5.1).
//!
//! Invariant: every frame built here is complete and valid on its own, so
//! one built per event is shared by every subscriber that receives it.

pub mod frames;
pub mod handshake;

/// Whether this build serves WebSocket (feature `websocket`, on by
/// default). Every path into the WebSocket code asks this constant first
/// (`RequestHead::upgrade_websocket`, `Framing::is_websocket`), so the core
/// build leaves that code out and answers an upgrade with a plain stream.
pub const AVAILABLE: bool = cfg!(feature = "websocket");

/// Continuation, text, binary, close, ping, pong (RFC 6455 §5.2).
pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Largest payload of a control frame (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Close codes the server sends (RFC 6455 §7.4.1).
pub const CLOSE_NORMAL: u16 = 1000;
/// The server is going away (shutting down).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// The client broke the protocol.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// The client sent a data frame: this stream takes none.
pub const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
/// A close reason that is not UTF-8.
pub const CLOSE_INVALID_DATA: u16 = 1007;

/// One unmasked frame with FIN set: `opcode`, RSV1 when `compressed`
/// (permessage-deflate), `payload`, with the shortest length encoding.
pub fn frame(opcode: u8, compressed: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | if compressed { 0x40 } else { 0 } | (opcode & 0x0F));
    let len = payload.len();
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// A close frame with `code` and a short reason (cut to fit a control
/// frame, at a character boundary).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(OP_CLOSE, false, &payload)
}

/// The answer to a client's close: the same code, or an empty close frame
/// if it sent none.
pub fn close_echo(code: Option<u16>) -> Vec<u8> {
    match code {
        Some(code) => frame(OP_CLOSE, false, &code.to_be_bytes()),
        None => frame(OP_CLOSE, false, &[]),
    }
}

/// A ping control frame carrying `payload` (cut to 125 bytes).
pub fn ping_frame(payload: &[u8]) -> Vec<u8> {
    frame(
        OP_PING,
        false,
        &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_encodings_are_the_shortest() {
        assert_eq!(frame(OP_TEXT, false, b"{}"), b"\x81\x02{}");
        let f = frame(OP_TEXT, true, &[b'x'; 125]);
        assert_eq!(&f[..2], b"\xc1\x7d");
        let f = frame(OP_TEXT, false, &[b'x'; 126]);
        assert_eq!(&f[..4], b"\x81\x7e\x00\x7e");
        assert_eq!(f.len(), 130);
        let f = frame(OP_TEXT, false, &[b'x'; 65_536]);
        assert_eq!(&f[..10], b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00");
    }

    #[test]
    fn control_frames() {
        assert_eq!(close_echo(None), b"\x88\x00");
        assert_eq!(close_echo(Some(1000)), b"\x88\x02\x03\xe8");
        let f = close_frame(CLOSE_GOING_AWAY, "shutting down");
        assert_eq!(&f[..4], b"\x88\x0f\x03\xe9");
        assert_eq!(&f[4..], b"shutting down");
        let long = "é".repeat(100);
        let f = close_frame(1002, &long);
        assert!(f.len() - 2 <= MAX_CONTROL_PAYLOAD);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
        assert_eq!(ping_frame(&[1; 200]).len(), 2 + 125);
    }
}
