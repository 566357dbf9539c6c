//! The pool against a real slapd (see `slapd/mod.rs`), and against servers that
//! are gone or never answer.

mod slapd;
// What slapd takes from this crate's root: the workspace's one free-port
// helper and certificate maker (the server's tests have them in common/).
#[path = "../../tests/common/pki.rs"]
mod pki;
#[path = "../../tests/common/port.rs"]
mod port;
#[path = "../../tests/common/stopped.rs"]
mod stopped;
use pki::Ca;
use port::free_port;
#[allow(unused_imports)] // slapd's pause(), which these tests do not call
use stopped::wait_stopped;

use std::io::ErrorKind;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ldap_worker::{LdapJob, LdapPool, LdapReply, LdapSettings, Proof};
use slapd::Slapd;

/// Generous bound for anything that should be "quick" on a loaded 2-core box.
const QUICK: Duration = Duration::from_secs(5);

fn settings(uri: &str) -> LdapSettings {
    LdapSettings {
        uri: uri.to_owned(),
        user_dn: slapd::USER_DN.to_owned(),
        base_scope: slapd::SUFFIX.to_owned(),
        membership_patterns: vec![
            slapd::MEMBER_PATTERN.to_owned(),
            slapd::UID_PATTERN.to_owned(),
        ],
        timeout: Duration::from_secs(3),
        cache_ttl: Duration::ZERO,
        workers: 2,
        queue: 64,
        ..LdapSettings::default()
    }
}

fn start(settings: LdapSettings) -> LdapPool {
    LdapPool::start(settings, Box::new(|| {})).expect("pool starts")
}

fn job(tag: u64, user: &str, password: &str) -> LdapJob {
    LdapJob {
        tag,
        user: user.to_owned(),
        proof: Proof::Password(password.to_owned()),
    }
}

/// Submit one job and wait for its reply.
fn lookup(pool: &LdapPool, user: &str, password: &str) -> Option<Vec<String>> {
    pool.try_submit(job(7, user, password))
        .expect("queue has room");
    let reply = pool
        .replies()
        .recv_timeout(Duration::from_secs(30))
        .expect("a reply within 30 s");
    assert_eq!(reply.tag, 7);
    reply.groups.map(|mut g| {
        g.sort();
        g
    })
}

fn sorted(dns: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = dns.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// A listener that completes TCP handshakes (kernel backlog) but never reads
/// nor writes: the worst kind of LDAP server.
fn silent_server() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    (listener, format!("127.0.0.1:{port}"))
}

#[test]
fn right_password_finds_groups() {
    let server = Slapd::start();
    let pool = start(settings(&server.uri));
    assert_eq!(
        lookup(&pool, "alice", "alicepw"),
        Some(sorted(&[slapd::ADMINS, slapd::DEVS, slapd::USERS[0].2]))
    );
    // {SSHA}-stored password.
    assert_eq!(
        lookup(&pool, "bob", "bobpw"),
        Some(sorted(&[slapd::DEVS, slapd::USERS[1].2]))
    );
    // Bound fine, in no group: Some, with only the uid pattern's own entry.
    assert_eq!(
        lookup(&pool, "carol", "carolpw"),
        Some(sorted(&[slapd::USERS[2].2]))
    );
}

#[test]
fn a_vouched_user_is_looked_up_without_a_bind() {
    let server = Slapd::start();
    let pool = start(settings(&server.uri));
    let vouched = |user: &str| {
        let job = LdapJob {
            tag: 8,
            user: user.to_owned(),
            proof: Proof::Vouched,
        };
        pool.try_submit(job).expect("queue has room");
        let reply = pool
            .replies()
            .recv_timeout(Duration::from_secs(30))
            .expect("a reply");
        reply.groups.map(|mut g| {
            g.sort();
            g
        })
    };
    // The same groups as with alice's password (the directory allows
    // anonymous searches, as slapd/mod.rs sets it up).
    assert_eq!(
        vouched("alice"),
        Some(sorted(&[slapd::ADMINS, slapd::DEVS, slapd::USERS[0].2]))
    );
    assert_eq!(vouched("nobody"), Some(vec![]), "no entry: no groups");
    assert_eq!(vouched(""), None);
    // A password job is still a bind: no password, no groups.
    assert_eq!(lookup(&pool, "alice", ""), None);
}

#[test]
fn bind_only_without_patterns_is_an_empty_group_list() {
    let server = Slapd::start();
    let pool = start(LdapSettings {
        membership_patterns: vec![],
        ..settings(&server.uri)
    });
    assert_eq!(lookup(&pool, "carol", "carolpw"), Some(vec![]));
    assert_eq!(lookup(&pool, "carol", "nope"), None);
}

#[test]
fn user_name_with_dn_specials_is_escaped() {
    let server = Slapd::start();
    let pool = start(settings(&server.uri));
    // Binds as uid=comma\2cuser,ou=people,...; the member pattern (a DN) cannot
    // match such a name (fails closed), the uid pattern finds the entry.
    let groups = lookup(&pool, "comma,user", "commapw").expect("bind succeeds");
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert!(
        groups[0].to_lowercase().starts_with("uid=comma"),
        "{groups:?}"
    );
    // Without escaping, "alice,ou=people,dc=example,dc=org" style names could
    // aim the bind elsewhere; with it they are just unknown users.
    assert_eq!(
        lookup(&pool, "alice,ou=people,dc=example,dc=org", "alicepw"),
        None
    );
}

#[test]
fn wrong_password_unknown_user_and_empty_credentials_grant_nothing() {
    let server = Slapd::start();
    let pool = start(settings(&server.uri));
    assert_eq!(lookup(&pool, "alice", "wrong"), None);
    assert_eq!(lookup(&pool, "alice", "alicepw "), None);
    assert_eq!(lookup(&pool, "nobody", "alicepw"), None);
    assert_eq!(lookup(&pool, "*", "alicepw"), None);
    assert_eq!(lookup(&pool, "alice", ""), None);
    assert_eq!(lookup(&pool, "", ""), None);
    assert_eq!(lookup(&pool, "", "alicepw"), None);
}

#[test]
fn empty_password_is_refused_without_contacting_the_server() {
    let (listener, addr) = silent_server();
    listener.set_nonblocking(true).expect("nonblocking");
    let pool = start(settings(&format!("ldap://{addr}")));
    let t0 = Instant::now();
    assert_eq!(lookup(&pool, "alice", ""), None);
    assert_eq!(lookup(&pool, "", "pw"), None);
    assert!(t0.elapsed() < QUICK, "{:?}", t0.elapsed());
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the server was contacted: {other:?}"),
    }
}

#[test]
fn stopped_server_answers_none_within_timeout() {
    let mut server = Slapd::start();
    let pool = start(settings(&server.uri));
    assert!(lookup(&pool, "alice", "alicepw").is_some());
    server.stop();
    let t0 = Instant::now();
    assert_eq!(lookup(&pool, "alice", "alicepw"), None);
    assert!(
        t0.elapsed() < Duration::from_secs(3) + QUICK,
        "{:?}",
        t0.elapsed()
    );
}

#[test]
fn unresponsive_server_times_out_without_blocking_the_caller() {
    let (_listener, addr) = silent_server();
    for uri in [format!("ldap://{addr}"), format!("ldaps://{addr}")] {
        let pool = start(LdapSettings {
            timeout: Duration::from_secs(1),
            ..settings(&uri)
        });
        let t0 = Instant::now();
        pool.try_submit(job(1, "alice", "alicepw")).expect("room");
        assert!(t0.elapsed() < Duration::from_millis(100), "submit blocked");
        assert!(pool.replies().try_recv().is_err(), "no instant answer");
        let reply = pool
            .replies()
            .recv_timeout(Duration::from_secs(20))
            .expect("a reply");
        let took = t0.elapsed();
        assert_eq!(reply.groups, None, "{uri}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(1) + QUICK,
            "{uri}: {took:?}"
        );
    }
}

#[test]
fn full_queue_refuses_immediately_and_accepted_jobs_are_answered() {
    let (_listener, addr) = silent_server();
    let pool = start(LdapSettings {
        workers: 1,
        queue: 2,
        timeout: Duration::from_secs(1),
        ..settings(&format!("ldap://{addr}"))
    });
    let mut accepted = 0u64;
    let mut refused = None;
    for tag in 0..10u64 {
        let t0 = Instant::now();
        let result = pool.try_submit(job(tag, "alice", "pw"));
        assert!(
            t0.elapsed() < Duration::from_millis(50),
            "try_submit blocked"
        );
        match result {
            Ok(()) => accepted += 1,
            Err(back) => {
                assert_eq!(back.tag, tag, "the job is handed back");
                refused = Some(tag);
                break;
            }
        }
    }
    // One job on the worker (maybe), two in the queue.
    assert!(refused.is_some(), "the queue never filled");
    assert!((2..=3).contains(&accepted), "accepted {accepted}");
    for _ in 0..accepted {
        let reply = pool
            .replies()
            .recv_timeout(Duration::from_secs(20))
            .expect("every accepted job is answered");
        assert_eq!(reply.groups, None);
    }
    pool.shutdown();
}

#[test]
fn many_concurrent_jobs_are_all_answered_correctly() {
    let server = Slapd::start();
    let wakes = Arc::new(AtomicUsize::new(0));
    let w = Arc::clone(&wakes);
    let pool = LdapPool::start(
        LdapSettings {
            workers: 4,
            queue: 256,
            ..settings(&server.uri)
        },
        Box::new(move || {
            w.fetch_add(1, Ordering::SeqCst);
        }),
    )
    .expect("start");
    const N: u64 = 200;
    let t0 = Instant::now();
    for tag in 0..N {
        let (user, pw) = match tag % 4 {
            0 => ("alice", "alicepw"),
            1 => ("bob", "bobpw"),
            2 => ("bob", "wrong"),
            _ => ("nobody", "x"),
        };
        pool.try_submit(job(tag, user, pw)).expect("room for 200");
    }
    let mut seen = vec![false; N as usize];
    for _ in 0..N {
        let LdapReply { tag, groups } = pool
            .replies()
            .recv_timeout(Duration::from_secs(60))
            .expect("every job answered");
        assert!(!seen[tag as usize], "tag {tag} answered twice");
        seen[tag as usize] = true;
        match tag % 4 {
            0 => assert_eq!(groups.map(|g| g.len()), Some(3), "tag {tag}"),
            1 => assert_eq!(groups.map(|g| g.len()), Some(2), "tag {tag}"),
            _ => assert_eq!(groups, None, "tag {tag}"),
        }
    }
    let took = t0.elapsed();
    eprintln!("{N} jobs in {took:?}");
    pool.shutdown();
    assert_eq!(wakes.load(Ordering::SeqCst), N as usize);
}

#[test]
fn cache_answers_repeat_logins_but_not_wrong_passwords() {
    let mut server = Slapd::start();
    let pool = start(LdapSettings {
        cache_ttl: Duration::from_secs(60),
        ..settings(&server.uri)
    });
    let first = lookup(&pool, "alice", "alicepw");
    assert!(first.is_some());
    server.stop();
    // The directory is gone: the same credentials come from the cache...
    assert_eq!(lookup(&pool, "alice", "alicepw"), first);
    // ...different ones do not.
    assert_eq!(lookup(&pool, "alice", "other"), None);
    assert_eq!(lookup(&pool, "bob", "bobpw"), None);
}

#[test]
fn ldaps_with_private_ca() {
    let server = Slapd::start();
    let (Some(ldaps), Some(ca)) = (server.ldaps_uri.clone(), server.ca_file.clone()) else {
        panic!("no ldaps listener: is openssl installed?");
    };
    let pool = start(LdapSettings {
        ca_file: Some(ca),
        ..settings(&ldaps)
    });
    assert_eq!(
        lookup(&pool, "alice", "alicepw"),
        Some(sorted(&[slapd::ADMINS, slapd::DEVS, slapd::USERS[0].2]))
    );
    assert_eq!(lookup(&pool, "alice", "wrong"), None);
    drop(pool);
    // Not trusted without the CA: nothing is granted.
    let pool = start(settings(&ldaps));
    let t0 = Instant::now();
    assert_eq!(lookup(&pool, "alice", "alicepw"), None);
    assert!(t0.elapsed() < QUICK);
}

#[test]
fn shutdown_joins_workers_promptly() {
    let server = Slapd::start();
    let pool = start(LdapSettings {
        workers: 3,
        ..settings(&server.uri)
    });
    assert!(lookup(&pool, "alice", "alicepw").is_some());
    let t0 = Instant::now();
    pool.shutdown();
    assert!(t0.elapsed() < QUICK, "{:?}", t0.elapsed());
}
