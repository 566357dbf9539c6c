//! `--ready-file`, black-box: once the server listens, the file names its
//! PID and every bound address (plain, TLS, admin: each one answers), one
//! listener per line; a file already at the path is replaced; a path that
//! cannot be written stops the start with exit 1 before anything is
//! announced (no "listening on", no READY=1 to systemd); a clean exit
//! removes the file, but only while it is still this process's.
//!
//! (Every other black-box test starts its server through the same file:
//! the harness reads nothing else to find the server.)

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;

use common::*;

/// A datagram socket standing in for systemd's notify socket.
fn notify_socket(dir: &Path) -> (UnixDatagram, String) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    (socket, path.display().to_string())
}

#[test]
fn the_file_names_the_process_and_every_listener() {
    let dir = TempDir::new();
    let (notify, notify_path) = notify_socket(dir.path());
    let ready_path = dir.path().join("ready.json");
    #[allow(unused_mut)] // without the admin and tls features
    let mut b = Server::builder()
        .ready_file(&ready_path)
        .env("NOTIFY_SOCKET", &notify_path);
    #[cfg(feature = "admin")]
    {
        b = b.server("admin: {bind: 127.0.0.1, port: 0}");
    }
    #[cfg(feature = "tls")]
    let ca = Ca::new("ready");
    #[cfg(feature = "tls")]
    {
        let (cert, key) = ca.leaf();
        let cert = dir.write("cert.pem", &cert);
        let key = dir.write("key.pem", &key);
        b = b.server(&format!(
            "tls: {{port: 0, cert: \"{}\", key: \"{}\"}}",
            cert.display(),
            key.display()
        ));
    }
    let srv = b.start();

    // systemd is told too (that it is told only after the file is
    // written is shown below: no file, no READY=1).
    notify
        .set_read_timeout(Some(T))
        .expect("notify socket timeout");
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 on the notify socket");
    assert_eq!(&buf[..n], b"READY=1");

    let ready = srv.ready();
    assert_eq!(ready.pid, srv.pid());
    let kinds: Vec<&str> = ready.listeners.iter().map(|(k, _)| k.as_str()).collect();
    let mut expected = vec!["plain"];
    if cfg!(feature = "tls") {
        expected.push("tls");
    }
    if cfg!(feature = "admin") {
        expected.push("admin");
    }
    assert_eq!(kinds, expected, "{ready:?}");
    assert_eq!(ready.addr("plain"), Some(srv.addr));
    for (_, addr) in &ready.listeners {
        assert_eq!(addr.ip().to_string(), "127.0.0.1", "{ready:?}");
        assert_ne!(addr.port(), 0, "{ready:?}");
    }
    // One listener per line, keys in a fixed order: what the scripts' sed
    // reads (tests/common/harness.sh).
    let text = std::fs::read_to_string(&ready_path).expect("read the ready file");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), ready.listeners.len() + 2, "{text}");
    assert_eq!(
        lines[0],
        format!("{{\"pid\": {}, \"listeners\": [", srv.pid())
    );
    for (line, (kind, addr)) in lines[1..].iter().zip(&ready.listeners) {
        let line = line.trim_end_matches(',');
        assert_eq!(
            line,
            format!("  {{\"kind\": \"{kind}\", \"addr\": \"{addr}\"}}")
        );
    }
    assert_eq!(lines[lines.len() - 1], "]}");

    // Every address answers what it speaks.
    srv.head("/").assert(204, "");
    #[cfg(feature = "admin")]
    assert_eq!(srv.admin_get("/healthz").status, 200);
    #[cfg(feature = "tls")]
    {
        let tls = srv.tls_addr().expect("a TLS listener");
        let (status, out, err) = output_within(
            std::process::Command::new("curl")
                .args(["-sS", "--noproxy", "*", "--max-time", "5", "-I", "--cacert"])
                .arg(dir.write("ca.pem", &ca.pem))
                .arg(format!("https://localhost:{}/", tls.port())),
            std::time::Duration::from_secs(10),
        );
        assert!(status.is_some_and(|s| s.success()), "curl: {err}");
        assert!(out.starts_with("HTTP/1.1 204"), "{out}");
    }
}

#[test]
fn a_file_already_there_is_replaced() {
    let dir = TempDir::new();
    let path = dir.write(
        "ready.json",
        "{\"pid\": 1, \"listeners\": [\n  {\"kind\": \"plain\", \"addr\": \"127.0.0.1:1\"}\n]}\n",
    );
    // The harness waits for a file naming the new process.
    let srv = Server::builder().ready_file(&path).start();
    assert_eq!(srv.ready().pid, srv.pid());
    assert_ne!(srv.port(), 1);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["ready.json"], "no temporary file left behind");
}

#[test]
fn a_path_that_cannot_be_written_stops_the_start() {
    let dir = TempDir::new();
    let (notify, notify_path) = notify_socket(dir.path());
    for path in [
        dir.path().join("no-such-dir").join("ready.json"),
        dir.path().to_path_buf(), // a directory
    ] {
        let e = match Server::builder()
            .ready_file(&path)
            .env("NOTIFY_SOCKET", &notify_path)
            .try_start()
        {
            Ok(_) => panic!("started with the ready file {}", path.display()),
            Err(e) => e,
        };
        assert_eq!(e.status.and_then(|s| s.code()), Some(1), "{}", e.log);
        let message = format!("cannot write the ready file {}", path.display());
        assert!(e.log.contains(&message), "{}", e.log);
        // Nothing was announced: not in the log, not to systemd.
        assert!(!e.log.contains("listening on"), "{}", e.log);
        notify.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 64];
        assert!(notify.recv(&mut buf).is_err(), "READY=1 was sent");
    }
}

#[test]
fn a_clean_exit_removes_only_its_own_file() {
    let dir = TempDir::new();
    let path = dir.path().join("ready.json");
    let mut a = Server::builder().ready_file(&path).start();
    a.signal("TERM");
    assert_eq!(
        a.wait_exit(T).and_then(|s| s.code()),
        Some(0),
        "{}",
        a.log()
    );
    assert!(!path.exists(), "SIGTERM left the ready file");

    // A second server takes the path over while the first still runs: the
    // first one's exit leaves the second one's file alone.
    let mut first = Server::builder().ready_file(&path).start();
    let second = Server::builder().ready_file(&path).start();
    first.signal("TERM");
    assert_eq!(first.wait_exit(T).and_then(|s| s.code()), Some(0));
    assert_eq!(Ready::read(&path).map(|r| r.pid), Some(second.pid()));

    // kill -9 leaves it (naming a process that is gone).
    let mut killed = Server::builder()
        .ready_file(&dir.path().join("k.json"))
        .start();
    killed.signal("KILL");
    assert!(killed.wait_exit(T).is_some());
    let left = Ready::read(&dir.path().join("k.json")).expect("the file is still there");
    assert_eq!(left.pid, killed.pid());
}
