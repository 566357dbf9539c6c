//! `Idempotency-Key` on publishes (the IETF httpapi draft's header): a
//! publish whose key is already in the window is answered 202 and makes
//! no new event, so a publisher can retry an answer it did not get (a
//! 504, a dropped connection) without a duplicate.
//!
//! The window is the replay window: on a single node the keys of the
//! events still in the backlog (the last 10 000 publishes when the backlog
//! is off), kept in memory; in a cluster the keys of the entries this node
//! has read from the stream (bounded like the stream, by `max_len`), and
//! the stream's readers deliver only the first entry with a key, whichever
//! node appended it.
//!
//! Invariants: a key is 1–128 visible ASCII bytes (else 400, and nothing is
//! published); it is never added to the event's JSON; the window holds at
//! most `capacity` keys, the oldest forgotten first, and none for an event
//! that has left the backlog.
//!
//! Uses: `idempotency` (the window), `history` (what is still in the
//! backlog), `conns` to answer.

use std::collections::{HashMap, VecDeque};

use super::requests::{After, TEXT_RECEIVED};
use super::Hub;
use crate::config::Config;
use crate::http::RequestHead;

/// Longest key accepted.
pub const MAX_KEY: usize = 128;
/// Keys remembered when the backlog is off.
pub const DEFAULT_WINDOW: usize = 10_000;

pub const TEXT_BAD_KEY: &str = "Idempotency-Key must be 1 to 128 visible ASCII characters.\n";

/// The publish's key: `Ok(None)` without one, `Err(())` for one that is
/// not 1–128 visible ASCII bytes (or sent twice, which reads as one value
/// with a space in it).
pub fn key_of(head: &RequestHead) -> Result<Option<&str>, ()> {
    let Some(key) = head.idempotency_key.as_deref() else {
        return Ok(None);
    };
    let valid =
        !key.is_empty() && key.len() <= MAX_KEY && key.bytes().all(|b| b.is_ascii_graphic());
    if valid {
        Ok(Some(key))
    } else {
        Err(())
    }
}

/// How many keys the window holds: the stream's length in a cluster, the
/// backlog's size on a single node, [`DEFAULT_WINDOW`] without a backlog.
pub fn capacity(config: &Config) -> usize {
    let backlog = config.server.backlog.size;
    if let Some(cluster) = &config.cluster {
        return (cluster.max_len(backlog) as usize).clamp(DEFAULT_WINDOW, 1 << 20);
    }
    if backlog > 0 {
        backlog
    } else {
        DEFAULT_WINDOW
    }
}

/// Keys of recent events and the sequence number each made.
#[derive(Debug)]
pub struct Window {
    seqs: HashMap<String, u64>,
    order: VecDeque<(u64, String)>,
    capacity: usize,
}

impl Window {
    pub fn new(capacity: usize) -> Window {
        Window {
            seqs: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.seqs.contains_key(key)
    }

    /// Remembers `key` for the event `seq` (the first one wins).
    pub fn insert(&mut self, key: &str, seq: u64) {
        if self.seqs.contains_key(key) {
            return;
        }
        while self.order.len() >= self.capacity {
            self.pop_oldest();
        }
        self.seqs.insert(key.to_owned(), seq);
        self.order.push_back((seq, key.to_owned()));
    }

    /// Forgets the keys of events before `seq` (they left the backlog).
    pub fn forget_before(&mut self, seq: u64) {
        while self.order.front().is_some_and(|(s, _)| *s < seq) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((_, key)) = self.order.pop_front() {
            self.seqs.remove(&key);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.order.len()
    }
}

impl Hub {
    /// A publish with a key already in the window: 202, no new event.
    /// False when the publish should go ahead.
    pub(super) fn answer_repeated_key(&mut self, key: usize, idem: &str, after: After) -> bool {
        // In a cluster the window is the stream's, not the backlog's.
        let backlog = self.history.backlog();
        if backlog.is_enabled() && self.config.cluster.is_none() {
            if let Some(first) = backlog.first_seq() {
                self.idempotency.forget_before(first);
            }
        }
        if !self.idempotency.contains(idem) {
            return false;
        }
        self.stats.deduplicated += 1;
        self.count_cluster_deduplicated();
        self.respond(key, 202, Some(TEXT_RECEIVED), after);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;

    fn key(raw: &[u8]) -> Result<Option<String>, ()> {
        let mut req = b"PUT /t HTTP/1.1\r\n".to_vec();
        req.extend_from_slice(raw);
        req.extend_from_slice(b"\r\n");
        let (head, _) = parse_head(&req, 64).unwrap().unwrap();
        key_of(&head).map(|k| k.map(str::to_owned))
    }

    #[test]
    fn keys_are_visible_ascii_up_to_128_bytes() {
        assert_eq!(key(b""), Ok(None));
        assert_eq!(key(b"Idempotency-Key: a-1\r\n"), Ok(Some("a-1".into())));
        assert_eq!(
            key(b"idempotency-key: \"8e03978e-40d5\"\r\n"),
            Ok(Some("\"8e03978e-40d5\"".into()))
        );
        let longest = format!("Idempotency-Key: {}\r\n", "k".repeat(128));
        assert!(key(longest.as_bytes()).unwrap().is_some());
        let long = format!("Idempotency-Key: {}\r\n", "k".repeat(129));
        assert_eq!(key(long.as_bytes()), Err(()));
        assert_eq!(key(b"Idempotency-Key: \r\n"), Err(()));
        assert_eq!(key(b"Idempotency-Key: a b\r\n"), Err(()));
        assert_eq!(key("Idempotency-Key: é\r\n".as_bytes()), Err(()));
        assert_eq!(
            key(b"Idempotency-Key: a\r\nIdempotency-Key: b\r\n"),
            Err(()),
            "two keys are no key"
        );
    }

    #[test]
    fn the_window_forgets_oldest_first_and_what_left_the_backlog() {
        let mut w = Window::new(2);
        w.insert("a", 1);
        w.insert("a", 9);
        w.insert("b", 2);
        assert!(w.contains("a") && w.contains("b"));
        w.insert("c", 3);
        assert!(!w.contains("a"), "over capacity: the oldest goes");
        assert_eq!(w.len(), 2);
        w.forget_before(3);
        assert!(!w.contains("b") && w.contains("c"));
    }
}
