//! HTTP/1.x without I/O: request heads (via httparse), request bodies
//! (`Content-Length` and chunked, both capped), and the bytes of responses,
//! stream heads and chunks.
//!
//! Nothing here touches a socket, so every parser is table-tested and fuzzed.
//! Every limit is enforced while bytes arrive: no input can make a parser
//! buffer more than the caller allows, and no input can make it panic.

use std::fmt;
use std::io::Write;

/// The request methods the server tells apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Put,
    Post,
    Other(String),
}

/// What a request head says, copied out of the read buffer.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    /// The request target as sent, query included.
    pub target: String,
    /// HTTP/1.0 (false) or 1.1 (true).
    pub http11: bool,
    pub body: BodyKind,
    pub expect_continue: bool,
    /// Whether the client wants the connection kept open after this request.
    pub keep_alive: bool,
    pub user_agent: Option<String>,
    pub authorization: Option<Vec<u8>>,
    pub fetch_since: Option<String>,
    pub fetch_since_cursor: Option<String>,
    /// `Accept` names `text/event-stream` (what `EventSource` sends).
    pub accept_sse: bool,
    /// `Last-Event-ID`: where an `EventSource` that reconnects left off.
    pub last_event_id: Option<String>,
    /// `Origin`, for CORS.
    pub origin: Option<String>,
    /// `Idempotency-Key` as sent (checked in `hub/idempotency.rs`); a
    /// second one is appended after ", ", which makes it invalid.
    pub idempotency_key: Option<String>,
    /// `Upgrade` names `websocket`: a WebSocket handshake (checked by
    /// `websocket::handshake`).
    pub upgrade_websocket: bool,
    /// `Connection` names `upgrade`.
    pub connection_upgrade: bool,
    /// The `Sec-WebSocket-*` headers, when any was sent (boxed: most
    /// requests have none).
    pub websocket: Option<Box<WebSocketHeaders>>,
    /// `Accept-Encoding` allows gzip.
    pub accept_gzip: bool,
    /// `Cookie` (several headers joined with `; `): where a browser's
    /// token may come (`clients.tokens.cookie`).
    pub cookie: Option<String>,
    /// Where the path ends in `target` (at its `?`, or its length): found
    /// once while parsing, so `path()` and `has_query()` cost nothing.
    /// (`target` is never changed after parsing.)
    path_len: usize,
}

/// The `Sec-WebSocket-*` headers of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebSocketHeaders {
    pub version: Option<String>,
    pub key: Option<String>,
    /// Every `Sec-WebSocket-Extensions` header, joined with `, `.
    pub extensions: String,
}

/// Never shows credentials: `Authorization` and `Cookie` are left out and
/// the target is shown as [`RequestHead::target_for_log`] shows it.
impl fmt::Debug for RequestHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |present: bool| if present { "<redacted>" } else { "-" };
        f.debug_struct("RequestHead")
            .field("method", &self.method)
            .field("target", &self.target_for_log())
            .field("http11", &self.http11)
            .field("body", &self.body)
            .field("authorization", &redacted(self.authorization.is_some()))
            .field("cookie", &redacted(self.cookie.is_some()))
            .finish_non_exhaustive()
    }
}

impl RequestHead {
    /// Serve this request as a plain stream whatever its `Upgrade` says.
    pub fn ignore_upgrade(&mut self) {
        self.upgrade_websocket = false;
    }

    /// The target as a log line may show it: the path, and of the query
    /// only the parameter names (a value may be a token).
    pub fn target_for_log(&self) -> String {
        let Some((path, query)) = self.target.split_once('?') else {
            return self.target.clone();
        };
        let names: Vec<&str> = query
            .split('&')
            .map(|pair| pair.split_once('=').map_or(pair, |(name, _)| name))
            .collect();
        format!("{path}?{}", names.join("=…&") + "=…")
    }

    /// The value of `name` in the query string, percent-decoded; `None`
    /// when absent or not decodable.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self
            .target
            .get(self.path_len + 1..)
            .filter(|_| self.has_query())?;
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name)
                .then(|| crate::topics::percent_decode(&value.replace('+', " ")).ok())
                .flatten()
        })
    }

    /// The path part of the target (before any `?`).
    pub fn path(&self) -> &str {
        &self.target[..self.path_len]
    }

    /// Whether the target has a query string (a `?`).
    pub fn has_query(&self) -> bool {
        self.path_len < self.target.len()
    }
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
}

/// Why a request could not be understood. Every variant ends the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    Malformed(&'static str),
    TooManyHeaders,
    HeadTooLarge,
    BadContentLength,
    ConflictingLengths,
    UnsupportedTransferEncoding,
    BodyTooLarge,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Malformed(why) => write!(f, "malformed request: {why}"),
            HttpError::TooManyHeaders => f.write_str("too many headers"),
            HttpError::HeadTooLarge => f.write_str("request head too large"),
            HttpError::BadContentLength => f.write_str("invalid Content-Length"),
            HttpError::ConflictingLengths => {
                f.write_str("both Transfer-Encoding and Content-Length")
            }
            HttpError::UnsupportedTransferEncoding => f.write_str("unsupported Transfer-Encoding"),
            HttpError::BodyTooLarge => f.write_str("body too large"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Parses one request head from the front of `buf`.
///
/// `Ok(None)`: incomplete, read more (the caller enforces the size limit).
/// `Ok(Some((head, n)))`: the head took the first `n` bytes.
pub fn parse_head(
    buf: &[u8],
    max_headers: usize,
) -> Result<Option<(RequestHead, usize)>, HttpError> {
    // Parsing happens for every request: no allocation for the usual limit.
    let mut on_stack = [httparse::EMPTY_HEADER; 64];
    let mut on_heap = Vec::new();
    let headers: &mut [httparse::Header<'_>] = if max_headers <= on_stack.len() {
        &mut on_stack[..max_headers]
    } else {
        on_heap.resize(max_headers, httparse::EMPTY_HEADER);
        &mut on_heap
    };
    let mut req = httparse::Request::new(headers);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(HttpError::Malformed("unsupported version")),
        Err(_) => return Err(HttpError::Malformed("bad request line or header")),
    };
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "PUT" => Method::Put,
        "POST" => Method::Post,
        other => Method::Other(other.to_owned()),
    };
    let target = req.path.unwrap_or("").to_owned();
    if !target.starts_with('/') {
        return Err(HttpError::Malformed("the target must be a path"));
    }
    let http11 = req.version == Some(1);
    // A byte loop: `find` sets up a searcher, which costs more than
    // scanning a short target.
    let path_len = target
        .bytes()
        .position(|b| b == b'?')
        .unwrap_or(target.len());
    let mut head = RequestHead {
        path_len,
        method,
        target,
        http11,
        body: BodyKind::None,
        expect_continue: false,
        keep_alive: http11,
        user_agent: None,
        authorization: None,
        fetch_since: None,
        fetch_since_cursor: None,
        accept_sse: false,
        last_event_id: None,
        origin: None,
        idempotency_key: None,
        upgrade_websocket: false,
        connection_upgrade: false,
        websocket: None,
        accept_gzip: false,
        cookie: None,
    };
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    for h in req.headers.iter() {
        let value = trim(h.value);
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_decimal(value).ok_or(HttpError::BadContentLength)?;
            if content_length.is_some_and(|old| old != n) {
                return Err(HttpError::BadContentLength);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only a lone "chunked" is supported; anything else cannot be
            // delimited safely.
            if !value.eq_ignore_ascii_case(b"chunked") || chunked {
                return Err(HttpError::UnsupportedTransferEncoding);
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("expect") {
            head.expect_continue = value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',') {
                let token = trim(token);
                if token.eq_ignore_ascii_case(b"close") {
                    head.keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    head.keep_alive = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    head.connection_upgrade = true;
                }
            }
        } else if name.eq_ignore_ascii_case("user-agent") {
            head.user_agent = Some(String::from_utf8_lossy(value).into_owned());
        } else if name.eq_ignore_ascii_case("authorization") {
            head.authorization = Some(value.to_vec());
        } else if name.eq_ignore_ascii_case("x-fetch-since") {
            head.fetch_since = Some(String::from_utf8_lossy(value).into_owned());
        } else if name.eq_ignore_ascii_case("x-fetch-since-cursor") {
            head.fetch_since_cursor = Some(String::from_utf8_lossy(value).into_owned());
        } else if name.eq_ignore_ascii_case("accept") {
            head.accept_sse |= value
                .split(|&b| b == b',')
                .any(|item| media_type_is(item, b"text/event-stream"));
        } else if name.eq_ignore_ascii_case("idempotency-key") {
            let value = String::from_utf8_lossy(value);
            head.idempotency_key = Some(match head.idempotency_key.take() {
                Some(first) => format!("{first}, {value}"),
                None => value.into_owned(),
            });
        } else if name.eq_ignore_ascii_case("last-event-id") {
            head.last_event_id = Some(String::from_utf8_lossy(value).into_owned());
        } else if name.eq_ignore_ascii_case("origin") {
            head.origin = Some(String::from_utf8_lossy(value).into_owned());
        } else if name.eq_ignore_ascii_case("accept-encoding") {
            head.accept_gzip |= accepts_gzip(value);
        } else if name.eq_ignore_ascii_case("upgrade") {
            head.upgrade_websocket |= value
                .split(|&b| b == b',')
                .any(|p| trim(p).eq_ignore_ascii_case(b"websocket"));
        } else if let Some(which) = strip_prefix_ignore_case(name, "sec-websocket-") {
            let ws = head.websocket.get_or_insert_with(Default::default);
            let text = || String::from_utf8_lossy(value).into_owned();
            if which.eq_ignore_ascii_case("version") {
                ws.version = Some(text());
            } else if which.eq_ignore_ascii_case("key") {
                ws.key = Some(text());
            } else if which.eq_ignore_ascii_case("extensions") {
                if !ws.extensions.is_empty() {
                    ws.extensions.push_str(", ");
                }
                ws.extensions.push_str(&text());
            }
        } else if name.eq_ignore_ascii_case("cookie") {
            let value = String::from_utf8_lossy(value);
            match &mut head.cookie {
                Some(joined) => {
                    joined.push_str("; ");
                    joined.push_str(&value);
                }
                None => head.cookie = Some(value.into_owned()),
            }
        }
    }
    head.body = match (chunked, content_length) {
        (true, Some(_)) => return Err(HttpError::ConflictingLengths),
        (true, None) => BodyKind::Chunked,
        (false, Some(0)) | (false, None) => BodyKind::None,
        (false, Some(n)) => BodyKind::Length(n),
    };
    Ok(Some((head, used)))
}

/// `name` without `prefix` (compared without case), if it starts so.
fn strip_prefix_ignore_case<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let head = name.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &name[prefix.len()..])
}

/// Whether an `Accept-Encoding` value allows gzip: `gzip` (or `x-gzip`,
/// or `*`) listed without `q=0`; an explicit `gzip;q=0` wins over `*`.
fn accepts_gzip(value: &[u8]) -> bool {
    let mut star = false;
    for item in value.split(|&b| b == b',') {
        let mut parts = item.split(|&b| b == b';');
        let coding = trim(parts.next().unwrap_or_default());
        let zero = parts.any(|p| {
            let p = trim(p);
            p.len() >= 2
                && p[..2].eq_ignore_ascii_case(b"q=")
                && trim(&p[2..]).iter().all(|&b| b == b'0' || b == b'.')
        });
        if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip") {
            return !zero;
        }
        if coding == b"*" {
            star = !zero;
        }
    }
    star
}

/// Whether one `Accept` item (`type/subtype;params`) is `media_type`.
fn media_type_is(item: &[u8], media_type: &[u8]) -> bool {
    let end = item.iter().position(|&b| b == b';').unwrap_or(item.len());
    trim(&item[..end]).eq_ignore_ascii_case(media_type)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 18 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// Longest chunk-size line (size, extensions) or trailer line accepted.
const MAX_CHUNK_LINE: usize = 1024;

/// Decodes a request body incrementally, appending its bytes to a `Vec`
/// that never grows past the caller's cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyDecoder {
    Length { remaining: u64 },
    Chunked(ChunkState),
    Done,
}

/// Where the chunked decoder is inside the framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkState {
    /// Reading hex digits; `line` counts the bytes of this line so far.
    Size {
        size: u64,
        digits: usize,
        line: usize,
    },
    /// After the size: extensions up to CR.
    Extension {
        size: u64,
        line: usize,
    },
    /// Expecting LF after the size line's CR.
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines until an empty one.
    Trailer {
        line: usize,
    },
    TrailerLf {
        empty: bool,
    },
}

/// What one `feed` call achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub consumed: usize,
    pub done: bool,
}

impl BodyDecoder {
    pub fn new(kind: BodyKind) -> BodyDecoder {
        match kind {
            BodyKind::None => BodyDecoder::Done,
            BodyKind::Length(n) => BodyDecoder::Length { remaining: n },
            BodyKind::Chunked => BodyDecoder::Chunked(ChunkState::Size {
                size: 0,
                digits: 0,
                line: 0,
            }),
        }
    }

    /// Consumes body bytes from `input` into `body`. Fails with `BodyTooLarge`
    /// as soon as the body would pass `max` bytes.
    pub fn feed(
        &mut self,
        input: &[u8],
        body: &mut Vec<u8>,
        max: usize,
    ) -> Result<Progress, HttpError> {
        match self {
            BodyDecoder::Done => Ok(Progress {
                consumed: 0,
                done: true,
            }),
            BodyDecoder::Length { remaining } => {
                let take = input
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                if body.len() + take > max {
                    return Err(HttpError::BodyTooLarge);
                }
                // Grown to what has arrived, never doubled past the
                // declared length: a stalled upload holds what it sent.
                body.reserve_exact(take);
                body.extend_from_slice(&input[..take]);
                *remaining -= take as u64;
                let done = *remaining == 0;
                if done {
                    *self = BodyDecoder::Done;
                }
                Ok(Progress {
                    consumed: take,
                    done,
                })
            }
            BodyDecoder::Chunked(state) => {
                let (consumed, done) = feed_chunked(state, input, body, max)?;
                if done {
                    *self = BodyDecoder::Done;
                }
                Ok(Progress { consumed, done })
            }
        }
    }
}

fn feed_chunked(
    state: &mut ChunkState,
    input: &[u8],
    body: &mut Vec<u8>,
    max: usize,
) -> Result<(usize, bool), HttpError> {
    let bad = |why| Err(HttpError::Malformed(why));
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        match *state {
            ChunkState::Size { size, digits, line } => {
                if line >= MAX_CHUNK_LINE {
                    return bad("chunk size line too long");
                }
                if let Some(d) = (b as char).to_digit(16) {
                    if digits >= 15 {
                        return bad("chunk size too large");
                    }
                    *state = ChunkState::Size {
                        size: size * 16 + u64::from(d),
                        digits: digits + 1,
                        line: line + 1,
                    };
                } else if digits == 0 {
                    return bad("chunk size expected");
                } else if b == b'\r' {
                    *state = ChunkState::SizeLf { size };
                } else if b == b';' || b == b' ' || b == b'\t' {
                    *state = ChunkState::Extension {
                        size,
                        line: line + 1,
                    };
                } else {
                    return bad("bad chunk size");
                }
                i += 1;
            }
            ChunkState::Extension { size, line } => {
                if line >= MAX_CHUNK_LINE {
                    return bad("chunk extension too long");
                }
                *state = if b == b'\r' {
                    ChunkState::SizeLf { size }
                } else {
                    ChunkState::Extension {
                        size,
                        line: line + 1,
                    }
                };
                i += 1;
            }
            ChunkState::SizeLf { size } => {
                if b != b'\n' {
                    return bad("expected LF after chunk size");
                }
                if size == 0 {
                    *state = ChunkState::Trailer { line: 0 };
                } else {
                    if (body.len() as u64).saturating_add(size) > max as u64 {
                        return Err(HttpError::BodyTooLarge);
                    }
                    *state = ChunkState::Data { remaining: size };
                }
                i += 1;
            }
            ChunkState::Data { remaining } => {
                let available = input.len() - i;
                let take = available.min(usize::try_from(remaining).unwrap_or(usize::MAX));
                body.extend_from_slice(&input[i..i + take]);
                i += take;
                let left = remaining - take as u64;
                *state = if left == 0 {
                    ChunkState::DataCr
                } else {
                    ChunkState::Data { remaining: left }
                };
            }
            ChunkState::DataCr => {
                if b != b'\r' {
                    return bad("expected CRLF after chunk data");
                }
                *state = ChunkState::DataLf;
                i += 1;
            }
            ChunkState::DataLf => {
                if b != b'\n' {
                    return bad("expected CRLF after chunk data");
                }
                *state = ChunkState::Size {
                    size: 0,
                    digits: 0,
                    line: 0,
                };
                i += 1;
            }
            ChunkState::Trailer { line } => {
                if line >= MAX_CHUNK_LINE {
                    return bad("trailer line too long");
                }
                *state = if b == b'\r' {
                    ChunkState::TrailerLf { empty: line == 0 }
                } else {
                    ChunkState::Trailer { line: line + 1 }
                };
                i += 1;
            }
            ChunkState::TrailerLf { empty } => {
                if b != b'\n' {
                    return bad("expected LF in trailer");
                }
                i += 1;
                if empty {
                    return Ok((i, true));
                }
                *state = ChunkState::Trailer { line: 0 };
            }
        }
    }
    Ok((i, false))
}

/// Values every response carries.
#[derive(Debug, Clone, Copy)]
pub struct ServerHeaders<'a> {
    /// `pubsubd/<version>`.
    pub server: &'a str,
    pub subscribers: usize,
    pub requests: u64,
    /// CORS: the allowed origin to name (`*` or the request's), when the
    /// request's `Origin` is allowed.
    pub cors: Option<&'a str>,
}

impl ServerHeaders<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        if let Some(origin) = self.cors {
            out.extend_from_slice(b"Access-Control-Allow-Origin: ");
            out.extend_from_slice(origin.as_bytes());
            out.extend_from_slice(b"\r\n");
            if origin != "*" {
                // A named origin may send credentials (Basic auth for
                // private events); `*` never may.
                out.extend_from_slice(
                    b"Access-Control-Allow-Credentials: true\r\nVary: Origin\r\n",
                );
            }
        }
        // Written for every response: plain byte pushes, no formatter.
        out.extend_from_slice(b"Server: ");
        out.extend_from_slice(self.server.as_bytes());
        out.extend_from_slice(b"\r\nX-Subscribers: ");
        push_decimal(out, self.subscribers as u64);
        out.extend_from_slice(b"\r\nX-Requests: ");
        push_decimal(out, self.requests);
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The reason phrase of the statuses the server sends.
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        405 => "Method Not Allowed",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// A complete response with a plain-text body (HEAD-style when `body` is
/// None), written over `out` (a buffer the caller reuses).
pub fn response(
    out: &mut Vec<u8>,
    status: u16,
    body: Option<&str>,
    headers: &ServerHeaders<'_>,
    close: bool,
) {
    let body = body.map(|b| ("text/plain; charset=utf-8", b.as_bytes()));
    typed_response(out, status, body, headers, &[], close);
}

/// A complete response whose body has its own content type, with extra
/// headers, written over `out`.
pub fn typed_response(
    out: &mut Vec<u8>,
    status: u16,
    body: Option<(&str, &[u8])>,
    headers: &ServerHeaders<'_>,
    extra: &[(&str, &str)],
    close: bool,
) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    headers.write(out);
    for (name, value) in extra {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if let Some((content_type, body)) = body {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(content_type.as_bytes());
        out.extend_from_slice(b"\r\nContent-Length: ");
        push_decimal(out, body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if let Some((_, body)) = body {
        out.extend_from_slice(body);
    }
}

/// The interim response that tells a client to send its body.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The last chunk of a chunked stream.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// How long an `EventSource` waits before reconnecting (the `retry:` hint
/// that starts every SSE stream), in milliseconds.
pub const SSE_RETRY_MS: u32 = 3000;

/// The head of an event stream. HTTP/1.0 clients get no chunk framing and
/// the connection closes at the end of the stream. An SSE stream says so
/// in its content type and starts with the `retry:` hint.
pub fn stream_head(
    headers: &ServerHeaders<'_>,
    chunked: bool,
    sse: bool,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    stream_head_encoded(headers, chunked, sse, false, extra)
}

/// `stream_head` for a stream that is gzip-encoded when `gzip`: it says so
/// (`Content-Encoding`, `Vary`), and the SSE `retry:` hint is left to the
/// caller, since it is part of the compressed body.
pub fn stream_head_encoded(
    headers: &ServerHeaders<'_>,
    chunked: bool,
    sse: bool,
    gzip: bool,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(320);
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    headers.write(&mut out);
    for (name, value) in extra {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    let content_type: &[u8] = if sse {
        b"text/event-stream"
    } else {
        b"application/vnd.pypubsub-stream"
    };
    out.extend_from_slice(b"Content-Type: ");
    out.extend_from_slice(content_type);
    out.extend_from_slice(b"\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
    if gzip {
        out.extend_from_slice(b"Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n");
    }
    if chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
    } else {
        out.extend_from_slice(b"Connection: close\r\n\r\n");
    }
    if sse && !gzip {
        let retry = sse_retry();
        if chunked {
            out.extend_from_slice(&chunk(retry.as_bytes()));
        } else {
            out.extend_from_slice(retry.as_bytes());
        }
    }
    out
}

/// The `retry:` hint that starts every SSE stream.
pub fn sse_retry() -> String {
    format!("retry: {SSE_RETRY_MS}\n\n")
}

/// The answer to a WebSocket handshake: `101 Switching Protocols` with
/// the accept key, the negotiated extension if any, and `extra` headers.
pub fn websocket_head(
    headers: &ServerHeaders<'_>,
    accept: &str,
    extensions: Option<&str>,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    headers.write(&mut out);
    for (name, value) in extra {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.extend_from_slice(b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(extensions) = extensions {
        out.extend_from_slice(b"Sec-WebSocket-Extensions: ");
        out.extend_from_slice(extensions.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// `data` framed as one HTTP chunk.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 12);
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<(RequestHead, usize)>, HttpError> {
        parse_head(text.as_bytes(), 16)
    }

    #[test]
    fn parses_a_publish_head() {
        let text = "PUT /a/b?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nExpect: 100-continue\r\nUser-Agent: svnwcsub/1\r\n\r\nBODY";
        let (h, n) = head(text).unwrap().unwrap();
        assert_eq!(n, text.len() - 4);
        assert_eq!(h.method, Method::Put);
        assert_eq!(h.path(), "/a/b");
        assert!(h.has_query());
        assert_eq!(h.query_param("x").as_deref(), Some("1"));
        assert_eq!(h.query_param("y"), None);
        let (plain, _) = head("GET /a HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!((plain.path(), plain.has_query()), ("/a", false));
        let (bare, _) = head("GET /a? HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!((bare.path(), bare.has_query()), ("/a", true));
        assert_eq!(bare.query_param("x"), None);
        assert!(h.http11 && h.keep_alive && h.expect_continue);
        assert_eq!(h.body, BodyKind::Length(12));
        assert_eq!(h.user_agent.as_deref(), Some("svnwcsub/1"));
    }

    #[test]
    fn partial_and_errors() {
        assert_eq!(head("GET / HTTP/1.1\r\nHost"), Ok(None));
        let keep_alive = |text| head(text).unwrap().unwrap().0.keep_alive;
        assert!(!keep_alive("GET / HTTP/1.0\r\n\r\n"));
        assert!(!keep_alive("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(keep_alive(
            "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        ));
        assert!(matches!(
            head("\x00\x01garbage\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
        assert!(matches!(
            head("GET x HTTP/1.1\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
        assert_eq!(
            head("PUT / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HttpError::ConflictingLengths)
        );
        assert_eq!(
            head("PUT / HTTP/1.1\r\nContent-Length: -5\r\n\r\n"),
            Err(HttpError::BadContentLength)
        );
        assert_eq!(
            head("PUT / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            Err(HttpError::BadContentLength)
        );
        assert_eq!(
            head("PUT / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Err(HttpError::UnsupportedTransferEncoding)
        );
        let many: String = (0..20).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            head(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
            Err(HttpError::TooManyHeaders)
        );
        assert_eq!(
            head("DELETE /x HTTP/1.1\r\n\r\n")
                .unwrap()
                .unwrap()
                .0
                .method,
            Method::Other("DELETE".into())
        );
    }

    fn decode_all(
        kind: BodyKind,
        pieces: &[&[u8]],
        max: usize,
    ) -> Result<(Vec<u8>, usize), HttpError> {
        let mut d = BodyDecoder::new(kind);
        let mut body = Vec::new();
        let mut used = 0;
        for piece in pieces {
            let p = d.feed(piece, &mut body, max)?;
            used += p.consumed;
            if p.done {
                return Ok((body, used));
            }
        }
        Err(HttpError::Malformed("incomplete"))
    }

    #[test]
    fn chunked_bodies() {
        let whole = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let (body, used) = decode_all(BodyKind::Chunked, &[whole], 100).unwrap();
        assert_eq!(body, b"Wikipedia");
        assert_eq!(&whole[used..], b"NEXT");
        // Byte by byte gives the same result.
        let pieces: Vec<&[u8]> = whole.chunks(1).collect();
        let (body, used) = decode_all(BodyKind::Chunked, &pieces, 100).unwrap();
        assert_eq!(
            (body.as_slice(), used),
            (&b"Wikipedia"[..], whole.len() - 4)
        );
        assert_eq!(
            decode_all(BodyKind::Chunked, &[b"a\r\n0123456789\r\n0\r\n\r\n"], 9),
            Err(HttpError::BodyTooLarge)
        );
        assert!(decode_all(BodyKind::Chunked, &[b"zz\r\n"], 9).is_err());
        assert!(decode_all(BodyKind::Chunked, &[b"1\r\nab\r\n"], 9).is_err());
        assert!(decode_all(BodyKind::Chunked, &[b"ffffffffffffffffff\r\n"], 9).is_err());
        let long = vec![b'1'; 2000];
        assert!(decode_all(BodyKind::Chunked, &[&long], usize::MAX).is_err());
    }

    #[test]
    fn length_bodies() {
        let (body, used) = decode_all(BodyKind::Length(3), &[b"ab", b"cdef"], 10).unwrap();
        assert_eq!((body.as_slice(), used), (&b"abc"[..], 3));
        assert_eq!(
            decode_all(BodyKind::Length(30), &[b"abc"], 2),
            Err(HttpError::BodyTooLarge)
        );
    }

    #[test]
    fn upgrade_and_encoding_headers() {
        let text = "GET /a HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\
            Sec-WebSocket-Key: k\r\nsec-websocket-version: 13\r\n\
            Sec-WebSocket-Extensions: a\r\nSec-WebSocket-Extensions: b; x=1\r\n\r\n";
        let (h, _) = head(text).unwrap().unwrap();
        assert!(h.upgrade_websocket && h.connection_upgrade && h.keep_alive);
        let ws = h.websocket.unwrap();
        assert_eq!(ws.key.as_deref(), Some("k"));
        assert_eq!(ws.version.as_deref(), Some("13"));
        assert_eq!(ws.extensions, "a, b; x=1");
        let (h, _) = head("GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.upgrade_websocket && h.websocket.is_none());
        for (value, gzip) in [
            ("gzip", true),
            ("deflate, gzip;q=1.0, br", true),
            ("x-gzip", true),
            ("br", false),
            ("gzip;q=0", false),
            ("gzip; q=0.0, *", false),
            ("*", true),
            ("*;q=0", false),
            ("identity", false),
        ] {
            let text = format!("GET / HTTP/1.1\r\nAccept-Encoding: {value}\r\n\r\n");
            let (h, _) = head(&text).unwrap().unwrap();
            assert_eq!(h.accept_gzip, gzip, "{value}");
        }
    }

    #[test]
    fn decimals() {
        for n in [0u64, 7, 10, 99, 202, 1_000_000, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn framing() {
        assert_eq!(chunk(b"hello\n"), b"6\r\nhello\n\r\n");
        let h = ServerHeaders {
            server: "pubsubd/1",
            subscribers: 2,
            requests: 3,
            cors: None,
        };
        let mut out = b"left over".to_vec();
        response(&mut out, 202, Some("ok\n"), &h, false);
        let r = String::from_utf8(out).unwrap();
        assert!(r.starts_with(
            "HTTP/1.1 202 Accepted\r\nServer: pubsubd/1\r\nX-Subscribers: 2\r\nX-Requests: 3\r\n"
        ));
        assert!(r.ends_with("Content-Length: 3\r\n\r\nok\n"));
        let s = String::from_utf8(stream_head(&h, true, false, &[])).unwrap();
        assert!(
            s.contains("Transfer-Encoding: chunked\r\n")
                && s.contains("application/vnd.pypubsub-stream")
        );
    }
}
