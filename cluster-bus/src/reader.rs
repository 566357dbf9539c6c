//! The reader thread: loads the stream's newest entries on start, then
//! follows it with `XREAD BLOCK`, sending every entry to the server in
//! stream order, each cursor once.
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
//! While connected, a reader that falls more than `max_len` entries behind
//! (a stalled node, a burst) can be overtaken by the trim too, so every
//! `XREAD` goes out in one write behind an `XINFO STREAM`: Redis runs the
//! two back to back, and the same check runs on the stream as the read
//! found it, at no extra round trip. (Checking after the read cost a round
//! trip, behind Redis's fsync, before each batch reached the server; a
//! separate check before it missed a reader stopped in between.)

use std::time::Duration;

use log::{info, warn};
use redis::{Connection, ErrorKind, Value};

use crate::entry::{self, Entry};
use crate::id::{SeenCursors, StreamId};
use crate::info::StreamInfo;
use crate::link::Opener;
use crate::message::{Gap, Message, Outbox, Side};
use crate::settings::Settings;

/// Entries asked for per `XREAD`.
pub const READ_COUNT: usize = 1024;
/// How long one `XREAD` blocks waiting for new entries.
pub const READ_BLOCK: Duration = Duration::from_millis(1000);
/// Cursors remembered for de-duplication, at least.
pub const SEEN_MIN: usize = 10_000;

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

pub struct Reader {
    opener: Opener,
    out: Outbox,
    stream: String,
    timeout: Duration,
    load: usize,
    seen: SeenCursors,
    /// The last entry delivered; `None` until the start-up load is done.
    position: Option<StreamId>,
    /// The stream's `entries-added` when last looked at (Redis 7+).
    entries_seen: Option<u64>,
    /// The position a trim was last reported past (once per position:
    /// the check after a reconnect and the first read both see it).
    trim_reported: Option<StreamId>,
}

/// Why reading stopped.
enum Stop {
    /// The server is gone.
    Done,
    /// The connection failed: reconnect.
    Link(String),
}

impl Reader {
    pub fn new(settings: &Settings, opener: Opener, out: Outbox) -> Reader {
        Reader {
            opener,
            out,
            stream: settings.stream.clone(),
            timeout: settings.timeout,
            load: settings.load,
            seen: SeenCursors::new(
                settings
                    .load
                    .max(settings.max_len as usize)
                    .clamp(SEEN_MIN, 1 << 20),
            ),
            position: None,
            entries_seen: None,
            trim_reported: None,
        }
    }

    /// Runs until the server drops its end.
    pub fn run(mut self) {
        let mut link_up: Option<bool> = None;
        let mut backoff = BACKOFF_MIN;
        while !self.out.stopped() {
            let mut conn = match self.opener.open(READ_BLOCK + self.timeout) {
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

    /// On a new connection: the start-up load, or the check that the
    /// position is still in the stream.
    fn resume(&mut self, conn: &mut Connection) -> Result<(), Stop> {
        let Some(position) = self.position else {
            return self.load(conn);
        };
        if position == StreamId::ZERO {
            return Ok(());
        }
        let at = position.to_string();
        let here: Value = query(
            conn,
            redis::cmd("XRANGE").arg(&self.stream).arg(&at).arg(&at),
        )?;
        if !entry::parse_entries(&here)
            .map_err(|e| Stop::Link(e.to_string()))?
            .is_empty()
        {
            return Ok(());
        }
        let info = self.stream_info(conn)?;
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

    /// `XINFO STREAM` (`None` for a stream that does not exist).
    fn stream_info(&self, conn: &mut Connection) -> Result<Option<StreamInfo>, Stop> {
        match redis::cmd("XINFO")
            .arg("STREAM")
            .arg(&self.stream)
            .query::<Value>(conn)
        {
            Ok(info) => Ok(Some(StreamInfo::parse(&info))),
            Err(e) if e.kind() == ErrorKind::Server(redis::ServerErrorKind::ResponseError) => {
                Ok(None)
            }
            Err(e) => Err(Stop::Link(e.to_string())),
        }
    }

    /// The newest `load` entries, oldest first, as the initial batch; the
    /// position becomes the newest entry (or 0-0 for an empty stream, so
    /// nothing appended meanwhile is missed).
    fn load(&mut self, conn: &mut Connection) -> Result<(), Stop> {
        let reply: Value = query(
            conn,
            redis::cmd("XREVRANGE")
                .arg(&self.stream)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(self.load.max(1)),
        )?;
        let mut newest_first =
            entry::parse_entries(&reply).map_err(|e| Stop::Link(e.to_string()))?;
        let position = newest_first.first().map_or(StreamId::ZERO, |(id, _)| *id);
        newest_first.truncate(self.load);
        newest_first.reverse();
        let (entries, duplicates) = self.keep_new(newest_first);
        info!(
            "cluster: loaded {} events from the stream, resuming after {position}",
            entries.len()
        );
        self.position = Some(position);
        self.send(Message::Entries {
            entries,
            initial: true,
            duplicates,
            behind: false,
        })
    }

    /// Reads on from the position until the link fails or the server goes.
    fn follow(&mut self, conn: &mut Connection) -> Result<(), Stop> {
        loop {
            if self.out.stopped() {
                return Err(Stop::Done);
            }
            let position = self.position.unwrap_or_default();
            let mut read = redis::cmd("XREAD");
            read.arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(READ_BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(position.to_string());
            let reply: Value = if position == StreamId::ZERO {
                // Nothing delivered yet (the stream may not even exist,
                // and XINFO would fail): nothing to have missed.
                query(conn, &mut read)?
            } else {
                // One write, so Redis runs both back to back with no other
                // client's command between them: what XINFO says is the
                // stream the XREAD reads.
                let (info, reply): (Value, Value) = redis::pipe()
                    .cmd("XINFO")
                    .arg("STREAM")
                    .arg(&self.stream)
                    .add_command(read)
                    .query(conn)
                    .map_err(|e| Stop::Link(e.to_string()))?;
                self.note_gap(Some(&StreamInfo::parse(&info)), position)?;
                if self.position != Some(position) {
                    continue; // reset: read again from the start
                }
                reply
            };
            let batch = entry::parse_xread(&reply).map_err(|e| Stop::Link(e.to_string()))?;
            let Some((last, _)) = batch.last() else {
                continue;
            };
            self.position = Some(*last);
            let behind = batch.len() >= READ_COUNT;
            let (entries, duplicates) = self.keep_new(batch);
            if duplicates > 0 {
                info!("cluster: dropped {duplicates} repeated cursors (retried appends)");
            }
            if entries.is_empty() && duplicates == 0 {
                continue;
            }
            self.send(Message::Entries {
                entries,
                initial: false,
                duplicates,
                behind,
            })?;
        }
    }

    /// Our entries whose cursor is new, and how many were repeats.
    fn keep_new(&mut self, batch: Vec<(StreamId, Option<Entry>)>) -> (Vec<Entry>, u64) {
        let mut duplicates = 0;
        let entries = batch
            .into_iter()
            .filter_map(|(_, e)| e)
            .filter(|e| {
                let new = self.seen.insert(&e.cursor);
                duplicates += u64::from(!new);
                new
            })
            .collect();
        (entries, duplicates)
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

fn query(conn: &mut Connection, cmd: &mut redis::Cmd) -> Result<Value, Stop> {
    cmd.query(conn).map_err(|e| Stop::Link(e.to_string()))
}
