//! The writer thread: appends events to the stream in pipelined batches.
//!
//! It takes up to [`BATCH`] appends at a time from its channel and sends
//! them as one pipeline of `XADD key MAXLEN ~ n * c <cursor> e <event> n
//! <node> [k <key>]`. Each append gets exactly one [`Message::Appended`],
//! by its deadline:
//! - `Ok(id)` once Redis acknowledged it;
//! - `NotSent` if its deadline came before it could be written (Redis
//!   unreachable): it is never written afterwards;
//! - `Refused` if Redis answered with an error: not stored (`Unknown` if
//!   an earlier write of it, on a connection that then failed, may have
//!   landed);
//! - `Unknown` if it was written and no answer came by its deadline: it is
//!   never written again, and shows at most once (readers drop a cursor
//!   they have delivered).
//!
//! A batch is only written into a connection that has not been closed by
//! the peer: [`Wire::peer_closed`] looks for a pending EOF or RST (what a
//! `kill -9` of Redis, a restart or `CLIENT KILL` leaves) before every
//! batch, so those appends count as not sent and go out on a new
//! connection. An append written whose connection then failed is re-sent
//! (same cursor) on a new one while its deadline allows. Each reply is
//! awaited until its own append's deadline, no longer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::{info, warn};

use crate::entry::{FIELD_CURSOR, FIELD_EVENT, FIELD_KEY, FIELD_NODE};
use crate::id::StreamId;
use crate::link::Opener;
use crate::message::{Append, AppendError, Message, Outbox, Side};
use crate::progress;
use crate::resp::{self, Reply};
use crate::settings::Settings;
use crate::wire::Wire;

/// Appends sent to Redis in one pipeline.
pub const BATCH: usize = 512;

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// While idle, the connection is looked at (a non-blocking peek) this
/// often, and one that is down is retried.
const IDLE_CHECK: Duration = Duration::from_millis(250);
/// While idle, a `PING` this often keeps the link's state true when
/// Redis stops answering with the connection open (a partition).
const PING_EVERY: Duration = Duration::from_secs(1);

struct Job {
    append: Append,
    /// Written at least once: its outcome may be unknown.
    sent: bool,
    /// Written on an earlier connection too: an error from Redis now does
    /// not prove it is not stored (the first write may have landed).
    resent: bool,
}

pub struct Writer {
    opener: Opener,
    appends: Receiver<Vec<Append>>,
    /// Appends sent by the server not yet taken here.
    queued: Arc<AtomicUsize>,
    out: Outbox,
    stream: String,
    hash: String,
    max_len: String,
    timeout: Duration,
    node: String,
}

/// The writer's connection and what it told the server about it.
struct Link {
    conn: Option<Wire>,
    up: Option<bool>,
    backoff: Duration,
    last_ping: Instant,
}

impl Writer {
    pub fn new(
        settings: &Settings,
        opener: Opener,
        appends: Receiver<Vec<Append>>,
        queued: Arc<AtomicUsize>,
        out: Outbox,
    ) -> Writer {
        Writer {
            opener,
            appends,
            queued,
            out,
            stream: settings.stream.clone(),
            hash: progress::hash_key(&settings.stream),
            max_len: settings.max_len.to_string(),
            timeout: settings.timeout,
            node: settings.node.clone(),
        }
    }

    /// Runs until the server drops its end of the channel, then removes
    /// this node's progress entry.
    pub fn run(self) {
        let mut link = Link {
            conn: None,
            up: None,
            backoff: BACKOFF_MIN,
            last_ping: Instant::now(),
        };
        let mut queue: VecDeque<Job> = VecDeque::new();
        let mut out = Vec::with_capacity(64 * 1024);
        // Connected up front, so the server knows the link's state before
        // the first publish (a failure is retried with the first append).
        self.open(&mut link, self.timeout);
        loop {
            if queue.is_empty() {
                match self.appends.recv_timeout(IDLE_CHECK) {
                    Ok(batch) => self.take(&mut queue, batch),
                    Err(RecvTimeoutError::Timeout) => {
                        self.idle(&mut link);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return self.leave(&mut link),
                }
            }
            while queue.len() < BATCH {
                match self.appends.try_recv() {
                    Ok(batch) => self.take(&mut queue, batch),
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            // Deadlines come in order (each is its arrival plus the
            // timeout): the expired ones are at the front.
            let mut expired = false;
            while queue.front().is_some_and(|j| now >= j.append.deadline) {
                expired = true;
                if let Some(job) = queue.pop_front() {
                    let error = if job.sent {
                        warn!(
                            "cluster: no answer from Redis for the append of {} in time; it may be in the stream",
                            job.append.cursor
                        );
                        AppendError::Unknown
                    } else {
                        AppendError::NotSent
                    };
                    self.answer(job.append.token, Err(error));
                }
            }
            if expired {
                self.out.wake();
            }
            let Some(first) = queue.front() else {
                continue;
            };
            let left = first.append.deadline.saturating_duration_since(now);
            if link.conn.is_none() {
                // Connecting gets no longer than the oldest append has.
                if !self.open(&mut link, left.min(self.timeout)) {
                    std::thread::sleep(link.backoff.min(left));
                    link.backoff = (link.backoff * 2).min(BACKOFF_MAX);
                }
                continue;
            }
            let Some(mut conn) = link.conn.take() else {
                continue;
            };
            if conn.peer_closed() {
                // Closed under us: these appends were not sent; a new
                // connection takes them.
                self.lost(&mut link, "Redis closed the connection".into());
                continue;
            }
            let n = queue.len().min(BATCH);
            out.clear();
            for job in queue.iter_mut().take(n) {
                job.resent = job.sent;
                job.sent = true;
                self.encode(&mut out, &job.append);
            }
            if let Err(e) = conn.send(&out) {
                self.lost(&mut link, e.to_string());
                continue;
            }
            link.last_ping = Instant::now();
            let mut healthy = true;
            for _ in 0..n {
                let Some(job) = queue.front() else { break };
                let reply = match conn.read_reply(job.append.deadline) {
                    Ok(reply) => reply,
                    Err(e) => {
                        // The rest of the batch is unanswered: re-sent on
                        // a new connection while their deadlines allow.
                        healthy = false;
                        self.lost(&mut link, e.to_string());
                        break;
                    }
                };
                let Some(job) = queue.pop_front() else { break };
                let result = match reply {
                    Reply::Error(e) if job.resent => {
                        warn!("cluster: Redis refused a re-sent append ({e}); the first may have landed");
                        Err(AppendError::Unknown)
                    }
                    Reply::Error(e) => {
                        warn!("cluster: Redis refused an append: {e}");
                        Err(AppendError::Refused(e))
                    }
                    other => Ok(other.text().and_then(StreamId::parse).unwrap_or_default()),
                };
                self.answer(job.append.token, result);
            }
            // One wake-up for the whole batch's answers.
            self.out.wake();
            if healthy {
                link.conn = Some(conn);
                link.backoff = BACKOFF_MIN;
            }
        }
    }

    fn encode(&self, out: &mut Vec<u8>, append: &Append) {
        let fields = if append.key.is_some() { 4 } else { 3 };
        resp::header(out, b'*', 6 + 2 * fields);
        for arg in [
            "XADD",
            self.stream.as_str(),
            "MAXLEN",
            "~",
            self.max_len.as_str(),
            "*",
            FIELD_CURSOR,
            append.cursor.as_str(),
            FIELD_EVENT,
        ] {
            resp::bulk(out, arg.as_bytes());
        }
        resp::bulk(out, append.event.as_bytes());
        resp::bulk(out, FIELD_NODE.as_bytes());
        resp::bulk(out, self.node.as_bytes());
        if let Some(key) = &append.key {
            resp::bulk(out, FIELD_KEY.as_bytes());
            resp::bulk(out, key.as_bytes());
        }
    }

    /// Queues one answer (the server is woken once per batch).
    fn answer(&self, token: u64, result: Result<StreamId, AppendError>) {
        self.out.push(Message::Appended { token, result });
    }

    fn take(&self, queue: &mut VecDeque<Job>, batch: Vec<Append>) {
        self.queued.fetch_sub(batch.len(), Ordering::Relaxed);
        queue.extend(batch.into_iter().map(|append| Job {
            append,
            sent: false,
            resent: false,
        }));
    }

    /// Opens the connection; true when it is up.
    fn open(&self, link: &mut Link, timeout: Duration) -> bool {
        match self
            .opener
            .open_wire(timeout.max(Duration::from_millis(10)))
        {
            Ok(conn) => {
                link.conn = Some(conn);
                link.last_ping = Instant::now();
                self.report(link, true, None);
                true
            }
            Err(e) => {
                self.report(link, false, Some(e));
                false
            }
        }
    }

    fn lost(&self, link: &mut Link, why: String) {
        link.conn = None;
        self.report(link, false, Some(why));
    }

    /// Nothing to append: keep the link's state true (for the server's
    /// readiness and the next publish).
    fn idle(&self, link: &mut Link) {
        let Some(conn) = link.conn.as_mut() else {
            if !self.open(link, self.timeout) {
                std::thread::sleep(link.backoff.min(IDLE_CHECK));
                link.backoff = (link.backoff * 2).min(BACKOFF_MAX);
            }
            return;
        };
        if conn.peer_closed() {
            return self.lost(link, "Redis closed the connection".into());
        }
        if link.last_ping.elapsed() < PING_EVERY {
            return;
        }
        link.last_ping = Instant::now();
        match conn.command(&["PING"], Instant::now() + self.timeout) {
            Ok(_) => link.backoff = BACKOFF_MIN,
            Err(e) => self.lost(link, e.to_string()),
        }
    }

    /// The server is stopping: take this node out of the progress hash,
    /// so it holds nobody back from now on.
    fn leave(&self, link: &mut Link) {
        if link.conn.as_ref().is_none_or(Wire::peer_closed) && !self.open(link, self.timeout) {
            return;
        }
        if let Some(conn) = link.conn.as_mut() {
            let deadline = Instant::now() + self.timeout.min(Duration::from_millis(400));
            match conn.command(&["HDEL", self.hash.as_str(), self.node.as_str()], deadline) {
                Ok(_) => info!(
                    "cluster: node {} left the stream's progress hash",
                    self.node
                ),
                Err(e) => warn!("cluster: could not leave the progress hash: {e}"),
            }
        }
    }

    /// Tells the server about a change of the link's state (once per change).
    fn report(&self, link: &mut Link, up: bool, error: Option<String>) {
        if link.up == Some(up) {
            return;
        }
        link.up = Some(up);
        match &error {
            Some(e) => warn!("cluster: writer lost Redis: {e}"),
            None => info!("cluster: writer connected to Redis"),
        }
        self.out.send(Message::Link {
            side: Side::Writer,
            up,
            error,
        });
    }
}
