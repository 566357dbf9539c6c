//! The table's invariants, checked directly: after any sequence of the
//! table's own methods, the subscriber count and the topic index agree
//! with the connections in `State::Stream`, the input total is the sum of
//! what each connection holds, each turn list holds a key at most once,
//! and the deadlines fire once, in time, for the right connection.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{ConnTable, Due, RequestLimits, State, Step, Stream};
use crate::event::{Event, Framing, Payload};
use crate::topics::Subscription;

const LIMITS: RequestLimits = RequestLimits {
    max_headers: 64,
    max_head_size: 16 * 1024,
    max_payload_size: 100 * 1024,
};

fn peer() -> IpAddr {
    "127.0.0.1".parse().expect("address")
}

fn stream(path: &str) -> Box<Stream> {
    Box::new(Stream {
        sub: Subscription::parse(path).expect("subscription"),
        framing: Framing::stream(true, false, false),
        grant: None,
        replay: None,
        gzip: Default::default(),
    })
}

fn event(seq: u64, topics: &[&str]) -> Event {
    let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    Event::publish(seq, "/", topics, false, Payload::Verbatim("{}"), 0.0)
}

/// Every invariant the table's header promises.
fn check(table: &ConnTable) {
    let streams: Vec<usize> = table
        .slab
        .iter()
        .filter(|(_, c)| matches!(c.state, State::Stream(_)))
        .map(|(k, _)| k)
        .collect();
    assert_eq!(table.streams.count, streams.len(), "subscriber count");
    let everything = ["a".to_string(), "b".to_string(), "c".to_string()];
    let indexed: HashSet<usize> = table.streams.index.candidates(&everything).collect();
    for key in &indexed {
        assert!(streams.contains(key), "{key} is indexed but not a stream");
    }
    let held: usize = table.slab.iter().map(|(_, c)| c.held_input).sum();
    assert_eq!(table.input_bytes, held, "input total");
    for list in [&table.turn.flush, &table.turn.rerun, &table.turn.doomed] {
        let unique: HashSet<_> = list.iter().collect();
        assert_eq!(unique.len(), list.len(), "a key twice on a turn list");
    }
}

#[test]
fn states_moved_any_way_keep_index_and_count_together() {
    let now = Instant::now();
    let mut table = ConnTable::new();
    let mut keys = Vec::new();
    // A fixed xorshift sequence: the same walk every run.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for step in 0..3000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let pick = |n: usize| (x >> 8) as usize % n.max(1);
        let key = keys.get(pick(keys.len())).copied();
        match (x % 11, key) {
            (0, _) | (_, None) => keys.push(table.open(peer(), false, now)),
            (1, Some(k)) => table.start_stream(k, stream(["/a", "/b", "/a/b,c"][pick(3)]), 0, None),
            (2, Some(k)) => {
                table.set_state(k, State::Head);
            }
            (3, Some(k)) => {
                table.set_state(k, State::Stream(stream("/c")));
            }
            (4, Some(k)) => table.close_after_flush(k),
            (5, Some(k)) => table.respond(k, b"ok"[..].into(), Some(now)),
            (6, Some(k)) => table.receive(k, &vec![b'x'; pick(40_000)]),
            (7, Some(k)) => {
                table.count_input(k, 1 << 20);
            }
            (8, Some(k)) => table.doom(k),
            (9, Some(k)) => {
                table.remove(k);
                keys.retain(|&other| other != k);
            }
            (_, Some(_)) => {
                let gone = table.close_doomed();
                keys.retain(|k| !gone.contains(k));
                table.flush(now, Duration::from_secs(1), |_, out| {
                    out.flush_to(&mut std::io::sink())
                });
            }
        }
        check(&table);
        if step % 100 == 0 {
            let e = event(step, &["a", "b", "c"]);
            let done = table.broadcast(&e, 1 << 20);
            assert!(done.delivered as usize <= table.subscribers());
        }
    }
}

#[test]
fn a_request_and_its_body_come_out_in_order_and_the_budget_follows() {
    let now = Instant::now();
    let mut table = ConnTable::new();
    let key = table.open(peer(), false, now);
    table.receive(key, b"PUT /a HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}");
    table.count_input(key, 1 << 20);
    assert!(table.input_bytes() > 0);
    let Step::Head(head) = table.next_request(key, LIMITS) else {
        panic!("a head");
    };
    let body = crate::hub::table::BodyState {
        decoder: crate::http::BodyDecoder::new(head.body),
        body: Vec::new(),
        head,
        path_topics: vec!["a".into()],
    };
    table.set_state(key, State::Body(Box::new(body)));
    let Step::Body(body) = table.next_request(key, LIMITS) else {
        panic!("the body");
    };
    assert_eq!(body.body, b"{}");
    assert!(matches!(
        table.get(key).map(|c| c.state()),
        Some(State::Head)
    ));
    assert!(matches!(table.next_request(key, LIMITS), Step::Wait));
    table.remove(key);
    assert_eq!(table.input_bytes(), 0);
}

#[test]
fn a_request_deadline_fires_once_and_follows_moves() {
    let start = Instant::now();
    let s = Duration::from_secs(1);
    let mut table = ConnTable::new();
    let key = table.open(peer(), false, start);
    let serial = table.get(key).map(|c| c.serial()).expect("open");
    table.set_deadline(key, start + 30 * s);
    // An earlier deadline is armed at once; a later one waits for the
    // earlier timer and moves on.
    table.set_deadline(key, start + 5 * s);
    assert_eq!(table.next_deadline(), Some(start + 5 * s));
    assert_eq!(table.pop_due(start + 4 * s, s), None);
    assert_eq!(
        table.pop_due(start + 5 * s, s),
        Some(Due::Request { key, serial })
    );
    assert_eq!(table.pop_due(start + 40 * s, s), None, "fired twice");
    table.set_deadline(key, start + 50 * s);
    table.set_deadline(key, start + 60 * s);
    assert_eq!(table.pop_due(start + 55 * s, s), None, "fired early");
    assert_eq!(
        table.pop_due(start + 60 * s, s),
        Some(Due::Request { key, serial })
    );
    // A reused key with a new serial never gets the old one's timer.
    table.set_deadline(key, start + 70 * s);
    table.remove(key);
    let again = table.open(peer(), false, start);
    assert_eq!(again, key);
    assert_eq!(table.pop_due(start + 80 * s, s), None);
}
