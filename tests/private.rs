//! Private events, the ACL file and secured topics, black-box: `/private/...`
//! events reach only subscribers authenticated (HTTP Basic) with an ACL
//! segment that is a subset of the event's topics; bad credentials open a
//! stream without private access; `clients.secure_topics` publishing rules;
//! SIGUSR2 reloads the ACL without dropping connections and keeps the old
//! one when the new file is invalid; backlog replay of private events only
//! to authorized subscribers.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const ACL: &str = "\
alice:
  password: s3cret
  acl:
    repo_access: [git, private-repo.git]
    list_access: [email, example.org, dev]
  topics: [deploy, release]
carol:
  password: c4rol
  topics: [deploy]
";

fn nsv(events: &[Value]) -> Vec<Value> {
    events.iter().map(|e| e["n"].clone()).collect()
}

fn publish_as(srv: &Server, path: &str, user: &str, pass: &str, body: &Value) -> Response {
    let body = body.to_string();
    srv.request(
        format!(
            "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: {}\r\n\r\n{body}",
            basic_auth(user, pass),
            body.len()
        )
        .as_bytes(),
    )
}

#[test]
fn basic_auth_encoding_is_right() {
    assert_eq!(basic_auth("alice", "s3cret"), "Basic YWxpY2U6czNjcmV0");
    assert_eq!(basic_auth("a", "b"), "Basic YTpi");
    assert_eq!(basic_auth("ab", "c"), "Basic YWI6Yw==");
}

#[test]
fn private_events_reach_only_authorized_subscribers() {
    let srv = Server::builder().acl(ACL).start();
    let mut alice_git = srv.subscribe_as("/git", "alice", "s3cret");
    let mut alice_all = srv.subscribe_as("/", "alice", "s3cret");
    let mut anon = srv.subscribe("/git");
    // bad credentials are not an error: the stream opens, without private access
    let mut wrong = srv.subscribe_as("/git", "alice", "nope");
    let mut stranger = srv.subscribe_as("/git", "mallory", "x");
    let mut no_acl = srv.subscribe_as("/git", "carol", "c4rol");

    srv.publish_ok("/private/git/private-repo.git/commit", &json!({"n": 1}));
    srv.publish_ok("/private/git/other.git", &json!({"n": 2}));
    srv.publish_ok("/private/email/example.org/dev", &json!({"n": 3}));
    srv.publish_ok("/private/email/example.org", &json!({"n": 4}));
    srv.publish_ok("/git/x", &json!({"n": 5}));
    srv.publish_ok("/git/s", &sentinel());

    let got = alice_git.events_until_sentinel(T);
    assert_eq!(ns(&got), vec![1, 5], "alice on /git");
    check_event_meta(
        &got[0],
        &["git", "private-repo.git", "commit"],
        "/private/git/private-repo.git/commit",
    );
    let got = alice_all.events_until_sentinel(T);
    assert_eq!(ns(&got), vec![1, 3, 5], "alice on /");
    check_event_meta(
        &got[1],
        &["email", "example.org", "dev"],
        "/private/email/example.org/dev",
    );
    for (who, s) in [
        ("anonymous", &mut anon),
        ("wrong password", &mut wrong),
        ("unknown user", &mut stranger),
        ("user without acl", &mut no_acl),
    ] {
        assert_eq!(ns(&s.events_until_sentinel(T)), vec![5], "{who}");
    }
}

#[test]
fn secure_topics_need_an_authorized_publisher() {
    let srv = Server::builder()
        .acl(ACL)
        .clients("secure_topics: [deploy, release]")
        .start();
    let mut sub = srv.subscribe("/");
    srv.publish("/deploy/x", r#"{"n": 0}"#)
        .assert(403, MSG_FORBIDDEN);
    publish_as(&srv, "/deploy/x", "alice", "s3cret", &json!({"n": 1})).assert(202, MSG_ACCEPTED);
    publish_as(&srv, "/deploy/release", "alice", "s3cret", &json!({"n": 2}))
        .assert(202, MSG_ACCEPTED);
    publish_as(&srv, "/deploy/release", "carol", "c4rol", &json!({"n": 0}))
        .assert(403, MSG_FORBIDDEN);
    publish_as(&srv, "/deploy", "carol", "c4rol", &json!({"n": 3})).assert(202, MSG_ACCEPTED);
    publish_as(&srv, "/deploy", "alice", "wrong", &json!({"n": 0})).assert(403, MSG_FORBIDDEN);
    srv.publish("/public", r#"{"n": 4}"#)
        .assert(202, MSG_ACCEPTED);
    srv.publish_ok("/s", &sentinel());
    assert_eq!(ns(&sub.events_until_sentinel(T)), vec![1, 2, 3, 4]);
}

#[test]
fn secure_topic_publisher_bypasses_payloaders_but_others_do_not() {
    let srv = Server::builder()
        .payloaders(&["10.0.0.0/8"])
        .acl(ACL)
        .clients("secure_topics: [deploy, release]")
        .start();
    let mut sub = srv.subscribe("/deploy");
    publish_as(&srv, "/deploy/x", "alice", "s3cret", &json!({"n": 1})).assert(202, MSG_ACCEPTED);
    publish_as(&srv, "/public", "alice", "s3cret", &json!({"n": 0})).assert(403, MSG_FORBIDDEN);
    srv.publish("/deploy", r#"{"n": 0}"#)
        .assert(403, MSG_FORBIDDEN);
    assert_eq!(sub.next_event(T)["n"], json!(1));
}

/// Publishes a private event for `/private/git/...` plus a public sentinel,
/// and reports whether a fresh `user` subscriber received the private one.
fn user_gets_private(srv: &Server, user: &str, pass: &str, n: u64) -> bool {
    let mut s = srv.subscribe_as("/git", user, pass);
    srv.publish_ok("/private/git/reload", &json!({"n": n}));
    srv.publish_ok("/git/s", &sentinel());
    let got = s.events_until_sentinel(T);
    !got.is_empty()
}

#[test]
fn sigusr2_reloads_the_acl_without_dropping_connections() {
    let mut srv = Server::builder().acl(ACL).start();
    let mut old_alice = srv.subscribe_as("/git", "alice", "s3cret");
    assert!(!user_gets_private(&srv, "bob", "b0b", 1));

    let acl_path = srv.dir().join("pypubsub_acl.yaml");
    std::fs::write(
        &acl_path,
        format!("{ACL}bob:\n  password: b0b\n  acl:\n    code: [git]\n"),
    )
    .expect("rewrite acl");
    srv.signal("USR2");
    let mut n = 1;
    assert!(
        wait_until(Duration::from_secs(5), || {
            n += 1;
            user_gets_private(&srv, "bob", "b0b", n)
        }),
        "bob never got access after SIGUSR2"
    );

    // an invalid file is refused; the loaded ACL stays
    let before = srv.log().len();
    std::fs::write(&acl_path, "alice: [this is: not: valid\n").expect("break acl");
    srv.signal("USR2");
    // wait for the server to say something about it (bounded)
    wait_until(Duration::from_secs(2), || srv.log().len() > before);
    // bob exists only in the reloaded file: he keeps access
    assert!(user_gets_private(&srv, "bob", "b0b", 1000));

    // the connection opened before both reloads is still there
    srv.publish_ok("/git/last", &json!({"n": "last"}));
    let deadline = Instant::now() + T;
    while old_alice.next_event(deadline.saturating_duration_since(Instant::now()))["n"]
        != json!("last")
    {}
}

#[test]
fn private_events_are_replayed_only_to_authorized_subscribers() {
    let srv = Server::builder()
        .server("backlog:\n  size: 100\n  max_age: 0")
        .acl("alice:\n  password: pw\n  acl:\n    s: [sec]\n")
        .start();
    srv.publish_ok("/r/a", &json!({"n": 1}));
    srv.publish_ok("/other", &json!({"n": 2}));
    srv.publish_ok("/private/r/sec", &json!({"n": 3}));
    srv.publish_ok("/r", &json!({"n": 4}));
    let mut anon = srv.subscribe_with("/r", &[("X-Fetch-Since", "0")]);
    let mut alice = srv.subscribe_with(
        "/r",
        &[
            ("X-Fetch-Since", "0"),
            ("Authorization", &basic_auth("alice", "pw")),
        ],
    );
    srv.publish_ok("/r", &sentinel());
    assert_eq!(
        nsv(&anon.events_until_sentinel(T)),
        vec![json!(1), json!(4)]
    );
    let got = alice.events_until_sentinel(T);
    assert_eq!(nsv(&got), vec![json!(1), json!(3), json!(4)]);
    check_event_meta(&got[1], &["r", "sec"], "/private/r/sec");
}
