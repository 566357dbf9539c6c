//! `pubsubd --check-config`, black-box: a good configuration (the reference
//! keys, TLS, admin, LDAP) exits 0 with `configuration OK`, binding and
//! connecting to nothing and writing no backlog file; a bad value, a missing
//! TLS file, an invalid ACL file and a missing config file each exit 1
//! naming what is wrong; without `--config` the embedded default is checked.
//! Also the exact `--version` line and `--help`.
#![cfg(all(feature = "admin", feature = "ldap", feature = "tls"))] // its full config has every section

mod common;

use std::io;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const RUN: Duration = Duration::from_secs(8);

/// `pubsubd --check-config --config CFG --acl ACL` in `dir`: (exit code, stdout, stderr).
fn check(dir: &Path, cfg: &Path, acl: &Path) -> (Option<i32>, String, String) {
    let (st, out, err) = output_within(
        Command::new(BIN)
            .arg("--check-config")
            .arg("--config")
            .arg(cfg)
            .arg("--acl")
            .arg(acl)
            .current_dir(dir)
            .env_remove("RUST_LOG"),
        RUN,
    );
    let st = st.unwrap_or_else(|| panic!("--check-config did not exit within {RUN:?}"));
    (st.code(), out, err)
}

const ACL: &str = "alice:\n  password: pw\n  acl:\n    a: [x]\n";

#[test]
fn good_config_is_ok_and_binds_and_connects_nothing() {
    let dir = TempDir::new();
    // Held by this test for the whole check: binding either would fail,
    // and a connection to the "LDAP server" would show up in its queue.
    let public = TcpListener::bind("127.0.0.1:0").expect("bind");
    let admin = TcpListener::bind("127.0.0.1:0").expect("bind");
    let tls = TcpListener::bind("127.0.0.1:0").expect("bind");
    let ldap = TcpListener::bind("127.0.0.1:0").expect("bind");
    ldap.set_nonblocking(true).expect("nonblocking");
    let port = |l: &TcpListener| l.local_addr().expect("addr").port();
    let (cert, key) = self_signed();
    let cert_path = dir.write("cert.pem", &cert);
    let key_path = dir.write("key.pem", &key);
    let storage = dir.path().join("backlog.json");
    let cfg = dir.write(
        "pypubsub.yaml",
        &format!(
            "server:
  bind: 127.0.0.1
  port: {public}
  max_payload_size: 102400
  backlog: {{size: 100, max_age: 48h, storage: {storage}}}
  tls: {{port: {tls}, cert: {cert}, key: {key}}}
  admin: {{bind: 127.0.0.1, port: {admin}}}
clients:
  payloaders: [127.0.0.1/24, \"::1/128\"]
  oldschoolers: [svnwcsub]
  secure_topics: [deploy]
  cors_origins: [\"https://status.example.org\"]
  ldap:
    uri: ldap://127.0.0.1:{ldap}
    user_dn: \"uid=%s,ou=people,dc=example,dc=org\"
    base_scope: \"dc=example,dc=org\"
    timeout: 1
    acl:
      \"cn=x,dc=example,dc=org\": [x]
",
            public = port(&public),
            admin = port(&admin),
            tls = port(&tls),
            ldap = port(&ldap),
            storage = storage.display(),
            cert = cert_path.display(),
            key = key_path.display(),
        ),
    );
    let acl = dir.write("pypubsub_acl.yaml", ACL);
    let (code, out, err) = check(dir.path(), &cfg, &acl);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.trim_end().ends_with("configuration OK"),
        "stdout:\n{out}"
    );
    for want in [
        "backlog of 100 events",
        "TLS on port",
        "(compact record layer)",
        "admin listener on 127.0.0.1:",
        "LDAP: ldap://127.0.0.1:",
        "ACL: 1 users",
    ] {
        assert!(out.contains(want), "no {want:?} in stdout:\n{out}");
    }
    match ldap.accept() {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        other => panic!("--check-config connected to LDAP: {other:?}"),
    }
    assert!(!storage.exists(), "--check-config wrote the backlog file");
}

#[test]
fn bad_value_names_file_and_key() {
    let dir = TempDir::new();
    let cfg = dir.write("pypubsub.yaml", "server:\n  port: [1]\n");
    let acl = dir.write("pypubsub_acl.yaml", ACL);
    let (code, out, err) = check(dir.path(), &cfg, &acl);
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    let want = format!("{}: server.port: ", cfg.display());
    assert!(
        err.starts_with(&want),
        "stderr should start {want:?}:\n{err}"
    );
    assert!(!out.contains("configuration OK"), "{out}");
}

#[test]
fn missing_tls_cert_is_named() {
    let dir = TempDir::new();
    let (_, key) = self_signed();
    let key_path = dir.write("key.pem", &key);
    let missing = dir.path().join("no-such-cert.pem");
    let cfg = dir.write(
        "pypubsub.yaml",
        &format!(
            "server:\n  port: 0\n  tls: {{port: 0, cert: {}, key: {}}}\n",
            missing.display(),
            key_path.display()
        ),
    );
    let acl = dir.write("pypubsub_acl.yaml", ACL);
    let (code, out, err) = check(dir.path(), &cfg, &acl);
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("no-such-cert.pem"), "stderr:\n{err}");
}

#[test]
fn invalid_acl_file_fails() {
    let dir = TempDir::new();
    let cfg = dir.write("pypubsub.yaml", "server:\n  port: 0\n");
    let acl = dir.write("pypubsub_acl.yaml", "- a\n- list\n");
    let (code, out, err) = check(dir.path(), &cfg, &acl);
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("pypubsub_acl.yaml"), "stderr:\n{err}");
    // The same files with a good ACL pass: the ACL was the problem.
    let acl = dir.write("pypubsub_acl.yaml", ACL);
    let (code, out, err) = check(dir.path(), &cfg, &acl);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
}

#[test]
fn version_line_and_help() {
    let (st, out, err) = run_to_exit(&["--version"], RUN);
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{err}");
    assert_eq!(out, format!("pubsubd {VERSION}\n"));
    let (st, out, err) = run_to_exit(&["--help"], RUN);
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{err}");
    assert!(out.contains("--check-config"), "{out}");
}

#[test]
fn without_a_file_the_embedded_default_is_checked() {
    let dir = TempDir::new();
    let (st, out, err) = output_within(
        Command::new(BIN)
            .arg("--check-config")
            .current_dir(dir.path())
            .env_remove("RUST_LOG"),
        RUN,
    );
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{out}{err}");
    assert!(out.contains("built-in default"), "{out}");
    assert!(out.contains("admin listener on 127.0.0.1:2099"), "{out}");
    assert!(out.trim_end().ends_with("configuration OK"), "{out}");
}

#[test]
fn a_named_config_file_must_exist() {
    let dir = TempDir::new();
    let cfg = dir.path().join("nowhere.yaml");
    let acl = dir.write("pypubsub_acl.yaml", ACL);
    let (code, out, err) = check(dir.path(), &cfg, &acl);
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("nowhere.yaml"), "stderr:\n{err}");
}
