//! The SQS feed against a real SQS-compatible server: `moto_server` (PyPI
//! `moto[server]`) on a free loopback port, queues driven by
//! `tests/python/sqs_helper.py` (boto3), and the real `pubsubd` binary with
//! an `sqs:` section pointing at it.
//!
//! Python comes from `PUBSUBD_PYTHON` (default: the project's `.venv`).
//! Without moto the tests print "skipped" and pass, unless `CI` is set.
//!
//! Every wait is bounded; every process started here is killed by its PID
//! on drop; only 127.0.0.1 is used.
#![cfg(feature = "sqs")] // the SQS feed
#![cfg(feature = "sqs")]

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Bound for one expected event or condition here: moto and boto3 are slow
/// to start on a loaded 2-core machine.
const SQS_T: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Helpers: moto, the server's config, event lists

/// Python with moto and boto3, or `None` (skipped; a failure under `CI`).
fn python(test: &str) -> Option<PathBuf> {
    python_with(test, &["moto.server", "boto3"])
}

/// A `moto_server` on 127.0.0.1.
struct Moto {
    python: PathBuf,
    port: u16,
    proc: Option<Reaped>,
    log: PathBuf,
}

impl Moto {
    fn start(python: PathBuf, dir: &Path) -> Moto {
        let mut moto = Moto {
            python,
            port: free_port(),
            proc: None,
            log: dir.join("moto.log"),
        };
        moto.restart();
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts moto (again) on the same port and waits until it answers.
    fn restart(&mut self) {
        assert!(self.proc.is_none(), "moto is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("moto log");
        let child = Command::new(&self.python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start moto_server");
        self.proc = Some(Reaped(child));
        let port = self.port;
        let up = wait_until(Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            up,
            "moto_server did not listen on {port}:\n{}",
            self.log_text()
        );
    }

    fn kill(&mut self) {
        self.proc = None;
        let port = self.port;
        assert!(
            wait_until(SQS_T, || TcpStream::connect(("127.0.0.1", port)).is_err()),
            "moto still answers on {port} after being killed"
        );
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs helper commands; returns one output line per command.
    fn helper(&self, args: &[&str]) -> Vec<String> {
        let (status, out, err) = output_within(
            Command::new(&self.python)
                .arg(python_script("sqs_helper.py"))
                .arg(self.endpoint())
                .args(args),
            Duration::from_secs(60),
        );
        let status = status.unwrap_or_else(|| panic!("sqs_helper.py {args:?} took over 60 s"));
        assert!(status.success(), "sqs_helper.py {args:?} failed:\n{err}");
        out.lines().map(str::to_owned).collect()
    }

    /// Visible and in-flight message counts, e.g. "0 0".
    fn count(&self, queue: &str) -> String {
        self.helper(&["count", queue]).concat()
    }
}

/// `GET /metrics` from the server's admin listener (found in its log).
#[cfg(feature = "admin")]
fn admin_metrics(server: &Server) -> String {
    server.admin_get("/metrics").body_str()
}

/// The real `pubsubd` with `config`, logging the SQS poller at debug level
/// (the `sqs_feed` crate).
fn start_server(config: &str) -> Server {
    Server::builder()
        .raw_config(config)
        .env("RUST_LOG", "info,sqs_feed=debug")
        .start()
}

fn config(moto: &Moto, queues: &[(&str, &str, bool)]) -> String {
    let mut c = String::from(
        "server:\n  bind: 127.0.0.1\n  port: 0\n  backlog: {size: 100}\n\
         \x20 admin: {bind: 127.0.0.1, port: 0}\n\
         clients:\n  payloaders: [127.0.0.1/32]\nsqs:\n",
    );
    for (name, queue, delete) in queues {
        c.push_str(&format!(
            "  {name}:\n    queue: {queue}\n    region: us-east-1\n    delete: {delete}\n    \
             key: testing\n    secret: testing\n    endpoint: {}\n    wait_time: 1\n",
            moto.endpoint()
        ));
    }
    c
}

fn numbers(events: &[Value]) -> Vec<i64> {
    let mut n: Vec<i64> = events.iter().filter_map(|e| e["n"].as_i64()).collect();
    n.sort_unstable();
    n
}

fn find(events: &[Value], n: i64) -> &Value {
    events
        .iter()
        .find(|e| e["n"] == n)
        .unwrap_or_else(|| panic!("no event n={n} in {events:?}"))
}

// ---------------------------------------------------------------------------
// Tests

/// Messages become events on the right topics; private stays private; bad
/// bodies are skipped (and deleted); `delete: true` empties the queue; a
/// message SQS hands out again (same MessageId) is not published again.
#[test]
fn sqs_messages_are_published_like_publishes() {
    let Some(py) = python("sqs_messages_are_published_like_publishes") else {
        return;
    };
    let dir = TempDir::new();
    let moto = Moto::start(py, dir.path());
    // "again" hands an undeleted message out anew every second.
    moto.helper(&[
        "create",
        "events",
        "create",
        "events.fifo",
        "create-visibility",
        "again",
        "1",
    ]);
    let server = start_server(&config(
        &moto,
        &[
            ("plain", "events", true),
            ("fifo", "events.fifo", true),
            ("again", "again", false),
        ],
    ));
    for name in ["plain", "fifo", "again"] {
        assert!(
            server.wait_log(&format!("sqs.{name}: polling queue"), SQS_T),
            "{}",
            server.log()
        );
    }
    let mut fruits = server.subscribe("/fruits");
    let mut all = server.subscribe("/");
    let mut secret = server.subscribe("/secret");
    let mut dup = server.subscribe("/dup");

    moto.helper(&[
        "send",
        "events",
        r#"{"n": 1, "pubsub_path": "/fruits/apples", "text": "line\nbreak"}"#,
        "send",
        "events",
        "this is not JSON",
        "send",
        "events",
        "[1, 2, 3]",
        "send",
        "events",
        r#"{"n": 2}"#,
        "send",
        "events",
        r#"{"n": 3, "pubsub_path": "/private/secret/x"}"#,
        "send",
        "events.fifo",
        r#"{"n": 4, "pubsub_path": "/fruits/oranges"}"#,
        "send",
        "again",
        r#"{"n": 5, "pubsub_path": "/dup"}"#,
    ]);

    // Topic matching, and the keys a publish adds.
    let got = fruits.collect_until(SQS_T, |e| numbers(e) == [1, 4]);
    assert_eq!(numbers(&got), [1, 4], "{got:?}\n{}", server.log());
    let apples = find(&got, 1);
    assert_eq!(apples["pubsub_topics"], json!(["fruits", "apples"]));
    assert_eq!(apples["pubsub_path"], "/fruits/apples");
    assert_eq!(apples["text"], "line\nbreak");
    assert_eq!(apples["pubsub_cursor"].as_str().map(str::len), Some(36));
    assert!(apples["pubsub_timestamp"]
        .as_f64()
        .is_some_and(|t| t > 1.5e9));
    assert_eq!(find(&got, 4)["pubsub_topics"], json!(["fruits", "oranges"]));

    // "/" sees everything public; the private event and bad bodies never.
    let got = all.collect_until(SQS_T, |e| numbers(e) == [1, 2, 4, 5]);
    assert_eq!(numbers(&got), [1, 2, 4, 5], "{got:?}\n{}", server.log());
    assert_eq!(find(&got, 2)["pubsub_topics"], json!([]));
    assert_eq!(find(&got, 2)["pubsub_path"], "/");
    assert_eq!(find(&got, 5)["pubsub_topics"], json!(["dup"]));

    // Bad bodies: logged as skipped.
    assert!(
        server.wait_log("skipped: body is not JSON", SQS_T)
            && server.wait_log("skipped: body is not a JSON object", SQS_T),
        "{}",
        server.log()
    );

    // delete: true leaves nothing behind, bad bodies included.
    for queue in ["events", "events.fifo"] {
        assert!(
            wait_until(SQS_T, || moto.count(queue) == "0 0"),
            "{queue} still holds {}",
            moto.count(queue)
        );
    }

    // The undeleted message comes back every second (visibility timeout
    // 1 s) with the same MessageId: it is not published again.
    assert!(
        dup.next_within(Duration::from_secs(3))
            .is_some_and(|e| e["n"] == 5),
        "first delivery on /dup"
    );
    // It was handed out again: the poller logs each one it ignores.
    assert!(
        server.wait_log("seen before; not published again", SQS_T),
        "no redelivery seen:\n{}",
        server.log()
    );
    // A public sentinel matching /dup, / and /secret, published after the
    // redelivery was ignored, closes the question without a fixed wait:
    // whatever came before it is all that was sent.
    server.publish_ok("/dup/secret", &sentinel());
    let again = dup.events_until_sentinel(SQS_T);
    assert!(again.is_empty(), "n=5 published twice: {again:?}");
    let later = all.events_until_sentinel(SQS_T);
    assert!(
        later.iter().all(|e| e["n"] != 5),
        "n=5 published twice: {later:?}"
    );

    // Private: not for unauthenticated subscribers, even matching ones.
    let private = secret.events_until_sentinel(SQS_T);
    assert!(private.is_empty(), "{private:?}");
    assert!(later.iter().all(|e| e["n"] != 3), "{later:?}");
}

/// With moto gone the server keeps serving and the poller backs off; when
/// moto comes back on the same port (queue recreated), events flow again.
#[test]
fn sqs_outage_does_not_stop_the_server() {
    let Some(py) = python("sqs_outage_does_not_stop_the_server") else {
        return;
    };
    let dir = TempDir::new();
    let mut moto = Moto::start(py, dir.path());
    moto.helper(&["create", "q"]);
    let server = start_server(&config(&moto, &[("q", "q", true)]));
    assert!(
        server.wait_log("sqs.q: polling queue", SQS_T),
        "{}",
        server.log()
    );
    let mut all = server.subscribe("/");

    moto.helper(&[
        "send",
        "q",
        r#"{"phase": "before", "pubsub_path": "/phase"}"#,
    ]);
    let e = all
        .next_within(SQS_T)
        .unwrap_or_else(|| panic!("no event:\n{}", server.log()));
    assert_eq!(e["phase"], "before");
    assert_eq!(e["pubsub_topics"], json!(["phase"]));
    // It entered the backlog like a publish.
    let mut replay = server.subscribe_with("/phase", &[("X-Fetch-Since", "0")]);
    let e = replay.next_within(SQS_T).expect("replayed SQS event");
    assert_eq!(e["phase"], "before");
    drop(replay);

    moto.kill();
    assert!(
        server.wait_log("; retrying in 2s", Duration::from_secs(30)),
        "no back-off logged:\n{}",
        server.log()
    );
    // The feed's counters reach /metrics: one message taken and deleted,
    // and the failed calls since the server went away.
    #[cfg(feature = "admin")]
    {
        let metrics = admin_metrics(&server);
        let value = |name: &str| -> u64 {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} missing in\n{metrics}"))
        };
        assert!(value("pubsubd_sqs_received_total ") >= 1, "{metrics}");
        assert!(value("pubsubd_sqs_deleted_total ") >= 1, "{metrics}");
        assert!(value("pubsubd_sqs_errors_total ") >= 1, "{metrics}");
        assert!(value("pubsubd_events_published_total{source=\"sqs\"} ") >= 1);
    }

    // Still serving: health check, publish and subscribe.
    assert_eq!(server.head("/").status, 204);
    let r = server.publish("/phase", r#"{"phase": "during"}"#);
    assert_eq!((r.status, r.body_str().as_str()), (202, MSG_ACCEPTED));
    let e = all
        .next_within(SQS_T)
        .expect("published event during the outage");
    assert_eq!(e["phase"], "during");
    let mut late = server.subscribe("/phase");

    moto.restart();
    moto.helper(&[
        "create",
        "q",
        "send",
        "q",
        r#"{"phase": "after", "pubsub_path": "/phase"}"#,
    ]);
    // The back-off is at most 16 s by now.
    let wait = Duration::from_secs(45);
    let e = all
        .next_within(wait)
        .unwrap_or_else(|| panic!("no event after restart:\n{}", server.log()));
    assert_eq!(e["phase"], "after");
    assert_eq!(
        late.next_within(SQS_T).expect("late subscriber")["phase"],
        "after"
    );
    assert!(
        server.wait_log("sqs.q: receiving from", SQS_T),
        "{}",
        server.log()
    );
    assert!(wait_until(SQS_T, || moto.count("q") == "0 0"));
}
