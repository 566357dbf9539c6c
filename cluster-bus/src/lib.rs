//! The cluster bus: several pubsubd nodes share every event, in one order,
//! through one Redis stream.
//!
//! Two helper threads per node do all the Redis I/O on connections of
//! their own ([`wire`]: blocking sockets, RESP through [`resp`]; the
//! `redis` crate only parses URLs and asks Sentinels), so the event loop
//! never waits on the network:
//! - the [`writer`] takes [`Append`]s from a bounded channel and appends
//!   them in pipelined batches (`XADD key MAXLEN ~ n * ...`), answering each
//!   with [`Message::Appended`] once Redis acknowledged it (or it failed);
//! - the [`reader`] loads the newest entries on start, then follows the
//!   stream with `XREAD BLOCK` from the last entry it delivered, and sends
//!   [`Message::Entries`] in stream order — this node's own appends
//!   included, since every node delivers from the stream. With each read
//!   it records how far this node has read in a hash beside the stream
//!   ([`progress`]) and reports the slowest live node's lag
//!   ([`Message::Progress`]), so the server can refuse publishes that the
//!   trim would take from a node that has not read them.
//!
//! Both send on one channel and then call `notify` (the server's waker).
//!
//! Invariants:
//! - an entry is delivered at most once per cursor and per idempotency
//!   key: an append whose outcome is unknown (timeout, dropped connection)
//!   may be re-sent with the same cursor before its deadline, and the
//!   reader drops a cursor, or a key, it has already delivered
//!   ([`id::SeenCursors`]);
//! - nothing is sent, or re-sent, at or after an append's deadline, and
//!   each append gets exactly one answer by then: [`AppendError::NotSent`]
//!   (never written to Redis), [`AppendError::Refused`] (Redis said no) or
//!   [`AppendError::Unknown`] (written, no answer in time);
//! - after a reconnect the reader resumes after the last ID it delivered;
//!   a stream that lost that ID is reported as [`Gap::Reset`] (Redis came
//!   back empty: read again from the start) or [`Gap::Trimmed`] (entries
//!   after it were trimmed away), then served as it is.
//!
//! Layout: [`link`] finds the master (URL or Sentinel) and opens
//! connections, [`wire`] is one connection, [`resp`] the protocol, [`id`]
//! compares stream IDs and remembers cursors, [`entry`] is the entry's
//! fields, [`info`] reads `XINFO STREAM`, [`progress`] the nodes' hash,
//! [`settings`] what the server hands over, [`message`] what goes between
//! the server and the threads. This crate knows nothing of events or
//! YAML: the server hands over [`Settings`] and event lines.

pub mod entry;
pub mod id;
pub mod info;
pub mod link;
pub mod message;
pub mod progress;
pub mod reader;
pub mod resp;
pub mod settings;
pub mod wire;
pub mod writer;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

pub use entry::Entry;
pub use id::StreamId;
pub use message::{Append, AppendError, Gap, Message, Outbox, Side};
pub use settings::{SentinelTarget, Settings, Target, READ_BLOCK, READ_COUNT, SEEN_MIN};
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
    /// `None` once dropped (the writer then leaves the nodes' hash).
    appends: Option<Sender<Vec<Append>>>,
    /// Appends of this turn, sent in one message by [`Bus::send_pending`]:
    /// one wake-up of the writer per turn, not per publish.
    pending: Vec<Append>,
    /// Appends sent to the writer and not yet taken by it.
    queued: Arc<AtomicUsize>,
    messages: Receiver<Message>,
    stopped: Arc<AtomicBool>,
    /// Closed by the writer once it has left.
    writer_done: Receiver<()>,
}

/// How long a stopping server waits for the writer to take this node out
/// of the nodes' hash.
const LEAVE_WAIT: Duration = Duration::from_millis(500);

impl Drop for Bus {
    /// Tells the reader to stop, and the writer (its channel closes) to
    /// remove this node's progress entry; waits a little for that, so the
    /// other nodes stop counting this one at once.
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.appends = None;
        let _ = self.writer_done.recv_timeout(LEAVE_WAIT);
    }
}

impl Bus {
    /// Queues an append for the end of the turn; a full queue hands it
    /// back (answer 503 at once).
    pub fn append(&mut self, append: Append) -> Result<(), Append> {
        let queued = self.queued.load(Ordering::Relaxed) + self.pending.len();
        if self.appends.is_none() || queued >= QUEUE_CAPACITY {
            return Err(append);
        }
        self.pending.push(append);
        Ok(())
    }

    /// Hands this turn's appends to the writer; if it is gone they come
    /// back (each to be answered 503: none was sent).
    pub fn send_pending(&mut self) -> Result<(), Vec<Append>> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        let Some(appends) = &self.appends else {
            return Err(batch);
        };
        let n = batch.len();
        self.queued.fetch_add(n, Ordering::Relaxed);
        appends.try_send(batch).map_err(|e| {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            match e {
                TrySendError::Full(b) | TrySendError::Disconnected(b) => b,
            }
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
    let queued = Arc::new(AtomicUsize::new(0));
    let (message_tx, message_rx) = crossbeam_channel::bounded(1024);
    let stopped = Arc::new(AtomicBool::new(false));
    let out = Outbox {
        tx: message_tx,
        notify,
        stopped: stopped.clone(),
    };
    let writer = writer::Writer::new(
        &settings,
        opener.clone(),
        append_rx,
        queued.clone(),
        out.clone(),
    );
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
    std::thread::Builder::new()
        .name("cluster-writer".into())
        .spawn(move || {
            writer.run();
            drop(done_tx);
        })
        .map_err(BusError::Thread)?;
    let reader = reader::Reader::new(&settings, opener, out);
    std::thread::Builder::new()
        .name("cluster-reader".into())
        .spawn(move || reader.run())
        .map_err(BusError::Thread)?;
    Ok(Bus {
        appends: Some(append_tx),
        pending: Vec::new(),
        queued,
        messages: message_rx,
        stopped,
        writer_done: done_rx,
    })
}
