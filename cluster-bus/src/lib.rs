//! The cluster bus: several pubsubd nodes share every event, in one order,
//! through one Redis stream.
//!
//! Two helper threads per node do all the Redis I/O with the `redis`
//! crate's blocking client (no async runtime), so the event loop never
//! waits on the network:
//! - the [`writer`] takes [`Append`]s from a bounded channel and appends
//!   them in pipelined batches (`XADD key MAXLEN ~ n * ...`), answering each
//!   with [`Message::Appended`] once Redis acknowledged it (or it failed);
//! - the [`reader`] loads the newest entries on start, then follows the
//!   stream with `XREAD BLOCK` from the last entry it delivered, and sends
//!   [`Message::Entries`] in stream order — this node's own appends
//!   included, since every node delivers from the stream.
//!
//! Both send on one channel and then call `notify` (the server's waker).
//!
//! Invariants:
//! - an entry is delivered at most once per cursor: an append whose outcome
//!   is unknown (timeout, dropped connection) is retried with the same
//!   cursor, and the reader drops a cursor it has already delivered
//!   ([`id::SeenCursors`]);
//! - an append never sent before its deadline is never sent: the publisher
//!   has been told it failed;
//! - after a reconnect the reader resumes after the last ID it delivered;
//!   a stream that lost that ID is reported as [`Gap::Reset`] (Redis came
//!   back empty: read again from the start) or [`Gap::Trimmed`] (entries
//!   after it were trimmed away), then served as it is.
//!
//! Layout: [`link`] opens connections (URL or Sentinel, TLS, timeouts),
//! [`id`] compares stream IDs and remembers cursors, [`entry`] is the
//! entry's fields, `settings.rs` what the server hands over, `message.rs`
//! what goes between the server and the threads. This crate knows nothing of events or YAML: the server
//! hands over [`Settings`] and event lines.

pub mod entry;
pub mod id;
pub mod info;
pub mod link;
mod message;
pub mod reader;
mod settings;
pub mod writer;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};

pub use entry::Entry;
pub use id::StreamId;
pub use message::{Append, AppendError, Gap, Message, Outbox, Side};
pub use reader::{READ_BLOCK, READ_COUNT, SEEN_MIN};
pub use settings::{SentinelTarget, Settings, Target};
pub use writer::BATCH;

/// Appends waiting for the writer; past this a publish is refused at once.
pub const QUEUE_CAPACITY: usize = 16 * 1024;

/// Why the bus could not start.
#[derive(Debug)]
pub enum BusError {
    /// The URL, the Sentinel list or the CA file is unusable.
    Setup(String),
    /// A helper thread could not be spawned.
    Thread(std::io::Error),
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusError::Setup(e) => f.write_str(e),
            BusError::Thread(e) => write!(f, "cannot start a thread: {e}"),
        }
    }
}

impl std::error::Error for BusError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BusError::Thread(e) => Some(e),
            BusError::Setup(_) => None,
        }
    }
}

/// The server's end of the bus.
pub struct Bus {
    appends: Sender<Append>,
    messages: Receiver<Message>,
    stopped: Arc<AtomicBool>,
}

impl Drop for Bus {
    /// Tells the reader to stop (the writer stops when its channel closes).
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
    }
}

impl Bus {
    /// Queues an append; a full queue hands it back (answer 503 at once).
    pub fn append(&self, append: Append) -> Result<(), Append> {
        self.appends.try_send(append).map_err(|e| match e {
            TrySendError::Full(a) | TrySendError::Disconnected(a) => a,
        })
    }

    /// What the threads have sent so far (take with `try_iter`).
    pub fn messages(&self) -> &Receiver<Message> {
        &self.messages
    }
}

/// Starts the writer and the reader. `notify` wakes the server after each
/// message. The threads stop once the [`Bus`] is dropped (the writer at
/// once, the reader after its current `XREAD`).
pub fn start(settings: Settings, notify: Arc<dyn Fn() + Send + Sync>) -> Result<Bus, BusError> {
    let opener = link::Opener::new(&settings).map_err(BusError::Setup)?;
    let (append_tx, append_rx) = crossbeam_channel::bounded(QUEUE_CAPACITY);
    let (message_tx, message_rx) = crossbeam_channel::bounded(1024);
    let stopped = Arc::new(AtomicBool::new(false));
    let out = Outbox::new(message_tx, notify, stopped.clone());
    let writer = writer::Writer::new(&settings, opener.clone(), append_rx, out.clone());
    std::thread::Builder::new()
        .name("cluster-writer".into())
        .spawn(move || writer.run())
        .map_err(BusError::Thread)?;
    let reader = reader::Reader::new(&settings, opener, out);
    std::thread::Builder::new()
        .name("cluster-reader".into())
        .spawn(move || reader.run())
        .map_err(BusError::Thread)?;
    Ok(Bus {
        appends: append_tx,
        messages: message_rx,
        stopped,
    })
}
