//! `wait_stopped`: a SIGSTOP that has taken effect. Standard library
//! only: ldap-worker's tests include this file with `#[path]` for the
//! slapd harness.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Waits (at most 5 s) until every thread of `pid` is stopped. `kill`
/// returns once a SIGSTOP is queued, and on a VM a thread on the other
/// vCPU can run on for milliseconds: a test that means "hung" must not go
/// on before (seen: slapd answering after its SIGSTOP).
pub fn wait_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the command name's closing parenthesis.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim().chars().next());
        if state == Some('T') || state.is_none() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} not stopped (state {state:?})"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
