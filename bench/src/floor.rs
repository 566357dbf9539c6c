//! `http-floor`: the least an epoll HTTP server can do per publish request,
//! to measure the machine's ceiling for the `publish` scenario.
//!
//! It answers every request (head plus `Content-Length` body) with a fixed
//! 202 and does nothing else: no JSON, no event, no topics. Each ready
//! connection gets one `read` and, at the end of the turn, one `write` —
//! the same system calls pubsubd and nginx make. Whatever it reaches is
//! what the kernel allows on this machine; a real server can only be
//! slower. Usage: `http-floor PORT` (binds 127.0.0.1).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const RESPONSE: &[u8] = b"HTTP/1.1 202 Accepted\r\nServer: http-floor\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 39\r\n\r\nPayload received, thank you very much!\n";
const LISTENER: Token = Token(usize::MAX);

struct Conn {
    socket: TcpStream,
    input: Vec<u8>,
}

/// How many complete requests `input` starts with, and their length.
fn complete_requests(input: &[u8]) -> (usize, usize) {
    let (mut count, mut used) = (0, 0);
    loop {
        let rest = &input[used..];
        let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
            return (count, used);
        };
        let head = &rest[..end];
        let length = head
            .split(|&b| b == b'\n')
            .filter_map(|line| {
                let line = std::str::from_utf8(line).ok()?;
                let (name, value) = line.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .next()
            .unwrap_or(0);
        if rest.len() < end + 4 + length {
            return (count, used);
        }
        used += end + 4 + length;
        count += 1;
    }
}

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(18099);
    let mut listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: HashMap<usize, Conn> = HashMap::new();
    let mut next = 0;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut answers: Vec<(usize, usize)> = Vec::new();
    let mut out = Vec::new();
    loop {
        poll.poll(&mut events, None)?;
        for event in &events {
            if event.token() == LISTENER {
                while let Ok((mut socket, _)) = listener.accept() {
                    socket.set_nodelay(true)?;
                    poll.registry()
                        .register(&mut socket, Token(next), Interest::READABLE)?;
                    let input = Vec::new();
                    conns.insert(next, Conn { socket, input });
                    next += 1;
                }
                continue;
            }
            let key = event.token().0;
            let Some(conn) = conns.get_mut(&key) else {
                continue;
            };
            let mut closed = false;
            loop {
                match conn.socket.read(&mut buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => {
                        conn.input.extend_from_slice(&buf[..n]);
                        if n < buf.len() {
                            break; // a short read: drained
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            let (count, used) = complete_requests(&conn.input);
            conn.input.drain(..used);
            if count > 0 {
                answers.push((key, count));
            }
            if closed {
                conns.remove(&key);
            }
        }
        // One write per connection per turn, as the real servers do.
        for (key, count) in answers.drain(..) {
            let Some(conn) = conns.get_mut(&key) else {
                continue;
            };
            out.clear();
            for _ in 0..count {
                out.extend_from_slice(RESPONSE);
            }
            // Answers are small and clients wait for them, so the socket
            // always takes them; a client that does not read is dropped.
            if conn.socket.write_all(&out).is_err() {
                conns.remove(&key);
            }
        }
    }
}
