//! Stream IDs (`<ms>-<seq>`) compared as numbers, and the cursors a reader
//! has delivered (so a retried append shows once).

use std::collections::{HashSet, VecDeque};
use std::fmt;

/// A Redis stream entry ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    /// `0-0`: before every entry.
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    /// Parses `ms-seq` (or a bare `ms`).
    pub fn parse(text: &str) -> Option<StreamId> {
        let (ms, seq) = match text.split_once('-') {
            Some((ms, seq)) => (ms, seq),
            None => (text, "0"),
        };
        Some(StreamId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// The last `capacity` cursors delivered, oldest forgotten first.
#[derive(Debug)]
pub struct SeenCursors {
    set: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl SeenCursors {
    pub fn new(capacity: usize) -> SeenCursors {
        SeenCursors {
            set: HashSet::with_capacity(capacity.min(1 << 16)),
            order: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity: capacity.max(1),
        }
    }

    /// True if `cursor` is new (and now remembered).
    pub fn insert(&mut self, cursor: &str) -> bool {
        if self.set.contains(cursor) {
            return false;
        }
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(cursor.to_owned());
        self.order.push_back(cursor.to_owned());
        true
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_compare_as_numbers() {
        let a = StreamId::parse("9-5").unwrap();
        let b = StreamId::parse("10-0").unwrap();
        assert!(a < b);
        assert_eq!(StreamId::parse("10").unwrap(), b);
        assert_eq!(b.to_string(), "10-0");
        assert!(StreamId::parse("x-1").is_none());
        assert!(StreamId::parse("1-").is_none());
        assert_eq!(StreamId::parse("0-0").unwrap(), StreamId::ZERO);
    }

    #[test]
    fn cursors_are_remembered_up_to_capacity() {
        let mut seen = SeenCursors::new(2);
        assert!(seen.insert("a"));
        assert!(!seen.insert("a"));
        assert!(seen.insert("b"));
        assert!(seen.insert("c"));
        assert_eq!(seen.len(), 2);
        assert!(seen.insert("a"), "the oldest was forgotten");
        assert!(!seen.insert("c"));
    }
}
