//! Configuration and CLI, black-box: a value of the wrong type fails
//! start-up with a non-zero exit and the key's name in the output; an
//! unknown key only warns (naming it); bad durations, CIDRs and YAML fail; a
//! missing ACL file is fine; `--help` and `--version`.

mod common;

use std::time::Duration;

use common::*;

/// Asserts start-up fails by itself, non-zero, with `needle` in the output.
fn must_fail(b: Builder, needle: &str) {
    let yaml = b.config_yaml();
    match b.try_start() {
        Ok(_) => panic!("started despite a bad {needle}:\n{yaml}"),
        Err(e) => {
            let st = e
                .status
                .unwrap_or_else(|| panic!("neither started nor exited:\n{yaml}\n{}", e.log));
            assert!(!st.success(), "exit status {st:?} for a bad {needle}");
            assert!(
                e.log.contains(needle),
                "the error does not name {needle:?}; config:\n{yaml}\noutput:\n{}",
                e.log
            );
        }
    }
}

fn raw(server: &str, clients: &str) -> Builder {
    Server::builder().raw_config(&format!(
        "server:\n  bind: \"127.0.0.1\"\n{server}clients:\n{clients}"
    ))
}

#[test]
fn wrong_type_port() {
    must_fail(
        raw(
            "  port: \"not a port\"\n",
            "  payloaders: [\"127.0.0.1/32\"]\n",
        ),
        "port",
    );
}

#[test]
fn wrong_types_under_server_name_the_key() {
    for (line, key) in [
        ("max_payload_size: [1, 2]", "max_payload_size"),
        ("max_connections: lots", "max_connections"),
        ("max_queued_bytes: {a: 1}", "max_queued_bytes"),
        ("max_headers: -3", "max_headers"),
        ("ping_interval: [5]", "ping_interval"),
    ] {
        must_fail(Server::builder().server(line), key);
    }
}

#[test]
fn wrong_types_under_clients_name_the_key() {
    must_fail(raw("  port: 0\n", "  payloaders: 5\n"), "payloaders");
    must_fail(
        Server::builder().clients("oldschoolers: {a: b}"),
        "oldschoolers",
    );
}

#[test]
fn bad_duration_string_fails() {
    must_fail(
        Server::builder().server("ping_interval: \"fast\""),
        "ping_interval",
    );
    must_fail(
        Server::builder().server("write_timeout: \"soon\""),
        "write_timeout",
    );
}

#[test]
fn bad_cidr_fails() {
    let b = raw("  port: 0\n", "  payloaders: [\"300.1.2.3/8\"]\n");
    let yaml = b.config_yaml();
    let e = b
        .try_start()
        .err()
        .unwrap_or_else(|| panic!("started with a bad CIDR:\n{yaml}"));
    let st = e.status.expect("exited by itself");
    assert!(!st.success());
    assert!(
        e.log.contains("300.1.2.3") || e.log.contains("payloaders"),
        "the error names neither the value nor the key:\n{}",
        e.log
    );
}

#[test]
fn malformed_yaml_fails() {
    let b = Server::builder().raw_config("server: [unclosed\n  port: 0\n");
    let e = b.try_start().err().expect("started with malformed YAML");
    let st = e.status.expect("exited by itself");
    assert!(!st.success(), "{st:?}");
}

#[test]
fn unknown_key_warns_and_starts() {
    let srv = Server::builder()
        .server("frobnicate_level: 11")
        .clients("wibble_list: [a]")
        .start();
    srv.publish("/a", "{}").assert(202, MSG_ACCEPTED);
    let log = srv.log();
    assert!(
        log.contains("frobnicate_level"),
        "no warning naming the key:\n{log}"
    );
    assert!(
        log.contains("wibble_list"),
        "no warning naming the key:\n{log}"
    );
}

#[test]
fn durations_accept_numbers_and_strings() {
    let srv = Server::builder()
        .server("ping_interval: \"5s\"\nwrite_timeout: 0.5\nrequest_timeout: \"10s\"")
        .start();
    srv.head("/").assert_std_headers();
}

#[test]
fn missing_acl_file_is_fine() {
    // the harness always passes --acl DIR/pypubsub_acl.yaml; here it does not exist
    let srv = Server::start("");
    assert!(!srv.dir().join("pypubsub_acl.yaml").exists());
    srv.publish("/a", "{}").assert(202, MSG_ACCEPTED);
}

#[test]
fn help_prints_usage() {
    let (st, out, err) = run_to_exit(&["--help"], Duration::from_secs(5));
    let st = st.expect("--help exits");
    assert_eq!(st.code(), Some(0), "{out}{err}");
    assert!(
        out.contains("--config") || err.contains("--config"),
        "usage lacks --config:\n{out}{err}"
    );
    assert!(
        out.contains("--acl") || err.contains("--acl"),
        "usage lacks --acl:\n{out}{err}"
    );
}

#[test]
fn version_prints_name() {
    let (st, out, err) = run_to_exit(&["--version"], Duration::from_secs(5));
    let st = st.expect("--version exits");
    assert_eq!(st.code(), Some(0), "{out}{err}");
    let text = format!("{out}{err}");
    assert!(text.contains("pubsubd"), "{text}");
    assert!(text.contains(VERSION), "{text}");
}

#[test]
fn unknown_argument_fails() {
    let (st, out, err) = run_to_exit(&["--no-such-flag"], Duration::from_secs(5));
    let st = st.expect("exits");
    assert!(!st.success(), "{out}{err}");
}
