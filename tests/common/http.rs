//! A raw HTTP/1.1 client that parses exactly what goes over the wire:
//! `Conn` (its own read buffer, every read with a deadline) and `Response`
//! (status, headers, body, and the assertions on the server's texts).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::{MSG_BAD_REQUEST_PREFIX, T, VERSION};

#[derive(Debug, Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub raw_head: Vec<u8>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .count()
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn x_subscribers(&self) -> u64 {
        self.num_header("X-Subscribers")
    }

    pub fn x_requests(&self) -> u64 {
        self.num_header("X-Requests")
    }

    fn num_header(&self, name: &str) -> u64 {
        let v = self
            .header(name)
            .unwrap_or_else(|| panic!("missing {name} in {:?}", self.head_str()));
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number: {v:?}"))
    }

    pub fn head_str(&self) -> String {
        String::from_utf8_lossy(&self.raw_head).into_owned()
    }

    /// `Server`, `X-Subscribers`, `X-Requests`, each exactly once.
    pub fn assert_std_headers(&self) {
        assert_eq!(
            self.header("Server"),
            Some(format!("pubsubd/{VERSION}").as_str()),
            "Server header in {:?}",
            self.head_str()
        );
        for h in ["Server", "X-Subscribers", "X-Requests"] {
            assert_eq!(self.header_count(h), 1, "{h} once in {:?}", self.head_str());
        }
        let _ = self.x_subscribers();
        let _ = self.x_requests();
    }

    /// Status and exact body text, plus the standard headers.
    pub fn assert(&self, status: u16, body: &str) {
        assert_eq!(
            (self.status, self.body_str().as_str()),
            (status, body),
            "head: {:?}",
            self.head_str()
        );
        self.assert_std_headers();
    }

    /// A 400 whose body starts with "I could not understand your request, sorry!".
    pub fn assert_bad_request(&self) {
        assert_eq!(
            self.status,
            400,
            "{:?} {:?}",
            self.head_str(),
            self.body_str()
        );
        assert!(
            self.body_str().starts_with(MSG_BAD_REQUEST_PREFIX),
            "body {:?}",
            self.body_str()
        );
        assert!(
            self.body_str().ends_with('\n'),
            "body {:?}",
            self.body_str()
        );
        self.assert_std_headers();
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "deadline passed")
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A client connection with its own read buffer; every read has a deadline.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        Conn::try_connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    }

    pub fn try_connect(addr: SocketAddr) -> io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        Ok(Conn::from_stream(s))
    }

    pub fn connect_to(addr: impl ToSocketAddrs) -> io::Result<Conn> {
        let a = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| invalid("no address".into()))?;
        Conn::try_connect(a)
    }

    pub fn from_stream(s: TcpStream) -> Conn {
        let _ = s.set_nodelay(true);
        let _ = s.set_write_timeout(Some(T));
        Conn {
            stream: s,
            buf: Vec::new(),
            start: 0,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|e| panic!("send {} bytes: {e}", bytes.len()));
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Bytes received but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) -> Vec<u8> {
        let out = self.buf[self.start..self.start + n].to_vec();
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 1 << 20 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        out
    }

    /// Reads more bytes; `Ok(0)` is EOF; `TimedOut` once `deadline` passes.
    fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut tmp = [0u8; 65536];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return Err(timed_out())
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads up to and including `delim`; fails past `max` bytes.
    pub fn read_until(
        &mut self,
        delim: &[u8],
        max: usize,
        deadline: Instant,
    ) -> io::Result<Vec<u8>> {
        let mut scanned: usize = 0;
        loop {
            let have = &self.buf[self.start..];
            let from = scanned.saturating_sub(delim.len());
            if let Some(i) = find(&have[from..], delim) {
                return Ok(self.consume(from + i + delim.len()));
            }
            scanned = have.len();
            if scanned > max {
                return Err(invalid(format!("no {delim:?} within {max} bytes")));
            }
            if self.fill(deadline)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "EOF before {delim:?}; had {:?}",
                        String::from_utf8_lossy(self.buffered())
                    ),
                ));
            }
        }
    }

    pub fn read_n(&mut self, n: usize, deadline: Instant) -> io::Result<Vec<u8>> {
        while self.buffered().len() < n {
            if self.fill(deadline)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF in body"));
            }
        }
        Ok(self.consume(n))
    }

    /// Reads until EOF (a reset also counts as the end); `TimedOut` if still open.
    pub fn read_to_eof(&mut self, deadline: Instant) -> io::Result<Vec<u8>> {
        loop {
            match self.fill(deadline) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if is_reset(&e) => break,
                Err(e) => return Err(e),
            }
        }
        let n = self.buffered().len();
        Ok(self.consume(n))
    }

    /// Like `read_to_eof` but counts the bytes instead of keeping them.
    pub fn drain_to_eof(&mut self, deadline: Instant) -> io::Result<u64> {
        let mut total = self.buffered().len() as u64;
        self.buf.clear();
        self.start = 0;
        loop {
            match self.fill(deadline) {
                Ok(0) => return Ok(total),
                Ok(n) => {
                    total += n as u64;
                    self.buf.clear();
                }
                Err(e) if is_reset(&e) => return Ok(total),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads a response head (status line + headers, up to the blank line).
    pub fn read_head(&mut self, deadline: Instant) -> io::Result<Response> {
        let raw = self.read_until(b"\r\n\r\n", 64 * 1024, deadline)?;
        let text = String::from_utf8(raw.clone())
            .map_err(|_| invalid(format!("non-UTF-8 head {raw:?}")))?;
        let mut lines = text[..text.len() - 4].split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        if !version.starts_with("HTTP/1.") {
            return Err(invalid(format!("bad status line {status_line:?}")));
        }
        let status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
        let reason = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        for l in lines {
            let (k, v) = l
                .split_once(':')
                .ok_or_else(|| invalid(format!("bad header line {l:?}")))?;
            headers.push((k.to_string(), v.trim().to_string()));
        }
        Ok(Response {
            version,
            status,
            reason,
            headers,
            raw_head: raw,
            body: Vec::new(),
        })
    }

    /// Reads one complete response (interim 1xx responses are returned as is).
    pub fn read_response(&mut self, head_request: bool, timeout: Duration) -> io::Result<Response> {
        let deadline = Instant::now() + timeout;
        let mut r = self.read_head(deadline)?;
        if head_request || r.status < 200 || r.status == 204 || r.status == 304 {
            return Ok(r);
        }
        let chunked = r
            .header("Transfer-Encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if chunked {
            let mut body = Vec::new();
            while let Some(c) = self.read_chunk(deadline)? {
                body.extend_from_slice(&c);
            }
            r.body = body;
        } else if let Some(cl) = r.header("Content-Length") {
            let n: usize = cl
                .trim()
                .parse()
                .map_err(|_| invalid(format!("bad Content-Length {cl:?}")))?;
            r.body = self.read_n(n, deadline)?;
        } else {
            r.body = self.read_to_eof(deadline)?;
        }
        Ok(r)
    }

    /// One chunk of a chunked body: `Some(data)`, or `None` for the exact
    /// terminator `0\r\n\r\n`.
    pub fn read_chunk(&mut self, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
        let line = self.read_until(b"\r\n", 32, deadline)?;
        let hex = std::str::from_utf8(&line[..line.len() - 2])
            .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
        let size = usize::from_str_radix(hex, 16)
            .map_err(|_| invalid(format!("bad chunk size line {hex:?}")))?;
        if size == 0 {
            let end = self.read_n(2, deadline)?;
            if end != b"\r\n" {
                return Err(invalid(format!("bad last chunk end {end:?}")));
            }
            return Ok(None);
        }
        let mut data = self.read_n(size + 2, deadline)?;
        if !data.ends_with(b"\r\n") {
            return Err(invalid(format!(
                "chunk data not followed by CRLF: {:?}",
                String::from_utf8_lossy(&data)
            )));
        }
        data.truncate(size);
        Ok(Some(data))
    }

    /// Keep-alive `PUT path` with a Content-Length body; reads the response.
    pub fn publish(&mut self, path: &str, body: &str) -> Response {
        let req = format!(
            "PUT {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.send(req.as_bytes());
        self.read_response(false, T)
            .unwrap_or_else(|e| panic!("no response to PUT {path}: {e}"))
    }

    /// Waits for the peer to close; returns what arrived before; `TimedOut` if it did not.
    pub fn wait_closed(&mut self, timeout: Duration) -> io::Result<Vec<u8>> {
        self.read_to_eof(Instant::now() + timeout)
    }
}

pub fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// `Basic base64(user:pass)` for an `Authorization` header.
pub fn basic_auth(user: &str, pass: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{pass}").into_bytes();
    let mut out = String::new();
    for c in input.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}
