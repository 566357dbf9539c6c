//! The SQS feed: events taken from Amazon SQS queues (or an SQS-compatible
//! server) and published as if they had been `PUT` to their `pubsub_path`.
//!
//! One poller thread per configured queue long-polls `ReceiveMessage` with a
//! small blocking HTTP client (`ureq`), so the reactor thread never waits on
//! the network and no async runtime is needed. Requests use the SQS JSON
//! protocol (`X-Amz-Target: AmazonSQS.<Action>`) and are signed here with
//! AWS Signature Version 4 (HMAC-SHA256).
//!
//! Each message body must be a JSON object; it becomes an [`SqsEvent`] sent
//! on the reactor's channel, followed by a wake-up (`notify`). Invariants:
//! - a MessageId is emitted at most once while it is among the last
//!   [`SEEN_CAPACITY`] ids the poller has taken (oldest forgotten first);
//! - with `delete: true` every message taken is deleted after it has been
//!   handed over, including duplicates and bodies that are not JSON objects
//!   (those are logged and skipped), so nothing loops forever;
//! - a failure (no credentials, unreachable endpoint, missing queue, rejected
//!   signature) is logged and retried after a back-off that doubles from
//!   [`BACKOFF_MIN`] to [`BACKOFF_MAX`]; it never reaches the server.
//!
//! A poller stops when the channel's receiver is gone, which it notices the
//! next time it has an event to send.
//!
//! Layout: [`poller`] runs one queue, [`client`] is the signed HTTP client,
//! [`sigv4`] the request signing, [`credentials`] the AWS credential chain,
//! [`message`] turns received messages into events and remembers MessageIds.
//! This crate knows nothing of the server or of YAML: the server validates
//! its `sqs:` section and hands over [`QueueSettings`].

mod client;
pub mod credentials;
pub mod message;
mod poller;
pub mod sigv4;
mod stats;

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

pub use credentials::credentials_from_chain;
pub use message::{event_from_body, triage, BodyError, SeenIds, Taken};
pub use poller::{start, Backoff};
pub use stats::{FeedCounts, FeedStats};

/// MessageIds remembered per queue for de-duplication.
pub const SEEN_CAPACITY: usize = 10_000;
/// First retry delay after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// One message taken from a queue, ready to be published.
#[derive(Debug, Clone, PartialEq)]
pub struct SqsEvent {
    /// The message's `pubsub_path`, or `/`.
    pub path: String,
    /// The body object as received (the reactor adds or overwrites the
    /// `pubsub_*` keys like a publish).
    pub object: Map<String, Value>,
}

/// AWS credentials. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Where requests go: scheme, `host[:port]` (default port left out, as in
/// the `Host` header) and the base path. Validated by the server's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub https: bool,
    pub authority: String,
    pub path: String,
}

impl Endpoint {
    /// `scheme://authority/path/`.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority, self.path)
    }
}

/// The settings of one queue (one entry of the server's `sqs:` section).
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSettings {
    /// The entry's name in the configuration (for logs).
    pub name: String,
    /// A queue name (resolved with GetQueueUrl) or a queue URL.
    pub queue: String,
    pub region: String,
    /// Delete messages once taken.
    pub delete: bool,
    /// Configured `key` and `secret`; `None` = the standard AWS chain.
    pub credentials: Option<Credentials>,
    pub endpoint: Endpoint,
    /// Long-poll seconds, 1 to 20.
    pub wait_time: u32,
}
