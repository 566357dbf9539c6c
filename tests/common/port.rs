//! `free_port`: a loopback port nothing listens on right now, for a helper
//! server that must be told its port up front (moto, redis-server, slapd;
//! pubsubd itself binds port 0 and says where in its ready file). The one
//! copy: the harness re-exports it, and the Redis and LDAP harnesses take
//! it from their crate's root (ldap-worker's tests include this file with
//! `#[path]`: standard library only, no other harness module).
#![allow(dead_code)]

use std::net::TcpListener;

/// A port that was free a moment ago (bound on 127.0.0.1, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}
