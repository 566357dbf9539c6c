//! One connection to Redis that the bus owns: a TCP socket (TLS through
//! rustls for `rediss://`), RESP through [`crate::resp`], a deadline on
//! every read, and a look at the socket before a batch is written.
//!
//! Why not the `redis` crate's connection: a batch written into a
//! connection the peer has already closed has an unknown outcome, and its
//! publishers would get 504 for nothing. A `kill -9` of Redis, a `CLIENT
//! KILL` or a restart leaves a pending EOF (or RST) on the socket at once;
//! [`Wire::peer_closed`] sees it without a round trip (`recv` with
//! `MSG_PEEK | MSG_DONTWAIT`), so such a batch counts as not sent. The
//! `redis` crate gives no access to its socket.
//!
//! Invariants: every read has a deadline (a read past it is
//! [`WireError::Timeout`], and the connection is then out of step and must
//! be dropped); replies are parsed in order from one buffer.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use crate::resp::{self, Reply};

/// Where and how to connect: what a `redis://` or `rediss://` URL says.
#[derive(Clone)]
pub struct Address {
    pub host: String,
    pub port: u16,
    /// `Some` for `rediss://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: i64,
}

/// Why a command did not get its reply.
#[derive(Debug)]
pub enum WireError {
    /// No (complete) reply before the deadline.
    Timeout,
    /// The peer closed the connection.
    Closed,
    Io(io::Error),
    Protocol(resp::ProtocolError),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Timeout => f.write_str("Redis did not answer in time"),
            WireError::Closed => f.write_str("Redis closed the connection"),
            WireError::Io(e) => write!(f, "Redis connection: {e}"),
            WireError::Protocol(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> WireError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => WireError::Timeout,
            io::ErrorKind::UnexpectedEof => WireError::Closed,
            _ => WireError::Io(e),
        }
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

/// A connection to Redis.
pub struct Wire {
    stream: Stream,
    /// Received bytes not yet parsed, from `start`.
    buf: Vec<u8>,
    start: usize,
}

/// Bytes read per `read` call at least.
const READ_CHUNK: usize = 64 * 1024;

impl Wire {
    /// Connects within `timeout`, does the TLS handshake, `AUTH` and
    /// `SELECT` as the address asks.
    pub fn connect(addr: &Address, timeout: Duration) -> Result<Wire, String> {
        let deadline = Instant::now() + timeout;
        let mut last = format!("{}:{} did not resolve", addr.host, addr.port);
        let sockets = (addr.host.as_str(), addr.port)
            .to_socket_addrs()
            .map_err(|e| format!("{}:{}: {e}", addr.host, addr.port))?;
        let mut tcp = None;
        for sa in sockets {
            match TcpStream::connect_timeout(&sa, timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = format!("{sa}: {e}"),
            }
        }
        let tcp = tcp.ok_or(last)?;
        let _ = tcp.set_nodelay(true);
        tcp.set_write_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let stream = match &addr.tls {
            None => Stream::Plain(tcp),
            Some(config) => {
                let name = ServerName::try_from(addr.host.clone())
                    .map_err(|e| format!("{}: {e}", addr.host))?;
                let conn = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(|e| e.to_string())?;
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                tls.sock
                    .set_read_timeout(Some(timeout))
                    .map_err(|e| e.to_string())?;
                while tls.conn.is_handshaking() {
                    tls.conn
                        .complete_io(&mut tls.sock)
                        .map_err(|e| format!("TLS handshake: {e}"))?;
                }
                Stream::Tls(Box::new(tls))
            }
        };
        let mut wire = Wire {
            stream,
            buf: Vec::with_capacity(READ_CHUNK),
            start: 0,
        };
        let mut setup = Vec::new();
        let mut replies = 0;
        if let Some(pw) = &addr.password {
            match &addr.username {
                Some(user) => resp::encode(&mut setup, &["AUTH", user, pw]),
                None => resp::encode(&mut setup, &["AUTH", pw]),
            }
            replies += 1;
        }
        if addr.db != 0 {
            resp::encode(&mut setup, &["SELECT", &addr.db.to_string()]);
            replies += 1;
        }
        if replies > 0 {
            wire.send(&setup).map_err(|e| e.to_string())?;
            for _ in 0..replies {
                match wire.read_reply(deadline).map_err(|e| e.to_string())? {
                    Reply::Error(e) => return Err(format!("Redis refused the connection: {e}")),
                    _ => continue,
                }
            }
        }
        Ok(wire)
    }

    /// Writes `bytes` whole (within the write timeout).
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        match &mut self.stream {
            Stream::Plain(s) => s.write_all(bytes)?,
            Stream::Tls(s) => {
                s.write_all(bytes)?;
                s.flush()?;
            }
        }
        Ok(())
    }

    /// The next reply, read by `deadline`.
    pub fn read_reply(&mut self, deadline: Instant) -> Result<Reply, WireError> {
        self.read_with(deadline, resp::parse)
    }

    /// The next reply parsed by `parse` (which gets the whole reply and
    /// says how many bytes it used), read by `deadline`. Completeness is
    /// checked first without allocating ([`resp::complete`]), so a large
    /// reply is parsed once however many reads it takes.
    pub fn read_with<T>(
        &mut self,
        deadline: Instant,
        parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, resp::ProtocolError>,
    ) -> Result<T, WireError> {
        loop {
            if self.start < self.buf.len() {
                let rest = &self.buf[self.start..];
                if let Some(len) = resp::complete(rest).map_err(WireError::Protocol)? {
                    let Some((value, used)) = parse(&rest[..len]).map_err(WireError::Protocol)?
                    else {
                        return Err(WireError::Protocol(resp::ProtocolError(
                            "a complete reply did not parse",
                        )));
                    };
                    self.start += used.max(len);
                    if self.start == self.buf.len() {
                        self.buf.clear();
                        self.start = 0;
                    }
                    return Ok(value);
                }
            }
            self.fill(deadline)?;
        }
    }

    /// Sends `args` as one command and reads its reply.
    pub fn command<A: AsRef<[u8]>>(
        &mut self,
        args: &[A],
        deadline: Instant,
    ) -> Result<Reply, WireError> {
        let mut out = Vec::new();
        resp::encode(&mut out, args);
        self.send(&out)?;
        self.read_reply(deadline)
    }

    /// Reads what is there (at least one byte) by `deadline`.
    fn fill(&mut self, deadline: Instant) -> Result<(), WireError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(WireError::Timeout);
        }
        // A zero timeout means "none" to the socket: at least 1 ms.
        self.stream
            .tcp()
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        if self.start > 0 && self.start * 2 > self.buf.capacity() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let len = self.buf.len();
        let want = (self.buf.capacity() - len).max(READ_CHUNK);
        self.buf.resize(len + want, 0);
        let got = match &mut self.stream {
            Stream::Plain(s) => s.read(&mut self.buf[len..]),
            Stream::Tls(s) => s.read(&mut self.buf[len..]),
        };
        let got = match got {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(len);
                if e.kind() == io::ErrorKind::Interrupted {
                    return Ok(());
                }
                return Err(e.into());
            }
        };
        self.buf.truncate(len + got);
        if got == 0 {
            return Err(WireError::Closed);
        }
        Ok(())
    }

    /// True when the peer has closed or reset the connection (or, on a
    /// plain connection, sent bytes nobody asked for: out of step). Costs
    /// one non-blocking `recv` with `MSG_PEEK`, no round trip.
    pub fn peer_closed(&self) -> bool {
        if self.start < self.buf.len() {
            return true;
        }
        let fd = self.stream.tcp().as_raw_fd();
        let mut byte = 0u8;
        // SAFETY: a one-byte buffer we own; the fd is the open socket.
        let n = unsafe {
            libc::recv(
                fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => true,
            n if n > 0 => match self.stream {
                Stream::Plain(_) => true,
                // TLS 1.3 servers send session tickets after the
                // handshake: bytes there do not mean trouble.
                Stream::Tls(_) => false,
            },
            _ => {
                let e = io::Error::last_os_error();
                !matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (Wire, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = Address {
            host: "127.0.0.1".into(),
            port: l.local_addr().unwrap().port(),
            tls: None,
            username: None,
            password: None,
            db: 0,
        };
        let wire = Wire::connect(&addr, Duration::from_secs(1)).unwrap();
        let (peer, _) = l.accept().unwrap();
        (wire, peer)
    }

    #[test]
    fn a_closed_or_reset_peer_is_seen_before_writing() {
        let (wire, peer) = pair();
        assert!(!wire.peer_closed());
        drop(peer);
        let deadline = Instant::now() + Duration::from_secs(2);
        while !wire.peer_closed() {
            assert!(Instant::now() < deadline, "EOF not seen");
            std::thread::yield_now();
        }
        // Reset (SO_LINGER 0): the same.
        let (wire, peer) = pair();
        socket2::SockRef::from(&peer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(peer);
        let deadline = Instant::now() + Duration::from_secs(2);
        while !wire.peer_closed() {
            assert!(Instant::now() < deadline, "RST not seen");
            std::thread::yield_now();
        }
    }

    #[test]
    fn replies_split_anywhere_and_deadlines() {
        let (mut wire, mut peer) = pair();
        let writer = std::thread::spawn(move || {
            for b in b"*2\r\n$2\r\nhi\r\n:5\r\n+OK\r\n" {
                peer.write_all(&[*b]).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
            peer
        });
        let soon = || Instant::now() + Duration::from_secs(2);
        assert_eq!(
            wire.read_reply(soon()).unwrap(),
            Reply::Array(vec![Reply::Bulk(b"hi".to_vec()), Reply::Int(5)])
        );
        assert_eq!(wire.read_reply(soon()).unwrap(), Reply::Simple("OK".into()));
        let peer = writer.join().unwrap();
        let t = Instant::now();
        let late = wire.read_reply(Instant::now() + Duration::from_millis(50));
        assert!(matches!(late, Err(WireError::Timeout)), "{late:?}");
        assert!(t.elapsed() < Duration::from_secs(1));
        drop(peer);
        assert!(matches!(wire.read_reply(soon()), Err(WireError::Closed)));
    }
}
