//! The frames a WebSocket client sends to a one-way event stream, parsed
//! from the front of the connection's input buffer: pure, no allocation
//! but a control frame's unmasked payload (at most 125 bytes).
//!
//! What a client may send here is control frames only: a ping (answered
//! with a pong), a pong (ignored), a close (echoed). A data frame ends the
//! stream with 1003 as soon as its first two bytes are in, so its payload
//! is never buffered; every protocol error (an unmasked frame, reserved
//! bits, an unknown opcode, a fragmented or oversize control frame, a bad
//! close payload) ends it with 1002, a close reason that is not UTF-8 with
//! 1007. Invariant: the verdict does not depend on how the bytes were
//! split across reads (`tests::splits_do_not_matter`, the `ws_frames` fuzz
//! target), and no input needs more than 2 + 8 + 4 + 125 bytes buffered.

use super::{
    CLOSE_INVALID_DATA, CLOSE_PROTOCOL_ERROR, CLOSE_UNSUPPORTED_DATA, MAX_CONTROL_PAYLOAD,
    OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT,
};

/// The most bytes one frame the parser accepts can take.
pub const MAX_FRAME: usize = 2 + 4 + MAX_CONTROL_PAYLOAD;

/// A complete frame from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A ping: answer with a pong carrying this payload.
    Ping(Vec<u8>),
    /// A pong: nothing to do.
    Pong,
    /// A close, with its status code if it carried one.
    Close(Option<u16>),
}

/// Why the stream ends: the close code to send, and a reason for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fail {
    pub code: u16,
    pub reason: &'static str,
}

const fn protocol(reason: &'static str) -> Fail {
    Fail {
        code: CLOSE_PROTOCOL_ERROR,
        reason,
    }
}

/// Parses the frame at the front of `buf`. `Ok(None)`: incomplete, read
/// more; `Ok(Some((frame, n)))`: the frame took the first `n` bytes.
/// `deflate`: permessage-deflate was negotiated (RSV1 is then allowed on
/// the first frame of a data message, which ends the stream anyway).
pub fn parse(buf: &[u8], deflate: bool) -> Result<Option<(Incoming, usize)>, Fail> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let (fin, rsv1, opcode) = (b0 & 0x80 != 0, b0 & 0x40 != 0, b0 & 0x0F);
    if b0 & 0x30 != 0 {
        return Err(protocol("reserved bits set"));
    }
    let control = opcode & 0x08 != 0;
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
        _ => return Err(protocol("unknown opcode")),
    }
    if rsv1 && (control || opcode == OP_CONTINUATION || !deflate) {
        return Err(protocol("reserved bit 1 set"));
    }
    if b1 & 0x80 == 0 {
        return Err(protocol("client frames must be masked"));
    }
    let len7 = usize::from(b1 & 0x7F);
    if !control {
        return Err(Fail {
            code: CLOSE_UNSUPPORTED_DATA,
            reason: "this stream takes no data frames",
        });
    }
    if !fin {
        return Err(protocol("fragmented control frame"));
    }
    if len7 > MAX_CONTROL_PAYLOAD {
        return Err(protocol("control frame over 125 bytes"));
    }
    let total = 2 + 4 + len7;
    if buf.len() < total {
        return Ok(None);
    }
    let mask = [buf[2], buf[3], buf[4], buf[5]];
    let mut payload: Vec<u8> = buf[6..total]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    let frame = match opcode {
        OP_PING => Incoming::Ping(std::mem::take(&mut payload)),
        OP_PONG => Incoming::Pong,
        _ => Incoming::Close(close_code(&payload)?),
    };
    Ok(Some((frame, total)))
}

/// The status code of a close frame's payload, checked (RFC 6455 §7.4).
fn close_code(payload: &[u8]) -> Result<Option<u16>, Fail> {
    match payload {
        [] => Ok(None),
        [_] => Err(protocol("close payload of one byte")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(protocol("invalid close code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(Fail {
                    code: CLOSE_INVALID_DATA,
                    reason: "close reason is not UTF-8",
                });
            }
            Ok(Some(code))
        }
    }
}

/// A masked frame as a client sends it (for tests and the fuzz seeds).
pub fn client_frame(first_byte: u8, mask: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first_byte];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn one(bytes: &[u8]) -> Result<Option<(Incoming, usize)>, Fail> {
        parse(bytes, false)
    }

    #[test]
    fn control_frames_from_a_client() {
        let ping = client_frame(0x89, MASK, b"hello");
        assert_eq!(
            one(&ping),
            Ok(Some((Incoming::Ping(b"hello".to_vec()), 11)))
        );
        let pong = client_frame(0x8A, MASK, b"x");
        assert_eq!(one(&pong), Ok(Some((Incoming::Pong, 7))));
        let close = client_frame(0x88, MASK, b"\x03\xe8bye");
        assert_eq!(one(&close), Ok(Some((Incoming::Close(Some(1000)), 11))));
        let empty_close = client_frame(0x88, MASK, b"");
        assert_eq!(one(&empty_close), Ok(Some((Incoming::Close(None), 6))));
        // Incomplete: wait.
        assert_eq!(one(&ping[..1]), Ok(None));
        assert_eq!(one(&ping[..10]), Ok(None));
        // Two frames back to back: one at a time.
        let both = [ping.clone(), pong.clone()].concat();
        assert_eq!(one(&both).unwrap().unwrap().1, ping.len());
    }

    #[test]
    fn each_protocol_error_has_its_code() {
        let code = |bytes: &[u8]| one(bytes).map(|_| ()).unwrap_err().code;
        // Data frames: 1003 at the header, whatever follows.
        assert_eq!(code(&client_frame(0x81, MASK, b"hi")[..2]), 1003);
        assert_eq!(code(&client_frame(0x82, MASK, &[0; 300])[..2]), 1003);
        assert_eq!(code(&client_frame(0x00, MASK, b"x")), 1003);
        // Unmasked.
        assert_eq!(code(b"\x89\x00"), 1002);
        assert_eq!(code(b"\x81\x02hi"), 1002);
        // Reserved bits.
        for b0 in [0xC9, 0xA9, 0x99] {
            assert_eq!(code(&client_frame(b0, MASK, b"")), 1002, "{b0:#x}");
        }
        // Unknown opcodes.
        for op in [3, 7, 0xB, 0xF] {
            assert_eq!(code(&client_frame(0x80 | op, MASK, b"")), 1002, "{op}");
        }
        // Fragmented and oversize control frames.
        assert_eq!(code(&client_frame(0x09, MASK, b"")), 1002);
        assert_eq!(code(&client_frame(0x89, MASK, &[0; 126])[..2]), 1002);
        // Close payloads.
        assert_eq!(code(&client_frame(0x88, MASK, b"\x03")), 1002);
        for bad in [999u16, 1004, 1005, 1006, 1015, 2999, 5000] {
            let f = client_frame(0x88, MASK, &bad.to_be_bytes());
            assert_eq!(code(&f), 1002, "{bad}");
        }
        assert_eq!(code(&client_frame(0x88, MASK, b"\x03\xe8\xff")), 1007);
    }

    #[test]
    fn rsv1_only_on_a_deflate_data_frame() {
        let compressed = client_frame(0xC1, MASK, b"x");
        assert_eq!(parse(&compressed, false).unwrap_err().code, 1002);
        assert_eq!(parse(&compressed, true).unwrap_err().code, 1003);
        let control = client_frame(0xC9, MASK, b"");
        assert_eq!(parse(&control, true).unwrap_err().code, 1002);
        let continuation = client_frame(0x40, MASK, b"");
        assert_eq!(parse(&continuation, true).unwrap_err().code, 1002);
    }

    #[test]
    fn splits_do_not_matter() {
        let stream = [
            client_frame(0x89, MASK, b"a"),
            client_frame(0x8A, MASK, &[7; 125]),
            client_frame(0x88, MASK, b"\x0b\xb8"),
        ]
        .concat();
        let whole = run(&stream, stream.len());
        for step in 1..stream.len() {
            assert_eq!(run(&stream, step), whole, "fed {step} bytes at a time");
        }
        assert_eq!(whole.len(), 3);
    }

    /// Feeds `input` `step` bytes at a time, as reads would, and collects
    /// what the parser says.
    fn run(input: &[u8], step: usize) -> Vec<Result<Incoming, Fail>> {
        let (mut buf, mut out) = (Vec::new(), Vec::new());
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match parse(&buf, false) {
                    Ok(None) => break,
                    Ok(Some((frame, used))) => {
                        buf.drain(..used);
                        out.push(Ok(frame));
                    }
                    Err(e) => {
                        out.push(Err(e));
                        return out;
                    }
                }
            }
        }
        out
    }
}
