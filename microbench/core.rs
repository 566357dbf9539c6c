//! Micro-benchmarks of the per-event work that does not touch a socket:
//! topic parsing and matching, the subscription index, and turning a
//! publish body into a framed event. `cargo bench --bench core`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use pubsubd::event::{parse_payload, split_private, Event, Framing, Line};
use pubsubd::topics::{parse_topics, Subscription, TopicIndex};

/// A publish body of about 200 bytes, like the load generator's.
fn body() -> Vec<u8> {
    let mut b = String::from(r#"{"r":1,"p":0,"s":12345,"t":1234567890123,"pad":""#);
    while b.len() < 198 {
        b.push('x');
    }
    b.push_str("\"}");
    b.into_bytes()
}

fn topics(c: &mut Criterion) {
    let mut g = c.benchmark_group("topics");
    g.bench_function("parse_topics /svn/infrastructure/commit", |b| {
        b.iter(|| parse_topics(black_box("/svn/infrastructure/commit")))
    });
    g.bench_function("parse_topics percent-encoded", |b| {
        b.iter(|| parse_topics(black_box("/git/my%20repo/%E2%9C%93/x")))
    });
    g.bench_function("Subscription::parse two batches", |b| {
        b.iter(|| Subscription::parse(black_box("/apples/red,oranges/ripe")))
    });
    let event: Vec<String> = parse_topics("/commit/git/asf/infrastructure/pubsub").expect("topics");
    let one = Subscription::parse("/git/infrastructure").expect("sub");
    let miss = Subscription::parse("/svn/infrastructure").expect("sub");
    let many = Subscription::parse("/a/b,c/d,e/f,git/pubsub").expect("sub");
    let all = Subscription::parse("/").expect("sub");
    g.bench_function("matches hit (2 topics vs 5)", |b| {
        b.iter(|| black_box(&one).matches(black_box(&event)))
    });
    g.bench_function("matches miss", |b| {
        b.iter(|| black_box(&miss).matches(black_box(&event)))
    });
    g.bench_function("matches 4 batches, last hits", |b| {
        b.iter(|| black_box(&many).matches(black_box(&event)))
    });
    g.bench_function("matches everything (/)", |b| {
        b.iter(|| black_box(&all).matches(black_box(&event)))
    });
    g.finish();
}

fn index(c: &mut Criterion) {
    let mut g = c.benchmark_group("index");
    // 10 000 subscriptions over 100 projects (100 each), plus 10
    // "everything" subscribers, in two shapes: `/projectN/commits` (a
    // shared last topic) and `/commits/projectN` (a shared first topic);
    // the index files each batch under its least crowded topic, so both
    // spread over 100 keys.
    let build = |shape: &dyn Fn(usize) -> String| {
        let mut idx = TopicIndex::default();
        for conn in 0..10_000usize {
            let mut sub = Subscription::parse(&shape(conn % 100)).expect("sub");
            idx.insert(conn, &mut sub);
        }
        for conn in 10_000..10_010usize {
            idx.insert(conn, &mut Subscription::parse("/").expect("sub"));
        }
        idx
    };
    let shared_last = build(&|p| format!("/project{p}/commits"));
    let distinct_last = build(&|p| format!("/commits/project{p}"));
    let hit: Vec<String> = parse_topics("/project7/commits").expect("topics");
    let none: Vec<String> = parse_topics("/nobody/listens").expect("topics");
    g.bench_function(
        "candidates, 10k subs /projectN/commits (shared last topic), event for one project",
        |b| {
            b.iter(|| {
                shared_last
                    .candidates(black_box(&hit))
                    .fold(0, |a, k| a ^ black_box(k))
            })
        },
    );
    g.bench_function(
        "candidates, 10k subs /commits/projectN (distinct last topic), event for one project",
        |b| {
            b.iter(|| {
                distinct_last
                    .candidates(black_box(&hit))
                    .fold(0, |a, k| a ^ black_box(k))
            })
        },
    );
    g.bench_function("candidates, event hits no topic", |b| {
        b.iter(|| {
            shared_last
                .candidates(black_box(&none))
                .fold(0, |a, k| a ^ black_box(k))
        })
    });
    let mut idx = distinct_last;
    // The fan-out case: every subscriber on one topic.
    let mut flat = TopicIndex::default();
    let mut sub = Subscription::parse("/bench").expect("sub");
    for conn in 0..10_000usize {
        flat.insert(conn, &mut sub);
    }
    let ev: Vec<String> = parse_topics("/bench/load").expect("topics");
    g.bench_function("candidates + matches, 10k subs on one topic", |b| {
        b.iter(|| {
            flat.candidates(black_box(&ev))
                .filter(|_| sub.matches(&ev))
                .count()
        })
    });
    g.bench_function("insert + remove one subscription in a 10k index", |b| {
        let mut s = Subscription::parse("/project3/commits").expect("sub");
        b.iter(|| {
            idx.insert(99_999, &mut s);
            idx.remove(99_999, &s);
        })
    });
    g.finish();
}

fn events(c: &mut Criterion) {
    let mut g = c.benchmark_group("event");
    let body = body();
    g.bench_function("parse_payload 200 B", |b| {
        b.iter(|| parse_payload(black_box(&body)))
    });
    let object = parse_payload(&body).expect("object");
    let (topics, private) = split_private(parse_topics("/bench/load").expect("topics"));
    g.bench_function("Event::publish (keys, cursor, serialize)", |b| {
        b.iter_batched(
            || (topics.clone(), object.clone()),
            |(t, o)| Event::publish(1, "/bench/load", t, private, o, 1_700_000_000.25),
            BatchSize::SmallInput,
        )
    });
    let json = Event::publish(
        1,
        "/bench/load",
        topics.clone(),
        private,
        object.clone(),
        1.5,
    )
    .line
    .json()
    .to_owned();
    let chunked = Framing::stream(true, false, false);
    g.bench_function("frame chunked (first use)", |b| {
        b.iter_batched(
            || Line::new(json.clone()),
            |line| line.frame(chunked, None),
            BatchSize::SmallInput,
        )
    });
    let line = Line::new(json.clone());
    let _ = line.frame(chunked, None);
    g.bench_function("frame chunked (shared, per subscriber)", |b| {
        b.iter(|| black_box(&line).frame(chunked, None))
    });
    g.bench_function(
        "uuid::Uuid::new_v4 alone (one getrandom; pubsubd buffers randomness)",
        |b| b.iter(uuid::Uuid::new_v4),
    );
    g.bench_function("whole publish: parse + event + frame", |b| {
        b.iter(|| {
            let o = parse_payload(black_box(&body)).expect("object");
            let (t, p) = split_private(parse_topics("/bench/load").expect("topics"));
            let e = Event::publish(1, "/bench/load", t, p, o, 1.5);
            e.line.frame(chunked, Some(&e.cursor))
        })
    });
    g.finish();
}

criterion_group!(benches, topics, index, events);
criterion_main!(benches);
