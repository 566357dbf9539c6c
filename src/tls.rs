//! TLS inside the reactor: loading the PEM certificate chain and key into a
//! rustls server config, and the `Transport` a connection reads and writes,
//! plain TCP or rustls over TCP, both non-blocking.
//!
//! rustls buffers at most `TLS_BUFFER_LIMIT` bytes of plaintext per
//! connection; the connection's own output queue stays the one place where
//! pending output is counted and capped.

use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;
use pki_types::pem::PemObject;
use pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

use crate::config::TlsConfig;

/// Plaintext rustls may hold for one connection before `write` returns
/// fewer bytes than offered.
const TLS_BUFFER_LIMIT: usize = 64 * 1024;

/// Builds the rustls config from `server.tls`; errors name the file.
pub fn load_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, String> {
    let read_certs = |path: &std::path::Path| -> Result<Vec<CertificateDer<'static>>, String> {
        let certs: Vec<_> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read certificate file {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("invalid PEM in {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("no certificate found in {}", path.display()));
        }
        Ok(certs)
    };
    let mut certs = read_certs(&tls.cert)?;
    if let Some(chain) = &tls.chain {
        certs.extend(read_certs(chain)?);
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| format!("cannot read a private key from {}: {e}", tls.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "the key in {} does not fit the certificate in {}: {e}",
                tls.key.display(),
                tls.cert.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What a connection's bytes travel over.
#[derive(Debug)]
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

/// rustls over a non-blocking TCP socket.
#[derive(Debug)]
pub struct TlsStream {
    socket: TcpStream,
    tls: ServerConnection,
}

impl Transport {
    pub fn tls(socket: TcpStream, config: Arc<ServerConfig>) -> io::Result<Transport> {
        let mut tls = ServerConnection::new(config).map_err(io::Error::other)?;
        tls.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        Ok(Transport::Tls(Box::new(TlsStream { socket, tls })))
    }

    /// The socket, for (de)registration.
    pub fn socket(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &mut t.socket,
        }
    }

    /// Sends bytes that TLS has encrypted but not yet written. Returns
    /// true if some are still waiting for the socket.
    pub fn flush_pending(&mut self) -> io::Result<bool> {
        match self {
            Transport::Plain(_) => Ok(false),
            Transport::Tls(t) => t.write_tls(),
        }
    }
}

impl TlsStream {
    /// Writes TLS records until none are left or the socket would block.
    fn write_tls(&mut self) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.socket) {
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

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let t = match self {
            Transport::Plain(s) => return s.read(buf),
            Transport::Tls(t) => t,
        };
        loop {
            match t.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // No plaintext yet: take more records from the socket.
            match t.tls.read_tls(&mut t.socket) {
                Ok(0) => return Ok(0),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            if let Err(e) = t.tls.process_new_packets() {
                // Send the alert if we can, then give up on the peer.
                let _ = t.write_tls();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // The handshake may have produced records to send.
            t.write_tls()?;
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let t = match self {
            Transport::Plain(s) => return s.write_vectored(bufs),
            Transport::Tls(t) => t,
        };
        // Records from earlier writes go first; while the socket is full,
        // take nothing more.
        if t.write_tls()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = t.tls.writer().write_vectored(bufs)?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            // Still handshaking with a full buffer: wait for the peer.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        t.write_tls()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.flush_pending()? {
            true => Err(io::ErrorKind::WouldBlock.into()),
            false => Ok(()),
        }
    }
}
