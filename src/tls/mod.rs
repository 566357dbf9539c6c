//! TLS: everything about it, in one folder. `transport.rs` is the
//! connection's byte stream (plain TCP, or rustls doing the handshake and
//! TLS 1.2), `records.rs` the TLS 1.3 record layer that takes over after a
//! TLS 1.3 handshake, and `off.rs` the stand-in for builds without the
//! `tls` feature: the same names, a `ServerConfig` with no values, so the
//! reactor's call sites need no cfg.

#[cfg(not(feature = "tls"))]
mod off;
#[cfg(feature = "tls")]
mod records;
#[cfg(feature = "tls")]
mod transport;

#[cfg(not(feature = "tls"))]
pub use off::{load_config, ServerConfig, Transport};
#[cfg(all(fuzzing, feature = "tls"))]
pub use records::fuzz_records;
#[cfg(feature = "tls")]
pub use transport::{load_config, preferred_cipher_suites, ServerConfig, TlsStream, Transport};
