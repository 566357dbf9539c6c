//! What the hub counts for `/metrics` and the status page: plain integers
//! bumped on the event loop's thread (no atomics, nothing shared), read
//! when someone asks. Plain data, so both the hub and `metrics` use it.

use std::collections::{BTreeMap, HashMap, VecDeque};

/// Where an accepted event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Http,
    Sqs,
    Cluster,
}

/// Why a subscriber was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Its queue would have passed `max_queued_bytes`.
    QueueFull,
    /// Its socket took nothing for `write_timeout`.
    WriteTimeout,
    /// Its replay fell behind the backlog's oldest event.
    ReplayBehind,
}

/// Counters of the SQS feed, when it runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct SqsCounts {
    pub received: u64,
    pub deleted: u64,
    pub errors: u64,
}

/// Counters of the LDAP pool, when one runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct LdapCounts {
    pub queued: usize,
    pub lookups: u64,
    pub failures: u64,
    pub cache_hits: u64,
    pub lookup_time: std::time::Duration,
    /// Whether the last connection reached the server (`None`: none tried).
    pub reachable: Option<bool>,
}

/// The statuses the server sends, each with its own counter.
const STATUSES: [u16; 11] = [200, 202, 204, 400, 403, 404, 405, 408, 500, 503, 504];

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub published_http: u64,
    pub published_sqs: u64,
    pub published_cluster: u64,
    /// Publishes answered 202 with no new event: their `Idempotency-Key`
    /// was already in the window.
    pub deduplicated: u64,
    /// Event frames queued for subscribers (live and replayed).
    pub deliveries: u64,
    /// Bytes written to sockets.
    pub bytes_sent: u64,
    pub dropped_queue_full: u64,
    pub dropped_write_timeout: u64,
    pub dropped_replay_behind: u64,
    /// Responses by status (a stream's head counts as 200).
    responses: [u64; STATUSES.len()],
    /// Any status not in `STATUSES` (none is sent today).
    other_responses: BTreeMap<u16, u64>,
    pub tls_handshakes: u64,
    pub tls_handshake_failures: u64,
}

impl Stats {
    pub fn published(&mut self, source: Source) {
        match source {
            Source::Http => self.published_http += 1,
            Source::Sqs => self.published_sqs += 1,
            Source::Cluster => self.published_cluster += 1,
        }
    }

    pub fn dropped(&mut self, why: Drop) {
        self.dropped_n(why, 1);
    }

    /// `n` subscribers dropped for the same reason.
    pub fn dropped_n(&mut self, why: Drop, n: u64) {
        match why {
            Drop::QueueFull => self.dropped_queue_full += n,
            Drop::WriteTimeout => self.dropped_write_timeout += n,
            Drop::ReplayBehind => self.dropped_replay_behind += n,
        }
    }

    /// Counted on every response: an array slot, no map on the publish path.
    pub fn responded(&mut self, status: u16) {
        match STATUSES.iter().position(|&s| s == status) {
            Some(i) => self.responses[i] += 1,
            None => *self.other_responses.entry(status).or_default() += 1,
        }
    }

    /// Responses by status, those sent at least once, in status order.
    pub fn responses(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        let known = STATUSES.iter().zip(self.responses).map(|(&s, n)| (s, n));
        let mut all: Vec<(u16, u64)> = known
            .chain(self.other_responses.iter().map(|(&s, &n)| (s, n)))
            .filter(|&(_, n)| n > 0)
            .collect();
        all.sort_unstable();
        all.into_iter()
    }

    /// Events accepted from every source.
    pub fn published_total(&self) -> u64 {
        self.published_http + self.published_sqs + self.published_cluster
    }
}

/// Samples kept for the status page's chart (one per ping tick: 10 minutes at 5 s).
const HISTORY: usize = 120;
/// Distinct top-level topics counted for "busiest topics"; later new ones
/// are not counted, so a flood of random topics costs nothing more.
const TOPICS_COUNTED: usize = 1024;

/// What the status page shows over time.
#[derive(Debug, Default)]
pub struct Activity {
    /// When the server started (epoch seconds).
    started: f64,
    /// (epoch, events published, deliveries) at each ping tick.
    history: VecDeque<(f64, u64, u64)>,
    /// Public events by their first topic.
    topics: HashMap<Box<str>, u64>,
}

impl Activity {
    pub fn new(started: f64) -> Activity {
        Activity {
            started,
            history: VecDeque::new(),
            topics: HashMap::new(),
        }
    }

    /// When the server started (epoch seconds).
    pub fn started(&self) -> f64 {
        self.started
    }

    pub fn sample(&mut self, now: f64, events: u64, deliveries: u64) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back((now, events, deliveries));
    }

    /// A public event with these topics was accepted.
    pub fn count_topic(&mut self, topics: &[String]) {
        let first = topics.first().map_or("/", String::as_str);
        if let Some(n) = self.topics.get_mut(first) {
            *n += 1;
        } else if self.topics.len() < TOPICS_COUNTED {
            self.topics.insert(first.into(), 1);
        }
    }

    /// The samples, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &(f64, u64, u64)> {
        self.history.iter()
    }

    pub fn busiest(&self, n: usize) -> Vec<(&str, u64)> {
        let mut all: Vec<(&str, u64)> = self.topics.iter().map(|(t, n)| (&**t, *n)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        all.truncate(n);
        all
    }
}

/// What `/metrics` and `/readyz` can tell about the cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterStatus {
    /// This node's name in the stream's entries.
    pub node: String,
    pub reader_up: bool,
    pub writer_up: bool,
    /// The start-up load from the stream is done.
    pub loaded: bool,
    /// The last stream entry delivered.
    pub last_id: Option<String>,
    /// How old (by its stream ID's clock) the last entry was when it was
    /// delivered here, in milliseconds.
    pub lag_ms: u64,
    /// The reader's last batch was full: it is catching up.
    pub behind: bool,
    /// Appends waiting for Redis.
    pub appends_waiting: usize,
    /// Publishes by outcome: stored (202), certainly not stored (503),
    /// written with no answer in time (504), answered 202 without a new
    /// event for an `Idempotency-Key` already in the stream.
    pub acknowledged: u64,
    pub refused: u64,
    pub unknown: u64,
    pub deduplicated: u64,
    /// Of the refused: because a live node was too far behind.
    pub held_back: u64,
    /// Each node's lag behind the stream head, in entries (`live` false:
    /// not reported within `node_timeout`).
    pub nodes: Vec<(String, u64, bool)>,
    /// The largest lag of a live node.
    pub slowest_lag: u64,
    /// Events delivered from the stream (this node's and others').
    pub delivered: u64,
    /// Repeated cursors dropped (retried appends that had landed).
    pub duplicates: u64,
    /// Times the stream was found reset (Redis came back empty).
    pub resets: u64,
    /// Times entries were trimmed before this node read them.
    pub gaps: u64,
    /// Entries that could not be read back into events.
    pub bad_entries: u64,
    pub last_error: Option<String>,
}

impl ClusterStatus {
    /// Ready to serve as a cluster node: the backlog is loaded and both
    /// links to Redis are up.
    pub fn ready(&self) -> bool {
        self.loaded && self.reader_up && self.writer_up
    }
}
