//! The hub's side of the cluster bus (`cluster-bus`): in cluster mode an
//! accepted publish is appended to the Redis stream instead of being
//! broadcast, and every node — this one included — delivers what its
//! reader brings back, in stream order.
//!
//! A publish in cluster mode: `finish_publish` (or the SQS drain) →
//! [`Hub::append_to_cluster`] builds the event (cursor, timestamp, topics
//! and path assigned here, so every node rebuilds the same bytes from its
//! storage line) and queues it for the writer; the publisher's connection
//! is parked in `State::Appending(token)` with a deadline of
//! `cluster.timeout`. The writer's answer unparks it, and says what is
//! true: 202 once Redis acknowledged the append; 503 with `Retry-After`
//! when it is certainly not stored (never written, or refused by Redis);
//! 504 when it was written and no answer came in time (it may be stored,
//! and shows at most once; it is never sent again). A retry with the same
//! `Idempotency-Key` is safe after any of them.
//! The reader's entries then go through `accept_event` (backlog, then
//! broadcast) like a single node's publishes.
//!
//! Back-pressure: the reader reports how far every node has read
//! (`cluster_bus::progress`). While the slowest live node, plus this node's
//! appends in flight and a margin, is within reach of `max_len` (where the
//! trim would take entries it has not read), publishes get 503 and are not
//! appended: a 202 stays a promise that every live node delivers it.
//!
//! Invariants:
//! - a parked connection is answered exactly once: by the writer's reply
//!   while its state still holds that token, or, should the writer not
//!   answer within [`WRITER_GRACE`] after its own deadline, by a 504 (the
//!   writer never sends an append after its deadline, so it cannot show
//!   up after a 503);
//! - events enter the backlog in stream order, each with the next local
//!   sequence number; entries loaded on start go to the backlog only
//!   (history, not news for live subscribers).
//!
//! Uses: `cluster`, `conns` (parking publishers), `history`,
//! `idempotency`, `stats`.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use cluster_bus::progress::Progress;
use cluster_bus::{Append, AppendError, Bus, Entry, Gap, Message, Side};
use log::{info, warn};

use super::super::requests::{After, TEXT_RECEIVED};
use super::super::table::State;
use super::super::Hub;
use super::RETRY_AFTER;
use crate::backlog;
use crate::event::{self, Event, Payload};
use crate::feeds::cluster::ClusterFeed;
use crate::stats::{ClusterStatus, Source};

pub const TEXT_UNAVAILABLE: &str =
    "The event could not be stored in the cluster's stream; please try again.\n";
pub const TEXT_UNKNOWN: &str = "Redis did not confirm the event in time: it may or may not have been stored (if it was, it is delivered once). Retry with the same Idempotency-Key to publish it exactly once.\n";
pub const TEXT_BEHIND: &str =
    "A node of the cluster is too far behind the stream; the event was not stored, please try again.\n";
/// How long past `timeout` a parked publisher waits for the writer's own
/// answer before it gets 504 regardless.
pub const WRITER_GRACE: Duration = Duration::from_secs(1);

/// The bus and the publishes waiting for it.
pub struct Cluster {
    bus: Bus,
    timeout: Duration,
    waiting: HashMap<u64, Waiting>,
    next_token: u64,
    status: ClusterStatus,
    max_len: u64,
    /// Entries kept clear of the trim horizon for other nodes' appends not
    /// yet seen.
    margin: u64,
    /// Appends acknowledged since the last progress report (not yet in
    /// its view of the head).
    acked_since_progress: u64,
    /// This node's own events by cursor, kept from the append until they
    /// come back from the stream, so they are not parsed again from their
    /// storage line (the same bytes: the line embeds the event's JSON).
    own: HashMap<String, Event>,
    own_order: VecDeque<String>,
}

/// Own events kept for their return at most (past it, the oldest is
/// parsed from the stream like anyone's).
const OWN_MAX: usize = 4096;

/// An append whose outcome is awaited.
struct Waiting {
    /// The parked publisher (`None`: an SQS event, or answered already).
    reply: Option<(usize, After)>,
    source: Source,
}

impl Cluster {
    /// The hub's side of a started bus.
    pub fn new(feed: ClusterFeed) -> Cluster {
        Cluster {
            bus: feed.bus,
            timeout: feed.timeout,
            waiting: HashMap::new(),
            next_token: 1,
            status: ClusterStatus {
                node: feed.node,
                ..ClusterStatus::default()
            },
            max_len: feed.max_len,
            margin: (feed.max_len / 10).max(1),
            acked_since_progress: 0,
            own: HashMap::new(),
            own_order: VecDeque::new(),
        }
    }

    /// True while one more append could be trimmed away before the
    /// slowest live node reads it.
    fn held_back(&self) -> bool {
        let in_flight = self.waiting.len() as u64 + self.acked_since_progress;
        self.status.slowest_lag + in_flight + self.margin >= self.max_len
    }

    fn progress(&mut self, progress: Progress) {
        self.acked_since_progress = 0;
        self.status.slowest_lag = progress.slowest_live();
        let was_held = self
            .status
            .nodes
            .iter()
            .any(|(_, lag, live)| *live && lag + self.margin >= self.max_len);
        self.status.nodes = progress
            .nodes
            .into_iter()
            .map(|n| (n.node, n.lag, n.live))
            .collect();
        let held = self.status.slowest_lag + self.margin >= self.max_len;
        if held && !was_held {
            warn!(
                "cluster: a live node is {} entries behind (max_len {}): publishes get 503 until it catches up or times out",
                self.status.slowest_lag, self.max_len
            );
        } else if was_held && !held {
            info!("cluster: no live node is near the trim horizon any more; publishing again");
        }
    }
}

impl Hub {
    /// The cluster's state, `None` for a single node (for `/metrics` and
    /// `/readyz`).
    pub fn cluster_status(&self) -> Option<ClusterStatus> {
        let cluster = self.cluster.as_ref()?;
        let mut status = cluster.status.clone();
        status.appends_waiting = cluster.waiting.len();
        Some(status)
    }

    /// Appends a published object to the stream (cluster mode only);
    /// `reply` is the publisher to answer, parked until then.
    pub(in crate::hub) fn append_to_cluster(
        &mut self,
        source: Source,
        path: &str,
        path_topics: Vec<String>,
        payload: Payload<'_>,
        reply: Option<(usize, After)>,
        key: Option<String>,
    ) {
        let Some(cluster) = &mut self.cluster else {
            debug_assert!(false, "append_to_cluster on a single node");
            return;
        };
        if cluster.held_back() {
            cluster.status.refused += 1;
            cluster.status.held_back += 1;
            if source == Source::Sqs {
                warn!("cluster: an SQS event was not appended: a node is too far behind");
            }
            if let Some((key, after)) = reply {
                let body = ("text/plain; charset=utf-8", TEXT_BEHIND.as_bytes());
                self.respond_typed(key, 503, Some(body), &[("Retry-After", RETRY_AFTER)], after);
                self.conns.rerun(key);
            }
            return;
        }
        let (topics, private) = event::split_private(path_topics);
        // Its sequence number is assigned when it comes back from the stream.
        let event = Event::publish(0, path, topics, private, payload, self.clock.epoch());
        let mut line = backlog::storage_line(&event);
        line.truncate(line.trim_end().len());
        let token = cluster.next_token;
        cluster.next_token += 1;
        let now = self.clock.now();
        let append = Append {
            token,
            cursor: event.cursor.clone(),
            event: line,
            key,
            deadline: Instant::now() + cluster.timeout,
        };
        if cluster.bus.append(append).is_err() {
            warn!("cluster: the append queue is full; refusing a publish");
            cluster.status.refused += 1;
            if let Some((key, after)) = reply {
                self.respond_unavailable(key, after);
            }
            return;
        }
        cluster.waiting.insert(token, Waiting { reply, source });
        while cluster.own_order.len() >= OWN_MAX {
            if let Some(old) = cluster.own_order.pop_front() {
                cluster.own.remove(&old);
            }
        }
        cluster.own_order.push_back(event.cursor.clone());
        cluster.own.insert(event.cursor.clone(), event);
        let deadline = now + cluster.timeout + WRITER_GRACE;
        if let Some((key, _)) = reply {
            self.conns.set_state(key, State::Appending(token));
            self.conns.set_deadline(key, deadline);
        }
    }

    /// The writer gave no answer by the publisher's deadline (and its
    /// grace): whether the append was written is not known here, so 504.
    pub(in crate::hub) fn append_timed_out(&mut self, key: usize, token: u64) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let Some(after) = cluster
            .waiting
            .get_mut(&token)
            .and_then(|w| w.reply.take())
            .map(|(_, after)| after)
        else {
            return;
        };
        warn!("cluster: no answer from the writer in time; answering 504");
        self.respond_unknown(key, after);
    }

    fn respond_unknown(&mut self, key: usize, after: After) {
        let body = ("text/plain; charset=utf-8", TEXT_UNKNOWN.as_bytes());
        self.respond_typed(key, 504, Some(body), &[], after);
        self.conns.rerun(key);
    }

    /// Not yet holding the stream's newest entries (just started, or
    /// Redis unreachable since): replays cannot be answered yet.
    pub(in crate::hub) fn cluster_backlog_loading(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| !c.status.loaded)
    }

    fn respond_unavailable(&mut self, key: usize, after: After) {
        let body = ("text/plain; charset=utf-8", TEXT_UNAVAILABLE.as_bytes());
        self.respond_typed(key, 503, Some(body), &[("Retry-After", RETRY_AFTER)], after);
        self.conns.rerun(key);
    }

    /// A publish answered from the idempotency window, for the cluster's
    /// outcome counts.
    pub(in crate::hub) fn count_cluster_deduplicated(&mut self) {
        if let Some(c) = &mut self.cluster {
            c.status.deduplicated += 1;
        }
    }

    /// Hands this turn's appends to the writer (once per turn, so it is
    /// woken once); if it is gone, each is answered 503: none was sent.
    pub(in crate::hub) fn send_cluster_appends(&mut self) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let Err(batch) = cluster.bus.send_pending() else {
            return;
        };
        warn!(
            "cluster: the writer takes no appends; refusing {}",
            batch.len()
        );
        for append in batch {
            self.appended(append.token, Err(AppendError::NotSent));
        }
    }

    /// Takes what the bus's threads sent.
    pub(in crate::hub) fn drain_cluster(&mut self) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let messages: Vec<Message> = cluster.bus.messages().try_iter().collect();
        for message in messages {
            match message {
                Message::Appended { token, result } => self.appended(token, result),
                Message::Entries {
                    entries,
                    initial,
                    duplicates,
                    key_duplicates,
                    behind,
                } => {
                    if let Some(c) = &mut self.cluster {
                        c.status.duplicates += duplicates + key_duplicates;
                        c.status.behind = behind;
                    }
                    let last = entries.last().map(|e| e.id);
                    for entry in entries {
                        self.deliver(entry, initial);
                    }
                    if let (Some(id), Some(c)) = (last, &mut self.cluster) {
                        c.status.last_id = Some(id.to_string());
                        let now_ms = (event::epoch_now() * 1000.0) as u64;
                        c.status.lag_ms = now_ms.saturating_sub(id.ms);
                    }
                    if let Some(c) = &mut self.cluster {
                        c.status.loaded |= initial;
                    }
                }
                Message::Link { side, up, error } => {
                    if let Some(c) = &mut self.cluster {
                        match side {
                            Side::Reader => c.status.reader_up = up,
                            Side::Writer => c.status.writer_up = up,
                        }
                        if error.is_some() {
                            c.status.last_error = error;
                        }
                    }
                }
                Message::Progress(progress) => {
                    if let Some(c) = &mut self.cluster {
                        c.progress(progress);
                    }
                }
                Message::Gap(gap) => {
                    if let Some(c) = &mut self.cluster {
                        match gap {
                            Gap::Reset => c.status.resets += 1,
                            Gap::Trimmed => c.status.gaps += 1,
                        }
                    }
                }
            }
        }
    }

    /// The writer's final word on one append.
    fn appended(&mut self, token: u64, result: Result<cluster_bus::StreamId, AppendError>) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let Some(waiting) = cluster.waiting.remove(&token) else {
            return;
        };
        match &result {
            Ok(_) => {
                cluster.status.acknowledged += 1;
                cluster.acked_since_progress += 1;
            }
            Err(e) if e.not_stored() => cluster.status.refused += 1,
            Err(_) => cluster.status.unknown += 1,
        }
        if let Err(e) = &result {
            if waiting.reply.is_none() && waiting.source == Source::Sqs {
                warn!("cluster: an SQS event was not appended: {e}");
            }
        } else {
            self.stats.published(waiting.source);
        }
        let Some((key, after)) = waiting.reply else {
            return;
        };
        let parked = self
            .conns
            .get(key)
            .is_some_and(|c| matches!(c.state(), State::Appending(t) if *t == token));
        if !parked {
            return;
        }
        match result {
            Ok(_) => {
                self.respond(key, 202, Some(TEXT_RECEIVED), after);
                self.conns.rerun(key);
            }
            Err(e) if e.not_stored() => self.respond_unavailable(key, after),
            Err(_) => self.respond_unknown(key, after),
        }
    }

    /// One entry from the stream: into the backlog, and unless it is
    /// start-up history, out to the subscribers.
    fn deliver(&mut self, entry: Entry, initial: bool) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let mine = entry.node == cluster.status.node;
        let own = if mine {
            cluster.own.remove(&entry.cursor)
        } else {
            None
        };
        // Nobody here can receive it and no backlog keeps it: the event is
        // not built at all (what a node without subscribers spends on
        // each entry).
        if (initial || self.conns.subscribers() == 0) && !self.history.backlog().is_enabled() {
            cluster.status.delivered += 1;
            let seq = self.history.next_seq();
            if let Some(key) = &entry.key {
                self.idempotency.insert(key, seq);
            }
            if !initial && !mine {
                self.stats.published(Source::Cluster);
            }
            return;
        }
        let seq = self.history.last_seq() + 1;
        let parsed = match own {
            Some(mut event) => {
                event.seq = seq;
                Ok(event)
            }
            None => backlog::parse_storage_line(&entry.event, seq),
        };
        let event = match parsed {
            Ok(event) => event,
            Err(e) => {
                warn!("cluster: entry {} skipped: {e}", entry.id);
                cluster.status.bad_entries += 1;
                return;
            }
        };
        cluster.status.delivered += 1;
        let seq = self.history.next_seq();
        if let Some(key) = &entry.key {
            self.idempotency.insert(key, seq);
        }
        let event = Rc::new(event);
        if initial {
            self.history.keep_loaded(event);
            return;
        }
        if !mine {
            self.stats.published(Source::Cluster);
        }
        self.accept_event(event);
    }
}
