//! Topic matching, black-box: every cell of PROTOCOL.md's matrix, topic
//! order, empty segments, comma-separated subscriptions (delivered once),
//! percent-decoding, `GET /` receiving everything public, and private events
//! not leaking to unauthenticated subscribers.
//!
//! Absence of an event is proven without sleeping: after the events under
//! test, a sentinel event that every subscription matches is published;
//! since delivery is in order, anything not seen before the sentinel was
//! not sent.

mod common;

use common::*;
use serde_json::json;

#[test]
fn matrix_every_cell() {
    let srv = Server::start("");
    let columns = [
        "/fruits",
        "/fruits/apples",
        "/fruits/apples/red",
        "/fruits/oranges",
        "/apples",
    ];
    let mut subs: Vec<Subscriber> = columns.iter().map(|c| srv.subscribe(c)).collect();
    // rows: (event path, topics, which columns match)
    let rows: [(&str, &[&str], [bool; 5]); 4] = [
        ("/fruits", &["fruits"], [true, false, false, false, false]),
        (
            "/fruits/apples",
            &["fruits", "apples"],
            [true, true, false, false, true],
        ),
        (
            "/fruits/apples/red",
            &["fruits", "apples", "red"],
            [true, true, true, false, true],
        ),
        (
            "/fruits/oranges",
            &["fruits", "oranges"],
            [true, false, false, true, false],
        ),
    ];
    for (n, (path, _, _)) in rows.iter().enumerate() {
        srv.publish_ok(path, &json!({"n": n}));
    }
    srv.publish_ok("/fruits/apples/red/oranges", &sentinel());
    for (col, sub) in subs.iter_mut().enumerate() {
        let got = sub.events_until_sentinel(T);
        let want: Vec<u64> = rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.2[col])
            .map(|(n, _)| n as u64)
            .collect();
        assert_eq!(ns(&got), want, "subscription {}", columns[col]);
        for ev in &got {
            let (path, topics, _) = rows[ev["n"].as_u64().expect("n") as usize];
            check_event_meta(ev, topics, path);
        }
    }
}

#[test]
fn topic_order_in_subscription_does_not_matter() {
    let srv = Server::start("");
    let mut sub = srv.subscribe("/red/fruits");
    srv.publish_ok("/fruits/apples/red", &json!({"n": 1}));
    srv.publish_ok("/fruits/apples", &json!({"n": 2}));
    srv.publish_ok("/red/fruits", &sentinel());
    let got = sub.events_until_sentinel(T);
    assert_eq!(ns(&got), vec![1]);
    check_event_meta(&got[0], &["fruits", "apples", "red"], "/fruits/apples/red");
}

#[test]
fn empty_segments_are_ignored() {
    let srv = Server::start("");
    let mut sub = srv.subscribe("//a///b/");
    srv.publish_ok("//a///b/", &json!({"n": 1}));
    srv.publish_ok("/a/b", &json!({"n": 2}));
    srv.publish_ok("/a", &json!({"n": 3}));
    srv.publish_ok("/b/a", &sentinel());
    let got = sub.events_until_sentinel(T);
    assert_eq!(ns(&got), vec![1, 2]);
    check_event_meta(&got[0], &["a", "b"], "//a///b/");
    check_event_meta(&got[1], &["a", "b"], "/a/b");
}

#[test]
fn comma_subscriptions_deliver_each_event_once() {
    let srv = Server::start("");
    let mut sub = srv.subscribe("/apples/red,oranges/ripe");
    srv.publish_ok("/apples/red/oranges/ripe", &json!({"n": 1})); // both batches
    srv.publish_ok("/apples/red", &json!({"n": 2}));
    srv.publish_ok("/oranges/ripe", &json!({"n": 3}));
    srv.publish_ok("/apples", &json!({"n": 4}));
    srv.publish_ok("/oranges", &json!({"n": 5}));
    srv.publish_ok("/red/oranges", &json!({"n": 6}));
    srv.publish_ok("/ripe/oranges/x", &json!({"n": 7}));
    srv.publish_ok("/apples/red", &sentinel());
    let got = sub.events_until_sentinel(T);
    assert_eq!(ns(&got), vec![1, 2, 3, 7]);
    check_event_meta(
        &got[0],
        &["apples", "red", "oranges", "ripe"],
        "/apples/red/oranges/ripe",
    );
}

#[test]
fn percent_encoded_topics_are_decoded() {
    let srv = Server::start("");
    let mut encoded = srv.subscribe("/caf%C3%A9/a%20b");
    let mut plain = srv.subscribe("/%61pples");
    srv.publish_ok("/caf%C3%A9/a%20b", &json!({"n": 1}));
    srv.publish_ok("/apples", &json!({"n": 2}));
    srv.publish_ok("/ap%70les/x", &json!({"n": 3}));
    srv.publish_ok("/caf%c3%a9/a%20b/apples", &sentinel());

    let got = encoded.events_until_sentinel(T);
    assert_eq!(ns(&got), vec![1]);
    check_event_meta(&got[0], &["café", "a b"], "/caf%C3%A9/a%20b");

    let got = plain.events_until_sentinel(T);
    assert_eq!(ns(&got), vec![2, 3]);
    check_event_meta(&got[0], &["apples"], "/apples");
    check_event_meta(&got[1], &["apples", "x"], "/ap%70les/x");
}

#[test]
fn root_subscription_gets_every_public_event() {
    let srv = Server::start("");
    let mut all = srv.subscribe("/");
    srv.publish_ok("/a", &json!({"n": 1}));
    srv.publish_ok("/b/c", &json!({"n": 2}));
    srv.publish_ok("/private/x", &json!({"n": 3})); // private: not for anonymous
    srv.publish_ok("/", &json!({"n": 4}));
    srv.publish_ok("/zz", &sentinel());
    let got = all.events_until_sentinel(T);
    assert_eq!(ns(&got), vec![1, 2, 4]);
    check_event_meta(&got[0], &["a"], "/a");
    check_event_meta(&got[1], &["b", "c"], "/b/c");
    check_event_meta(&got[2], &[], "/");
}

#[test]
fn publisher_keys_are_kept_and_meta_added() {
    let srv = Server::start("");
    let mut sub = srv.subscribe("/k");
    let body = json!({
        "zeta": 1,
        "alpha": {"nested": [1, 2, {"x": null}]},
        "unicode": "ünï\u{2028}\n\"q\"",
        "big": 12345678901234567u64,
        "float": 1.5,
        "t": true
    });
    srv.publish_ok("/k/l", &body);
    let ev = sub.next_event(T);
    check_event_meta(&ev, &["k", "l"], "/k/l");
    let obj = ev.as_object().expect("object");
    assert_eq!(
        obj.len(),
        6 + 4,
        "exactly the publisher's keys plus four: {ev}"
    );
    for (k, v) in body.as_object().expect("object") {
        assert_eq!(&obj[k], v, "key {k}");
    }
}

#[test]
fn each_event_gets_a_fresh_cursor() {
    let srv = Server::start("");
    let mut sub = srv.subscribe("/c");
    for n in 0..5 {
        srv.publish_ok("/c", &json!({"n": n}));
    }
    let mut cursors = std::collections::HashSet::new();
    for n in 0..5u64 {
        let ev = sub.next_event(T);
        assert_eq!(ev["n"], json!(n));
        check_event_meta(&ev, &["c"], "/c");
        assert!(cursors.insert(ev["pubsub_cursor"].as_str().expect("str").to_string()));
    }
}
