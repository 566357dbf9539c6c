//! Stream IDs (`<ms>-<seq>`) compared as numbers, and the cursors a reader
//! has delivered (so a retried append shows once).

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};

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

/// The last `capacity` cursors (or idempotency keys) delivered, oldest
/// forgotten first. Each is kept as 128 bits, with no allocation: a UUID
/// cursor exactly, anything else as a 128-bit SipHash (two keyed halves),
/// where a collision is as likely as guessing a UUID.
#[derive(Debug)]
pub struct SeenCursors {
    set: HashSet<u128, Spread>,
    order: VecDeque<u128>,
    capacity: usize,
    hash: (RandomState, RandomState),
}

impl SeenCursors {
    pub fn new(capacity: usize) -> SeenCursors {
        SeenCursors {
            set: HashSet::with_capacity_and_hasher(capacity.min(1 << 16), Spread),
            order: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity: capacity.max(1),
            hash: (RandomState::new(), RandomState::new()),
        }
    }

    fn fingerprint(&self, text: &str) -> u128 {
        if let Some(uuid) = parse_uuid(text) {
            return uuid;
        }
        let half = |state: &RandomState| {
            let mut h = state.build_hasher();
            h.write(text.as_bytes());
            h.finish()
        };
        // The top bit marks a hash; parsed UUIDs have it clear, so the two
        // never meet.
        (u128::from(half(&self.hash.0)) << 64 | u128::from(half(&self.hash.1))) | 1 << 127
    }

    /// True if `cursor` is new (and now remembered).
    pub fn insert(&mut self, cursor: &str) -> bool {
        let fp = self.fingerprint(cursor);
        if !self.set.insert(fp) {
            return false;
        }
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back(fp);
        true
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// The set's hasher: a fingerprint is already random (a v4 UUID's bits,
/// or a keyed SipHash nobody outside can steer), so its low 64 bits are
/// the hash; SipHash over it again was a tenth of a reader's time.
#[derive(Debug, Clone, Copy, Default)]
struct Spread;

impl BuildHasher for Spread {
    type Hasher = Low64;
    fn build_hasher(&self) -> Low64 {
        Low64(0)
    }
}

#[derive(Debug, Default)]
struct Low64(u64);

impl Hasher for Low64 {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        // Both halves: a UUID's version nibble sits in the high one.
        self.0 = (n as u64) ^ ((n >> 64) as u64).rotate_left(32);
    }
}

/// `8-4-4-4-12` hex digits as a number (`None` for anything else).
fn parse_uuid(text: &str) -> Option<u128> {
    let b = text.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let mut n: u128 = 0;
    for (i, &c) in b.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            continue;
        }
        let d = (c as char).to_digit(16)?;
        n = n << 4 | u128::from(d);
    }
    // UUIDs use 122 of the bits; the top one stays clear for the hashed.
    Some(n & !(1 << 127))
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

    #[test]
    fn uuid_cursors_and_other_text() {
        let mut seen = SeenCursors::new(10);
        let u = "8f3d2511-0c4e-4b7a-9a11-3c2d9e8f7a60";
        assert!(seen.insert(u));
        assert!(!seen.insert(u));
        assert!(seen.insert(&u.to_uppercase().replace('8', "9")));
        assert!(
            seen.insert("8f3d2511-0c4e-4b7a-9a11-3c2d9e8f7a6"),
            "35 chars"
        );
        assert!(seen.insert("order-1") && !seen.insert("order-1"));
        assert!(seen.insert("order-2"));
        assert_eq!(parse_uuid("zz3d2511-0c4e-4b7a-9a11-3c2d9e8f7a60"), None);
    }
}
