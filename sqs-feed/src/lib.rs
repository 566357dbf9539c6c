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
//! [`message`] turns received messages into events and remembers MessageIds,
//! `settings.rs` holds what the server hands over ([`QueueSettings`]).
//! This crate knows nothing of the server or of YAML: the server validates
//! its `sqs:` section and hands over [`QueueSettings`].

mod client;
pub mod credentials;
pub mod message;
mod poller;
mod settings;
pub mod sigv4;
mod stats;

pub use credentials::credentials_from_chain;
pub use message::{event_from_body, triage, BodyError, SeenIds, SqsEvent, Taken, SEEN_CAPACITY};
pub use poller::{start, Backoff, BACKOFF_MAX, BACKOFF_MIN};
pub use settings::{Credentials, Endpoint, QueueSettings};
pub use stats::{FeedCounts, FeedStats};
