//! `clients.ldap` against a real OpenLDAP slapd, black-box: group DNs map to
//! ACL segments (named-segment and bare-list forms), wrong passwords and
//! unknown users get a public stream, a hung or dead directory never stalls
//! the event loop, a storm of LDAP logins does not delay anyone else, the
//! `publish_topics` extension, and the credential cache across an outage.
//!
//! The directory (see `ldap-worker/tests/slapd/mod.rs`): alice (alicepw) is in
//! admins and devs, bob (bobpw) in devs, carol (carolpw) in no group but her
//! own entry matches the `(uid=%s)` pattern.
#![cfg(feature = "ldap")] // LDAP lookups

mod common;
#[path = "../ldap-worker/tests/slapd/mod.rs"]
mod slapd;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use slapd::Slapd;

/// `clients.ldap.timeout` in every test.
const LDAP_TIMEOUT: Duration = Duration::from_secs(1);
/// Slack on top of `LDAP_TIMEOUT` for a loaded 2-core machine.
const MARGIN: Duration = Duration::from_secs(2);
/// An unauthenticated subscriber's event latency bound while LDAP is busy.
const LATENCY: Duration = Duration::from_millis(500);

/// The `clients.ldap` section for `uri`; `extra` holds more keys, each line
/// indented by two spaces.
fn ldap_section(uri: &str, extra: &str) -> String {
    format!(
        "ldap:
  uri: {uri}
  user_dn: \"{user_dn}\"
  base_scope: \"{suffix}\"
  membership_patterns:
    - \"{member}\"
    - \"{uid}\"
  timeout: 1
  acl:
    \"{admins}\":
      accounts: [accounts]
      ops: [infra, restricted]
    \"{devs}\":
      code: [code]
    \"uid=carol,ou=people,dc=example,dc=org\": [hr]
{extra}",
        user_dn = slapd::USER_DN,
        suffix = slapd::SUFFIX,
        member = slapd::MEMBER_PATTERN,
        uid = slapd::UID_PATTERN,
        admins = slapd::ADMINS,
        devs = slapd::DEVS,
    )
}

fn start_server(ldap: &Slapd, extra: &str) -> Server {
    Server::builder()
        .clients(&ldap_section(&ldap.uri, extra))
        .start()
}

/// Sends `GET path` with Basic credentials and does not wait for the head.
fn send_subscribe(addr: SocketAddr, path: &str, user: &str, pass: &str) -> Conn {
    let mut c = Conn::connect(addr);
    c.send(
        format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nUser-Agent: pubsubd-tests/1\r\n\
             Authorization: {}\r\n\r\n",
            basic_auth(user, pass)
        )
        .as_bytes(),
    );
    c
}

/// Sends `PUT path` `{"n": n}` with Basic credentials; does not read the answer.
fn send_publish(addr: SocketAddr, path: &str, user: &str, pass: &str, n: u64) -> Conn {
    let body = json!({ "n": n }).to_string();
    let mut c = Conn::connect(addr);
    c.send(
        format!(
            "PUT {path} HTTP/1.1\r\nHost: t\r\nAuthorization: {}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            basic_auth(user, pass),
            body.len()
        )
        .as_bytes(),
    );
    c
}

/// Reads the head `send_subscribe` asked for; asserts a `200` stream.
fn stream_head(mut conn: Conn, deadline: Instant, who: &str) -> Subscriber {
    let head = conn
        .read_head(deadline)
        .unwrap_or_else(|e| panic!("no stream head for {who}: {e}"));
    assert_eq!(head.status, 200, "{who}: {:?}", head.head_str());
    assert_eq!(
        head.header("Content-Type"),
        Some(STREAM_CONTENT_TYPE),
        "{who}"
    );
    Subscriber { conn, head }
}

/// Subscribes with Basic credentials; returns the stream and how long its
/// head took. Asserts it came within `bound`.
fn timed_sub(
    srv: &Server,
    path: &str,
    user: &str,
    pass: &str,
    bound: Duration,
) -> (Subscriber, Duration) {
    let t0 = Instant::now();
    let c = send_subscribe(srv.addr, path, user, pass);
    let s = stream_head(c, t0 + T, &format!("{user}/{pass}"));
    let took = t0.elapsed();
    assert!(
        took < bound,
        "{user}/{pass}: stream head after {took:?}, bound {bound:?}"
    );
    (s, took)
}

/// Publishes a public event to `path` and waits for `sub` to receive it;
/// returns the latency (publish start to event received).
fn public_latency(srv: &Server, sub: &mut Subscriber, path: &str, n: u64) -> Duration {
    let t0 = Instant::now();
    srv.publish_ok(path, &json!({"n": n}));
    let ev = sub.next_event(T);
    assert_eq!(ev["n"], json!(n), "{ev}");
    t0.elapsed()
}

// ---------------------------------------------------------------------------

#[test]
fn ldap_groups_open_their_mapped_segments_only() {
    let ldap = Slapd::start();
    let srv = start_server(&ldap, "");
    let bound = LDAP_TIMEOUT + MARGIN;
    let tries: &[(&str, &str, &[u64])] = &[
        // admins (named segments) + devs
        ("alice", "alicepw", &[1, 2, 4, 7]),
        // devs only
        ("bob", "bobpw", &[4, 7]),
        // her own entry, mapped with the bare-list form
        ("carol", "carolpw", &[5, 7]),
        // no group at all
        ("comma,user", "commapw", &[7]),
        ("alice", "bobpw", &[7]),
        ("alice", "alicepw2", &[7]),
        ("bob", "alicepw", &[7]),
        ("carol", "", &[7]),
        ("mallory", "alicepw", &[7]),
    ];
    let mut subs: Vec<Subscriber> = tries
        .iter()
        .map(|(u, p, _)| timed_sub(&srv, "/", u, p, bound).0)
        .collect();
    let mut anon = srv.subscribe("/");
    srv.publish_ok("/private/accounts", &json!({"n": 1}));
    srv.publish_ok("/private/infra/restricted", &json!({"n": 2}));
    srv.publish_ok("/private/infra", &json!({"n": 3}));
    srv.publish_ok("/private/code/x", &json!({"n": 4}));
    srv.publish_ok("/private/hr", &json!({"n": 5}));
    srv.publish_ok("/private/restricted", &json!({"n": 6}));
    srv.publish_ok("/public", &json!({"n": 7}));
    srv.publish_ok("/s", &sentinel());
    for ((user, pass, want), s) in tries.iter().zip(&mut subs) {
        assert_eq!(s.ns_until_sentinel(), want.to_vec(), "{user} with {pass:?}");
    }
    assert_eq!(anon.ns_until_sentinel(), vec![7]);

    // the private event's metadata, as seen by an LDAP user
    let (mut alice, _) = timed_sub(&srv, "/code", "alice", "alicepw", bound);
    srv.publish_ok("/private/code/y", &json!({"n": 8}));
    let ev = alice.next_event(T);
    assert_eq!(ev["n"], json!(8));
    check_event_meta(&ev, &["code", "y"], "/private/code/y");
}

#[test]
fn acl_file_users_are_not_looked_up_in_ldap() {
    let ldap = Slapd::start();
    let srv = Server::builder()
        .clients(&ldap_section(&ldap.uri, ""))
        .acl("carol:\n  password: filepw\n  acl:\n    s: [file]\n")
        .start();
    let bound = LDAP_TIMEOUT + MARGIN;
    let (mut file, _) = timed_sub(&srv, "/", "carol", "filepw", bound);
    // carol's directory password: the file knows carol, so LDAP is not asked
    let (mut dir, _) = timed_sub(&srv, "/", "carol", "carolpw", bound);
    // a user the file does not know still goes to LDAP
    let (mut bob, _) = timed_sub(&srv, "/", "bob", "bobpw", bound);
    srv.publish_ok("/private/file", &json!({"n": 1}));
    srv.publish_ok("/private/hr", &json!({"n": 2}));
    srv.publish_ok("/private/code", &json!({"n": 3}));
    srv.publish_ok("/s", &sentinel());
    assert_eq!(
        file.ns_until_sentinel(),
        vec![1],
        "carol with the file password"
    );
    assert_eq!(
        dir.ns_until_sentinel(),
        Vec::<u64>::new(),
        "carol with the LDAP password"
    );
    assert_eq!(bob.ns_until_sentinel(), vec![3], "bob");
}

#[test]
fn hung_then_dead_ldap_never_stalls_anyone() {
    let mut ldap = Slapd::start();
    let extra = format!(
        "  cache_ttl: 0\n  publish_topics:\n    \"{}\": [deploy]\n",
        slapd::ADMINS
    );
    let srv = Server::builder()
        .clients("secure_topics: [deploy]")
        .clients(&ldap_section(&ldap.uri, &extra))
        .start();
    let bound = LDAP_TIMEOUT + MARGIN;
    let mut anon = srv.subscribe("/");
    let (mut alice, _) = timed_sub(&srv, "/", "alice", "alicepw", bound);
    srv.publish_ok("/private/accounts", &json!({"n": 1}));
    srv.publish_ok("/pub", &json!({"n": 2}));
    let deploy = |n: u64| send_publish(srv.addr, "/deploy", "alice", "alicepw", n);
    let r = deploy(20).read_response(false, bound);
    r.expect("response to PUT /deploy")
        .assert(202, MSG_ACCEPTED);
    srv.publish_ok("/s", &sentinel());
    assert_eq!(
        alice.ns_until_sentinel(),
        vec![1, 2, 20],
        "alice while LDAP is up"
    );
    assert_eq!(anon.ns_until_sentinel(), vec![2, 20]);

    // 1. slapd hangs (SIGSTOP): connections are accepted by the kernel, never answered
    ldap.pause();
    let t0 = Instant::now();
    let parked = send_subscribe(srv.addr, "/", "alice", "alicepw");
    let mut parked_put = deploy(21);
    // a client that gives up while parked: its late reply must go nowhere
    drop(send_subscribe(srv.addr, "/", "bob", "bobpw"));
    let mut worst = Duration::ZERO;
    for n in 3..=5 {
        worst = worst.max(public_latency(&srv, &mut anon, "/pub", n));
    }
    assert!(
        worst < LATENCY,
        "anonymous event latency {worst:?} while LDAP hangs"
    );
    let mut parked = stream_head(parked, t0 + T, "alice while LDAP hangs");
    let took = t0.elapsed();
    assert!(
        took < bound,
        "stream head {took:?} after the request with LDAP hung; bound {bound:?}"
    );
    assert!(
        took >= LDAP_TIMEOUT.mul_f64(0.8),
        "stream head after {took:?}: LDAP was not waited for (was slapd really hung?)"
    );
    // a secured publish needing LDAP: refused once LDAP has failed to answer
    let r = parked_put
        .read_response(
            false,
            (t0 + bound).saturating_duration_since(Instant::now()),
        )
        .unwrap_or_else(|e| panic!("no answer to PUT /deploy within {bound:?}: {e}"));
    r.assert(403, MSG_FORBIDDEN);
    // anon, alice, parked: the abandoned one is not a subscriber
    srv.wait_subscribers(3, T);

    // 2. slapd is gone: connection refused
    ldap.stop();
    let (mut refused, took_refused) = timed_sub(&srv, "/", "alice", "alicepw", bound);
    let t1 = Instant::now();
    let r = deploy(22).read_response(false, bound);
    r.expect("response to PUT /deploy with LDAP down")
        .assert(403, MSG_FORBIDDEN);
    let took_put = t1.elapsed();
    assert!(
        took_put < bound,
        "PUT /deploy with LDAP down took {took_put:?}"
    );
    let mut worst = Duration::ZERO;
    for n in 6..=8 {
        worst = worst.max(public_latency(&srv, &mut anon, "/pub", n));
    }
    assert!(
        worst < LATENCY,
        "anonymous event latency {worst:?} with LDAP down"
    );

    srv.publish_ok("/private/accounts", &json!({"n": 9}));
    srv.publish_ok("/pub", &json!({"n": 10}));
    srv.publish_ok("/s", &sentinel());
    assert_eq!(
        parked.ns_until_sentinel(),
        vec![6, 7, 8, 10],
        "alice, LDAP hung"
    );
    assert_eq!(
        refused.ns_until_sentinel(),
        vec![6, 7, 8, 10],
        "alice, LDAP down"
    );
    // streams authenticated before the outage keep their access
    assert_eq!(
        alice.ns_until_sentinel(),
        vec![3, 4, 5, 6, 7, 8, 9, 10],
        "alice before"
    );
    assert_eq!(anon.ns_until_sentinel(), vec![10]);
    eprintln!("LDAP hung: head after {took:?}; LDAP down: head after {took_refused:?}");
}

#[test]
fn ldap_login_storm_does_not_delay_others() {
    const STORM: usize = 200;
    let ldap = Slapd::start();
    let srv = start_server(&ldap, "  cache_ttl: 0\n");
    let addr = srv.addr;
    let mut anon = srv.subscribe("/lat");
    let stop = AtomicBool::new(false);
    let probes = AtomicUsize::new(0);

    let (latencies, mut subs, storm_time) = thread::scope(|scope| {
        let prober = scope.spawn(|| {
            let mut out = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let r = Conn::connect(addr).publish("/lat", &json!({"i": i}).to_string());
                r.assert(202, MSG_ACCEPTED);
                let ev = anon.next_event(T);
                assert_eq!(ev["i"], json!(i), "{ev}");
                out.push(t0.elapsed());
                probes.fetch_add(1, Ordering::SeqCst);
                i += 1;
                // Pacing, not waiting: a probe every ~10 ms samples the
                // latency without adding load of its own.
                thread::sleep(Duration::from_millis(10));
            }
            out
        });
        // let the prober get going, then open everything without reading heads
        assert!(
            wait_until(T, || probes.load(Ordering::SeqCst) >= 1),
            "the first probe never came back"
        );
        let t0 = Instant::now();
        let conns: Vec<(usize, Conn)> = (0..STORM)
            .map(|i| {
                let (u, p) = if i % 2 == 0 {
                    ("alice", "alicepw")
                } else {
                    ("bob", "bobpw")
                };
                (i, send_subscribe(addr, "/p", u, p))
            })
            .collect();
        let deadline = t0 + Duration::from_secs(30);
        let subs: Vec<(usize, Subscriber)> = conns
            .into_iter()
            .map(|(i, c)| (i, stream_head(c, deadline, &format!("storm #{i}"))))
            .collect();
        let storm_time = t0.elapsed();
        stop.store(true, Ordering::Relaxed);
        let latencies = prober.join().expect("prober thread");
        (latencies, subs, storm_time)
    });
    let worst = latencies.iter().max().copied().unwrap_or_default();
    eprintln!(
        "{STORM} LDAP logins took {storm_time:?}; {} probe events during it, worst latency {worst:?}",
        latencies.len()
    );
    assert!(
        latencies.len() >= 3,
        "only {} probe events during the storm ({storm_time:?})",
        latencies.len()
    );
    assert!(
        worst < LATENCY,
        "anonymous event latency {worst:?} during the LDAP storm"
    );

    srv.wait_subscribers(STORM as u64 + 1, T);
    srv.publish_ok("/private/p/accounts", &json!({"n": 1}));
    srv.publish_ok("/private/p/code", &json!({"n": 2}));
    srv.publish_ok("/private/p/hr", &json!({"n": 3}));
    srv.publish_ok("/p/s", &sentinel());
    for (i, s) in &mut subs {
        let (who, want) = if *i % 2 == 0 {
            ("alice", vec![1, 2])
        } else {
            ("bob", vec![2])
        };
        assert_eq!(s.ns_until_sentinel(), want, "storm #{i} ({who})");
    }
}

#[test]
fn ldap_publish_topics_allow_secured_publishing() {
    let ldap = Slapd::start();
    let publish_topics = format!(
        "  publish_topics:\n    \"{}\": [deploy]\n    \"{}\": [release]\n",
        slapd::ADMINS,
        slapd::DEVS
    );
    let srv = Server::builder()
        .payloaders(&["127.0.0.1/32"])
        .clients("secure_topics: [deploy, release]")
        .clients(&ldap_section(&ldap.uri, &publish_topics))
        .start();
    let mut sub = srv.subscribe("/");
    let alice = basic_auth("alice", "alicepw");
    let alice_wrong = basic_auth("alice", "bobpw");
    let bob = basic_auth("bob", "bobpw");
    let carol = basic_auth("carol", "carolpw");
    let ok = 202u16;
    let no = 403u16;
    let cases: Vec<(&str, &str, Option<&str>, u16, u64)> = vec![
        // admins may publish deploy, from anywhere
        ("127.0.0.2", "/deploy/x", Some(&alice), ok, 1),
        ("127.0.0.1", "/deploy", Some(&alice), ok, 2),
        // alice is in devs too: release; both together
        ("127.0.0.2", "/release/deploy", Some(&alice), ok, 3),
        // devs: release only
        ("127.0.0.2", "/release", Some(&bob), ok, 4),
        ("127.0.0.2", "/deploy", Some(&bob), no, 101),
        ("127.0.0.1", "/deploy/release", Some(&bob), no, 102),
        // in no group; wrong password; nobody
        ("127.0.0.1", "/deploy", Some(&carol), no, 103),
        ("127.0.0.2", "/deploy", Some(&alice_wrong), no, 104),
        ("127.0.0.1", "/deploy", Some(&alice_wrong), no, 105),
        ("127.0.0.1", "/deploy", None, no, 106),
        // not secured: the address decides
        ("127.0.0.2", "/public", Some(&alice), no, 107),
        ("127.0.0.1", "/public", Some(&carol), ok, 5),
    ];
    for (from, path, a, status, n) in &cases {
        let text = if *status == 202 {
            MSG_ACCEPTED
        } else {
            MSG_FORBIDDEN
        };
        let t0 = Instant::now();
        let r = publish_from(&srv, from, "PUT", path, *a, &json!({"n": n}));
        assert_eq!(
            (r.status, r.body_str().as_str()),
            (*status, text),
            "PUT {path} from {from} with {a:?}"
        );
        r.assert_std_headers();
        let took = t0.elapsed();
        assert!(took < LDAP_TIMEOUT + MARGIN, "PUT {path} took {took:?}");
    }
    srv.publish_ok("/s", &sentinel());
    assert_eq!(sub.ns_until_sentinel(), vec![1, 2, 3, 4, 5]);
}

#[test]
fn cached_login_survives_an_ldap_outage() {
    let mut ldap = Slapd::start();
    // cache_ttl left at its default (60 s)
    let srv = start_server(&ldap, "");
    let bound = LDAP_TIMEOUT + MARGIN;
    let (mut before, _) = timed_sub(&srv, "/", "alice", "alicepw", bound);
    srv.publish_ok("/private/accounts", &json!({"n": 1}));
    srv.publish_ok("/s", &sentinel());
    assert_eq!(
        before.ns_until_sentinel(),
        vec![1],
        "alice while LDAP is up"
    );

    ldap.stop();
    let tries: &[(&str, &str, &[u64])] = &[
        // same credentials: answered from the cache
        ("alice", "alicepw", &[2, 3, 4]),
        // a wrong password is never cached, and LDAP is down
        ("alice", "bobpw", &[4]),
        // never logged in
        ("bob", "bobpw", &[4]),
        ("alice", "alicepw", &[2, 3, 4]),
    ];
    let mut subs: Vec<Subscriber> = tries
        .iter()
        .map(|(u, p, _)| timed_sub(&srv, "/", u, p, bound).0)
        .collect();
    srv.publish_ok("/private/accounts", &json!({"n": 2}));
    srv.publish_ok("/private/code", &json!({"n": 3}));
    srv.publish_ok("/public", &json!({"n": 4}));
    srv.publish_ok("/s", &sentinel());
    for ((user, pass, want), s) in tries.iter().zip(&mut subs) {
        assert_eq!(
            s.ns_until_sentinel(),
            want.to_vec(),
            "{user} with {pass:?}, LDAP down"
        );
    }
    assert_eq!(before.ns_until_sentinel(), vec![2, 3, 4]);
}

// ---------------------------------------------------------------------------

/// A token without a `pubsub` claim whose `sub` names a directory user:
/// that user's groups are looked up (no bind: the token stands in for the
/// password; the test directory allows anonymous searches) and their
/// segments apply, until the token's expiry.
#[cfg(feature = "tokens")]
#[test]
fn a_token_naming_a_directory_user_gets_their_segments() {
    let ldap = Slapd::start();
    let secret = "a shared secret of at least 32 bytes";
    let srv = Server::builder()
        .clients(&ldap_section(&ldap.uri, ""))
        .clients(&format!("tokens: {{secret: \"{secret}\"}}"))
        .start();
    let key = common::jwt::SigningKey::hmac("HS256", secret.as_bytes());
    let bearer = |user: &str| {
        let claims = json!({"sub": user, "exp": now_epoch() + 600.0});
        format!("Bearer {}", key.token(&claims))
    };
    let mut bob = srv.subscribe_with("/code", &[("Authorization", &bearer("bob"))]);
    let mut carol = srv.subscribe_with("/hr", &[("Authorization", &bearer("carol"))]);
    let mut mallory = srv.subscribe_with("/code", &[("Authorization", &bearer("mallory"))]);
    srv.publish_ok("/private/code/x", &json!({"n": 1}));
    srv.publish_ok("/private/hr/y", &json!({"n": 2}));
    srv.publish_ok("/code/hr/s", &sentinel());
    assert_eq!(bob.ns_until_sentinel(), vec![1], "devs: [code]");
    assert_eq!(carol.ns_until_sentinel(), vec![2], "carol's entry: [hr]");
    assert_eq!(
        mallory.ns_until_sentinel(),
        Vec::<u64>::new(),
        "not in the directory"
    );
    assert!(
        srv.log()
            .contains("LDAP: user \"bob\" looked up (vouched for)"),
        "{}",
        srv.log()
    );
}
