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
//! `cluster.timeout`. The writer's answer (or the deadline) unparks it: 202
//! once Redis acknowledged the append, 503 with `Retry-After` otherwise.
//! The reader's entries then go through `accept_event` (backlog, then
//! broadcast) like a single node's publishes.
//!
//! Invariants:
//! - a parked connection is answered exactly once: by the writer's reply
//!   while its state still holds that token, or by its deadline (the token
//!   is then forgotten for that connection, and a late acknowledgement only
//!   counts);
//! - events enter the backlog in stream order, each with the next local
//!   sequence number; entries loaded on start go to the backlog only
//!   (history, not news for live subscribers).
//!
//! Uses: `cluster`, `conns` (parking publishers), `history`, `stats`.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use cluster_bus::{Append, AppendError, Bus, Entry, Gap, Message, Side};
use log::warn;

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

/// The bus and the publishes waiting for it.
pub struct Cluster {
    bus: Bus,
    timeout: Duration,
    waiting: HashMap<u64, Waiting>,
    next_token: u64,
    status: ClusterStatus,
}

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
    ) {
        let Some(cluster) = &mut self.cluster else {
            debug_assert!(false, "append_to_cluster on a single node");
            return;
        };
        let (topics, private) = event::split_private(path_topics);
        // Its sequence number is assigned when it comes back from the stream.
        let event = Event::publish(0, path, topics, private, payload, self.clock.epoch());
        let line = backlog::storage_line(&event);
        let token = cluster.next_token;
        cluster.next_token += 1;
        let now = self.clock.now();
        let append = Append {
            token,
            cursor: event.cursor.clone(),
            event: line.trim_end().to_string(),
            deadline: Instant::now() + cluster.timeout,
        };
        if cluster.bus.append(append).is_err() {
            warn!("cluster: the append queue is full; refusing a publish");
            cluster.status.append_failures += 1;
            if let Some((key, after)) = reply {
                self.respond_unavailable(key, after);
            }
            return;
        }
        cluster.waiting.insert(token, Waiting { reply, source });
        let deadline = now + cluster.timeout;
        if let Some((key, _)) = reply {
            self.conns.set_state(key, State::Appending(token));
            self.conns.set_deadline(key, deadline);
        }
    }

    /// A parked publisher's deadline passed before Redis answered.
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
        warn!("cluster: no acknowledgement from Redis in time; answering 503");
        self.respond_unavailable(key, after);
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
                    behind,
                } => {
                    if let Some(c) = &mut self.cluster {
                        c.status.duplicates += duplicates;
                        c.status.behind = behind;
                    }
                    for entry in entries {
                        self.deliver(entry, initial);
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
            Ok(_) => cluster.status.appended += 1,
            Err(_) => cluster.status.append_failures += 1,
        }
        if let Err(e) = result {
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
        if result.is_ok() {
            self.respond(key, 202, Some(TEXT_RECEIVED), after);
            self.conns.rerun(key);
        } else {
            self.respond_unavailable(key, after);
        }
    }

    /// One entry from the stream: into the backlog, and unless it is
    /// start-up history, out to the subscribers.
    fn deliver(&mut self, entry: Entry, initial: bool) {
        let seq = self.history.last_seq() + 1;
        let event = match backlog::parse_storage_line(&entry.event, seq) {
            Ok(event) => event,
            Err(e) => {
                warn!("cluster: entry {} skipped: {e}", entry.id);
                if let Some(c) = &mut self.cluster {
                    c.status.bad_entries += 1;
                }
                return;
            }
        };
        self.history.next_seq();
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        cluster.status.last_id = Some(entry.id.to_string());
        cluster.status.delivered += 1;
        let now_ms = (event::epoch_now() * 1000.0) as u64;
        cluster.status.lag_ms = now_ms.saturating_sub(entry.id.ms);
        let event = Rc::new(event);
        if initial {
            self.history.keep_loaded(event);
            return;
        }
        if entry.node != cluster.status.node {
            self.stats.published(Source::Cluster);
        }
        self.accept_event(event);
    }
}
