//! What the generator's connections travel over: plain TCP, or TLS (rustls
//! with the ring provider, as in the server) over TCP, both non-blocking on
//! mio. The server's certificate is checked against a CA given on the
//! command line (`--tls-ca FILE`) and must name the target's IP address.
//!
//! Reads take the socket's bytes in one `read` into the caller's buffer,
//! like the plain path, and feed them to rustls from memory (rustls reading
//! the socket itself takes at most 4 KiB per syscall), so the generator's
//! syscall pattern is the same for both and its extra cost is only the
//! decryption.

use std::io::{self, BufRead, Read, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// A client config trusting only the certificates in the PEM file `ca`.
/// Session resumption is off: every connection is a full handshake, like
/// as many distinct subscribers.
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("cannot read CA file {}: {e}", ca.display()))?;
    for c in certs {
        let c = c.map_err(|e| format!("invalid PEM in {}: {e}", ca.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("bad CA certificate in {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("no certificate in {}", ca.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// One connection's transport.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsConn>),
}

pub struct TlsConn {
    sock: TcpStream,
    tls: ClientConnection,
}

/// What one `recv` got.
pub struct Recv<'a> {
    /// The application bytes it carried (possibly none, e.g. handshake).
    pub data: &'a [u8],
    /// Bytes read from the socket (a short read emptied it).
    pub wire: usize,
    /// The peer closed (TCP end of stream, or TLS close_notify).
    pub eof: bool,
}

impl Conn {
    /// Wraps a (connecting) socket; with `tls`, starts a handshake with
    /// `server` as the expected name (its ClientHello is sent by the first
    /// `flush_pending` or `write`).
    pub fn new(
        sock: TcpStream,
        tls: Option<&Arc<ClientConfig>>,
        server: IpAddr,
    ) -> io::Result<Conn> {
        Ok(match tls {
            None => Conn::Plain(sock),
            Some(config) => {
                let tls =
                    ClientConnection::new(config.clone(), ServerName::IpAddress(server.into()))
                        .map_err(io::Error::other)?;
                Conn::Tls(Box::new(TlsConn { sock, tls }))
            }
        })
    }

    pub fn socket(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => &t.sock,
        }
    }

    pub fn socket_mut(&mut self) -> &mut TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => &mut t.sock,
        }
    }

    /// Still in the TLS handshake (never for plain TCP).
    pub fn handshaking(&self) -> bool {
        match self {
            Conn::Plain(_) => false,
            Conn::Tls(t) => t.tls.is_handshaking(),
        }
    }

    /// "TLSv1_3 TLS13_AES_256_GCM_SHA384" once negotiated.
    pub fn tls_description(&self) -> Option<String> {
        match self {
            Conn::Plain(_) => None,
            Conn::Tls(t) => Some(format!(
                "{:?} {:?}",
                t.tls.protocol_version()?,
                t.tls.negotiated_cipher_suite()?.suite()
            )),
        }
    }

    /// Writes TLS records that are waiting. Returns true if some still wait
    /// for the socket (write again when it is writable).
    pub fn flush_pending(&mut self) -> io::Result<bool> {
        match self {
            Conn::Plain(_) => Ok(false),
            Conn::Tls(t) => t.write_tls(),
        }
    }

    /// Like `Write::write`: TLS takes the bytes into rustls (which holds
    /// them until the handshake is done) and sends what it can.
    pub fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(data),
            Conn::Tls(t) => {
                let n = t.tls.writer().write(data)?;
                t.write_tls()?;
                if n == 0 && !data.is_empty() {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            }
        }
    }

    /// One `read` from the socket into `raw`; returns the application bytes
    /// it carried: `raw` itself for plain TCP, the decrypted bytes (put in
    /// `plain`) for TLS. `WouldBlock` when the socket had nothing.
    pub fn recv<'a>(&mut self, raw: &'a mut [u8], plain: &'a mut Vec<u8>) -> io::Result<Recv<'a>> {
        match self {
            Conn::Plain(s) => {
                let n = s.read(raw)?;
                Ok(Recv {
                    data: &raw[..n],
                    wire: n,
                    eof: n == 0,
                })
            }
            Conn::Tls(t) => {
                let n = t.sock.read(raw)?;
                plain.clear();
                let mut closed = n == 0;
                let mut rd: &[u8] = &raw[..n];
                // rustls takes at most a few KiB per read_tls: feed it the
                // whole read in steps, draining the plaintext after each.
                while !rd.is_empty() {
                    t.tls.read_tls(&mut rd)?;
                    match t.tls.process_new_packets() {
                        Ok(state) => closed |= state.peer_has_closed(),
                        Err(e) => {
                            // Send the alert if we can, then give up.
                            let _ = t.write_tls();
                            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                        }
                    }
                    let mut reader = t.tls.reader();
                    loop {
                        match reader.fill_buf() {
                            Ok([]) => break,
                            Ok(chunk) => {
                                plain.extend_from_slice(chunk);
                                let k = chunk.len();
                                reader.consume(k);
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e),
                        }
                    }
                }
                // Handshake answers (and anything written meanwhile).
                t.write_tls()?;
                Ok(Recv {
                    data: plain,
                    wire: n,
                    eof: closed,
                })
            }
        }
    }
}

impl TlsConn {
    fn write_tls(&mut self) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }
}

// The tests' certificate maker, shared with the server's tests.
#[cfg(test)]
#[path = "../../tests/common/pki.rs"]
mod pki;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    use mio::{Events, Interest, Poll, Token};
    use rustls::pki_types::PrivateKeyDer;

    /// A CA (PEM) and a server config whose certificate it signed for 127.0.0.1.
    fn pki() -> (String, Arc<rustls::ServerConfig>) {
        let ca = pki::Ca::new("bench");
        let (leaf, key) = ca.leaf();
        let leaf = CertificateDer::from_pem_slice(leaf.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf], key)
        .unwrap();
        (ca.pem, Arc::new(config))
    }

    /// The request written before the handshake is done arrives; 300 KB of
    /// answer (many records) come back whole through small reads; the
    /// server's close_notify reads as the end.
    #[test]
    fn tls_round_trip_over_mio() {
        let (ca_pem, server_config) = pki();
        let ca =
            std::env::temp_dir().join(format!("pubsub-load-test-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, ca_pem).unwrap();
        let client = client_config(&ca).unwrap();
        let _ = std::fs::remove_file(&ca);

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let answer: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let expected = answer.clone();
        let server = std::thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let conn = rustls::ServerConnection::new(server_config).unwrap();
            let mut s = rustls::StreamOwned::new(conn, sock);
            let mut req = Vec::new();
            let mut b = [0u8; 64];
            while !req.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut b).unwrap();
                assert!(n > 0, "closed before the request");
                req.extend_from_slice(&b[..n]);
            }
            for part in answer.chunks(7_000) {
                s.write_all(part).unwrap();
            }
            s.conn.send_close_notify();
            s.flush().unwrap();
            req
        });

        let mut poll = Poll::new().unwrap();
        let sock = TcpStream::connect(addr).unwrap();
        let mut conn = Conn::new(sock, Some(&client), addr.ip()).unwrap();
        poll.registry()
            .register(
                conn.socket_mut(),
                Token(0),
                Interest::READABLE | Interest::WRITABLE,
            )
            .unwrap();
        let mut events = Events::with_capacity(8);
        let (mut raw, mut plain) = (vec![0u8; 1500], Vec::new());
        let mut got = Vec::new();
        let mut sent = false;
        let mut eof = false;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !eof && Instant::now() < deadline {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            if !sent && conn.socket().peer_addr().is_ok() {
                assert_eq!(conn.write(b"GET / HTTP/1.1\r\n\r\n").unwrap(), 18);
                sent = true;
            }
            conn.flush_pending().unwrap();
            loop {
                match conn.recv(&mut raw, &mut plain) {
                    Ok(r) => {
                        got.extend_from_slice(r.data);
                        if r.eof {
                            eof = true;
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("recv: {e}"),
                }
            }
        }
        assert!(eof, "no close_notify within 10 s");
        assert!(!conn.handshaking());
        assert!(conn.tls_description().unwrap().starts_with("TLSv1_3"));
        assert_eq!(got.len(), expected.len());
        assert!(got == expected);
        assert_eq!(server.join().unwrap(), b"GET / HTTP/1.1\r\n\r\n");
    }
}
