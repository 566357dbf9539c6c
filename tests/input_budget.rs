//! The global input budget (`server.max_input_bytes`) on the wire: many
//! clients that each start a large publish and stall cannot grow the server
//! past the budget, and a small publish still gets its 202 at once.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// Lifts this test process's open-files limit to the hard limit.
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    limit.rlim_cur
}

#[test]
fn stalled_large_uploads_stay_within_the_budget() {
    const UPLOADS: usize = 3000;
    if raise_fd_limit() < (UPLOADS as u64) * 2 + 200 {
        eprintln!("skipped: the open-files limit is too low for {UPLOADS} uploads");
        return;
    }
    let srv = Server::builder()
        .server("max_input_bytes: 8388608")
        .server("max_payload_size: 102400")
        .start();
    // Settle the allocator with one publish before measuring.
    srv.publish("/warm", "{}").assert(202, MSG_ACCEPTED);
    let before = srv.rss_kib().expect("RSS");
    let mut head =
        b"PUT /big/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".to_vec();
    head.extend_from_slice(&[b'x'; 60_000]);
    let mut socks = Vec::with_capacity(UPLOADS);
    let deadline = Instant::now() + Duration::from_secs(60);
    for _ in 0..UPLOADS {
        assert!(Instant::now() < deadline, "uploads took too long");
        let mut s = TcpStream::connect(srv.addr).expect("connect");
        s.set_write_timeout(Some(T)).expect("timeout");
        // The server may answer 503 and close before all 60 KB are in.
        let _ = s.write_all(&head);
        socks.push(s);
    }
    // Every upload is in (or refused) once a request behind them is answered.
    let t0 = Instant::now();
    srv.publish("/small", r#"{"n": 1}"#)
        .assert(202, MSG_ACCEPTED);
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "a small publish waited {:?}",
        t0.elapsed()
    );
    let grown_kib = srv.rss_kib().expect("RSS").saturating_sub(before);
    assert!(
        grown_kib <= 24 * 1024,
        "RSS grew by {grown_kib} KiB for {UPLOADS} stalled 60 KB uploads"
    );
    eprintln!("RSS grew by {grown_kib} KiB for {UPLOADS} stalled 60 KB uploads");
    drop(socks);
}
