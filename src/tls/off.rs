//! Without the `tls` feature (the appliance core): plain TCP only, behind
//! the same names `transport.rs` gives the reactor. A configured `server.tls`
//! stops start-up with a clear error instead of being ignored.

use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;

use super::error::TlsError;
use crate::config::TlsConfig;

/// No TLS configuration can exist in this build.
pub enum ServerConfig {}

pub fn load_config(_: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    Err(TlsError::NotBuilt)
}

/// What a connection's bytes travel over: plain TCP here.
#[derive(Debug)]
pub enum Transport {
    Plain(TcpStream),
}

impl Transport {
    pub fn tls(_: TcpStream, config: Arc<ServerConfig>) -> io::Result<Transport> {
        match *config {}
    }

    /// The socket, for (de)registration.
    pub fn socket(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(s) => s,
        }
    }

    /// No handshake ever happens here.
    pub fn handshake_outcome(&mut self, _: &io::Result<usize>) -> Option<bool> {
        None
    }

    pub fn short_read_drains(&self) -> bool {
        true
    }

    /// Nothing is ever held back.
    pub fn flush_pending(&mut self) -> io::Result<bool> {
        Ok(false)
    }

    /// Plain TCP owes nothing at its close.
    pub fn close(&mut self) -> bool {
        false
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
