//! The ready file (`pubsubd --ready-file PATH`): once every listener is
//! bound and the server has started, where it listens, for whoever started
//! it on port 0 (tests, scripts) to read instead of the log:
//!
//! ```text
//! {"pid": 1234, "listeners": [
//!   {"kind": "plain", "addr": "127.0.0.1:40123"},
//!   {"kind": "tls", "addr": "127.0.0.1:40124"},
//!   {"kind": "admin", "addr": "127.0.0.1:2099"}
//! ]}
//! ```
//!
//! JSON, one listener per line in the order plain, TLS, admin (only those
//! that are bound), so that a shell script can take an address with `sed`.
//! `addr` is what `SocketAddr` prints (`[::1]:40123` for IPv6).
//!
//! Invariants: a reader sees no file or the whole file, never part of one
//! (it is written to a temporary file in the same directory, then renamed
//! over `PATH`, replacing whatever was there); `remove_if_ours` removes it
//! only while it is still the file this process wrote, so a server that
//! took the path over keeps its file.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::listeners::ListenerKind;

/// The file's text for process `pid` listening on `listeners`. Written by
/// hand, not through serde_json, to keep the layout a shell can read; no
/// escaping is needed: kinds are fixed words and a `SocketAddr` prints only
/// digits, hex digits, `.`, `:`, `[`, `]` and `%`.
pub fn render(pid: u32, listeners: &[(SocketAddr, ListenerKind)]) -> String {
    let lines: Vec<String> = listeners
        .iter()
        .map(|(addr, kind)| format!("  {{\"kind\": \"{}\", \"addr\": \"{addr}\"}}", kind.name()))
        .collect();
    format!(
        "{{\"pid\": {pid}, \"listeners\": [\n{}\n]}}\n",
        lines.join(",\n")
    )
}

/// Writes the file for this process at `path`, atomically.
pub fn write(path: &Path, listeners: &[(SocketAddr, ListenerKind)]) -> io::Result<()> {
    let text = render(std::process::id(), listeners);
    let tmp = temp_path(path)?;
    let written = (|| {
        let mut file = create_new(&tmp)?;
        // No fsync: the file describes this run only; after a crash it
        // is stale whatever is on the disk.
        file.write_all(text.as_bytes())?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Removes the file at `path` if it is still the one `write` made for this
/// process on `listeners` (a clean exit); true if it did.
pub fn remove_if_ours(path: &Path, listeners: &[(SocketAddr, ListenerKind)]) -> io::Result<bool> {
    match fs::read_to_string(path) {
        Ok(text) if text == render(std::process::id(), listeners) => {
            fs::remove_file(path)?;
            Ok(true)
        }
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// `.NAME.PID.tmp` beside `path`: the same file system, so the rename is
/// atomic.
fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let tmp = format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id());
    Ok(path.with_file_name(tmp))
}

/// A new file (`O_EXCL`: never through a link someone left at that name);
/// a leftover of an earlier process with our PID is removed first.
fn create_new(path: &Path) -> io::Result<fs::File> {
    let open = || OpenOptions::new().write(true).create_new(true).open(path);
    match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(path)?;
            open()
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> Vec<(SocketAddr, ListenerKind)> {
        vec![
            ("127.0.0.1:40123".parse().unwrap(), ListenerKind::Plain),
            ("[::1]:40124".parse().unwrap(), ListenerKind::Tls),
            ("127.0.0.1:2099".parse().unwrap(), ListenerKind::Admin),
        ]
    }

    #[test]
    fn one_listener_per_line_and_valid_json() {
        let text = render(1234, &addrs());
        assert_eq!(
            text,
            "{\"pid\": 1234, \"listeners\": [\n\
             \x20 {\"kind\": \"plain\", \"addr\": \"127.0.0.1:40123\"},\n\
             \x20 {\"kind\": \"tls\", \"addr\": \"[::1]:40124\"},\n\
             \x20 {\"kind\": \"admin\", \"addr\": \"127.0.0.1:2099\"}\n\
             ]}\n"
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["pid"], 1234);
        assert_eq!(v["listeners"][1]["addr"], "[::1]:40124");
        let one = render(7, &addrs()[..1]);
        assert!(
            serde_json::from_str::<serde_json::Value>(&one).is_ok(),
            "{one}"
        );
    }

    #[test]
    fn written_replaced_and_removed_only_while_ours() {
        let dir = std::env::temp_dir().join(format!("pubsubd-ready-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ready.json");
        fs::write(&path, "stale").unwrap();
        // A leftover temporary file of ours does not stop the write.
        fs::write(temp_path(&path).unwrap(), "half").unwrap();
        write(&path, &addrs()).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            render(std::process::id(), &addrs())
        );
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        assert!(remove_if_ours(&path, &addrs()).unwrap());
        assert!(!path.exists());
        assert!(!remove_if_ours(&path, &addrs()).unwrap(), "already gone");
        // Another process's file stays.
        fs::write(&path, render(std::process::id() + 1, &addrs())).unwrap();
        assert!(!remove_if_ours(&path, &addrs()).unwrap());
        assert!(path.exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
