//! The ACL file, black-box: HTTP Basic authentication on subscribe and
//! publish, which private events an ACL segment opens, what bad credentials
//! get (a public stream, never an error), secured topics and who may publish
//! them (from any address), `$5$`/`$6$` hashed passwords, malformed entries,
//! and SIGUSR2 reloads (good and bad files) with streams left open.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Lines of the server log at WARN level that mention `needle`.
fn warn_lines(srv: &Server, needle: &str) -> Vec<String> {
    srv.log()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(needle))
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------

const SEGMENTS_ACL: &str = "\
one:
  password: p-one
  acl:
    single: [x]
none:
  password: p-none
  acl:
    elsewhere: [z]
multi:
  password: p-multi
  acl:
    both: [x, y]
two:
  password: p-two
  acl:
    first: [a]
    second: [b, c]
bare:
  password: p-bare
";

#[test]
fn private_events_follow_acl_segments() {
    let srv = Server::builder().acl(SEGMENTS_ACL).start();
    let mut one = srv.subscribe_as("/", "one", "p-one");
    let mut one_y = srv.subscribe_as("/y", "one", "p-one");
    let mut none = srv.subscribe_as("/", "none", "p-none");
    let mut multi = srv.subscribe_as("/", "multi", "p-multi");
    let mut two = srv.subscribe_as("/", "two", "p-two");
    let mut bare = srv.subscribe_as("/", "bare", "p-bare");
    let mut anon = srv.subscribe("/");
    for s in [&one, &one_y, &none, &multi, &two, &bare, &anon] {
        assert_eq!(s.head.header("Content-Type"), Some(STREAM_CONTENT_TYPE));
    }

    let events: &[(&str, u64)] = &[
        ("/private/x/y", 1),
        ("/private/x/w", 2),
        ("/private/y", 3),
        ("/private/a", 4),
        ("/private/b/c", 5),
        ("/private/b", 6),
        ("/private/c/q", 7),
        ("/y/public", 8),
        ("/private/z/x", 9),
    ];
    for (path, n) in events {
        srv.publish_ok(path, &json!({"n": n, "k": "v"}));
    }
    srv.publish_ok("/y/s", &sentinel());

    // [x] ⊆ {x,y}, {x,w}, {z,x}; not {y}.
    let got = one.events_until_sentinel(T);
    let got_n: Vec<u64> = got.iter().map(|e| e["n"].as_u64().unwrap_or(0)).collect();
    assert_eq!(got_n, vec![1, 2, 8, 9], "one on /");
    check_event_meta(&got[0], &["x", "y"], "/private/x/y");
    assert_eq!(got[0]["k"], json!("v"));
    assert_eq!(got[0]["pubsub_topics"], json!(["x", "y"]));
    assert_eq!(got[0]["pubsub_path"], json!("/private/x/y"));
    // the subscription still filters: /y and segment [x]
    assert_eq!(one_y.ns_until_sentinel(), vec![1, 8], "one on /y");
    // [z] ⊆ {z,x} only
    assert_eq!(none.ns_until_sentinel(), vec![8, 9], "none");
    // a multi-topic segment needs all of its topics
    assert_eq!(multi.ns_until_sentinel(), vec![1, 8], "multi");
    // two segments: either one opens an event
    assert_eq!(two.ns_until_sentinel(), vec![4, 5, 8], "two");
    // authenticated without any segment: public only
    assert_eq!(bare.ns_until_sentinel(), vec![8], "bare");
    assert_eq!(anon.ns_until_sentinel(), vec![8], "anonymous");
}

#[test]
fn bad_or_missing_credentials_get_a_public_stream() {
    let srv = Server::builder()
        .acl("alice:\n  password: s3cret\n  acl:\n    s: [x]\n")
        .start();
    let good = basic_auth("alice", "s3cret");
    // `Basic base64(alices3cret)`: no colon
    let no_colon = "Basic YWxpY2VzM2NyZXQ=".to_string();
    let cases: Vec<(&str, Option<String>)> = vec![
        ("wrong password", Some(basic_auth("alice", "nope"))),
        ("password case", Some(basic_auth("alice", "S3cret"))),
        ("empty password", Some(basic_auth("alice", ""))),
        ("password with suffix", Some(basic_auth("alice", "s3cretX"))),
        ("unknown user", Some(basic_auth("mallory", "s3cret"))),
        ("no credentials", None),
        ("empty header", Some(String::new())),
        ("scheme only", Some("Basic".into())),
        ("not base64", Some("Basic !!!!".into())),
        ("no colon", Some(no_colon)),
        ("bearer scheme", Some(good.replace("Basic", "Bearer"))),
        ("digest scheme", Some("Digest username=\"alice\"".into())),
    ];
    let mut subs: Vec<(&str, Subscriber)> = cases
        .iter()
        .map(|(who, a)| {
            let headers: Vec<(&str, &str)> = match a {
                Some(v) => vec![("Authorization", v.as_str())],
                None => vec![],
            };
            // Subscriber::open asserts the 200 head
            let s = srv.subscribe_with("/x", &headers);
            assert_eq!(
                s.head.header("Content-Type"),
                Some(STREAM_CONTENT_TYPE),
                "{who}"
            );
            assert_eq!(s.head.header("Transfer-Encoding"), Some("chunked"), "{who}");
            (*who, s)
        })
        .collect();
    let mut alice = srv.subscribe_with("/x", &[("Authorization", &good)]);
    srv.wait_subscribers(cases.len() as u64 + 1, T);

    srv.publish_ok("/private/x", &json!({"n": 1}));
    srv.publish_ok("/x/pub", &json!({"n": 2}));
    srv.publish_ok("/private/x/more", &json!({"n": 3}));
    srv.publish_ok("/x/s", &sentinel());
    assert_eq!(alice.ns_until_sentinel(), vec![1, 2, 3], "alice");
    for (who, s) in &mut subs {
        assert_eq!(s.ns_until_sentinel(), vec![2], "{who}");
    }
}

// ---------------------------------------------------------------------------

/// (from address, method, path, Authorization, expected status, n)
type Case<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, u16, u64);

const SECURE_ACL: &str = "\
dep:
  password: p-dep
  topics: [deploy]
both:
  password: p-both
  topics: [deploy, release]
plain:
  password: p-plain
  acl:
    s: [x]
";

#[test]
fn secured_topics_need_a_user_who_may_publish_them() {
    let srv = Server::builder()
        .payloaders(&["127.0.0.1/32"])
        .clients("secure_topics: [deploy, release]")
        .acl(SECURE_ACL)
        .start();
    let mut sub = srv.subscribe("/");
    let dep = basic_auth("dep", "p-dep");
    let both = basic_auth("both", "p-both");
    let plain = basic_auth("plain", "p-plain");
    let dep_wrong = basic_auth("dep", "p-both");
    let ok = 202u16;
    let no = 403u16;
    let cases: Vec<Case> = vec![
        // control: 127.0.0.2 is outside the payloaders
        ("127.0.0.2", "PUT", "/public", None, no, 100),
        ("127.0.0.1", "PUT", "/public", None, ok, 1),
        // a user whose topics cover the secured one: any address
        ("127.0.0.2", "PUT", "/deploy/x", Some(&dep), ok, 2),
        ("127.0.0.2", "POST", "/x/deploy", Some(&dep), ok, 3),
        ("127.0.0.1", "PUT", "/deploy", Some(&dep), ok, 4),
        // nobody authenticated: 403, even from a payloader address
        ("127.0.0.2", "PUT", "/deploy/x", None, no, 101),
        ("127.0.0.1", "PUT", "/deploy/x", None, no, 102),
        ("127.0.0.1", "PUT", "/release", None, no, 103),
        // authenticated, but without that topic
        ("127.0.0.1", "PUT", "/deploy", Some(&plain), no, 104),
        ("127.0.0.2", "PUT", "/deploy", Some(&plain), no, 105),
        ("127.0.0.1", "PUT", "/release", Some(&dep), no, 106),
        // wrong password
        ("127.0.0.2", "PUT", "/deploy", Some(&dep_wrong), no, 107),
        ("127.0.0.1", "PUT", "/deploy", Some(&dep_wrong), no, 108),
        // two secured topics: both needed
        ("127.0.0.2", "PUT", "/deploy/release", Some(&dep), no, 109),
        ("127.0.0.1", "PUT", "/release/deploy", Some(&dep), no, 110),
        ("127.0.0.2", "PUT", "/deploy/release", Some(&both), ok, 5),
        // no secured topic: the address decides, credentials do not help
        ("127.0.0.2", "PUT", "/public", Some(&both), no, 111),
        ("127.0.0.1", "PUT", "/public", Some(&plain), ok, 6),
    ];
    for (from, method, path, a, status, n) in &cases {
        let text = if *status == 202 {
            MSG_ACCEPTED
        } else {
            MSG_FORBIDDEN
        };
        let r = publish_from(&srv, from, method, path, *a, &json!({"n": n}));
        assert_eq!(
            (r.status, r.body_str().as_str()),
            (*status, text),
            "{method} {path} from {from} with {a:?}"
        );
        r.assert_std_headers();
    }
    srv.publish_ok("/s", &sentinel());
    assert_eq!(sub.ns_until_sentinel(), vec![1, 2, 3, 4, 5, 6]);
}

// ---------------------------------------------------------------------------

fn openssl_passwd(scheme: &str, password: &str) -> String {
    let out = Command::new("openssl")
        .args(["passwd", scheme, password])
        .output()
        .expect("run openssl passwd (apt-get install openssl)");
    assert!(out.status.success(), "openssl passwd {scheme} failed");
    let hash = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    let prefix = format!("${}$", &scheme[1..]);
    assert!(hash.starts_with(&prefix), "unexpected hash {hash:?}");
    hash
}

#[test]
fn hashed_passwords_work_and_wrong_ones_do_not() {
    let h6 = openssl_passwd("-6", "hunter6");
    let h5 = openssl_passwd("-5", "hunter5");
    let acl = format!(
        "six:\n  password: '{h6}'\n  acl:\n    s: [x]\n\
         five:\n  password: '{h5}'\n  acl:\n    s: [x]\n"
    );
    let srv = Server::builder().acl(&acl).start();
    // right, wrong, right again (remembered), wrong again (never remembered),
    // the hash itself as the password
    let tries: Vec<(&str, String, bool)> = vec![
        ("six", "hunter6".into(), true),
        ("six", "hunter5".into(), false),
        ("six", "hunter6".into(), true),
        ("six", "Hunter6".into(), false),
        ("six", h6.clone(), false),
        ("five", "hunter5".into(), true),
        ("five", "hunter6".into(), false),
        ("five", "hunter5".into(), true),
        ("five", h5.clone(), false),
    ];
    let mut subs: Vec<Subscriber> = tries
        .iter()
        .map(|(u, p, _)| srv.subscribe_as("/x", u, p))
        .collect();
    srv.publish_ok("/private/x", &json!({"n": 1}));
    srv.publish_ok("/x", &json!({"n": 2}));
    srv.publish_ok("/x/s", &sentinel());
    for ((user, pass, ok), s) in tries.iter().zip(&mut subs) {
        let want = if *ok { vec![1, 2] } else { vec![2] };
        assert_eq!(s.ns_until_sentinel(), want, "{user} with {pass:?}");
    }
}

#[test]
fn malformed_user_entries_are_skipped_and_named() {
    let acl = "\
good:
  password: g00d
  acl:
    s: [x]
numeric:
  password: 12345
  acl:
    s: [x]
listy: [not, a, mapping]
nopass:
  acl:
    s: [x]
badacl:
  password: pw
  acl: [x]
also_good:
  password: fine
  acl:
    s: [x]
";
    let srv = Server::builder().acl(acl).start();
    for name in ["numeric", "listy", "nopass", "badacl"] {
        let quoted = format!("\"{name}\"");
        assert_eq!(
            warn_lines(&srv, &quoted).len(),
            1,
            "one warning naming {name}; log:\n{}",
            srv.log()
        );
    }
    for name in ["\"good\"", "\"also_good\""] {
        assert!(
            warn_lines(&srv, name).is_empty(),
            "no warning for {name}; log:\n{}",
            srv.log()
        );
    }
    let tries: &[(&str, &str, bool)] = &[
        ("good", "g00d", true),
        ("also_good", "fine", true),
        ("numeric", "12345", false),
        ("badacl", "pw", false),
        ("nopass", "", false),
    ];
    let mut subs: Vec<Subscriber> = tries
        .iter()
        .map(|(u, p, _)| srv.subscribe_as("/x", u, p))
        .collect();
    srv.publish_ok("/private/x", &json!({"n": 1}));
    srv.publish_ok("/x", &json!({"n": 2}));
    srv.publish_ok("/x/s", &sentinel());
    for ((user, pass, ok), s) in tries.iter().zip(&mut subs) {
        let want = if *ok { vec![1, 2] } else { vec![2] };
        assert_eq!(s.ns_until_sentinel(), want, "{user} with {pass:?}");
    }
}

// ---------------------------------------------------------------------------

/// Whether a fresh `user` subscriber on `/poll` receives a private event
/// (a public sentinel closes the question).
fn has_private(srv: &Server, user: &str, pass: &str) -> bool {
    let mut s = srv.subscribe_as("/poll", user, pass);
    srv.publish_ok("/private/poll/x", &json!({"n": 1}));
    srv.publish_ok("/poll/s", &sentinel());
    match s.ns_until_sentinel().as_slice() {
        [] => false,
        [1] => true,
        other => panic!("unexpected events {other:?}"),
    }
}

#[test]
fn sigusr2_reload_changes_passwords_and_keeps_streams() {
    let mut srv = Server::builder()
        .acl("alice:\n  password: old-pw\n  acl:\n    s: [x]\n")
        .start();
    let acl_path = srv.dir().join("pypubsub_acl.yaml");
    let mut kept = srv.subscribe_as("/main", "alice", "old-pw");
    let mut anon = srv.subscribe("/main");
    srv.publish_ok("/private/main/x", &json!({"n": 1}));
    srv.publish_ok("/main", &json!({"n": 2}));
    srv.publish_ok("/main/s", &sentinel());
    assert_eq!(kept.ns_until_sentinel(), vec![1, 2]);
    assert_eq!(anon.ns_until_sentinel(), vec![2]);
    assert!(has_private(&srv, "alice", "old-pw"));
    assert!(!has_private(&srv, "alice", "new-pw"));

    std::fs::write(
        &acl_path,
        "alice:\n  password: new-pw\n  acl:\n    s: [x]\n",
    )
    .expect("rewrite ACL");
    srv.signal("USR2");
    assert!(
        wait_until(Duration::from_secs(5), || has_private(
            &srv, "alice", "new-pw"
        )),
        "new password not accepted 5 s after SIGUSR2; log:\n{}",
        srv.log()
    );
    assert!(
        !has_private(&srv, "alice", "old-pw"),
        "old password still works"
    );
    // the stream opened with the old password is still there, with its access
    srv.publish_ok("/private/main/x", &json!({"n": 3}));
    srv.publish_ok("/main", &json!({"n": 4}));
    srv.publish_ok("/main/s", &sentinel());
    assert_eq!(
        kept.ns_until_sentinel(),
        vec![3, 4],
        "stream opened before the reload"
    );
    assert_eq!(anon.ns_until_sentinel(), vec![4], "anonymous stream");

    // invalid files: the loaded ACL stays, a warning names the file
    let acl_name = acl_path.display().to_string();
    for (i, garbage) in [": : :\n", "- a\n- list\n"].iter().enumerate() {
        std::fs::write(&acl_path, garbage).expect("break ACL");
        srv.signal("USR2");
        assert!(
            wait_until(Duration::from_secs(5), || warn_lines(&srv, &acl_name).len()
                > i),
            "no warning about {acl_name} after SIGUSR2 with {garbage:?}; log:\n{}",
            srv.log()
        );
        assert!(has_private(&srv, "alice", "new-pw"), "after {garbage:?}");
        assert!(!has_private(&srv, "alice", "old-pw"), "after {garbage:?}");
    }
    assert_eq!(warn_lines(&srv, &acl_name).len(), 2, "log:\n{}", srv.log());
    srv.publish_ok("/private/main/x", &json!({"n": 5}));
    srv.publish_ok("/main", &json!({"n": 6}));
    srv.publish_ok("/main/s", &sentinel());
    assert_eq!(
        kept.ns_until_sentinel(),
        vec![5, 6],
        "stream opened before the reloads"
    );
    assert_eq!(anon.ns_until_sentinel(), vec![6], "anonymous stream");
    // still alive after everything: the server counts both
    let mut more = srv.subscribe_as("/main", "alice", "new-pw");
    srv.wait_subscribers(3, T);
    srv.publish_ok("/private/main/x", &json!({"n": 7}));
    srv.publish_ok("/main/s", &sentinel());
    assert_eq!(more.ns_until_sentinel(), vec![7]);
    assert_eq!(kept.ns_until_sentinel(), vec![7]);
    assert_eq!(anon.ns_until_sentinel(), Vec::<u64>::new());
}

/// A wrong password for a user with a hashed entry makes the next attempts
/// for that user fail without hashing for a second (hashing costs the event
/// loop ~1.4 ms, so guessing must not be able to buy it freely); then the
/// right password works again.
#[test]
fn wrong_hashed_passwords_are_throttled_per_user() {
    let h6 = openssl_passwd("-6", "hunter6");
    let acl = format!("six:\n  password: '{h6}'\n  acl:\n    s: [x]\n");
    let srv = Server::builder().acl(&acl).start();
    let mut wrong = srv.subscribe_as("/x", "six", "guess");
    let started = Instant::now();
    let mut right_too_soon = srv.subscribe_as("/x", "six", "hunter6");
    let too_soon = started.elapsed() < Duration::from_millis(900);
    srv.publish_ok("/private/x", &json!({"n": 1}));
    srv.publish_ok("/x/s", &sentinel());
    assert_eq!(wrong.ns_until_sentinel(), Vec::<u64>::new());
    if too_soon {
        assert_eq!(right_too_soon.ns_until_sentinel(), Vec::<u64>::new());
    }
    // The throttle is a time window with nothing to observe from outside:
    // sit it out (from the wrong attempt, plus 100 ms of margin).
    std::thread::sleep(Duration::from_millis(1100).saturating_sub(started.elapsed()));
    let mut right = srv.subscribe_as("/x", "six", "hunter6");
    srv.publish_ok("/private/x", &json!({"n": 3}));
    srv.publish_ok("/x/s", &sentinel());
    assert_eq!(right.ns_until_sentinel(), vec![3]);
}
