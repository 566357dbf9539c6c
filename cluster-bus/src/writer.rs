//! The writer thread: appends events to the stream in pipelined batches.
//!
//! It takes up to [`BATCH`] appends at a time from its channel and sends
//! them as one pipeline of `XADD key MAXLEN ~ n * c <cursor> e <event> n
//! <node>`. Each append gets exactly one [`Message::Appended`]:
//! - `Ok(id)` once Redis acknowledged it;
//! - `NotSent` if its deadline passed before it could be sent (Redis
//!   unreachable): it is then never sent, since its publisher was told no;
//! - `GaveUp` if it was sent but the outcome is unknown (timeout, dropped
//!   connection) and retries kept failing for [`GIVE_UP_AFTER`] timeouts.
//!
//! An unknown outcome is retried with the same cursor, in order, ahead of
//! newer appends; the readers drop a cursor they have already delivered,
//! so an append that did land the first time still shows once. To keep
//! unknown outcomes rare, an idle connection is checked with `PING` every
//! [`IDLE_CHECK`] (and a lost one reopened), so a batch is not sent into a
//! connection Redis has already closed.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::{info, warn};
use redis::{Connection, Value};

use crate::entry::{text, FIELD_CURSOR, FIELD_EVENT, FIELD_NODE};
use crate::id::StreamId;
use crate::link::Opener;
use crate::message::{Append, AppendError, Message, Outbox, Side};
use crate::settings::Settings;

/// Appends sent to Redis in one pipeline.
pub const BATCH: usize = 512;

/// Sent appends with an unknown outcome are retried for this many
/// timeouts past their deadline.
pub const GIVE_UP_AFTER: u32 = 10;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A connection idle this long is checked with `PING` (and one that is
/// down is retried) while idle, and before a batch is sent on it: a batch
/// sent into a dead connection has an unknown outcome (and would be
/// retried after its publisher was told 503), one never sent does not.
const IDLE_CHECK: Duration = Duration::from_millis(250);

struct Job {
    append: Append,
    /// Sent at least once: its outcome may be unknown.
    sent: bool,
}

pub struct Writer {
    opener: Opener,
    appends: Receiver<Append>,
    out: Outbox,
    stream: String,
    max_len: u64,
    timeout: Duration,
    node: String,
}

impl Writer {
    pub fn new(
        settings: &Settings,
        opener: Opener,
        appends: Receiver<Append>,
        out: Outbox,
    ) -> Writer {
        Writer {
            opener,
            appends,
            out,
            stream: settings.stream.clone(),
            max_len: settings.max_len,
            timeout: settings.timeout,
            node: settings.node.clone(),
        }
    }

    /// Runs until the server drops its end of the channel.
    pub fn run(self) {
        let mut conn: Option<Connection> = None;
        let mut queue: VecDeque<Job> = VecDeque::new();
        let mut link_up: Option<bool> = None;
        let mut backoff = BACKOFF_MIN;
        let mut last_used = Instant::now();
        let give_up = self.timeout * GIVE_UP_AFTER;
        // Connected up front, so the server knows the link's state before
        // the first publish (a failure is retried with the first append).
        match self.opener.open(self.timeout) {
            Ok(c) => {
                conn = Some(c);
                self.report(&mut link_up, true, None);
            }
            Err(e) => self.report(&mut link_up, false, Some(e)),
        }
        loop {
            if queue.is_empty() {
                match self.appends.recv_timeout(IDLE_CHECK) {
                    Ok(append) => queue.push_back(Job {
                        append,
                        sent: false,
                    }),
                    Err(RecvTimeoutError::Timeout) => {
                        // Idle: keep the link's state true (for the
                        // server's readiness and the next publish).
                        match conn.as_mut() {
                            Some(c) => {
                                if let Err(e) = redis::cmd("PING").query::<Value>(c) {
                                    conn = None;
                                    self.report(&mut link_up, false, Some(e.to_string()));
                                }
                                last_used = Instant::now();
                            }
                            None => match self.opener.open(self.timeout) {
                                Ok(c) => {
                                    conn = Some(c);
                                    last_used = Instant::now();
                                    self.report(&mut link_up, true, None);
                                }
                                Err(e) => self.report(&mut link_up, false, Some(e)),
                            },
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            while queue.len() < BATCH {
                match self.appends.try_recv() {
                    Ok(append) => queue.push_back(Job {
                        append,
                        sent: false,
                    }),
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            let mut answered = Vec::new();
            queue.retain(|job| {
                let result = if !job.sent && now >= job.append.deadline {
                    AppendError::NotSent
                } else if job.sent && now >= job.append.deadline + give_up {
                    warn!(
                        "cluster: append of {} given up; it may be in the stream",
                        job.append.cursor
                    );
                    AppendError::GaveUp
                } else {
                    return true;
                };
                answered.push((job.append.token, result));
                false
            });
            for (token, error) in answered {
                self.out.send(Message::Appended {
                    token,
                    result: Err(error),
                });
            }
            if queue.is_empty() {
                continue;
            }
            let Some(c) = conn.as_mut() else {
                match self.opener.open(self.timeout) {
                    Ok(c) => {
                        conn = Some(c);
                        last_used = Instant::now();
                        backoff = BACKOFF_MIN;
                        self.report(&mut link_up, true, None);
                    }
                    Err(e) => {
                        self.report(&mut link_up, false, Some(e));
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
                continue;
            };
            if last_used.elapsed() >= IDLE_CHECK {
                if let Err(e) = redis::cmd("PING").query::<Value>(c) {
                    conn = None;
                    self.report(&mut link_up, false, Some(e.to_string()));
                    continue;
                }
            }
            last_used = Instant::now();
            let n = queue.len().min(BATCH);
            let mut pipe = redis::pipe();
            for job in queue.iter_mut().take(n) {
                job.sent = true;
                pipe.cmd("XADD")
                    .arg(&self.stream)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(self.max_len)
                    .arg("*")
                    .arg(FIELD_CURSOR)
                    .arg(&job.append.cursor)
                    .arg(FIELD_EVENT)
                    .arg(&job.append.event)
                    .arg(FIELD_NODE)
                    .arg(&self.node);
            }
            match pipe.query::<Vec<Value>>(c) {
                Ok(ids) => {
                    for (job, id) in queue
                        .drain(..n)
                        .zip(ids.iter().map(Some).chain(std::iter::repeat(None)))
                    {
                        let id = id
                            .and_then(text)
                            .and_then(|t| StreamId::parse(&t))
                            .unwrap_or_default();
                        self.out.send(Message::Appended {
                            token: job.append.token,
                            result: Ok(id),
                        });
                    }
                }
                Err(e) => {
                    // Which of the batch landed is unknown: all are retried
                    // on a new connection (readers drop repeats).
                    conn = None;
                    self.report(&mut link_up, false, Some(e.to_string()));
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Tells the server about a change of the link's state (once per change).
    fn report(&self, last: &mut Option<bool>, up: bool, error: Option<String>) {
        if *last == Some(up) {
            return;
        }
        *last = Some(up);
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
