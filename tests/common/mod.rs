//! Black-box test harness for the real `pubsubd` binary: the one place every
//! test binary gets its helpers from (`mod common; use common::*;`).
//!
//! Owns the shared constants (the binary, the default wait bound `T`, the
//! server's exact response texts) and the module map:
//! - `wait`: bounded polling (`wait_until`, `wait_child`)
//! - `fs`: `TempDir`
//! - `procs`: child processes (`Reaped`, signals, run-to-exit, Python)
//! - `server`: the server process (`Server::builder()`, `Server::start`)
//! - `http`: a raw HTTP/1.1 client (`Conn`, `Response`)
//! - `subscriber`: a `GET` stream (`Subscriber`)
//! - `events`: what an event must look like, sentinels, `ns`
//! - `net`: loopback addresses, clients from another loopback address
//! - `port`: `free_port`, for helpers that must be told their port
//! - `pki`: throw-away certificates (rcgen)
//! - `websocket`: a raw WebSocket client (`WsClient`)
//! - `jwt` (feature `tokens`): throw-away keys and signed tokens, the
//!   same file as the unit tests' (`src/tokens/test_keys.rs`)
//!
//! Invariants: every wait has a deadline (no unbounded loop, no fixed sleep
//! where a condition can be polled); every process started here is stopped by
//! its PID on drop (SIGTERM, then SIGKILL after a bound); only loopback
//! addresses are ever connected to.
#![allow(dead_code)]

mod events;
mod fs;
mod http;
mod net;
mod pki;
mod port;
mod procs;
mod server;
mod stopped;
mod subscriber;
mod wait;
mod websocket;

#[cfg(feature = "tokens")]
#[path = "../../src/tokens/test_keys.rs"]
pub mod jwt;

// Each test binary uses some of these, none uses all.
#[allow(unused_imports)]
pub use events::*;
#[allow(unused_imports)]
pub use fs::*;
#[allow(unused_imports)]
pub use http::*;
#[allow(unused_imports)]
pub use net::*;
#[allow(unused_imports)]
pub use pki::*;
#[allow(unused_imports)]
pub use port::*;
#[allow(unused_imports)]
pub use procs::*;
#[allow(unused_imports)]
pub use server::*;
pub use stopped::*;
#[allow(unused_imports)]
pub use subscriber::*;
#[allow(unused_imports)]
pub use wait::*;
#[allow(unused_imports)]
pub use websocket::*;

use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_pubsubd");
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Default bound for a single wait (a response, an event, a start-up).
pub const T: Duration = Duration::from_secs(10);

pub const MSG_ACCEPTED: &str = "Payload received, thank you very much!\n";
pub const MSG_FORBIDDEN: &str = "You are not authorized to deliver payloads!\n";
pub const MSG_BAD_TYPE: &str =
    "Bad payload type. Payloads must be JSON dictionary objects, {..}!\n";
pub const MSG_TOO_LARGE: &str = "Payload is too large for me to serve, please make it shorter.\n";
pub const MSG_BAD_REQUEST_PREFIX: &str = "I could not understand your request, sorry!";

pub const STREAM_CONTENT_TYPE: &str = "application/vnd.pypubsub-stream";
