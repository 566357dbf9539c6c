//! RESP2, sans-I/O: commands encoded into a byte buffer, replies parsed
//! from one.
//!
//! Only what the bus sends and gets back: commands are arrays of bulk
//! strings; replies are simple strings, errors, integers, bulk strings and
//! arrays (nil ones included). The bus never sends `HELLO`, so Redis always
//! answers in RESP2.
//!
//! Invariants: parsing never panics and never allocates more than the
//! bytes it was given justify (an announced length is checked against
//! [`MAX_BULK`] and [`MAX_ARRAY`], and buffers are not preallocated past
//! what is there); an incomplete reply is `Ok(None)` and consumes nothing.
//!
//! Hand-written rather than a codec crate: the bus needs ~150 lines of it,
//! and parsing straight from the read buffer is what keeps a stream read
//! cheap (no intermediate value tree per field beyond the one below).

use std::fmt;

/// Longest bulk string accepted (Redis's own `proto-max-bulk-len`).
pub const MAX_BULK: usize = 512 * 1024 * 1024;
/// Most elements in one array.
pub const MAX_ARRAY: usize = 1 << 24;
/// Deepest nesting accepted (a stream reply is four deep).
pub const MAX_DEPTH: usize = 8;

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Array(Vec<Reply>),
    /// A nil bulk string or nil array.
    Nil,
}

impl Reply {
    /// The text of a bulk or simple string.
    pub fn text(&self) -> Option<&str> {
        match self {
            Reply::Bulk(b) => std::str::from_utf8(b).ok(),
            Reply::Simple(s) => Some(s),
            _ => None,
        }
    }

    /// An integer, or a string holding one.
    pub fn int(&self) -> Option<i64> {
        match self {
            Reply::Int(n) => Some(*n),
            other => other.text()?.parse().ok(),
        }
    }

    pub fn array(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// A reply that cannot be RESP2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub &'static str);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad reply from Redis: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// Appends one command (`*n` then each argument as a bulk string).
pub fn encode<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    header(out, b'*', args.len());
    for arg in args {
        bulk(out, arg.as_ref());
    }
}

/// The `*n` line of a command of `n` arguments, for callers that write
/// the arguments one by one with [`bulk`].
pub fn header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    push_decimal(out, n as u64);
    out.extend_from_slice(b"\r\n");
}

/// One bulk string argument.
pub fn bulk(out: &mut Vec<u8>, arg: &[u8]) {
    header(out, b'$', arg.len());
    out.extend_from_slice(arg);
    out.extend_from_slice(b"\r\n");
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Parses one reply from the front of `buf`: `Ok(Some((reply, used)))`,
/// or `Ok(None)` when more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
    let mut at = 0;
    match value(buf, &mut at, 0)? {
        Some(reply) => Ok(Some((reply, at))),
        None => Ok(None),
    }
}

/// The length of the complete reply at the front of `buf` (`Ok(None)`:
/// not all there yet), found without allocating: a large reply that comes
/// in many reads is checked this way each time and parsed once.
pub fn complete(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
    let mut at = 0;
    Ok(scan(buf, &mut at, 0)?.map(|()| at))
}

fn scan(buf: &[u8], at: &mut usize, depth: usize) -> Result<Option<()>, ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(ProtocolError("nested too deep"));
    }
    let Some(&kind) = buf.get(*at) else {
        return Ok(None);
    };
    let mut pos = *at + 1;
    let Some(text) = line(buf, &mut pos)? else {
        return Ok(None);
    };
    match kind {
        b'+' | b'-' => {}
        b':' => {
            number(text)?;
        }
        b'$' => {
            if let Some(n) = length(text, MAX_BULK)? {
                if buf.len() < pos + n + 2 {
                    return Ok(None);
                }
                if &buf[pos + n..pos + n + 2] != b"\r\n" {
                    return Err(ProtocolError("bulk string not ended by CRLF"));
                }
                pos += n + 2;
            }
        }
        b'*' => {
            if let Some(n) = length(text, MAX_ARRAY)? {
                for _ in 0..n {
                    if scan(buf, &mut pos, depth + 1)?.is_none() {
                        return Ok(None);
                    }
                }
            }
        }
        _ => return Err(ProtocolError("unknown reply type")),
    }
    *at = pos;
    Ok(Some(()))
}

/// The line starting at `*at` (without its CRLF); moves past it.
fn line<'a>(buf: &'a [u8], at: &mut usize) -> Result<Option<&'a [u8]>, ProtocolError> {
    let rest = &buf[*at..];
    let Some(end) = rest.iter().position(|&b| b == b'\n') else {
        if rest.len() > 64 * 1024 {
            return Err(ProtocolError("line too long"));
        }
        return Ok(None);
    };
    if end == 0 || rest[end - 1] != b'\r' {
        return Err(ProtocolError("line not ended by CRLF"));
    }
    *at += end + 1;
    Ok(Some(&rest[..end - 1]))
}

fn number(text: &[u8]) -> Result<i64, ProtocolError> {
    // Lengths are short runs of digits: no UTF-8 check, no generic parse.
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 18 {
        return std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or(ProtocolError("not a number"));
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(ProtocolError("not a number"));
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Ok(if negative { -n } else { n })
}

/// A length: -1 is nil, otherwise 0..=max.
fn length(text: &[u8], max: usize) -> Result<Option<usize>, ProtocolError> {
    match number(text)? {
        -1 => Ok(None),
        n if n >= 0 && (n as u64) <= max as u64 => Ok(Some(n as usize)),
        _ => Err(ProtocolError("length out of range")),
    }
}

fn value(buf: &[u8], at: &mut usize, depth: usize) -> Result<Option<Reply>, ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(ProtocolError("nested too deep"));
    }
    let Some(&kind) = buf.get(*at) else {
        return Ok(None);
    };
    let mut pos = *at + 1;
    let Some(text) = line(buf, &mut pos)? else {
        return Ok(None);
    };
    let reply = match kind {
        b'+' => Reply::Simple(String::from_utf8_lossy(text).into_owned()),
        b'-' => Reply::Error(String::from_utf8_lossy(text).into_owned()),
        b':' => Reply::Int(number(text)?),
        b'$' => match length(text, MAX_BULK)? {
            None => Reply::Nil,
            Some(n) => {
                if buf.len() < pos + n + 2 {
                    return Ok(None);
                }
                if &buf[pos + n..pos + n + 2] != b"\r\n" {
                    return Err(ProtocolError("bulk string not ended by CRLF"));
                }
                let bytes = buf[pos..pos + n].to_vec();
                pos += n + 2;
                Reply::Bulk(bytes)
            }
        },
        b'*' => match length(text, MAX_ARRAY)? {
            None => Reply::Nil,
            Some(n) => {
                // Each element takes at least 3 bytes: never reserve more
                // than the buffer could hold.
                let mut items = Vec::with_capacity(n.min((buf.len() - pos) / 3 + 1));
                for _ in 0..n {
                    match value(buf, &mut pos, depth + 1)? {
                        Some(item) => items.push(item),
                        None => return Ok(None),
                    }
                }
                Reply::Array(items)
            }
        },
        _ => return Err(ProtocolError("unknown reply type")),
    };
    *at = pos;
    Ok(Some(reply))
}

/// Reads RESP values in place, for replies parsed without building a
/// [`Reply`] tree (a stream read: only the fields kept are copied). Each
/// method returns `Ok(None)` when the buffer ends first.
pub struct Walker<'a> {
    buf: &'a [u8],
    pub at: usize,
}

impl<'a> Walker<'a> {
    pub fn new(buf: &'a [u8]) -> Walker<'a> {
        Walker { buf, at: 0 }
    }

    /// The next value's type byte, not consumed.
    pub fn peek(&self) -> Option<u8> {
        self.buf.get(self.at).copied()
    }

    fn header(&mut self, kind: u8, max: usize) -> Result<Option<Option<usize>>, ProtocolError> {
        let mut pos = self.at;
        match self.buf.get(pos) {
            None => return Ok(None),
            Some(&k) if k == kind => {}
            // A nil of the other kind (`$-1` for `*-1`) is nil too.
            Some(&(b'*' | b'$')) => {}
            Some(_) => return Err(ProtocolError("unexpected reply type")),
        }
        pos += 1;
        let Some(text) = line(self.buf, &mut pos)? else {
            return Ok(None);
        };
        let n = length(text, max)?;
        if n.is_some() && self.buf[self.at] != kind {
            return Err(ProtocolError("unexpected reply type"));
        }
        self.at = pos;
        Ok(Some(n))
    }

    /// An array's length (`Some(None)`: nil).
    pub fn array(&mut self) -> Result<Option<Option<usize>>, ProtocolError> {
        self.header(b'*', MAX_ARRAY)
    }

    /// A bulk string's bytes (`Some(None)`: nil).
    pub fn bulk(&mut self) -> Result<Option<Option<&'a [u8]>>, ProtocolError> {
        let start = self.at;
        let Some(n) = self.header(b'$', MAX_BULK)? else {
            return Ok(None);
        };
        let Some(n) = n else {
            return Ok(Some(None));
        };
        if self.buf.len() < self.at + n + 2 {
            self.at = start;
            return Ok(None);
        }
        if &self.buf[self.at + n..self.at + n + 2] != b"\r\n" {
            return Err(ProtocolError("bulk string not ended by CRLF"));
        }
        let bytes = &self.buf[self.at..self.at + n];
        self.at += n + 2;
        Ok(Some(Some(bytes)))
    }

    /// Skips one value of any kind.
    pub fn skip(&mut self) -> Result<Option<()>, ProtocolError> {
        match value(self.buf, &mut self.at, 0)? {
            Some(_) => Ok(Some(())),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&mut out, &["XADD", "s", "*", ""]);
        assert_eq!(out, b"*4\r\n$4\r\nXADD\r\n$1\r\ns\r\n$1\r\n*\r\n$0\r\n\r\n");
        out.clear();
        header(&mut out, b'*', 1234567890);
        assert_eq!(out, b"*1234567890\r\n");
    }

    #[test]
    fn every_reply_kind() {
        let wire = b"*6\r\n+OK\r\n-ERR no\r\n:-42\r\n$3\r\na\r\n\r\n$-1\r\n*-1\r\n";
        let (reply, used) = parse(wire).unwrap().unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(
            reply,
            Reply::Array(vec![
                Reply::Simple("OK".into()),
                Reply::Error("ERR no".into()),
                Reply::Int(-42),
                Reply::Bulk(b"a\r\n".to_vec()),
                Reply::Nil,
                Reply::Nil,
            ])
        );
    }

    #[test]
    fn any_cut_is_incomplete_then_complete() {
        let wire = b"*2\r\n*2\r\n$5\r\n1-0\r\n\r\n*0\r\n:7\r\n+PONG\r\n";
        let first = wire.len() - 7;
        for cut in 0..first {
            assert_eq!(parse(&wire[..cut]), Ok(None), "cut at {cut}");
        }
        for cut in 0..first {
            assert_eq!(complete(&wire[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(complete(wire), Ok(Some(first)));
        let (_, used) = parse(wire).unwrap().unwrap();
        assert_eq!(used, first);
        assert_eq!(
            parse(&wire[used..]).unwrap().unwrap().0,
            Reply::Simple("PONG".into())
        );
    }

    #[test]
    fn hostile_replies_are_errors_not_panics() {
        for bad in [
            &b"$99999999999\r\n"[..],
            b"*-2\r\n",
            b"$3\r\nabcXY",
            b"?\r\n",
            b":x\r\n",
            b"+no cr\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        // A huge announced array does not reserve memory up front.
        assert_eq!(parse(b"*16777216\r\n:1\r\n"), Ok(None));
        for bad in [
            &b"$99999999999\r\n"[..],
            b"*-2\r\n",
            b"$3\r\nabcXY",
            b"?\r\n",
        ] {
            assert!(complete(bad).is_err(), "{bad:?}");
        }
        let deep = b"*1\r\n".repeat(MAX_DEPTH + 2);
        assert!(parse(&deep).is_err());
    }
}
