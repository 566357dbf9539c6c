//! `Subscriber`: a `GET` stream whose `200` head has been read; yields the
//! chunked body as events (pings skipped), each checked to be one JSON line.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{is_ping, ns, parse_line, Conn, Response, T};

/// A `GET` stream whose head has been read; yields decoded chunks.
pub struct Subscriber {
    pub conn: Conn,
    pub head: Response,
}

impl Subscriber {
    /// Opens `GET path` with extra headers and asserts a `200` stream head.
    pub fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Subscriber {
        let mut extra = String::new();
        let mut has_ua = false;
        for (k, v) in headers {
            has_ua |= k.eq_ignore_ascii_case("User-Agent");
            extra += &format!("{k}: {v}\r\n");
        }
        if !has_ua {
            extra += "User-Agent: pubsubd-tests/1\r\n";
        }
        let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n");
        Subscriber::open_raw(addr, req.as_bytes())
    }

    /// Sends `request` verbatim and asserts a `200` head.
    pub fn open_raw(addr: SocketAddr, request: &[u8]) -> Subscriber {
        let mut conn = Conn::connect(addr);
        conn.send(request);
        let head = conn.read_head(Instant::now() + T).unwrap_or_else(|e| {
            panic!(
                "no stream head for {:?}: {e}",
                String::from_utf8_lossy(request)
            )
        });
        assert_eq!(
            head.status,
            200,
            "subscribe {:?} got {:?}",
            String::from_utf8_lossy(request),
            head.head_str()
        );
        Subscriber { conn, head }
    }

    /// The next chunk's data; `Ok(None)` is the terminating `0\r\n\r\n`.
    pub fn next_chunk(&mut self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        self.conn.read_chunk(Instant::now() + timeout)
    }

    /// The next event (pings skipped), parsed; `Ok(None)` if the stream ended.
    /// Asserts each chunk is exactly one JSON line ending in `\n`.
    pub fn try_next_event(&mut self, timeout: Duration) -> io::Result<Option<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(chunk) = self.conn.read_chunk(deadline)? else {
                return Ok(None);
            };
            let v = parse_line(&chunk);
            if !is_ping(&v) {
                return Ok(Some(v));
            }
        }
    }

    /// The next event (pings skipped); panics on timeout or end of stream.
    pub fn next_event(&mut self, timeout: Duration) -> Value {
        match self.try_next_event(timeout) {
            Ok(Some(v)) => v,
            Ok(None) => panic!("stream ended while waiting for an event"),
            Err(e) => panic!("no event within {timeout:?}: {e}"),
        }
    }

    /// The next event within `timeout`, or `None` (timed out or stream ended).
    pub fn next_within(&mut self, timeout: Duration) -> Option<Value> {
        self.try_next_event(timeout).ok().flatten()
    }

    /// Events until `done` holds for those collected so far, or `timeout`
    /// passes, or the stream ends; the caller asserts on what came.
    pub fn collect_until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while !done(&got) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_next_event(left) {
                Ok(Some(v)) => got.push(v),
                Ok(None) | Err(_) => break,
            }
        }
        got
    }

    /// Events up to (not including) the first one with `"sentinel": true`.
    pub fn events_until_sentinel(&mut self, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.next_event(left);
            if v["sentinel"] == Value::Bool(true) {
                return out;
            }
            out.push(v);
        }
    }

    /// The `n` of each event up to the sentinel (which must come within `T`).
    pub fn ns_until_sentinel(&mut self) -> Vec<u64> {
        ns(&self.events_until_sentinel(T))
    }
}
