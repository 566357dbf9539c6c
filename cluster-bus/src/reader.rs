//! The reader thread: loads the stream's newest entries on start, then
//! follows it with `XREAD BLOCK`, sending every entry to the server in
//! stream order, each cursor (and each idempotency key) once.
//!
//! Its position is the last stream ID it delivered. After a reconnect it
//! checks that ID is still in the stream (`XRANGE id id`) before reading
//! on; if it is not, `XINFO STREAM` tells why ([`StreamInfo::gap_after`]):
//! - older than the first entry: the trim went past it, [`Gap::Trimmed`];
//!   reading goes on from what is there;
//! - the stream is behind it, gone, or counts fewer entries added than
//!   before: Redis came back empty (or older), [`Gap::Reset`]; reading
//!   starts again from the beginning (cursors already delivered are still
//!   dropped).
//!
//! While connected, every `XREAD` goes out in one write behind `XINFO
//! STREAM` and, at most every [`PROGRESS_EVERY`], `HSET` of this node's
//! progress and `HGETALL` of everybody's: Redis runs them back to back, so
//! the trim check runs on the stream as the read found it, and the nodes'
//! lags are measured against the same `entries-added`
//! ([`crate::progress`]), at no extra round trip.
//!
//! The reader's count of entries read (`read`) is on the scale of
//! `entries-added`: set exactly whenever the position is the stream's
//! newest entry, or the entry before the first after a gap, and advanced
//! by each batch's length in between (entries are never deleted, only
//! trimmed from the front). After a stop longer than `node_timeout` (a
//! frozen process) it is not reported until a read has confirmed it.

use std::time::{Duration, Instant};

use log::{info, warn};

use crate::entry::{self, Entry};
use crate::id::{SeenCursors, StreamId};
use crate::info::StreamInfo;
use crate::link::Opener;
use crate::message::{Gap, Message, Outbox, Side};
use crate::progress::{self, Progress};
use crate::resp::{self, Reply};
use crate::settings::{Settings, READ_BLOCK, READ_COUNT, SEEN_MIN};
use crate::wire::{Wire, WireError};

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// The nodes' progress is recorded and read at most this often: an `HSET`
/// is a write (with `appendfsync always`, an fsync), and a count this old
/// reads as a lag of the entries appended since, far below `max_len` at
/// any rate Redis takes.
const PROGRESS_EVERY: Duration = Duration::from_millis(50);

pub struct Reader {
    opener: Opener,
    out: Outbox,
    stream: String,
    hash: String,
    node: String,
    timeout: Duration,
    node_timeout: Duration,
    load: usize,
    seen: SeenCursors,
    keys: SeenCursors,
    /// The last entry delivered; `None` until the start-up load is done.
    position: Option<StreamId>,
    /// The stream's `entries-added` when last looked at (Redis 7+).
    entries_seen: Option<u64>,
    /// The position a trim was last reported past (once per position:
    /// the check after a reconnect and the first read both see it).
    trim_reported: Option<StreamId>,
    /// Entries up to the position, on the scale of `entries-added`.
    read: Option<u64>,
    /// When the last read came back.
    last_read: Instant,
    /// When the progress was last recorded and read.
    last_progress: Option<Instant>,
    /// The last progress sent to the server.
    reported: Option<Progress>,
    /// Long-silent nodes' fields to remove with the next progress.
    forget: Vec<String>,
    buf: Vec<u8>,
}

/// Why reading stopped.
enum Stop {
    /// The server is gone.
    Done,
    /// The connection failed: reconnect.
    Link(String),
}

impl From<WireError> for Stop {
    fn from(e: WireError) -> Stop {
        Stop::Link(e.to_string())
    }
}

impl From<entry::ShapeError> for Stop {
    fn from(e: entry::ShapeError) -> Stop {
        Stop::Link(e.to_string())
    }
}

impl Reader {
    pub fn new(settings: &Settings, opener: Opener, out: Outbox) -> Reader {
        let remembered = settings
            .load
            .max(settings.max_len as usize)
            .clamp(SEEN_MIN, 1 << 20);
        Reader {
            opener,
            out,
            stream: settings.stream.clone(),
            hash: progress::hash_key(&settings.stream),
            node: settings.node.clone(),
            timeout: settings.timeout,
            node_timeout: settings.node_timeout,
            load: settings.load,
            seen: SeenCursors::new(remembered),
            keys: SeenCursors::new(remembered),
            position: None,
            entries_seen: None,
            trim_reported: None,
            read: None,
            last_read: Instant::now(),
            last_progress: None,
            reported: None,
            forget: Vec::new(),
            buf: Vec::with_capacity(1024),
        }
    }

    /// Runs until the server drops its end.
    pub fn run(mut self) {
        let mut link_up: Option<bool> = None;
        let mut backoff = BACKOFF_MIN;
        while !self.out.stopped() {
            let mut conn = match self.opener.open_wire(self.timeout) {
                Ok(conn) => conn,
                Err(e) => {
                    self.report(&mut link_up, false, Some(e));
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            let stop = self.resume(&mut conn).and_then(|()| {
                backoff = BACKOFF_MIN;
                self.report(&mut link_up, true, None);
                self.follow(&mut conn)
            });
            match stop {
                Err(Stop::Done) | Ok(()) => return,
                Err(Stop::Link(e)) => {
                    self.report(&mut link_up, false, Some(e));
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    fn soon(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// Sends the commands in `self.buf` and reads `n` replies, the last
    /// one by `last_deadline`.
    fn pipeline(
        &mut self,
        conn: &mut Wire,
        n: usize,
        last_deadline: Instant,
    ) -> Result<Vec<Reply>, Stop> {
        conn.send(&self.buf)?;
        let mut replies = Vec::with_capacity(n);
        for i in 0..n {
            let deadline = if i + 1 == n {
                last_deadline
            } else {
                self.soon()
            };
            replies.push(conn.read_reply(deadline)?);
        }
        Ok(replies)
    }

    /// Sends the commands in `self.buf`, reads `n` generic replies, then
    /// an `XREAD` reply parsed in place by `last_deadline`.
    fn pipeline_read(
        &mut self,
        conn: &mut Wire,
        n: usize,
        last_deadline: Instant,
    ) -> Result<(Vec<Reply>, entry::Read), Stop> {
        conn.send(&self.buf)?;
        let mut replies = Vec::with_capacity(n);
        for _ in 0..n {
            replies.push(conn.read_reply(self.soon())?);
        }
        let read = conn.read_with(last_deadline, entry::parse_xread_bytes)?;
        Ok((replies, read))
    }

    /// On a new connection: the start-up load, or the check that the
    /// position is still in the stream.
    fn resume(&mut self, conn: &mut Wire) -> Result<(), Stop> {
        let Some(position) = self.position else {
            return self.load(conn);
        };
        if position == StreamId::ZERO {
            return Ok(());
        }
        let at = position.to_string();
        self.buf.clear();
        resp::encode(&mut self.buf, &["XRANGE", &self.stream, &at, &at]);
        resp::encode(&mut self.buf, &["XINFO", "STREAM", &self.stream]);
        let deadline = self.soon();
        let mut replies = self.pipeline(conn, 2, deadline)?.into_iter();
        let here = replies.next().unwrap_or(Reply::Nil);
        let info = stream_info(&replies.next().unwrap_or(Reply::Nil));
        if !entry::parse_entries(here)?.is_empty() {
            return Ok(());
        }
        self.note_gap(info.as_ref(), position)
    }

    /// Logs, reports and acts on what happened after `position` (the
    /// last entry delivered), judged from `info`.
    fn note_gap(&mut self, info: Option<&StreamInfo>, position: StreamId) -> Result<(), Stop> {
        let gap = StreamInfo::gap_after(info, position, self.entries_seen);
        if let Some(added) = info.and_then(|i| i.entries_added) {
            self.entries_seen = Some(added);
        }
        let Some(gap) = gap else {
            return Ok(());
        };
        // Reading goes on from the first entry there is.
        self.read = info.and_then(StreamInfo::before_first).or(Some(0));
        if gap == Gap::Trimmed && self.trim_reported.replace(position) == Some(position) {
            return Ok(());
        }
        match gap {
            Gap::Trimmed => warn!(
                "cluster: the stream was trimmed past {position} before this node read on; some events were missed here"
            ),
            Gap::Reset => {
                warn!("cluster: the stream no longer has {position} and is behind it: Redis was reset; reading it from the start");
                self.position = Some(StreamId::ZERO);
            }
        }
        self.send(Message::Gap(gap))
    }

    /// The newest `load` entries, oldest first, as the initial batch; the
    /// position becomes the newest entry (or 0-0 for an empty stream, so
    /// nothing appended meanwhile is missed).
    fn load(&mut self, conn: &mut Wire) -> Result<(), Stop> {
        self.buf.clear();
        resp::encode(&mut self.buf, &["XINFO", "STREAM", &self.stream]);
        let count = self.load.max(1).to_string();
        resp::encode(
            &mut self.buf,
            &["XREVRANGE", &self.stream, "+", "-", "COUNT", &count],
        );
        let deadline = self.soon();
        let mut replies = self.pipeline(conn, 2, deadline)?.into_iter();
        let info = stream_info(&replies.next().unwrap_or(Reply::Nil));
        let mut newest_first = entry::parse_entries(replies.next().unwrap_or(Reply::Nil))?;
        let position = newest_first.first().map_or(StreamId::ZERO, |(id, _)| *id);
        self.entries_seen = info.as_ref().and_then(|i| i.entries_added);
        self.read = match &info {
            None => Some(0),
            Some(i) if i.last_generated == position || position == StreamId::ZERO => {
                i.entries_added
            }
            Some(_) => None,
        };
        newest_first.truncate(self.load);
        newest_first.reverse();
        let (entries, duplicates, key_duplicates) = self.keep_new(newest_first);
        info!(
            "cluster: loaded {} events from the stream, resuming after {position}",
            entries.len()
        );
        self.position = Some(position);
        self.last_read = Instant::now();
        self.send(Message::Entries {
            entries,
            initial: true,
            duplicates,
            key_duplicates,
            behind: false,
        })
    }

    /// Reads on from the position until the link fails or the server goes.
    fn follow(&mut self, conn: &mut Wire) -> Result<(), Stop> {
        loop {
            if self.out.stopped() {
                return Err(Stop::Done);
            }
            let position = self.position.unwrap_or_default();
            let at = position.to_string();
            self.buf.clear();
            let mut n = 2;
            let frozen = self.last_read.elapsed() > self.node_timeout;
            let now_ms = epoch_ms();
            let progress = self
                .last_progress
                .is_none_or(|t| t.elapsed() >= PROGRESS_EVERY);
            // Replies before HGETALL's that are only acknowledgements.
            let mut skip = 0;
            if progress {
                self.last_progress = Some(Instant::now());
                if let Some(read) = self.read.filter(|_| !frozen) {
                    let value = progress::encode(read, now_ms);
                    resp::encode(&mut self.buf, &["HSET", &self.hash, &self.node, &value]);
                    skip += 1;
                }
                if !self.forget.is_empty() {
                    let mut args = vec!["HDEL".to_string(), self.hash.clone()];
                    args.append(&mut self.forget);
                    resp::encode(&mut self.buf, &args);
                    skip += 1;
                }
                n += skip;
                resp::encode(&mut self.buf, &["HGETALL", &self.hash]);
                n += 1;
            }
            resp::encode(&mut self.buf, &["XINFO", "STREAM", &self.stream]);
            let count = READ_COUNT.to_string();
            let block = READ_BLOCK.as_millis().to_string();
            resp::encode(
                &mut self.buf,
                &[
                    "XREAD",
                    "COUNT",
                    &count,
                    "BLOCK",
                    &block,
                    "STREAMS",
                    &self.stream,
                    &at,
                ],
            );
            let deadline = Instant::now() + READ_BLOCK + self.timeout;
            let (replies, reply) = self.pipeline_read(conn, n - 1, deadline)?;
            self.last_read = Instant::now();
            let mut replies = replies.into_iter().skip(skip);
            let hash = if progress { replies.next() } else { None };
            let info = stream_info(&replies.next().unwrap_or(Reply::Nil));
            // One write, so Redis ran these back to back with no other
            // client's command between them: what XINFO says is the
            // stream the XREAD reads.
            self.note_gap(info.as_ref(), position)?;
            if self.position != Some(position) {
                continue; // reset: read again from the start
            }
            if let Some(i) = &info {
                if i.last_generated == position {
                    self.read = i.entries_added.or(self.read);
                }
                if let Some(hash) = &hash {
                    let head = i.entries_added.unwrap_or(0);
                    let node_timeout = self.node_timeout.as_millis() as u64;
                    self.progress(Progress::from_hash(hash, head, now_ms, node_timeout))?;
                }
            }
            let batch = match reply {
                entry::Read::Entries(batch) => batch,
                entry::Read::Error(e) => return Err(Stop::Link(format!("XREAD: {e}"))),
            };
            let Some((last, _)) = batch.last() else {
                continue;
            };
            self.position = Some(*last);
            self.read = self.read.map(|r| r + batch.len() as u64);
            let behind = batch.len() >= READ_COUNT;
            let (entries, duplicates, key_duplicates) = self.keep_new(batch);
            if duplicates > 0 {
                info!("cluster: dropped {duplicates} repeated cursors (retried appends)");
            }
            if entries.is_empty() && duplicates == 0 && key_duplicates == 0 {
                continue;
            }
            self.send(Message::Entries {
                entries,
                initial: false,
                duplicates,
                key_duplicates,
                behind,
            })?;
        }
    }

    /// Sends the nodes' progress when it changed.
    fn progress(&mut self, mut progress: Progress) -> Result<(), Stop> {
        self.forget = std::mem::take(&mut progress.forget);
        if self.reported.as_ref() == Some(&progress) {
            return Ok(());
        }
        self.reported = Some(progress.clone());
        self.send(Message::Progress(progress))
    }

    /// Our entries whose cursor and key are new, and how many were
    /// repeats of each.
    fn keep_new(&mut self, batch: Vec<(StreamId, Option<Entry>)>) -> (Vec<Entry>, u64, u64) {
        let mut duplicates = 0;
        let mut key_duplicates = 0;
        let entries = batch
            .into_iter()
            .filter_map(|(_, e)| e)
            .filter(|e| {
                if !self.seen.insert(&e.cursor) {
                    duplicates += 1;
                    return false;
                }
                if let Some(key) = &e.key {
                    if !self.keys.insert(key) {
                        key_duplicates += 1;
                        return false;
                    }
                }
                true
            })
            .collect();
        (entries, duplicates, key_duplicates)
    }

    fn send(&self, message: Message) -> Result<(), Stop> {
        if self.out.send(message) {
            Ok(())
        } else {
            Err(Stop::Done)
        }
    }

    fn report(&self, last: &mut Option<bool>, up: bool, error: Option<String>) {
        if *last == Some(up) {
            return;
        }
        *last = Some(up);
        match &error {
            Some(e) => warn!("cluster: reader lost Redis: {e}"),
            None => info!("cluster: reader connected to Redis"),
        }
        self.out.send(Message::Link {
            side: Side::Reader,
            up,
            error,
        });
    }
}

/// `XINFO STREAM`'s reply (`None` for a stream that does not exist).
fn stream_info(reply: &Reply) -> Option<StreamInfo> {
    match reply {
        Reply::Error(_) | Reply::Nil => None,
        other => Some(StreamInfo::parse(other)),
    }
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
