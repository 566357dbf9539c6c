//! Signed tokens (`clients.tokens`), black-box: HS256, RS256, ES256 and
//! EdDSA tokens (keys made by the `openssl` command, tokens signed with
//! `ring` by the test) open private streams and publish to secured topics;
//! expired, not yet valid, wrong issuer, wrong audience, `alg: none`,
//! algorithm confusion (HS256 signed with the public key's PEM) and a
//! truncated signature each get `401` with `WWW-Authenticate: Bearer
//! error="invalid_token"`, on a subscription and on a publish; the
//! cookie and the query parameter carry a token like the header; a stream
//! ends at its token's expiry with a last ping; SIGHUP reads the key again;
//! `--check-config` loads it; no token ever shows in the log.
#![cfg(feature = "tokens")]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::jwt::{b64, SigningKey};
use common::*;
use serde_json::{json, Value};

const SECRET: &str = "an HS256 secret of at least 32 bytes";
const ACL: &str = "alice: {password: pw, acl: {repos: [git]}, topics: [deploy]}\n";

/// A server accepting `key`'s tokens (its PEM in the server's dir), with
/// issuer and audience set, logging at debug.
fn server_for(key: &SigningKey, extra: &str) -> Server {
    let (builder, _key_dir) = builder_for(key, extra);
    builder.start()
}

/// `server_for`'s server, not started yet (for one with more settings), and
/// the directory holding its key, to keep until it has started.
fn builder_for(key: &SigningKey, extra: &str) -> (Builder, TempDir) {
    let dir = TempDir::new();
    let tokens = if key.public_pem.is_empty() {
        format!("secret: \"{SECRET}\"")
    } else {
        let path = dir.write("token.pub", &key.public_pem);
        format!("key: {}, algorithms: [{}]", path.display(), key.alg)
    };
    let builder = Server::builder()
        .server("log_level: debug")
        .clients("secure_topics: [deploy]")
        .clients(&format!(
            "tokens: {{{tokens}, issuer: https://id.test, audience: pubsub, \
             cookie: pubsub_token, query: access_token{extra}}}"
        ))
        .acl(ACL);
    (builder, dir)
}

fn claims(exp_in: f64) -> Value {
    json!({"iss": "https://id.test", "aud": "pubsub", "sub": "page",
           "exp": now_epoch() + exp_in,
           "pubsub": {"acl": {"s": ["git"]}, "topics": ["deploy"]}})
}

fn get(srv: &Server, path: &str, header: &str) -> Response {
    srv.request(
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n{header}Connection: close\r\n\r\n").as_bytes(),
    )
}

fn put(srv: &Server, path: &str, header: &str) -> Response {
    srv.request(
        format!("PUT {path} HTTP/1.1\r\nHost: t\r\n{header}Content-Length: 2\r\n\r\n{{}}")
            .as_bytes(),
    )
}

fn assert_invalid_token(r: &Response, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.head_str());
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some(r#"Bearer error="invalid_token""#),
        "{what}"
    );
    assert!(
        r.body_str().starts_with("Invalid token: "),
        "{what}: {}",
        r.body_str()
    );
}

/// Every refusal the issue lists, for `key`'s server.
fn forgeries(key: &SigningKey) -> Vec<(&'static str, String)> {
    let mut c = claims(600.0);
    let mut out = vec![];
    c["exp"] = json!(now_epoch() - 3600.0);
    out.push(("expired", key.token(&c)));
    let mut c = claims(600.0);
    c["nbf"] = json!(now_epoch() + 3600.0);
    out.push(("not yet valid", key.token(&c)));
    let mut c = claims(600.0);
    c["iss"] = json!("https://evil.test");
    out.push(("wrong issuer", key.token(&c)));
    let mut c = claims(600.0);
    c["aud"] = json!("other");
    out.push(("wrong audience", key.token(&c)));
    let body = b64(claims(600.0).to_string().as_bytes());
    out.push((
        "alg none",
        format!("{}.{body}.", b64(br#"{"alg":"none","typ":"JWT"}"#)),
    ));
    let confusion = if key.public_pem.is_empty() {
        // A public-key header against the secret.
        SigningKey::generate("RS256").token(&claims(600.0))
    } else {
        SigningKey::hmac("HS256", key.public_pem.as_bytes()).token(&claims(600.0))
    };
    out.push(("algorithm confusion", confusion));
    let good = key.token(&claims(600.0));
    out.push(("truncated signature", good[..good.len() - 8].to_owned()));
    out
}

#[test]
fn each_algorithm_grants_and_every_forgery_is_refused() {
    for key in [
        SigningKey::hmac("HS256", SECRET.as_bytes()),
        SigningKey::generate("RS256"),
        SigningKey::generate("ES256"),
        SigningKey::generate("EdDSA"),
    ] {
        let srv = server_for(&key, "");
        let alg = key.alg;
        let good = key.token(&claims(600.0));
        let bearer = format!("Bearer {good}");
        let mut private = srv.subscribe_with("/git", &[("Authorization", &bearer)]);
        let mut public = srv.subscribe("/git");
        srv.publish_ok("/private/git/a", &json!({"n": 1}));
        srv.publish_ok("/git/s", &sentinel());
        assert_eq!(private.ns_until_sentinel(), vec![1], "{alg}: private event");
        assert_eq!(public.ns_until_sentinel(), Vec::<u64>::new(), "{alg}");
        // A secured topic, from an address that may not publish otherwise:
        // the token's topics decide.
        let r = put(&srv, "/deploy/x", &format!("Authorization: {bearer}\r\n"));
        assert_eq!(r.status, 202, "{alg}: {}", r.body_str());
        assert_eq!(put(&srv, "/deploy/x", "").status, 403);
        for (what, bad) in forgeries(&key) {
            let what = format!("{alg}: {what}");
            let auth = format!("Authorization: Bearer {bad}\r\n");
            assert_invalid_token(&get(&srv, "/git", &auth), &what);
            assert_invalid_token(&put(&srv, "/deploy/x", &auth), &what);
            assert_invalid_token(
                &get(&srv, "/git", &format!("Cookie: pubsub_token={bad}\r\n")),
                &what,
            );
        }
        assert_eq!(
            srv.subscribers(),
            2,
            "{alg}: no refused request became a stream"
        );
        let log = srv.log();
        assert!(
            log.contains("token refused: expired"),
            "{alg}: the log says why"
        );
        for (_, bad) in forgeries(&key) {
            let signature = bad.rsplit('.').next().unwrap_or("");
            assert!(
                signature.len() < 8 || !log.contains(signature),
                "{alg}: a token in the log"
            );
        }
        assert!(
            !log.contains(good.rsplit('.').next().unwrap_or("-")),
            "{alg}: the token in the log"
        );
    }
}

#[test]
fn the_cookie_and_the_query_parameter_carry_a_token() {
    let key = SigningKey::generate("ES256");
    let srv = server_for(&key, "");
    let good = key.token(&claims(600.0));
    let mut by_cookie = srv.subscribe_with(
        "/git",
        &[("Cookie", &format!("theme=dark; pubsub_token={good}"))],
    );
    let mut by_query = srv.subscribe(&format!("/git?access_token={good}"));
    // sub naming an ACL user: alice's grant.
    let alice = key.token(
        &json!({"iss": "https://id.test", "aud": "pubsub", "sub": "alice",
                                  "exp": now_epoch() + 600.0}),
    );
    let mut as_alice = srv.subscribe(&format!("/git?access_token={alice}"));
    srv.publish_ok("/private/git/a", &json!({"n": 1}));
    srv.publish_ok("/git/s", &sentinel());
    for (s, how) in [
        (&mut by_cookie, "cookie"),
        (&mut by_query, "query"),
        (&mut as_alice, "sub"),
    ] {
        assert_eq!(s.ns_until_sentinel(), vec![1], "{how}");
    }
    assert!(
        !srv.log().contains(&good[good.len() - 20..]),
        "the token in the log"
    );
}

#[test]
fn a_stream_ends_with_a_last_ping_when_its_token_expires() {
    // The default leeway (30 s): the stream still ends at `exp`, and the
    // same token within the leeway gets a 401, not a stream that ends.
    let key = SigningKey::hmac("HS256", SECRET.as_bytes());
    let srv = server_for(&key, "");
    let token = key.token(&claims(1.0));
    let started = Instant::now();
    let mut sub = srv.subscribe_with("/git", &[("Authorization", &format!("Bearer {token}"))]);
    let mut last = None;
    loop {
        match sub.next_chunk(T) {
            Ok(Some(chunk)) => last = Some(parse_line(&chunk)),
            Ok(None) => break,
            Err(e) => panic!("the stream did not end: {e}"),
        }
    }
    let took = started.elapsed();
    let last = last.expect("a last chunk");
    assert!(is_ping(&last), "the last chunk is a ping: {last}");
    assert!(took >= Duration::from_millis(900), "ended early: {took:?}");
    assert!(took < Duration::from_secs(6), "ended late: {took:?}");
    // The same token again: refused from then on.
    assert_invalid_token(
        &get(&srv, "/git", &format!("Authorization: Bearer {token}\r\n")),
        "after",
    );
}

#[test]
fn sighup_reads_the_key_again() {
    let (old, new) = (SigningKey::generate("EdDSA"), SigningKey::generate("EdDSA"));
    let dir = TempDir::new();
    let path = dir.write("token.pub", &old.public_pem);
    let mut srv = Server::builder()
        .clients(&format!(
            "tokens: {{key: {}, algorithms: [EdDSA]}}",
            path.display()
        ))
        .acl(ACL)
        .start();
    let claims = json!({"exp": now_epoch() + 600.0, "pubsub": {"acl": {"s": ["git"]}}});
    let (old_token, new_token) = (old.token(&claims), new.token(&claims));
    let auth = |t: &str| format!("Authorization: Bearer {t}\r\n");
    let mut open = srv.subscribe_with("/git", &[("Authorization", &format!("Bearer {old_token}"))]);
    assert_invalid_token(
        &get(&srv, "/git", &auth(&new_token)),
        "the new key before SIGHUP",
    );
    std::fs::write(&path, &new.public_pem).expect("rotate the key");
    srv.signal("HUP");
    assert!(srv.wait_log("SIGHUP: tokens: EdDSA", T), "{}", srv.log());
    assert_invalid_token(
        &get(&srv, "/git", &auth(&old_token)),
        "the old key after SIGHUP",
    );
    let bearer = |t: &str| format!("Bearer {t}");
    srv.subscribe_with("/git", &[("Authorization", &bearer(&new_token))]);
    // A broken key file keeps the running key.
    std::fs::write(&path, "not a key").expect("write");
    srv.signal("HUP");
    assert!(
        srv.wait_log("keeping the running clients.tokens", T),
        "{}",
        srv.log()
    );
    srv.subscribe_with("/git", &[("Authorization", &bearer(&new_token))]);
    // The stream opened with the old key goes on.
    srv.publish_ok("/private/git/a", &json!({"n": 1}));
    srv.publish_ok("/git/s", &sentinel());
    assert_eq!(open.ns_until_sentinel(), vec![1]);
}

#[test]
fn check_config_loads_the_key() {
    let dir = TempDir::new();
    let key = SigningKey::generate("RS256");
    let good = dir.write("token.pub", &key.public_pem);
    let bad = dir.write(
        "bad.pub",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    );
    let acl = dir.write("acl.yaml", ACL);
    let run = |key: &std::path::Path, alg: &str| {
        let cfg = dir.write(
            "pypubsub.yaml",
            &format!(
                "clients:\n  tokens: {{key: {}, algorithms: [{alg}], cookie: t}}\n",
                key.display()
            ),
        );
        let (st, out, err) = output_within(
            Command::new(BIN)
                .args(["--check-config", "--config"])
                .arg(&cfg)
                .arg("--acl")
                .arg(&acl)
                .env_remove("RUST_LOG"),
            Duration::from_secs(8),
        );
        (st.and_then(|s| s.code()), out, err)
    };
    let (code, out, err) = run(&good, "RS256");
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("tokens: RS256 with 1 key from"), "{out}");
    let (code, _, err) = run(&bad, "RS256");
    assert_eq!(code, Some(1));
    assert!(
        err.contains("clients.tokens.key: ") && err.contains("bad.pub"),
        "{err}"
    );
    let (code, _, err) = run(&good, "ES256");
    assert_eq!(code, Some(1));
    assert!(err.contains("no key for ES256"), "{err}");
}

/// The same grants over a browser WebSocket, whose token can only travel in
/// the query string; the token never reaches the log.
#[cfg(feature = "websocket")]
#[test]
fn chromium_receives_private_events_over_websocket_with_the_query_token() {
    let Some(dir) = browser_scripts() else {
        return;
    };
    let key = SigningKey::hmac("HS256", SECRET.as_bytes());
    let (builder, _key_dir) = builder_for(&key, "");
    let srv = builder.server("backlog: {size: 100}").start();
    let good = key.token(&claims(600.0));
    let expired = key.token(&claims(-3600.0));
    let stdout = run_browser_page(&dir.join("ws_token.mjs"), &srv, &good, &expired);
    let log = srv.log();
    assert!(
        stdout.contains("WebSocket with a query token OK"),
        "{stdout}"
    );
    assert_eq!(log.matches("token refused: expired").count(), 1, "{log}");
    let signature = |t: &str| t.rsplit('.').next().unwrap_or_default().to_string();
    for t in [&good, &expired] {
        assert!(
            !log.contains(&signature(t)),
            "a token reached the log:\n{log}"
        );
    }
}

#[test]
fn chromium_receives_private_events_over_event_source_with_the_cookie() {
    let Some(dir) = browser_scripts() else {
        return;
    };
    let key = SigningKey::hmac("HS256", SECRET.as_bytes());
    let srv = server_for(&key, "");
    let good = key.token(&claims(600.0));
    let expired = key.token(&claims(-3600.0));
    let stdout = run_browser_page(&dir.join("sse_token.mjs"), &srv, &good, &expired);
    assert!(
        stdout.contains("EventSource with a token cookie OK"),
        "{stdout}"
    );
    let refused = srv.log().matches("token refused: expired").count();
    assert_eq!(refused, 1, "the expired page asked once, not in a loop");
}

/// Runs a browser page script against `srv` with a good and an expired
/// token; its stdout, or a failure with everything needed to see why.
fn run_browser_page(script: &std::path::Path, srv: &Server, good: &str, expired: &str) -> String {
    let (status, stdout, stderr) = output_within(
        Command::new("node")
            .arg(script)
            .arg(format!("http://{}", srv.addr))
            .arg(good)
            .arg(expired),
        Duration::from_secs(60),
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "browser test failed ({status:?})\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}",
        srv.log()
    );
    stdout
}

/// The `sh` block after `<!-- marker -->` in README.md.
fn readme_block(marker: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let after = readme
        .split_once(&format!("<!-- {marker} -->"))
        .unwrap_or_else(|| panic!("README.md has no {marker} marker"))
        .1;
    let block = after.split_once("```sh\n").expect("a sh block").1;
    block.split_once("```").expect("its end").0.to_owned()
}

/// Runs `script` with bash in `dir`; its last line of output.
fn last_line_of(dir: &std::path::Path, script: &str, python: Option<&std::path::Path>) -> String {
    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", script])
        .current_dir(dir);
    if let Some(py) = python {
        // `python3` in the recipe is the test's interpreter.
        let bin = py.parent().expect("a bin dir");
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", bin.display()));
    }
    let (status, out, err) = output_within(&mut cmd, Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "{script}\n{out}\n{err}"
    );
    out.lines().last().unwrap_or("").trim().to_owned()
}

#[test]
fn the_readme_recipes_mint_tokens_the_server_accepts() {
    let dir = TempDir::new();
    let token = last_line_of(dir.path(), &readme_block("mint-openssl"), None);
    let mut tokens = vec![("openssl", token)];
    let python = python_with("tokens README recipe", &["jwt"]);
    if let Some(py) = &python {
        let py_token = last_line_of(dir.path(), &readme_block("mint-python"), Some(py));
        tokens.push(("PyJWT", py_token));
    }
    let srv = Server::builder()
        .clients(&format!(
            "tokens: {{key: {}, algorithms: [EdDSA]}}",
            dir.path().join("token.pub").display()
        ))
        .start();
    for (how, token) in tokens {
        let mut sub = srv.subscribe_with("/foo", &[("Authorization", &format!("Bearer {token}"))]);
        srv.publish_ok("/private/internal/foo", &json!({"n": 1}));
        srv.publish_ok("/private/foo", &json!({"n": 2}));
        srv.publish_ok("/foo/s", &sentinel());
        assert_eq!(sub.ns_until_sentinel(), vec![1], "{how}");
    }
}
