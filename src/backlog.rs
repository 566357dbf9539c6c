//! The replay backlog: the last `size` events (no older than `max_age`, no
//! more than `max_bytes` of JSON together), in
//! accept order, found by sequence number in O(1) and by cursor through a
//! hash map, plus the reference's JSON-lines storage format.
//!
//! Invariant: `events` holds consecutive sequence numbers, so the event
//! with sequence `s` is at index `s - front.seq`.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::event::{Event, Line};

#[derive(Debug)]
pub struct Backlog {
    events: VecDeque<Rc<Event>>,
    by_cursor: HashMap<Box<str>, u64>,
    size: usize,
    max_age: Option<Duration>,
    max_bytes: usize,
    /// The JSON bytes of the events kept.
    bytes: usize,
}

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Replay from this sequence number on.
    From(u64),
    /// The cursor is not (or no longer) in the backlog: nothing to replay.
    UnknownCursor,
}

impl Backlog {
    pub fn new(size: usize, max_age: Option<Duration>) -> Backlog {
        Backlog {
            events: VecDeque::new(),
            by_cursor: HashMap::new(),
            size,
            max_age,
            max_bytes: usize::MAX,
            bytes: 0,
        }
    }

    /// Caps the events' JSON bytes kept (the newest event is always kept).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Backlog {
        self.max_bytes = max_bytes;
        self
    }

    pub fn is_enabled(&self) -> bool {
        self.size > 0
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Adds the newest event; returns how many old ones were evicted.
    pub fn push(&mut self, event: Rc<Event>) -> usize {
        if !self.is_enabled() {
            return 0;
        }
        debug_assert!(self
            .events
            .back()
            .is_none_or(|last| last.seq + 1 == event.seq));
        self.by_cursor
            .insert(event.cursor.as_str().into(), event.seq);
        self.bytes += event.line.json().len();
        self.events.push_back(event);
        let mut evicted = 0;
        while self.events.len() > self.size
            || (self.bytes > self.max_bytes && self.events.len() > 1)
        {
            self.pop_front();
            evicted += 1;
        }
        evicted
    }

    fn pop_front(&mut self) {
        if let Some(old) = self.events.pop_front() {
            self.by_cursor.remove(old.cursor.as_str());
            self.bytes -= old.line.json().len();
        }
    }

    /// Drops events older than `max_age`; returns how many.
    pub fn prune(&mut self, now: f64) -> usize {
        let Some(max_age) = self.max_age else {
            return 0;
        };
        let oldest = now - max_age.as_secs_f64();
        let mut evicted = 0;
        while self.events.front().is_some_and(|e| e.timestamp < oldest) {
            self.pop_front();
            evicted += 1;
        }
        evicted
    }

    /// True if the event may still be replayed at `now`.
    pub fn is_fresh(&self, event: &Event, now: f64) -> bool {
        self.max_age
            .is_none_or(|age| event.timestamp >= now - age.as_secs_f64())
    }

    /// The event with this sequence number, if still kept.
    pub fn get(&self, seq: u64) -> Option<&Rc<Event>> {
        let front = self.events.front()?.seq;
        let index = usize::try_from(seq.checked_sub(front)?).ok()?;
        self.events.get(index)
    }

    /// The sequence number of the oldest kept event.
    pub fn first_seq(&self) -> Option<u64> {
        self.events.front().map(|e| e.seq)
    }

    /// Replay every event after the one with this cursor.
    pub fn start_after_cursor(&self, cursor: &str) -> Start {
        match self.by_cursor.get(cursor.trim()) {
            Some(&seq) => Start::From(seq + 1),
            None => Start::UnknownCursor,
        }
    }

    /// Replay every event with a timestamp at or after `since`.
    pub fn start_since(&self, since: f64, next_seq: u64) -> u64 {
        // Timestamps follow accept order (a clock stepping back makes this
        // approximate, never unsafe).
        let i = self.events.partition_point(|e| e.timestamp < since);
        self.events.get(i).map_or(next_seq, |e| e.seq)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Rc<Event>> {
        self.events.iter()
    }
}

/// An event as one line of the storage file (the reference's format, with
/// the event's own JSON, cursor included, under `json`).
pub fn storage_line(event: &Event) -> String {
    let topics = serde_json::to_string(&event.topics).unwrap_or_else(|_| "[]".into());
    let timestamp = serde_json::to_string(&event.timestamp).unwrap_or_else(|_| "0".into());
    format!(
        "{{\"timestamp\": {timestamp}, \"topics\": {topics}, \"json\": {}, \"private\": {}}}\n",
        event.line.json(),
        event.private
    )
}

/// Reads one storage line back into an event with sequence number `seq`.
/// An event without a cursor (older files) gets a fresh one.
pub fn parse_storage_line(line: &str, seq: u64) -> Result<Event, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(mut record) = value else {
        return Err("not a JSON object".into());
    };
    let timestamp = record
        .get("timestamp")
        .and_then(Value::as_f64)
        .ok_or("missing or non-numeric 'timestamp'")?;
    let topics: Vec<String> = match record.remove("topics") {
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|t| match t {
                Value::String(s) => Ok(s),
                _ => Err("'topics' must be a list of strings".to_string()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err("missing 'topics' list".into()),
    };
    let private = record
        .get("private")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut json: Map<String, Value> = match record.remove("json") {
        Some(Value::Object(m)) => m,
        _ => return Err("missing 'json' object".into()),
    };
    let (cursor, text) = match json.get("pubsub_cursor").and_then(Value::as_str) {
        // The event's text exactly as subscribers saw it.
        Some(c) if !c.is_empty() => (c.to_owned(), raw_json(line)?),
        _ => {
            let c = uuid::Uuid::new_v4().to_string();
            json.insert("pubsub_cursor".into(), c.clone().into());
            (c, Value::Object(json).to_string())
        }
    };
    Ok(Event {
        seq,
        topics,
        private,
        timestamp,
        cursor,
        line: Line::new(text),
    })
}

/// The `json` member of a storage line, as the text it is written in.
fn raw_json(line: &str) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Record<'a> {
        #[serde(borrow)]
        json: &'a serde_json::value::RawValue,
    }
    serde_json::from_str::<Record<'_>>(line)
        .map(|r| r.json.get().to_owned())
        .map_err(|e| format!("invalid JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, timestamp: f64) -> Rc<Event> {
        let object = crate::event::parse_payload(b"{\"n\": 1}").unwrap();
        Rc::new(Event::publish(
            seq,
            "/a",
            vec!["a".into()],
            false,
            object,
            timestamp,
        ))
    }

    #[test]
    fn keeps_the_newest_and_finds_by_seq_and_cursor() {
        let mut b = Backlog::new(3, None);
        let events: Vec<_> = (1..=5).map(|s| event(s, s as f64)).collect();
        for e in &events {
            b.push(e.clone());
        }
        assert_eq!(b.len(), 3);
        assert_eq!(b.first_seq(), Some(3));
        assert_eq!(b.get(4).unwrap().seq, 4);
        assert!(b.get(2).is_none() && b.get(6).is_none());
        assert_eq!(b.start_after_cursor(&events[3].cursor), Start::From(5));
        assert_eq!(
            b.start_after_cursor(&events[0].cursor),
            Start::UnknownCursor
        );
        assert_eq!(b.start_after_cursor("nonsense"), Start::UnknownCursor);
        assert_eq!(b.start_since(4.0, 6), 4);
        assert_eq!(b.start_since(0.0, 6), 3);
        assert_eq!(b.start_since(99.0, 6), 6);
    }

    #[test]
    fn prunes_by_age() {
        let mut b = Backlog::new(10, Some(Duration::from_secs(10)));
        for s in 1..=5 {
            b.push(event(s, 100.0 + s as f64));
        }
        assert_eq!(b.prune(113.5), 3);
        assert_eq!(b.first_seq(), Some(4));
        assert!(b.is_fresh(b.get(4).unwrap(), 113.5));
        assert!(!b.is_fresh(b.get(4).unwrap(), 120.0));
    }

    #[test]
    fn keeps_at_most_max_bytes() {
        let one = event(1, 5.0).line.json().len();
        let mut b = Backlog::new(100, None).with_max_bytes(one * 3);
        for s in 1..=10 {
            b.push(event(s, 5.0));
        }
        assert_eq!(b.len(), 3);
        assert_eq!(b.first_seq(), Some(8));
        // The newest event stays even when it alone is over the cap.
        let mut b = Backlog::new(100, None).with_max_bytes(1);
        b.push(event(1, 1.0));
        b.push(event(2, 2.0));
        assert_eq!((b.len(), b.first_seq()), (1, Some(2)));
    }

    #[test]
    fn disabled_keeps_nothing() {
        let mut b = Backlog::new(0, None);
        b.push(event(1, 1.0));
        assert!(b.is_empty());
    }

    #[test]
    fn storage_round_trip() {
        let e = event(1, 1588293679.54);
        let line = storage_line(&e);
        assert!(line.starts_with("{\"timestamp\": 1588293679.54, \"topics\": [\"a\"], \"json\": {"));
        let back = parse_storage_line(&line, 9).unwrap();
        assert_eq!(
            (back.seq, back.timestamp, &back.topics, back.private),
            (9, e.timestamp, &e.topics, false)
        );
        assert_eq!(back.cursor, e.cursor);
        assert_eq!(back.line.json(), e.line.json());
    }

    #[test]
    fn reference_lines_load_and_bad_lines_fail() {
        let reference = r#"{"timestamp": 1588293679.54, "topics": ["a", "b"], "json": {"x": 1, "pubsub_topics": ["a","b"], "pubsub_path": "/private/a/b"}, "private": true}"#;
        let e = parse_storage_line(reference, 1).unwrap();
        assert!(e.private);
        assert_eq!(e.cursor.len(), 36);
        assert!(e.line.json().contains(&e.cursor));
        for bad in [
            "",
            "{",
            "[]",
            r#"{"topics": []}"#,
            r#"{"timestamp": 1, "topics": [1], "json": {}}"#,
            r#"{"timestamp": 1, "topics": [], "json": 3}"#,
        ] {
            assert!(parse_storage_line(bad, 1).is_err(), "{bad}");
        }
    }
}
