//! CORS (`clients.cors_origins`), black-box: the `OPTIONS` preflight for a
//! listed and an unlisted origin, publishes and streams with either (CORS
//! never decides who may publish: the payloaders do), `*`, and no CORS at
//! all without the key (`OPTIONS` stays a 400).

mod common;

use common::*;
use serde_json::json;

const ORIGIN: &str = "https://status.example.org";
const OTHER: &str = "https://evil.example.com";

fn cors_server(origins: &str) -> Server {
    Server::builder()
        .clients(&format!("cors_origins: {origins}"))
        .start()
}

fn preflight(srv: &Server, origin: &str) -> Response {
    srv.request(
        format!(
            "OPTIONS /x HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\n\
             Access-Control-Request-Method: PUT\r\n\
             Access-Control-Request-Headers: content-type, authorization\r\n\r\n"
        )
        .as_bytes(),
    )
}

/// `PUT /x` with `{}` and this `Origin`, from the loopback address `from`.
fn put_with_origin(srv: &Server, from: &str, origin: &str) -> Response {
    let mut c = conn_from(srv, from);
    c.send(
        format!(
            "PUT /x HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\nContent-Type: application/json\r\n\
             Content-Length: 2\r\n\r\n{{}}"
        )
        .as_bytes(),
    );
    c.read_response(false, T).expect("a response to PUT")
}

/// Names of the `Access-Control-*` headers in `r`.
fn cors_headers(r: &Response) -> Vec<String> {
    r.headers
        .iter()
        .filter(|(k, _)| k.to_ascii_lowercase().starts_with("access-control-"))
        .map(|(k, _)| k.clone())
        .collect()
}

#[test]
fn preflight_for_a_listed_origin() {
    let srv = cors_server(&format!("[\"{ORIGIN}\"]"));
    let r = preflight(&srv, ORIGIN);
    assert_eq!(r.status, 204, "{:?}", r.head_str());
    r.assert_std_headers();
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some(ORIGIN));
    assert_eq!(r.header("Access-Control-Allow-Credentials"), Some("true"));
    let methods = r.header("Access-Control-Allow-Methods").unwrap_or("");
    for m in ["PUT", "POST", "GET"] {
        assert!(methods.split(',').any(|x| x.trim() == m), "{methods:?}");
    }
    let headers = r
        .header("Access-Control-Allow-Headers")
        .unwrap_or("")
        .to_ascii_lowercase();
    for h in ["authorization", "content-type", "last-event-id"] {
        assert!(headers.contains(h), "{h} not in {headers:?}");
    }
    let max_age: u64 = r
        .header("Access-Control-Max-Age")
        .and_then(|v| v.parse().ok())
        .expect("a numeric Access-Control-Max-Age");
    assert!(max_age > 0);
}

#[test]
fn preflight_for_an_unlisted_origin_has_no_cors_headers() {
    let srv = cors_server(&format!("[\"{ORIGIN}\"]"));
    let r = preflight(&srv, OTHER);
    assert_eq!(r.status, 204, "{:?}", r.head_str());
    assert_eq!(cors_headers(&r), Vec::<String>::new(), "{:?}", r.head_str());
    // Not a prefix match either.
    let r = preflight(&srv, &format!("{ORIGIN}.evil.com"));
    assert_eq!(cors_headers(&r), Vec::<String>::new(), "{:?}", r.head_str());
}

#[test]
fn publishes_get_cors_headers_but_payloaders_decide() {
    let srv = cors_server(&format!("[\"{ORIGIN}\"]"));
    let r = put_with_origin(&srv, "127.0.0.1", ORIGIN);
    r.assert(202, MSG_ACCEPTED);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some(ORIGIN));
    assert_eq!(r.header("Access-Control-Allow-Credentials"), Some("true"));

    let r = put_with_origin(&srv, "127.0.0.1", OTHER);
    r.assert(202, MSG_ACCEPTED);
    assert_eq!(cors_headers(&r), Vec::<String>::new(), "{:?}", r.head_str());

    // A listed origin does not make 127.0.0.2 a payloader.
    let r = put_with_origin(&srv, "127.0.0.2", ORIGIN);
    r.assert(403, MSG_FORBIDDEN);
    let r = put_with_origin(&srv, "127.0.0.2", OTHER);
    r.assert(403, MSG_FORBIDDEN);
}

#[test]
fn streams_get_cors_headers_for_a_listed_origin() {
    let srv = cors_server(&format!("[\"{ORIGIN}\"]"));
    let mut sub = srv.subscribe_with("/c", &[("Origin", ORIGIN)]);
    assert_eq!(sub.head.header("Access-Control-Allow-Origin"), Some(ORIGIN));
    assert_eq!(
        sub.head.header("Access-Control-Allow-Credentials"),
        Some("true")
    );
    let other = srv.subscribe_with("/c", &[("Origin", OTHER)]);
    assert_eq!(cors_headers(&other.head), Vec::<String>::new());
    srv.publish_ok("/c", &json!({"n": 1}));
    assert_eq!(sub.next_event(T)["n"], json!(1));
}

#[test]
fn star_allows_any_origin_without_credentials() {
    let srv = cors_server("[\"*\"]");
    let r = preflight(&srv, OTHER);
    assert_eq!(r.status, 204, "{:?}", r.head_str());
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    assert_eq!(r.header("Access-Control-Allow-Credentials"), None);
    assert!(r.header("Access-Control-Allow-Methods").is_some());
    let r = put_with_origin(&srv, "127.0.0.1", OTHER);
    r.assert(202, MSG_ACCEPTED);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    assert_eq!(r.header("Access-Control-Allow-Credentials"), None);
    let sub = srv.subscribe_with("/c", &[("Origin", ORIGIN)]);
    assert_eq!(sub.head.header("Access-Control-Allow-Origin"), Some("*"));
}

#[test]
fn without_cors_origins_nothing_changes() {
    let srv = Server::builder().start();
    let r = preflight(&srv, ORIGIN);
    r.assert_bad_request();
    assert_eq!(cors_headers(&r), Vec::<String>::new(), "{:?}", r.head_str());
    let r = put_with_origin(&srv, "127.0.0.1", ORIGIN);
    r.assert(202, MSG_ACCEPTED);
    assert_eq!(cors_headers(&r), Vec::<String>::new(), "{:?}", r.head_str());
    let sub = srv.subscribe_with("/c", &[("Origin", ORIGIN)]);
    assert_eq!(cors_headers(&sub.head), Vec::<String>::new());
    let r =
        srv.request(format!("HEAD / HTTP/1.1\r\nHost: t\r\nOrigin: {ORIGIN}\r\n\r\n").as_bytes());
    assert_eq!(r.status, 204);
    assert_eq!(cors_headers(&r), Vec::<String>::new(), "{:?}", r.head_str());
}
