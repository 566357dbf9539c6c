//! Child processes other than the server: `Reaped` (killed by PID and reaped
//! on drop), signals by PID, running a program to completion within a bound,
//! and finding the Python interpreter for the interoperability tests.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::{wait_child, TempDir, BIN};

/// Runs `pubsubd ARGS` to completion (bounded); returns (status, stdout, stderr).
pub fn run_to_exit(args: &[&str], timeout: Duration) -> (Option<ExitStatus>, String, String) {
    let dir = TempDir::new();
    output_within(
        Command::new(BIN)
            .args(args)
            .current_dir(dir.path())
            .env_remove("RUST_LOG"),
        timeout,
    )
}

/// Sends `sig` (e.g. "TERM") to a child that has not been reaped yet; a
/// "STOP" returns once the process is stopped ([`wait_stopped`]).
pub fn signal_child(child: &mut Child, sig: &str) {
    if let Ok(None) = child.try_wait() {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if sig == "STOP" {
            super::wait_stopped(child.id());
        }
    }
}

/// A child process killed (by PID) and reaped on drop.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `sig` (e.g. "STOP") to `pid` and asserts `kill` succeeded.
pub fn signal_pid(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid}");
    if sig == "STOP" {
        super::wait_stopped(pid);
    }
}

/// Runs `cmd` (stdin null, stdout and stderr captured) to completion within
/// `timeout`: `(status, stdout, stderr)`, status `None` if it had to be killed.
pub fn output_within(cmd: &mut Command, timeout: Duration) -> (Option<ExitStatus>, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let read_all = |r: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let to = read_all(
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn Read + Send>),
    );
    let te = read_all(
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn Read + Send>),
    );
    let status = wait_child(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    (
        status,
        to.join().unwrap_or_default(),
        te.join().unwrap_or_default(),
    )
}

/// Spawns `cmd` with stdout piped into a channel, one line per message, and
/// stderr echoed to the test's stderr as `[tag] line`. Killed on drop.
pub fn spawn_lines(cmd: &mut Command, tag: &str) -> (Reaped, mpsc::Receiver<String>) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let out = child.stdout.take().expect("piped stdout");
    let err = child.stderr.take().expect("piped stderr");
    let tag = tag.to_string();
    thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("[{tag}] {line}");
        }
    });
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Reaped(child), rx)
}

/// The child's stdout, one line per message (its stdout must be piped).
pub fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Whether `curl` runs here; without it a test is skipped, except under
/// `CI`, where it fails.
pub fn have_curl() -> bool {
    let ok = Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "curl is not installed");
        eprintln!("skipped: curl is not installed");
    }
    ok
}

/// `tests/python/NAME` in the package.
pub fn python_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// The Python interpreter for the interoperability tests, if it can import
/// every module in `imports`: `$PUBSUBD_PYTHON`, else `.venv/bin/python` in
/// the package. Without one the test is skipped (`None`, with a note on
/// stderr), except under `CI`, where it fails.
pub fn python_with(test: &str, imports: &[&str]) -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let py = match std::env::var_os("PUBSUBD_PYTHON") {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            assert!(p.exists(), "PUBSUBD_PYTHON={} does not exist", p.display());
            p
        }
        _ => venv,
    };
    let check = format!("import {}", imports.join(", "));
    let ok = py.exists()
        && Command::new(&py)
            .args(["-c", &check])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if ok {
        return Some(py);
    }
    let why = format!(
        "{test}: `{check}` fails with {} (set PUBSUBD_PYTHON or pip install -r \
         tests/python/requirements.txt)",
        py.display()
    );
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("skipped: {why}");
    None
}

/// tests/browser, when its scripts can run: node's `playwright-core`
/// installed there (`npm install`) and /usr/bin/chromium. Without them the
/// browser tests are skipped, except under `CI` (where .ci/run installs
/// them), where their absence fails the test.
pub fn browser_scripts() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let ready = dir.join("node_modules/playwright-core").exists()
        && Path::new("/usr/bin/chromium").exists();
    if ready {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the browser test needs chromium and `npm install` in tests/browser"
    );
    eprintln!("skipped: no chromium or playwright-core (see .ci/run)");
    None
}
