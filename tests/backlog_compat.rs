//! Backlog files as the reference PyPubSub reads them, black-box: a stored
//! line whose `json` lacks the server's `pubsub_*` keys (hand-made, or from
//! older tools) is replayed with all four, valued as the reference's loader
//! values them — `pubsub_topics` and `pubsub_path` (`/private/...` for a
//! private line) from the record, `pubsub_timestamp` from its `timestamp`,
//! a fresh `pubsub_cursor` — and a key the line has is kept. The cursors
//! given work for `X-Fetch-Since-Cursor`, are written back to the file and
//! are the same after a restart.
//!
//! Each test runs its own server on a storage file in a temp dir of its own.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const STATUS: &str = "X-Fetch-Since-Cursor-Status";

/// `alice` may see private events whose topics include `git`.
const ACL: &str = "alice:\n  password: pw\n  acl:\n    code: [git]\n";

const KEYS: [&str; 4] = [
    "pubsub_topics",
    "pubsub_path",
    "pubsub_timestamp",
    "pubsub_cursor",
];

/// One line of the storage file as the test writes it, and what the
/// replayed event must then hold.
struct Stored {
    timestamp: &'static str,
    topics: &'static [&'static str],
    private: bool,
    /// The `json` member, server keys the line carries included.
    json: Value,
    /// The `pubsub_path` expected.
    path: &'static str,
}

/// Public, private, one that has a `pubsub_path` of its own, one with a
/// timestamp written as an integer: none with a `pubsub_cursor`.
fn lines() -> Vec<Stored> {
    vec![
        Stored {
            timestamp: "1588293679.54",
            topics: &["git", "repo"],
            private: false,
            json: json!({"commit": "abc", "n": 1}),
            path: "/git/repo",
        },
        Stored {
            timestamp: "1588293680.25",
            topics: &["git", "secret"],
            private: true,
            json: json!({"n": 2}),
            path: "/private/git/secret",
        },
        Stored {
            timestamp: "1588293681.75",
            topics: &["git"],
            private: false,
            json: json!({"pubsub_path": "/git/as-sent", "n": 3}),
            path: "/git/as-sent",
        },
        Stored {
            timestamp: "1588293682",
            topics: &["git", "repo"],
            private: false,
            json: json!({"n": 4, "text": "héllo"}),
            path: "/git/repo",
        },
    ]
}

/// Writes `lines` in the reference's storage format.
fn write_file(path: &Path, lines: &[Stored]) {
    let text: String = lines
        .iter()
        .map(|l| {
            format!(
                "{{\"timestamp\": {}, \"topics\": {}, \"json\": {}, \"private\": {}}}\n",
                l.timestamp,
                json!(l.topics),
                l.json,
                l.private
            )
        })
        .collect();
    std::fs::write(path, text).expect("write storage");
}

fn start(path: &Path) -> Server {
    let srv = Server::builder()
        .server(&format!(
            "backlog: {{size: 100, storage: \"{}\"}}",
            path.display()
        ))
        .acl(ACL)
        .start();
    assert!(srv.wait_log("loaded 4 events", T), "{}", srv.log());
    srv
}

fn stop(srv: &mut Server) {
    srv.signal("TERM");
    let st = srv
        .wait_exit(Duration::from_secs(10))
        .expect("server exits after SIGTERM");
    assert_eq!(st.code(), Some(0), "exit status after SIGTERM: {st:?}");
}

fn alice() -> (&'static str, String) {
    ("Authorization", basic_auth("alice", "pw"))
}

fn is_marker(v: &Value) -> bool {
    v.get("end").is_some()
}

fn cursor(v: &Value) -> String {
    v["pubsub_cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("event without a cursor: {v}"))
        .to_string()
}

/// The next event's raw line (pings skipped), without its newline.
fn next_raw(s: &mut Subscriber) -> String {
    let deadline = Instant::now() + T;
    loop {
        let chunk = s
            .next_chunk(deadline.saturating_duration_since(Instant::now()))
            .expect("an event chunk")
            .expect("stream open");
        if !is_ping(&parse_line(&chunk)) {
            let text = String::from_utf8(chunk).expect("UTF-8 event");
            return text.trim_end_matches('\n').to_string();
        }
    }
}

/// Subscribes to `/git` with `headers`, publishes a unique end marker to
/// `/git/end` and returns the replayed events that came before it, earlier
/// markers left out.
fn replay(srv: &Server, headers: &[(&str, &str)]) -> (Subscriber, Vec<Value>) {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut s = srv.subscribe_with("/git", headers);
    srv.publish_ok("/git/end", &json!({ "end": id }));
    let deadline = Instant::now() + T;
    let mut events = Vec::new();
    loop {
        let v = s.next_event(deadline.saturating_duration_since(Instant::now()));
        if v["end"] == json!(id) {
            return (s, events);
        }
        if !is_marker(&v) {
            events.push(v);
        }
    }
}

fn ns(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .map(|v| v["n"].as_i64().unwrap_or_else(|| panic!("no n in {v}")))
        .collect()
}

/// `got` is `want`'s stored event with all four server keys: the line's
/// own keys first and unchanged, the missing ones after them in the order
/// a published event has them, valued from the record.
fn assert_restored(got: &Value, want: &Stored) {
    let own = want.json.as_object().expect("object");
    let keys: Vec<&str> = got
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut want_keys: Vec<&str> = own.keys().map(String::as_str).collect();
    want_keys.extend(KEYS.iter().filter(|k| !own.contains_key(**k)));
    assert_eq!(keys, want_keys, "key order of {got}");
    for (k, v) in own {
        assert_eq!(&got[k], v, "{k} of {got}");
    }
    assert_eq!(got["pubsub_topics"], json!(want.topics), "{got}");
    assert_eq!(got["pubsub_path"], want.path, "{got}");
    let ts: f64 = want.timestamp.parse().expect("timestamp");
    assert_eq!(got["pubsub_timestamp"].as_f64(), Some(ts), "{got}");
    assert!(is_uuid_v4(&cursor(got)), "{got}");
}

#[test]
fn lines_without_server_keys_replay_with_all_four() {
    let dir = TempDir::new();
    let path = dir.path().join("backlog.json");
    let lines = lines();
    write_file(&path, &lines);
    let srv = start(&path);

    let auth = alice();
    let (_s, all) = replay(&srv, &[("X-Fetch-Since", "0"), (auth.0, &auth.1)]);
    assert_eq!(ns(&all), [1, 2, 3, 4], "{all:?}");
    for (got, want) in all.iter().zip(&lines) {
        assert_restored(got, want);
    }
    let cursors: Vec<String> = all.iter().map(cursor).collect();
    for (i, c) in cursors.iter().enumerate() {
        assert!(!cursors[i + 1..].contains(c), "cursors repeat: {cursors:?}");
    }

    // the same events, cursors included, for anyone else replaying them
    let (_s, public) = replay(&srv, &[("X-Fetch-Since", "0")]);
    assert_eq!(ns(&public), [1, 3, 4], "the private one is not replayed");
    for (got, i) in public.iter().zip([0, 2, 3]) {
        assert_eq!(got, &all[i]);
    }
    // the record's timestamp places the event in time
    let (_s, got) = replay(&srv, &[("X-Fetch-Since", "1588293681.75")]);
    assert_eq!(got, &all[2..]);

    // the cursors given work as cursors
    let (s, got) = replay(&srv, &[("X-Fetch-Since-Cursor", &cursors[0])]);
    assert_eq!(s.head.header(STATUS), Some("found"));
    assert_eq!(ns(&got), [3, 4]);
    assert_eq!(got, [all[2].clone(), all[3].clone()]);
    let (s, got) = replay(
        &srv,
        &[("X-Fetch-Since-Cursor", &cursors[1]), (auth.0, &auth.1)],
    );
    assert_eq!(s.head.header(STATUS), Some("found"));
    assert_eq!(got, &all[2..]);
    let (s, got) = replay(&srv, &[("X-Fetch-Since-Cursor", &cursors[3])]);
    assert_eq!(s.head.header(STATUS), Some("found"));
    assert!(got.is_empty(), "{got:?}");
}

#[test]
fn restored_keys_are_written_back_and_survive_a_restart() {
    let dir = TempDir::new();
    let path = dir.path().join("backlog.json");
    let lines = lines();
    write_file(&path, &lines);
    let mut srv = start(&path);

    // read the replay without publishing anything
    let auth = alice();
    let mut s = srv.subscribe_with("/git", &[("X-Fetch-Since", "0"), (auth.0, &auth.1)]);
    let before: Vec<String> = (0..lines.len()).map(|_| next_raw(&mut s)).collect();
    drop(s);
    let events: Vec<Value> = before
        .iter()
        .map(|r| serde_json::from_str(r).unwrap_or_else(|e| panic!("{e}: {r}")))
        .collect();
    for (got, want) in events.iter().zip(&lines) {
        assert_restored(got, want);
    }

    // written back at start-up, not only at shutdown: each line's `json`
    // is the event as replayed
    let mut file = String::new();
    let written = wait_until(T, || {
        file = std::fs::read_to_string(&path).unwrap_or_default();
        file.matches("\"pubsub_cursor\"").count() == lines.len()
    });
    assert!(written, "restored keys never written back:\n{file}");
    for (line, raw) in file.lines().zip(&before) {
        assert!(line.contains(&format!("\"json\": {raw}, ")), "{line}");
    }
    stop(&mut srv);

    let srv = start(&path);
    let mut s = srv.subscribe_with("/git", &[("X-Fetch-Since", "0"), (auth.0, &auth.1)]);
    for raw in &before {
        assert_eq!(&next_raw(&mut s), raw, "replayed after a restart");
    }
    drop(s);
    let (s, got) = replay(
        &srv,
        &[
            ("X-Fetch-Since-Cursor", &cursor(&events[1])),
            (auth.0, &auth.1),
        ],
    );
    assert_eq!(
        s.head.header(STATUS),
        Some("found"),
        "a cursor handed out before the restart is unknown after it"
    );
    assert_eq!(got, &events[2..]);
    let (s, got) = replay(&srv, &[("X-Fetch-Since-Cursor", &cursor(&events[0]))]);
    assert_eq!(s.head.header(STATUS), Some("found"));
    assert_eq!(got, &events[2..]);
}
