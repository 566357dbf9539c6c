//! The backlog on disk: loading it at start-up, and a writer thread that
//! keeps a mirror of the backlog's storage lines and rewrites the file
//! atomically (temp file, fsync, rename) at most once per interval when it
//! changed, and once more on shutdown.
//!
//! The reactor never touches the file: it sends small messages over a
//! bounded channel with `try_send`. If the channel is ever full, the
//! reactor sends the whole backlog again once there is room (`Reset`).

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use log::{debug, info, warn};

use crate::backlog::parse_storage_line;
use crate::event::Event;

/// Messages queued between the reactor and the writer: with events of at
/// most `max_payload_size`, this bounds what a stuck disk can hold back
/// (past it, the whole backlog is sent again once there is room).
const CHANNEL_CAPACITY: usize = 1024;

enum Msg {
    Push(String),
    Evict(usize),
    Reset(Vec<String>),
    Flush(Sender<()>),
}

/// The reactor's handle on the writer thread.
pub struct Persister {
    tx: Option<Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
    /// A message was lost to a full channel: send everything again.
    needs_reset: bool,
}

impl Persister {
    /// Starts the writer with the lines the file holds now.
    pub fn start(
        path: PathBuf,
        interval: Duration,
        initial: Vec<String>,
    ) -> std::io::Result<Persister> {
        let (tx, rx) = bounded(CHANNEL_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("backlog-writer".into())
            .spawn(move || Writer::new(path, interval, initial).run(rx))?;
        Ok(Persister {
            tx: Some(tx),
            thread: Some(thread),
            needs_reset: false,
        })
    }

    fn send(&mut self, msg: Msg) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if !self.needs_reset {
                    warn!("backlog writer is behind; will rewrite the whole backlog");
                }
                self.needs_reset = true;
            }
            Err(TrySendError::Disconnected(_)) => {
                warn!("backlog writer has stopped; the backlog is no longer persisted");
                self.tx = None;
            }
        }
    }

    pub fn push(&mut self, line: String) {
        if !self.needs_reset {
            self.send(Msg::Push(line));
        }
    }

    pub fn evict(&mut self, count: usize) {
        if count > 0 && !self.needs_reset {
            self.send(Msg::Evict(count));
        }
    }

    /// After a full channel: once there is room, replace the writer's
    /// mirror with `lines`.
    pub fn resync<F: FnOnce() -> Vec<String>>(&mut self, lines: F) {
        let has_room = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.len() < CHANNEL_CAPACITY / 2);
        if self.needs_reset && has_room {
            self.needs_reset = false;
            self.send(Msg::Reset(lines()));
        }
    }

    pub fn needs_resync(&self) -> bool {
        self.needs_reset
    }

    /// Writes now and waits (at most `timeout`) for the file to be on disk;
    /// used on shutdown, when the reactor has nothing else to do.
    pub fn flush(&mut self, timeout: Duration) {
        let (ack_tx, ack_rx) = bounded(1);
        if let Some(tx) = &self.tx {
            if tx.send_timeout(Msg::Flush(ack_tx), timeout).is_ok()
                && ack_rx.recv_timeout(timeout).is_err()
            {
                warn!("backlog writer did not finish within {timeout:?}");
            }
        }
    }
}

impl Drop for Persister {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer thread's state.
struct Writer {
    path: PathBuf,
    interval: Duration,
    lines: VecDeque<String>,
    changed: bool,
    last_write: Option<Instant>,
}

impl Writer {
    fn new(path: PathBuf, interval: Duration, initial: Vec<String>) -> Writer {
        Writer {
            path,
            interval,
            // Written once at start: loading may have pruned old events or
            // given cursors to events that had none, which must persist.
            changed: !initial.is_empty(),
            lines: initial.into(),
            last_write: None,
        }
    }

    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            let wait = match (self.changed, self.last_write) {
                (true, Some(t)) => self.interval.saturating_sub(t.elapsed()),
                (true, None) => Duration::ZERO,
                (false, _) => self.interval,
            };
            match rx.recv_timeout(wait) {
                Ok(Msg::Push(line)) => {
                    self.lines.push_back(line);
                    self.changed = true;
                }
                Ok(Msg::Evict(n)) => {
                    let n = n.min(self.lines.len());
                    self.lines.drain(..n);
                    self.changed = true;
                }
                Ok(Msg::Reset(lines)) => {
                    self.lines = lines.into();
                    self.changed = true;
                }
                Ok(Msg::Flush(ack)) => {
                    self.write_if_changed();
                    let _ = ack.send(());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.write_if_changed();
                    return;
                }
            }
            let due = self.last_write.is_none_or(|t| t.elapsed() >= self.interval);
            if self.changed && due {
                self.write_if_changed();
            }
        }
    }

    fn write_if_changed(&mut self) {
        if !self.changed {
            return;
        }
        self.last_write = Some(Instant::now());
        match write_atomically(&self.path, self.lines.iter().map(String::as_str)) {
            Ok(()) => {
                self.changed = false;
                debug!(
                    "backlog: wrote {} events to {}",
                    self.lines.len(),
                    self.path.display()
                );
            }
            Err(e) => warn!("backlog: cannot write {}: {e}", self.path.display()),
        }
    }
}

/// Writes `lines` to a temporary file beside `path`, syncs it and renames
/// it over `path`, so a crash leaves either the old file or the new one.
fn write_atomically<'a>(path: &Path, lines: impl Iterator<Item = &'a str>) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut out = std::io::BufWriter::new(File::create(&tmp)?);
        for line in lines {
            out.write_all(line.as_bytes())?;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Reads the storage file at start-up. A missing file is an empty backlog;
/// bad lines are skipped with a warning naming the line.
pub fn load(path: &Path) -> Vec<Event> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            info!(
                "backlog: {} does not exist yet; starting empty",
                path.display()
            );
            return Vec::new();
        }
        Err(e) => {
            warn!(
                "backlog: cannot read {}: {e}; starting empty",
                path.display()
            );
            return Vec::new();
        }
    };
    let mut events = Vec::new();
    for (n, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                warn!(
                    "backlog: {}: read error after line {n}: {e}",
                    path.display()
                );
                break;
            }
        };
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        match parse_storage_line(&text, events.len() as u64 + 1) {
            Ok(e) => events.push(e),
            Err(why) => warn!("backlog: {} line {}: skipped: {why}", path.display(), n + 1),
        }
    }
    info!(
        "backlog: loaded {} events from {}",
        events.len(),
        path.display()
    );
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("pubsubd-persist-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn writer_mirrors_pushes_and_evictions() {
        let dir = temp_dir("mirror");
        let path = dir.join("backlog.json");
        let mut p = Persister::start(path.clone(), Duration::from_millis(10), Vec::new()).unwrap();
        for i in 0..5 {
            p.push(format!(
                "{{\"timestamp\": {i}, \"topics\": [], \"json\": {{}}}}\n"
            ));
        }
        p.evict(2);
        p.flush(Duration::from_secs(5));
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.starts_with("{\"timestamp\": 2,"));
        drop(p);
        let loaded = load(&path);
        assert_eq!(loaded.len(), 3);
        assert_eq!(loaded[0].seq, 1);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn load_skips_bad_lines_and_tolerates_a_missing_file() {
        let dir = temp_dir("load");
        let path = dir.join("backlog.json");
        assert!(load(&path).is_empty());
        fs::write(
            &path,
            "{\"timestamp\": 1, \"topics\": [\"a\"], \"json\": {}}\nnot json\n\n{\"timestamp\": 2, \"topics\": [], \"json\": {}, \"private\": true}\n\u{0}\u{1}",
        )
        .unwrap();
        let loaded = load(&path);
        assert_eq!(loaded.len(), 2);
        assert!(loaded[1].private && loaded[1].seq == 2);
        fs::remove_dir_all(dir).unwrap();
    }
}
