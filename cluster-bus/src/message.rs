//! What goes between the server and the bus's threads: the appends the
//! server queues, and the messages (append outcomes, entries, link
//! changes, gaps, progress) the threads send back through an `Outbox`,
//! each followed by a wake-up of the server.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;

use crate::entry::Entry;
use crate::id::StreamId;
use crate::progress;

/// One event to append.
#[derive(Debug, Clone)]
pub struct Append {
    /// Handed back in [`Message::Appended`].
    pub token: u64,
    pub cursor: String,
    /// The event as its storage line (what every node rebuilds it from).
    pub event: String,
    /// The publisher's `Idempotency-Key`, stored beside the event.
    pub key: Option<String>,
    /// Not sent at all after this (the publisher has been answered).
    pub deadline: Instant,
}

/// Why an append was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendError {
    /// Never written to Redis (unreachable, or the connection was found
    /// closed before the batch): not stored.
    NotSent,
    /// Redis answered with an error (read-only replica, out of memory):
    /// not stored.
    Refused(String),
    /// Written, and no answer came by the deadline: it may be in the
    /// stream (at most once: readers drop repeated cursors). Never sent
    /// again.
    Unknown,
}

impl AppendError {
    /// True when the event is certainly not in the stream.
    pub fn not_stored(&self) -> bool {
        !matches!(self, AppendError::Unknown)
    }
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppendError::NotSent => f.write_str("not appended (Redis unavailable)"),
            AppendError::Refused(e) => write!(f, "Redis refused the append: {e}"),
            AppendError::Unknown => f.write_str("sent, no answer in time: outcome unknown"),
        }
    }
}

/// A position the reader could not resume from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gap {
    /// The stream no longer has the last delivered entry and never deleted
    /// it: Redis came back empty (or the key was recreated).
    Reset,
    /// Entries after the last delivered one were trimmed before being read.
    Trimmed,
}

/// Which thread's link to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Reader,
    Writer,
}

/// What the helper threads tell the server.
#[derive(Debug)]
pub enum Message {
    /// The final outcome of one append; `Ok` carries its stream ID.
    Appended {
        token: u64,
        result: Result<StreamId, AppendError>,
    },
    /// Entries in stream order, repeated cursors already dropped.
    Entries {
        entries: Vec<Entry>,
        /// Loaded on start (history for the backlog, not news).
        initial: bool,
        /// Entries dropped from this batch as repeated cursors.
        duplicates: u64,
        /// Entries dropped as repeated idempotency keys.
        key_duplicates: u64,
        /// The batch was full: the reader is behind.
        behind: bool,
    },
    /// A link to Redis came up (true) or went down (false, with why).
    Link {
        side: Side,
        up: bool,
        error: Option<String>,
    },
    Gap(Gap),
    /// How far the nodes have read, as of the reader's last look.
    Progress(progress::Progress),
}

/// Sends messages to the server and wakes it.
#[derive(Clone)]
pub struct Outbox {
    pub(crate) tx: Sender<Message>,
    pub(crate) notify: Arc<dyn Fn() + Send + Sync>,
    pub(crate) stopped: Arc<AtomicBool>,
}

impl Outbox {
    /// The server has dropped its end: stop.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// False once the server is gone (the thread should stop).
    pub fn send(&self, message: Message) -> bool {
        let ok = self.push(message);
        self.wake();
        ok
    }

    /// Sends without waking the server: several messages, then one
    /// [`Outbox::wake`].
    pub fn push(&self, message: Message) -> bool {
        self.tx.send(message).is_ok()
    }

    pub fn wake(&self) {
        (self.notify)();
    }
}
