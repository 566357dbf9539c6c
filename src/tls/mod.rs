//! TLS: everything about it, in one folder. `transport.rs` is the
//! connection's byte stream (plain TCP, or rustls doing the handshake and
//! TLS 1.2), `records.rs` the TLS 1.3 record layer that takes over after a
//! TLS 1.3 handshake, `closing.rs` the orderly close (close_notify, and
//! the rest of a record already started, before the socket closes), and
//! `off.rs` the stand-in for builds without the `tls` feature: the same
//! names, a `ServerConfig` with no values, so the reactor's call sites
//! need no cfg; `error.rs` why a setup failed, in both builds. Tests: `harness.rs` (the record layer's made-up peer, RFC
//! oracle and fuzz harness) and `differential.rs` (against rustls's own
//! record protection and RFC 8448's records).

mod closing;
#[cfg(all(test, feature = "tls"))]
mod differential;
mod error;
#[cfg(all(any(fuzzing, test), feature = "tls"))]
mod harness;
#[cfg(not(feature = "tls"))]
mod off;
#[cfg(feature = "tls")]
mod records;
#[cfg(feature = "tls")]
mod transport;

pub use closing::Closing;
pub use error::TlsError;
#[cfg(all(fuzzing, feature = "tls"))]
pub use harness::fuzz_records;
#[cfg(not(feature = "tls"))]
pub use off::{load_config, ServerConfig, Transport};
#[cfg(feature = "tls")]
pub use transport::{load_config, preferred_cipher_suites, ServerConfig, TlsStream, Transport};
