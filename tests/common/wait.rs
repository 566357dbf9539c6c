//! Bounded waiting: poll a condition or a child process until it holds or a
//! deadline passes. The short sleeps here are the polling interval, not a
//! guess at how long something takes.

use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

/// Polls `cond` every few milliseconds until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        // poll interval
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for `child` to exit, at most `timeout`.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        // poll interval
        thread::sleep(Duration::from_millis(10));
    }
}
