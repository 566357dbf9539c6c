//! Why the TLS setup failed, in both builds: which file, what about it,
//! and the library's own error as `source()`.

use std::fmt;
use std::path::PathBuf;

/// The library's error underneath (rustls, the PEM reader).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
pub enum TlsError {
    /// A certificate or chain file could not be read (`source`), is not
    /// PEM, or holds no certificate (`source` is `None`).
    Certificates {
        path: PathBuf,
        what: &'static str,
        source: Option<Cause>,
    },
    /// No private key could be read from the key file.
    Key { path: PathBuf, source: Cause },
    /// The key does not fit the certificate.
    Mismatch {
        key: PathBuf,
        cert: PathBuf,
        source: Cause,
    },
    /// rustls refused a part of the setup (protocol versions, tickets).
    Setup { what: &'static str, source: Cause },
    /// `server.tls` is set, but this build has no TLS (feature `tls`).
    NotBuilt,
    /// A TLS listener was handed to `Server::new` without `server.tls`.
    NoSettings,
}

impl fmt::Display for TlsError {
    /// What failed, then the library's words (as the other start-up errors
    /// do: whoever prints it sees the whole reason).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Certificates { path, what, source } => {
                write!(f, "{what} {}", path.display())?;
                match source {
                    Some(e) => write!(f, ": {e}"),
                    None => Ok(()),
                }
            }
            TlsError::Key { path, source } => {
                write!(
                    f,
                    "cannot read a private key from {}: {source}",
                    path.display()
                )
            }
            TlsError::Mismatch { key, cert, source } => write!(
                f,
                "the key in {} does not fit the certificate in {}: {source}",
                key.display(),
                cert.display()
            ),
            TlsError::Setup { what, source } => write!(f, "{what}: {source}"),
            TlsError::NotBuilt => {
                f.write_str("server.tls is set, but this build has no TLS support (feature `tls`)")
            }
            TlsError::NoSettings => {
                f.write_str("a TLS listener needs server.tls in the configuration")
            }
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Certificates { source, .. } => source
                .as_deref()
                .map(|e| e as &(dyn std::error::Error + 'static)),
            TlsError::Key { source, .. }
            | TlsError::Mismatch { source, .. }
            | TlsError::Setup { source, .. } => Some(&**source),
            TlsError::NotBuilt | TlsError::NoSettings => None,
        }
    }
}
