//! `kill -9` while the backlog is being persisted: 100 incarnations of the
//! server on one storage file, each publishing for a random while and then
//! killed at a random moment (most live well under the 2 s write interval,
//! so many kills land in or right after the first write, whose file holds
//! every earlier incarnation's events; a few live past it). After each
//! kill, the file must load whole (no line skipped, the server starts on
//! it), and it must hold every event that an earlier file held and every
//! event acknowledged more than the write interval before its kill.
//! Bounded to about a minute; the seed is printed (`CRASH_SEED=n`).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The writer's interval (persist.rs), plus slack for a loaded machine.
const WRITE_INTERVAL: Duration = Duration::from_secs(2);
const SLACK: Duration = Duration::from_millis(1500);

/// The `n` of every event in the storage file; panics on a line that does
/// not load (the server would skip it).
fn stored(path: &Path) -> BTreeSet<u64> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return BTreeSet::new();
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("torn storage line {l:?}: {e}"));
            v["json"]["n"]
                .as_u64()
                .unwrap_or_else(|| panic!("storage line without json.n: {l}"))
        })
        .collect()
}

#[test]
fn kill_9_during_backlog_writes_loses_nothing_old() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
        .max(1);
    eprintln!("crash: seed {seed} (reproduce with CRASH_SEED={seed})");
    let kills: usize = std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };

    let dir = TempDir::new();
    let storage = dir.path().join("backlog.json");
    let backlog = format!(
        "backlog: {{size: 1000000, max_age: 0, storage: \"{}\"}}",
        storage.display()
    );
    let started = Instant::now();
    let mut must_have: BTreeSet<u64> = BTreeSet::new();
    let mut n = 0u64;
    let (mut long_lived, mut acked_total) = (0, 0);
    for kill in 0..kills {
        let srv = Server::builder()
            .in_dir(dir.path())
            .server(&backlog)
            .env("RUST_LOG", "info")
            .start();
        assert!(
            !storage.exists() || srv.wait_log("backlog: loaded", T),
            "kill {kill}: no load line:\n{}",
            srv.log()
        );
        let log = srv.log();
        if std::env::var_os("CRASH_VERBOSE").is_some() {
            eprintln!("crash: kill {kill} started at {:.1?}", started.elapsed());
        }
        assert!(
            !log.contains("skipped"),
            "kill {kill}: the file did not load whole:\n{log}"
        );
        // Every 20th incarnation lives past the write interval.
        let life = if kill % 20 == 19 {
            long_lived += 1;
            Duration::from_millis(2600 + next() % 800)
        } else {
            Duration::from_millis(20 + next() % 400)
        };
        let until = Instant::now() + life;
        let mut acked: Vec<(u64, Instant)> = Vec::new();
        let mut conn = srv.conn();
        while Instant::now() < until {
            n += 1;
            let r = conn.publish("/crash", &json!({ "n": n, "kill": kill }).to_string());
            assert_eq!(r.status, 202, "kill {kill}: publish {n}");
            acked.push((n, Instant::now()));
            // A steady trickle: the file stays small enough to restart
            // on quickly (a few thousand events at the end).
            std::thread::sleep(Duration::from_millis(5));
        }
        acked_total += acked.len();
        let mut srv = srv;
        srv.signal("KILL");
        assert!(srv.wait_exit(T).is_some(), "kill {kill}: still running");
        let killed_at = Instant::now();
        drop(srv);

        let on_disk = stored(&storage);
        let lost: Vec<&u64> = must_have.difference(&on_disk).collect();
        assert!(
            lost.is_empty(),
            "seed {seed}, kill {kill}: events lost from the file: {lost:?}"
        );
        assert!(
            on_disk.iter().all(|&x| x <= n),
            "kill {kill}: unknown events in the file"
        );
        must_have.extend(on_disk);
        must_have.extend(
            acked
                .iter()
                .filter(|(_, at)| killed_at.duration_since(*at) > WRITE_INTERVAL + SLACK)
                .map(|(x, _)| *x),
        );
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "the crash test is far slower than it should be"
        );
    }
    // A last start: the file loads, and a replay holds what it must.
    let srv = Server::builder()
        .in_dir(dir.path())
        .server(&backlog)
        .start();
    let mut sub = srv.subscribe_with("/crash", &[("X-Fetch-Since", "0")]);
    let mark = json!({"sentinel": true});
    srv.publish_ok("/crash", &mark);
    let replayed: BTreeSet<u64> = sub
        .events_until_sentinel(T)
        .iter()
        .filter_map(|v| v["n"].as_u64())
        .collect();
    let lost: Vec<&u64> = must_have.difference(&replayed).collect();
    assert!(lost.is_empty(), "seed {seed}: not replayed: {lost:?}");
    eprintln!(
        "crash: {kills} kills ({long_lived} past the write interval), {acked_total} events \
         acknowledged, {} kept as required, {} replayed at the end, in {:.1?}",
        must_have.len(),
        replayed.len(),
        started.elapsed()
    );
}
