//! The replay backlog: the last `size` events (no older than `max_age`, no
//! more than `max_bytes` of JSON together), in
//! accept order, found by sequence number in O(1) and by cursor through a
//! hash map, plus the reference's JSON-lines storage format (restoring
//! the server's keys on lines that lack them, as the reference's loader does).
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

    /// The JSON bytes of the events kept.
    pub fn bytes(&self) -> usize {
        self.bytes
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
        self.trim()
    }

    /// New limits (a configuration reload); returns how many old events
    /// they evicted. A backlog that was off stays empty until events come.
    pub fn set_limits(
        &mut self,
        size: usize,
        max_age: Option<Duration>,
        max_bytes: usize,
    ) -> usize {
        self.size = size;
        self.max_age = max_age;
        self.max_bytes = max_bytes;
        self.trim()
    }

    /// Drops the oldest events until the count and byte limits hold (the
    /// newest event always stays while the backlog is on).
    fn trim(&mut self) -> usize {
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

/// Why a storage line cannot become an event (the line is skipped).
#[derive(Debug)]
pub enum LineError {
    Json(serde_json::Error),
    NotAnObject,
    /// `timestamp` is missing or not a number.
    Timestamp,
    /// `topics` is missing or not a list of strings.
    Topics,
    /// `json` is missing or not an object.
    Event,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::Json(e) => write!(f, "invalid JSON: {e}"),
            LineError::NotAnObject => f.write_str("not a JSON object"),
            LineError::Timestamp => f.write_str("missing or non-numeric 'timestamp'"),
            LineError::Topics => f.write_str("missing 'topics' list of strings"),
            LineError::Event => f.write_str("missing 'json' object"),
        }
    }
}

impl std::error::Error for LineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LineError::Json(e) => Some(e),
            _ => None,
        }
    }
}

/// Reads one storage line back into an event with sequence number `seq`.
///
/// A line whose `json` already carries the four server keys loads byte for
/// byte. One that lacks some (hand-made, or written by older tools) gets
/// them the way the reference's loader builds them — topics and path from
/// the record's `topics` and `private`, the timestamp from its `timestamp`,
/// a fresh cursor — appended in `Event::publish`'s order after the keys it
/// has, so every replayed event carries all four. The cursor given here is
/// the event's for the life of the process, and the next save writes it
/// back, so it also survives a restart.
pub fn parse_storage_line(line: &str, seq: u64) -> Result<Event, LineError> {
    let value: Value = serde_json::from_str(line).map_err(LineError::Json)?;
    let Value::Object(mut record) = value else {
        return Err(LineError::NotAnObject);
    };
    let stamp = record.remove("timestamp").unwrap_or(Value::Null);
    let timestamp = stamp.as_f64().ok_or(LineError::Timestamp)?;
    let topics: Vec<String> = match record.remove("topics") {
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|t| match t {
                Value::String(s) => Ok(s),
                _ => Err(LineError::Topics),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(LineError::Topics),
    };
    let private = record
        .get("private")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let json: Map<String, Value> = match record.remove("json") {
        Some(Value::Object(m)) => m,
        _ => return Err(LineError::Event),
    };
    let raw = raw_json(line)?;
    let stored = Stored {
        raw: &raw,
        json,
        topics: &topics,
        private,
        timestamp: stamp,
    };
    let (cursor, text) = stored.complete();
    Ok(Event {
        seq,
        topics,
        private,
        timestamp,
        cursor,
        line: Line::new(text),
    })
}

/// The parts of a storage line its event is rebuilt from.
struct Stored<'a> {
    /// The `json` member as written.
    raw: &'a str,
    /// The same, parsed.
    json: Map<String, Value>,
    topics: &'a [String],
    private: bool,
    /// The record's `timestamp`, as the number it is written as.
    timestamp: Value,
}

impl Stored<'_> {
    /// The event's cursor and text, with every server key present.
    fn complete(mut self) -> (String, String) {
        let usable = match self.json.get("pubsub_cursor") {
            Some(Value::String(c)) if !c.is_empty() => Some(c.clone()),
            _ => None,
        };
        let replaces_cursor = usable.is_none() && self.json.contains_key("pubsub_cursor");
        let cursor = usable.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let missing: Vec<(&str, Value)> = self
            .server_keys(&cursor)
            .into_iter()
            .filter(|(key, _)| !self.json.contains_key(*key))
            .collect();
        let text = if replaces_cursor {
            // A null, empty or non-string cursor is no cursor: replaced
            // where it stands, so the text has to be rebuilt.
            self.json
                .insert("pubsub_cursor".into(), cursor.clone().into());
            self.json
                .extend(missing.into_iter().map(|(k, v)| (k.into(), v)));
            Value::Object(self.json).to_string()
        } else if missing.is_empty() {
            // The event's text exactly as subscribers saw it.
            self.raw.to_owned()
        } else {
            append_members(self.raw, &missing)
        };
        (cursor, text)
    }

    /// The keys the server adds to every event, in the order
    /// `Event::publish` appends them, valued as the reference's loader
    /// values them.
    fn server_keys(&self, cursor: &str) -> [(&'static str, Value); 4] {
        [
            ("pubsub_topics", self.topics.into()),
            (
                "pubsub_path",
                reference_path(self.topics, self.private).into(),
            ),
            ("pubsub_timestamp", self.timestamp.clone()),
            ("pubsub_cursor", cursor.into()),
        ]
    }
}

/// The path the reference's loader gives a stored event: its topics joined
/// by `/`, under `/private/` for a private one. (The reference leaves out
/// the leading `/` of a public path; published paths always have it.)
fn reference_path(topics: &[String], private: bool) -> String {
    let joined = topics.join("/");
    if private {
        format!("/private/{joined}")
    } else {
        format!("/{joined}")
    }
}

/// `object` (the text of a JSON object) with `members` appended, written
/// as `Event::publish` writes its keys. The object's own text is kept.
fn append_members(object: &str, members: &[(&str, Value)]) -> String {
    let open = object.trim().strip_suffix('}').unwrap_or("{").trim_end();
    let mut out = String::with_capacity(object.len() + 160);
    out.push_str(open);
    let mut first = open.ends_with('{');
    for (key, value) in members {
        if !first {
            out.push(',');
        }
        first = false;
        // A key and a `Value` always serialize.
        out.push_str(&Value::from(*key).to_string());
        out.push(':');
        out.push_str(&value.to_string());
    }
    out.push('}');
    out
}

/// The `json` member of a storage line, as the text it is written in.
fn raw_json(line: &str) -> Result<String, LineError> {
    #[derive(serde::Deserialize)]
    struct Record<'a> {
        #[serde(borrow)]
        json: &'a serde_json::value::RawValue,
    }
    serde_json::from_str::<Record<'_>>(line)
        .map(|r| r.json.get().to_owned())
        .map_err(LineError::Json)
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

    /// The keys of an event's JSON, in order.
    fn keys(e: &Event) -> Vec<String> {
        let v: Value = serde_json::from_str(e.line.json()).unwrap();
        v.as_object().unwrap().keys().cloned().collect()
    }

    fn value(e: &Event) -> Value {
        serde_json::from_str(e.line.json()).unwrap()
    }

    #[test]
    fn lines_without_server_keys_get_all_four() {
        let line = r#"{"timestamp": 1588293679.54, "topics": ["a", "b"], "json": {"z": 1, "x": [2, {"y": null}]}, "private": false}"#;
        let e = parse_storage_line(line, 3).unwrap();
        assert_eq!((e.seq, e.private, e.timestamp), (3, false, 1588293679.54));
        assert_eq!(e.topics, ["a", "b"]);
        let v = value(&e);
        assert_eq!(v["pubsub_topics"], serde_json::json!(["a", "b"]));
        assert_eq!(v["pubsub_path"], "/a/b");
        assert_eq!(v["pubsub_timestamp"], 1588293679.54);
        assert_eq!(v["pubsub_cursor"], e.cursor.as_str());
        let uuid = uuid::Uuid::parse_str(&e.cursor).unwrap();
        assert_eq!(uuid.get_version_num(), 4);
        // Appended after the payload's own keys, in `Event::publish`'s order,
        // with the payload's text kept as written.
        assert_eq!(
            keys(&e),
            [
                "z",
                "x",
                "pubsub_topics",
                "pubsub_path",
                "pubsub_timestamp",
                "pubsub_cursor"
            ]
        );
        assert_eq!(
            e.line.json(),
            format!(
                r#"{{"z": 1, "x": [2, {{"y": null}}],"pubsub_topics":["a","b"],"pubsub_path":"/a/b","pubsub_timestamp":1588293679.54,"pubsub_cursor":"{}"}}"#,
                e.cursor
            )
        );
        // Each load of such a line is a new event with its own cursor.
        assert_ne!(parse_storage_line(line, 3).unwrap().cursor, e.cursor);
    }

    #[test]
    fn the_restored_path_is_the_reference_loaders() {
        let path = |line: &str| value(&parse_storage_line(line, 1).unwrap())["pubsub_path"].clone();
        let private =
            r#"{"timestamp": 1, "topics": ["git", "secret"], "json": {}, "private": true}"#;
        assert_eq!(path(private), "/private/git/secret");
        let e = parse_storage_line(private, 1).unwrap();
        assert!(e.private);
        assert_eq!(
            value(&e)["pubsub_topics"],
            serde_json::json!(["git", "secret"])
        );
        // `private` missing means public, as when the reference reads it.
        assert_eq!(
            path(r#"{"timestamp": 1, "topics": ["a"], "json": {}}"#),
            "/a"
        );
        assert_eq!(path(r#"{"timestamp": 1, "topics": [], "json": { }}"#), "/");
        assert_eq!(
            path(r#"{"timestamp": 1, "topics": [], "json": {}, "private": true}"#),
            "/private/"
        );
    }

    #[test]
    fn the_restored_timestamp_is_the_records_number_as_written() {
        for (written, want) in [
            ("1588293679", serde_json::json!(1588293679)),
            ("1795821591.4948177", serde_json::json!(1795821591.4948177)),
            ("0.5", serde_json::json!(0.5)),
        ] {
            let line = format!(r#"{{"timestamp": {written}, "topics": ["t"], "json": {{}}}}"#);
            let e = parse_storage_line(&line, 1).unwrap();
            assert_eq!(value(&e)["pubsub_timestamp"], want, "{line}");
            assert!(e
                .line
                .json()
                .contains(&format!(r#""pubsub_timestamp":{written},"#)));
        }
    }

    #[test]
    fn lines_with_some_keys_get_the_missing_ones() {
        let c = "1b4e28ba-2fa1-4d2b-8835-0e1e0b4c0a11";
        let line = format!(
            r#"{{"timestamp": 7.25, "topics": ["a"], "json": {{"pubsub_path": "/as/sent", "n": 1, "pubsub_cursor": "{c}"}}, "private": false}}"#
        );
        let e = parse_storage_line(&line, 1).unwrap();
        assert_eq!(e.cursor, c);
        assert_eq!(
            keys(&e),
            [
                "pubsub_path",
                "n",
                "pubsub_cursor",
                "pubsub_topics",
                "pubsub_timestamp"
            ]
        );
        let v = value(&e);
        assert_eq!(v["pubsub_path"], "/as/sent");
        assert_eq!(v["pubsub_topics"], serde_json::json!(["a"]));
        assert_eq!(v["pubsub_timestamp"], 7.25);

        // The reference's own older lines: everything but the cursor.
        let line = r#"{"timestamp": 1588293679.54, "topics": ["a", "b"], "json": {"x": 1, "pubsub_topics": ["a","b"], "pubsub_path": "/private/a/b", "pubsub_timestamp": 1588293679.54}, "private": true}"#;
        let e = parse_storage_line(line, 1).unwrap();
        assert!(e.private);
        assert_eq!(
            e.line.json(),
            format!(
                r#"{{"x": 1, "pubsub_topics": ["a","b"], "pubsub_path": "/private/a/b", "pubsub_timestamp": 1588293679.54,"pubsub_cursor":"{}"}}"#,
                e.cursor
            )
        );
    }

    #[test]
    fn an_unusable_cursor_is_replaced_where_it_stands() {
        for bad in ["null", "\"\"", "7", "[]"] {
            let line = format!(
                r#"{{"timestamp": 2, "topics": ["a"], "json": {{"pubsub_cursor": {bad}, "n": 1}}}}"#
            );
            let e = parse_storage_line(&line, 1).unwrap();
            assert_eq!(e.cursor.len(), 36, "{line}");
            assert_eq!(value(&e)["pubsub_cursor"], e.cursor.as_str());
            assert_eq!(
                keys(&e),
                [
                    "pubsub_cursor",
                    "n",
                    "pubsub_topics",
                    "pubsub_path",
                    "pubsub_timestamp"
                ]
            );
        }
    }

    #[test]
    fn lines_with_all_keys_load_byte_for_byte() {
        let json = r#"{ "n" : 1,"pubsub_timestamp":5.5,  "pubsub_cursor": "c1", "pubsub_path": "/elsewhere", "pubsub_topics": ["b"] ,"t":"\u00e9"}"#;
        let line =
            format!(r#"{{"timestamp": 9.5, "topics": ["a"], "json": {json}, "private": false}}"#);
        let e = parse_storage_line(&line, 1).unwrap();
        assert_eq!(e.line.json(), json);
        assert_eq!(
            (e.cursor.as_str(), e.timestamp, &e.topics[..]),
            ("c1", 9.5, &["a".to_string()][..])
        );
    }

    /// What a restart sees: the line written back for a restored event
    /// loads as the same event, cursor included.
    #[test]
    fn restored_events_are_stored_with_their_keys_and_come_back_the_same() {
        for line in [
            r#"{"timestamp": 1588293679.54, "topics": ["a", "b"], "json": {"n": 1}, "private": true}"#,
            r#"{"timestamp": 3, "topics": ["a"], "json": {"pubsub_path": "/x", "pubsub_cursor": null}}"#,
        ] {
            let e = parse_storage_line(line, 1).unwrap();
            let stored = storage_line(&e);
            let back = parse_storage_line(&stored, 1).unwrap();
            assert_eq!(back.cursor, e.cursor, "{stored}");
            assert_eq!(back.line.json(), e.line.json());
            assert_eq!(storage_line(&back), stored);
        }
    }

    #[test]
    fn bad_lines_fail_and_say_why() {
        for (bad, why) in [
            ("", "invalid JSON"),
            ("{", "invalid JSON"),
            ("[]", "not a JSON object"),
            (r#"{"topics": []}"#, "missing or non-numeric 'timestamp'"),
            (
                r#"{"timestamp": "1", "topics": [], "json": {}}"#,
                "missing or non-numeric",
            ),
            (
                r#"{"timestamp": 1, "topics": [1], "json": {}}"#,
                "missing 'topics'",
            ),
            (
                r#"{"timestamp": 1, "topics": "a", "json": {}}"#,
                "missing 'topics'",
            ),
            (
                r#"{"timestamp": 1, "topics": [], "json": 3}"#,
                "missing 'json'",
            ),
            (r#"{"timestamp": 1, "topics": []}"#, "missing 'json'"),
        ] {
            match parse_storage_line(bad, 1) {
                Err(e) => assert!(e.to_string().starts_with(why), "{bad}: {e}"),
                Ok(e) => panic!("{bad} loaded as {}", e.line.json()),
            }
        }
    }
}
