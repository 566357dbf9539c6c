//! Why the server could not start: one enum for every start-up failure,
//! each naming what it was about (file, key, address) and keeping its
//! cause as `source()`.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::acl::AclError;
use crate::config::ConfigError;
use crate::feeds::FeedError;
use crate::tls::TlsError;

#[derive(Debug)]
pub enum StartError {
    /// `pypubsub.yaml` could not be read or is invalid.
    Config(ConfigError),
    /// The ACL file could not be read or is invalid.
    Acl { path: PathBuf, source: AclError },
    /// The TLS certificate or key could not be loaded.
    Tls(TlsError),
    /// A listener could not be bound.
    Listen { addr: SocketAddr, source: io::Error },
    /// A feed (the LDAP pool, the cluster bus) could not start.
    Feed(FeedError),
    /// `--ready-file`: the file could not be written.
    ReadyFile { path: PathBuf, source: io::Error },
    /// The backlog's storage writer could not start.
    Backlog { path: PathBuf, source: io::Error },
    /// Signals, the poll or the waker.
    Io(io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Acl { path, source } => write!(f, "{}: {source}", path.display()),
            StartError::Tls(e) => write!(f, "TLS: {e}"),
            StartError::Listen { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            StartError::Feed(e) => write!(f, "{e}"),
            StartError::ReadyFile { path, source } => {
                write!(
                    f,
                    "cannot write the ready file {}: {source}",
                    path.display()
                )
            }
            StartError::Backlog { path, source } => {
                write!(f, "backlog storage {}: {source}", path.display())
            }
            StartError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Config(e) => Some(e),
            StartError::Acl { source, .. } => Some(source),
            StartError::Listen { source, .. }
            | StartError::Backlog { source, .. }
            | StartError::ReadyFile { source, .. } => Some(source),
            StartError::Io(e) => Some(e),
            StartError::Feed(e) => Some(e),
            StartError::Tls(e) => Some(e),
        }
    }
}

impl From<ConfigError> for StartError {
    fn from(e: ConfigError) -> Self {
        StartError::Config(e)
    }
}

impl From<FeedError> for StartError {
    fn from(e: FeedError) -> Self {
        StartError::Feed(e)
    }
}
