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
//! fields, [`info`] reads `XINFO STREAM`, [`progress`] the nodes' hash. This crate knows nothing of events or YAML: the server
//! hands over [`Settings`] and event lines.

pub mod entry;
pub mod id;
pub mod info;
pub mod link;
pub mod progress;
pub mod reader;
pub mod resp;
pub mod wire;
pub mod writer;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

pub use entry::Entry;
pub use id::StreamId;

/// Appends waiting for the writer; past this a publish is refused at once.
pub const QUEUE_CAPACITY: usize = 16 * 1024;
/// Appends sent to Redis in one pipeline.
pub const BATCH: usize = 512;
/// Entries asked for per `XREAD`.
pub const READ_COUNT: usize = 1024;
/// How long one `XREAD` blocks waiting for new entries.
pub const READ_BLOCK: Duration = Duration::from_millis(1000);
/// Cursors remembered for de-duplication, at least.
pub const SEEN_MIN: usize = 10_000;

/// Where Redis is.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// `redis://[user:password@]host:port/db` or `rediss://…`.
    Url(String),
    /// Ask Sentinels for the master.
    Sentinel(SentinelTarget),
}

/// Where the Sentinels are, the master to ask them for, and the AUTH each
/// side needs.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SentinelTarget {
    pub master: String,
    /// `host:port` of each Sentinel.
    pub nodes: Vec<String>,
    /// AUTH for the master and its replicas.
    pub username: Option<String>,
    pub password: Option<String>,
    /// AUTH for the Sentinels (their own `requirepass`).
    pub sentinel_password: Option<String>,
}

impl fmt::Debug for Target {
    /// Never shows a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Url(url) => write!(f, "Url({})", link::redact(url)),
            Target::Sentinel(s) => f
                .debug_struct("Sentinel")
                .field("master", &s.master)
                .field("nodes", &s.nodes)
                .field("auth", &s.password.is_some())
                .finish(),
        }
    }
}

/// What the bus needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    pub target: Target,
    /// The stream's key; nodes with the same key form one cluster.
    pub stream: String,
    /// Entries the stream keeps (approximate trim on every append).
    pub max_len: u64,
    /// Connecting, and each command.
    pub timeout: Duration,
    /// PEM CA certificates for `rediss://` with a private CA.
    pub ca_file: Option<PathBuf>,
    /// Entries loaded into the backlog on start (the newest).
    pub load: usize,
    /// This node's name in the entries it appends.
    pub node: String,
    /// A node that has not recorded its progress for this long no longer
    /// holds the others back.
    pub node_timeout: Duration,
}

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
            BusError::Setup(e) => write!(f, "cluster: {e}"),
            BusError::Thread(e) => write!(f, "cluster: cannot start a thread: {e}"),
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

/// Sends messages to the server and wakes it.
#[derive(Clone)]
pub struct Outbox {
    tx: Sender<Message>,
    notify: Arc<dyn Fn() + Send + Sync>,
    stopped: Arc<AtomicBool>,
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
