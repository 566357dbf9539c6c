//! The admin listener's status page in a real browser: Debian's `chromium`
//! driven by `playwright-core` (tests/browser/status_page.mjs). The page
//! loads, shows published events in its tail and moving counters, never a
//! private event, and logs no console error.
//!
//! Needs node, `npm install` in tests/browser and /usr/bin/chromium (what
//! `.ci/run` installs): under `CI` their absence fails the test, elsewhere
//! it is skipped. `PUBSUBD_SCREENSHOT=path` also saves a screenshot (how
//! docs/status-page.png is made).
#![cfg(feature = "admin")] // the status page is on the admin listener

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// The admin listener's page URL.
fn admin_url(srv: &Server) -> String {
    format!("http://{}/", srv.admin_addr())
}

#[test]
fn status_page_in_chromium() {
    let Some(dir) = browser_scripts() else {
        return;
    };
    let srv = Server::builder()
        .server("admin: {bind: 127.0.0.1, port: 0}")
        .server("ping_interval: 30s")
        .start();
    let admin = admin_url(&srv);
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("status_page.mjs"))
        .arg(&admin)
        .arg(format!("http://{}", srv.addr));
    if let Some(shot) = std::env::var_os("PUBSUBD_SCREENSHOT") {
        cmd.arg(shot);
    }
    let (status, stdout, stderr) = output_within(&mut cmd, Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "browser test failed ({status:?})\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}",
        srv.log()
    );
    assert!(stdout.contains("status page OK"), "{stdout}");
}
