//! What an event must look like: the keys the server adds, pings, one JSON
//! line per chunk, the sentinel that proves nothing else was sent, and the
//! `n` list most tests compare.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Lower-case hyphenated UUID version 4 (RFC 4122 variant).
pub fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 36 {
        return false;
    }
    for (i, c) in b.iter().enumerate() {
        let ok = match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        };
        if !ok {
            return false;
        }
    }
    b[14] == b'4' && matches!(b[19], b'8' | b'9' | b'a' | b'b')
}

/// Asserts the four keys the server adds to every event.
pub fn check_event_meta(ev: &Value, topics: &[&str], path: &str) {
    let want: Vec<Value> = topics.iter().map(|t| Value::from(*t)).collect();
    assert_eq!(
        ev["pubsub_topics"],
        Value::Array(want),
        "pubsub_topics of {ev}"
    );
    assert_eq!(ev["pubsub_path"], Value::from(path), "pubsub_path of {ev}");
    let ts = &ev["pubsub_timestamp"];
    assert!(ts.is_f64(), "pubsub_timestamp must be a JSON float: {ev}");
    let ts = ts.as_f64().expect("f64");
    let now = now_epoch();
    assert!(
        (now - 60.0..=now + 5.0).contains(&ts),
        "pubsub_timestamp {ts} is not close to now {now}"
    );
    let cursor = ev["pubsub_cursor"].as_str().unwrap_or("");
    assert!(is_uuid_v4(cursor), "pubsub_cursor must be a UUID v4: {ev}");
}

pub fn is_ping(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|o| o.len() == 1 && o.contains_key("stillalive"))
}

/// Parses one chunk as a single JSON line: exactly one `\n`, at the end.
pub fn parse_line(chunk: &[u8]) -> Value {
    assert!(
        chunk.ends_with(b"\n"),
        "chunk must end with \\n: {:?}",
        String::from_utf8_lossy(chunk)
    );
    assert_eq!(
        chunk.iter().filter(|b| **b == b'\n').count(),
        1,
        "chunk must be one line: {:?}",
        String::from_utf8_lossy(chunk)
    );
    serde_json::from_slice(chunk).unwrap_or_else(|e| {
        panic!(
            "chunk is not JSON ({e}): {:?}",
            String::from_utf8_lossy(chunk)
        )
    })
}

/// `{"n": n, "sentinel": true}` — publish to a path every subscription matches.
pub fn sentinel() -> Value {
    serde_json::json!({"sentinel": true})
}

/// The `n` of each event (each must have a non-negative integer `n`).
pub fn ns(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["n"].as_u64().unwrap_or_else(|| panic!("no n in {e}")))
        .collect()
}
