//! What goes between the server and the bus's threads: the appends the
//! server queues, and the messages (append outcomes, entries, link
//! changes, gaps) the threads send back through an `Outbox`, each followed
//! by a wake-up of the server.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;

use crate::entry::Entry;
use crate::id::StreamId;

/// One event to append.
#[derive(Debug, Clone)]
pub struct Append {
    /// Handed back in [`Message::Appended`].
    pub token: u64,
    pub cursor: String,
    /// The event as its storage line (what every node rebuilds it from).
    pub event: String,
    /// Not sent at all after this (the publisher has been answered).
    pub deadline: Instant,
}

/// Why an append did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendError {
    /// Not sent to Redis: unreachable, or the deadline passed first.
    NotSent,
    /// Sent, outcome unknown, retried until given up: it may be in the
    /// stream (once: readers drop repeated cursors).
    GaveUp,
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppendError::NotSent => f.write_str("not appended (Redis unavailable)"),
            AppendError::GaveUp => f.write_str("outcome unknown; retries given up"),
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
}

/// Sends messages to the server and wakes it.
#[derive(Clone)]
pub struct Outbox {
    tx: Sender<Message>,
    notify: Arc<dyn Fn() + Send + Sync>,
    stopped: Arc<AtomicBool>,
}

impl Outbox {
    pub(crate) fn new(
        tx: Sender<Message>,
        notify: Arc<dyn Fn() + Send + Sync>,
        stopped: Arc<AtomicBool>,
    ) -> Outbox {
        Outbox {
            tx,
            notify,
            stopped,
        }
    }

    /// The server has dropped its end: stop.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// False once the server is gone (the thread should stop).
    pub fn send(&self, message: Message) -> bool {
        let ok = self.tx.send(message).is_ok();
        (self.notify)();
        ok
    }
}
