//! Loopback addresses: whether `[::1]` exists, and clients bound to
//! another loopback address (`127.0.0.2`, outside the default
//! payloaders). (A free port is `port.rs`'s.)

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use super::{Conn, Response, Server, T};

/// True if `[::1]` can be bound on this machine.
pub fn have_ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// A connection to the server from the loopback address `local` (e.g.
/// `127.0.0.2`: outside the payloaders `127.0.0.1/32`).
pub fn conn_from(srv: &Server, local: &str) -> Conn {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let local: SocketAddr = format!("{local}:0").parse().expect("local address");
    sock.bind(&local.into())
        .unwrap_or_else(|e| panic!("bind {local}: {e}"));
    sock.connect_timeout(&srv.addr.into(), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {} from {local}: {e}", srv.addr));
    Conn::from_stream(sock.into())
}

/// `method path` with a JSON body from `local`, with an optional
/// `Authorization` header value; the response, read fully.
pub fn publish_from(
    srv: &Server,
    local: &str,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &Value,
) -> Response {
    let body = body.to_string();
    let auth_line = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let mut c = conn_from(srv, local);
    c.send(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\n{auth_line}Content-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    c.read_response(false, T)
        .unwrap_or_else(|e| panic!("no response to {method} {path} from {local}: {e}"))
}
