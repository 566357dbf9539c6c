//! What the server does with each request: publish (`PUT`/`POST`), subscribe
//! (`GET`), health check (`HEAD`), CORS preflight, and the answers to
//! everything else.
//!
//! The connection table hands over the requests in a connection's buffer
//! one at a time, in order (pipelining); at most `REQUEST_BUDGET` are
//! handled per turn.
//!
//! Uses: `conns` (state changes, queueing responses), `history` (where a
//! replay starts), `tokens`, `acl` and `ldap` (through `auth.rs`),
//! `cluster` (a publish on a cluster node), `stats`.

use log::debug;

use super::auth::Check;
use super::idempotency::{self, TEXT_BAD_KEY};
use super::table::{Access, AfterAuth, BodyState, Parked, State, Step, Stream};
use super::{Hub, REQUEST_BUDGET};
use crate::acl::{self, Grant};
use crate::backlog::Start;
use crate::compress::{self, GzipState};
use crate::event::{self, Frame, Framing, PayloadError};
use crate::http::{self, BodyDecoder, BodyKind, HttpError, Method, RequestHead};
use crate::stats::{Drop, Source};
use crate::tokens::Refusal;
use crate::topics::{self, Subscription};
use crate::websocket;
use crate::websocket::frames::Incoming;
use crate::websocket::handshake::{self, Refused};

pub const TEXT_RECEIVED: &str = "Payload received, thank you very much!\n";
pub const TEXT_NOT_ALLOWED: &str = "You are not authorized to deliver payloads!\n";
pub const TEXT_BAD_PAYLOAD: &str =
    "Bad payload type. Payloads must be JSON dictionary objects, {..}!\n";
pub const TEXT_TOO_LARGE: &str = "Payload is too large for me to serve, please make it shorter.\n";
pub const TEXT_BUSY: &str = "Server busy: too much input in flight, please retry.\n";
pub const TEXT_BAD_REQUEST: &str = "I could not understand your request, sorry! Please see https://pubsub.apache.org/api.html for usage documentation.\n";

/// Whether the connection stays open after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum After {
    KeepAlive,
    Close,
}

impl Hub {
    /// Handles every complete request in the connection's input buffer.
    pub fn process_input(&mut self, key: usize) {
        self.process_requests(key);
        // What the requests left in the buffers counts against the budget.
        self.count_input(key);
    }

    fn process_requests(&mut self, key: usize) {
        let limits = self.request_limits();
        for _ in 0..REQUEST_BUDGET {
            match self.conns.next_request(key, limits) {
                Step::Wait => return,
                Step::Head(head) => {
                    self.requests += 1;
                    self.dispatch(key, head);
                }
                Step::Body(body) => self.finish_publish(key, *body),
                Step::HeadTooLarge => return self.reject(key, &HttpError::HeadTooLarge),
                Step::Bad(e) => return self.reject(key, &e),
                Step::BodyTooLarge => {
                    return self.respond(key, 400, Some(TEXT_TOO_LARGE), After::Close)
                }
                Step::Replay => return self.pump_replay(key),
                Step::WebSocket(frame) => {
                    if !self.websocket_frame(key, frame) {
                        return;
                    }
                }
                Step::WebSocketFail(fail) => {
                    debug!("{key}: WebSocket: {} ({})", fail.reason, fail.code);
                    return self.conns.end_stream(key, (fail.code, fail.reason));
                }
            }
        }
        // Budget used up: carry on next turn so others get a go.
        self.conns.rerun(key);
    }

    /// A control frame from a WebSocket subscriber; false once the stream
    /// is over.
    fn websocket_frame(&mut self, key: usize, frame: Incoming) -> bool {
        match frame {
            Incoming::Ping(payload) => {
                let pong = websocket::frame(websocket::OP_PONG, false, &payload);
                let cap = self.config.server.max_queued_bytes;
                if !self.conns.queue_reply(key, pong.into(), cap) {
                    self.stats.dropped(Drop::QueueFull);
                    return false;
                }
                true
            }
            Incoming::Pong => true,
            Incoming::Close(code) => {
                debug!("{key}: WebSocket closed by the client ({code:?})");
                self.queue(key, websocket::close_echo(code).into());
                self.conns.close_after_flush(key);
                false
            }
        }
    }

    /// The input budget is spent and this request is large: 503, close.
    pub(super) fn shed(&mut self, key: usize) {
        let body = ("text/plain; charset=utf-8", TEXT_BUSY.as_bytes());
        self.respond_typed(key, 503, Some(body), &[("Retry-After", "1")], After::Close);
    }

    /// Answers a request that cannot be understood and closes.
    fn reject(&mut self, key: usize, why: &HttpError) {
        debug!("{key}: bad request: {why}");
        self.respond(key, 400, Some(TEXT_BAD_REQUEST), After::Close);
    }

    fn dispatch(&mut self, key: usize, head: RequestHead) {
        let cors = self.cors_match(head.origin.as_deref());
        self.conns.set_cors(key, cors);
        #[cfg(feature = "admin")]
        if self.conns.get(key).is_some_and(|c| c.is_admin()) {
            return self.dispatch_admin(key, head);
        }
        match head.method {
            Method::Head => {
                // A body on a HEAD is not read: the connection cannot go on.
                let after = match head.body {
                    BodyKind::None => keep_alive(&head),
                    _ => After::Close,
                };
                self.respond(key, 204, None, after);
            }
            Method::Get => self.subscribe(key, head),
            Method::Put | Method::Post => self.begin_publish(key, head),
            Method::Other(ref m)
                if m == "OPTIONS" && !self.config.clients.cors_origins.is_empty() =>
            {
                self.preflight(key, &head)
            }
            Method::Other(_) => {
                // The body of an unknown method cannot be skipped reliably.
                self.respond(key, 400, Some(TEXT_BAD_REQUEST), After::Close);
            }
        }
    }

    /// A CORS preflight (`OPTIONS`, with `clients.cors_origins` set): 204
    /// with the methods and headers a page may use, the CORS headers only
    /// for an allowed origin.
    fn preflight(&mut self, key: usize, head: &RequestHead) {
        let after = match head.body {
            BodyKind::None => keep_alive(head),
            _ => After::Close,
        };
        let allowed = self.conns.get(key).is_some_and(|c| c.cors().is_some());
        let extra: &[(&str, &str)] = if allowed {
            &[
                ("Access-Control-Allow-Methods", "GET, PUT, POST, OPTIONS"),
                (
                    "Access-Control-Allow-Headers",
                    "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, X-Fetch-Since, X-Fetch-Since-Cursor",
                ),
                ("Access-Control-Max-Age", "86400"),
            ]
        } else {
            &[]
        };
        self.respond_typed(key, 204, None, extra, after);
    }

    /// Queues a complete response; afterwards the connection waits for the
    /// next request or closes.
    pub(super) fn respond(&mut self, key: usize, status: u16, body: Option<&str>, after: After) {
        let body = body.map(|b| ("text/plain; charset=utf-8", b.as_bytes()));
        self.respond_typed(key, status, body, &[], after);
    }

    /// `respond` with a body of any content type and extra headers.
    pub(super) fn respond_typed(
        &mut self,
        key: usize,
        status: u16,
        body: Option<(&str, &[u8])>,
        extra: &[(&str, &str)],
        after: After,
    ) {
        self.stats.responded(status);
        let shutting_down = self.is_shutting_down();
        let close = after == After::Close || shutting_down;
        let mut bytes = std::mem::take(&mut self.response_buf);
        http::typed_response(
            &mut bytes,
            status,
            body,
            &self.headers_for(key),
            extra,
            close,
        );
        // One allocation of the exact size; the buffer is reused.
        let frame: Frame = bytes.as_slice().into();
        self.response_buf = bytes;
        let next_request_by = match close {
            true => None,
            false => Some(self.clock.now() + self.config.server.request_timeout),
        };
        self.conns.respond(key, frame, next_request_by);
    }

    /// A publish head has arrived: check who may publish before reading
    /// the body (asking LDAP first if a secured topic needs it).
    fn begin_publish(&mut self, key: usize, head: RequestHead) {
        let Ok(topics) = topics::parse_topics(head.path()) else {
            return self.respond(key, 400, Some(TEXT_BAD_REQUEST), After::Close);
        };
        let secured = topics
            .iter()
            .any(|t| self.config.clients.secure_topics.contains(t));
        match self.check_credentials(&head) {
            Check::AskLdap(user, password, until) if secured => {
                let parked = Parked {
                    head,
                    then: AfterAuth::Publish(topics),
                    until,
                };
                self.park_for_ldap(key, user, password, parked);
            }
            Check::AskLdap(..) => self.continue_publish(key, head, topics, None),
            Check::Done(access) => self.continue_publish(key, head, topics, access.grant),
            // The body was not read: the connection cannot be reused.
            Check::BadToken(why) => self.refuse_token(key, &why, After::Close),
        }
    }

    /// Authorizes the publish, then reads its body.
    pub(super) fn continue_publish(
        &mut self,
        key: usize,
        head: RequestHead,
        path_topics: Vec<String>,
        grant: Option<Grant>,
    ) {
        let Some(peer) = self.conns.get(key).map(|c| c.peer()) else {
            return;
        };
        let ip_allowed = self
            .config
            .clients
            .payloaders
            .iter()
            .any(|net| net.contains(&peer));
        let secure = &self.config.clients.secure_topics;
        if !acl::may_publish(secure, &path_topics, grant.as_ref(), ip_allowed) {
            // The body was not read: the connection cannot be reused.
            return self.respond(key, 403, Some(TEXT_NOT_ALLOWED), After::Close);
        }
        if let BodyKind::Length(n) = head.body {
            if n > self.config.server.max_payload_size as u64 {
                return self.respond(key, 400, Some(TEXT_TOO_LARGE), After::Close);
            }
        }
        if head.expect_continue && head.http11 && head.body != BodyKind::None {
            self.queue(key, http::CONTINUE.into());
        }
        // A declared length (already checked against the limit) is
        // allocated once rather than grown.
        let capacity = match head.body {
            BodyKind::Length(n) => (n as usize).min(64 * 1024),
            _ => 0,
        };
        let body = BodyState {
            body: Vec::with_capacity(capacity),
            decoder: BodyDecoder::new(head.body),
            head,
            path_topics,
        };
        self.conns.set_state(key, State::Body(Box::new(body)));
    }

    fn finish_publish(&mut self, key: usize, body: BodyState) {
        let after = keep_alive(&body.head);
        let Ok(idem) = idempotency::key_of(&body.head) else {
            return self.respond(key, 400, Some(TEXT_BAD_KEY), after);
        };
        let object = match event::parse_payload(&body.body) {
            Ok(object) => object,
            Err(PayloadError::NotAnObject) => {
                return self.respond(key, 400, Some(TEXT_BAD_PAYLOAD), after)
            }
            Err(PayloadError::Invalid) => {
                return self.respond(key, 400, Some(TEXT_BAD_REQUEST), after)
            }
        };
        if idem.is_some_and(|k| self.answer_repeated_key(key, k, after)) {
            return;
        }
        if self.cluster.is_some() {
            let path = body.head.path();
            return self.append_to_cluster(
                Source::Http,
                path,
                body.path_topics,
                object,
                Some((key, after)),
                idem.map(str::to_owned),
            );
        }
        self.publish(Source::Http, body.head.path(), body.path_topics, object);
        if let Some(k) = idem {
            self.idempotency.insert(k, self.history.last_seq());
        }
        self.respond(key, 202, Some(TEXT_RECEIVED), after);
    }

    fn subscribe(&mut self, key: usize, head: RequestHead) {
        let Ok(sub) = Subscription::parse(head.path()) else {
            return self.respond(key, 400, Some(TEXT_BAD_REQUEST), After::Close);
        };
        if head.body != BodyKind::None {
            // A GET with a body: not something a subscriber sends.
            return self.respond(key, 400, Some(TEXT_BAD_REQUEST), After::Close);
        }
        if self.is_shutting_down() {
            return self.respond(key, 503, Some("Shutting down.\n"), After::Close);
        }
        if wants_websocket(&head) {
            if let Err(refused) = handshake::accept(&head, compress::AVAILABLE) {
                return self.refuse_websocket(key, refused);
            }
            let allowed = self.conns.get(key).is_some_and(|c| c.cors().is_some());
            if head.origin.is_some() && !self.config.clients.cors_origins.is_empty() && !allowed {
                let text = "WebSocket handshake: this Origin is not in clients.cors_origins\n";
                return self.respond(key, 403, Some(text), After::Close);
            }
        }
        if let Some(since) = head.fetch_since.as_deref() {
            if !since.trim().parse::<f64>().is_ok_and(f64::is_finite) {
                return self.respond(key, 400, Some(TEXT_BAD_REQUEST), After::Close);
            }
        }
        if self.cluster_backlog_loading()
            && (head.fetch_since.is_some() || resume_cursor(&head).is_some())
        {
            // Its backlog comes from the stream: a cursor asked for now
            // would read as unknown and its events would be missed.
            let sse = head.accept_sse && !wants_websocket(&head);
            return self.respond_backlog_loading(key, sse);
        }
        match self.check_credentials(&head) {
            Check::Done(access) => self.open_stream(key, head, sub, access),
            Check::AskLdap(user, password, until) => {
                let parked = Parked {
                    head,
                    then: AfterAuth::Subscribe(sub),
                    until,
                };
                self.park_for_ldap(key, user, password, parked);
            }
            Check::BadToken(why) => {
                let after = keep_alive(&head);
                self.refuse_token(key, &why, after)
            }
        }
    }

    /// A WebSocket handshake that cannot be accepted: 426 for a version
    /// other than 13, else 400 saying what is wrong.
    fn refuse_websocket(&mut self, key: usize, refused: Refused) {
        debug!("{key}: WebSocket handshake refused: {refused:?}");
        match refused {
            Refused::Version => {
                let body = (
                    "text/plain; charset=utf-8",
                    &b"WebSocket handshake: this server speaks Sec-WebSocket-Version 13 only.\n"[..],
                );
                let extra = [("Sec-WebSocket-Version", handshake::VERSION)];
                self.respond_typed(key, 426, Some(body), &extra, After::Close);
            }
            Refused::Bad(why) => {
                let text = format!("WebSocket handshake: {why}.\n");
                self.respond(key, 400, Some(&text), After::Close);
            }
        }
    }

    /// Makes the connection a live subscriber, then sends the response head:
    /// any event accepted after the client has the head reaches it. A
    /// stream opened with a token ends when the token expires.
    pub(super) fn open_stream(
        &mut self,
        key: usize,
        head: RequestHead,
        sub: Subscription,
        access: Access,
    ) {
        if self.expired(access.until) {
            // It expired while its user was looked up.
            let after = keep_alive(&head);
            return self.refuse_token(key, &Refusal::Expired, after);
        }
        let oldschool = head.user_agent.as_deref().is_some_and(|ua| {
            self.config
                .clients
                .oldschoolers
                .iter()
                .any(|o| !o.is_empty() && ua.contains(o.as_str()))
        });
        // `subscribe` refused an upgrade this does not accept.
        let websocket = wants_websocket(&head)
            .then(|| handshake::accept(&head, compress::AVAILABLE).ok())
            .flatten();
        let framing = match &websocket {
            Some(accepted) => Framing::websocket(accepted.deflate),
            None => Framing::stream(head.http11, oldschool, head.accept_sse)
                .gzip(head.accept_gzip && compress::AVAILABLE),
        };
        // A gzip stream's body starts with its header (and the SSE hint,
        // compressed): the trailer counts what it holds.
        let (gzip_start, gzip) = if framing.is_gzip() {
            let first = if framing.sse {
                http::sse_retry()
            } else {
                String::new()
            };
            compress::gzip_start(first.as_bytes())
        } else {
            (Vec::new(), GzipState::default())
        };
        let (replay, cursor_status) = self.replay_start(&head);
        let replay = replay.and_then(std::num::NonZeroU64::new);
        let stream = Box::new(Stream {
            sub,
            framing,
            grant: access.grant,
            replay,
            gzip,
        });
        self.conns
            .start_stream(key, stream, self.history.last_seq(), access.until);
        // Built after the count went up: the head counts this subscriber.
        let extra: &[(&str, &str)] = match cursor_status {
            Some(status) => &[("X-Fetch-Since-Cursor-Status", status)],
            None => &[],
        };
        let headers = self.headers_for(key);
        let mut stream_head = match &websocket {
            Some(accepted) => {
                let extensions = accepted.deflate.then_some(handshake::DEFLATE_RESPONSE);
                http::websocket_head(&headers, &accepted.accept, extensions, extra)
            }
            None => {
                let (chunked, sse, gzip) = (framing.chunked, framing.sse, framing.is_gzip());
                http::stream_head_encoded(&headers, chunked, sse, gzip, extra)
            }
        };
        if framing.chunked && !gzip_start.is_empty() {
            stream_head.extend_from_slice(&http::chunk(&gzip_start));
        } else {
            stream_head.extend_from_slice(&gzip_start);
        }
        self.queue(key, stream_head.into());
        if replay.is_some() {
            self.pump_replay(key);
        }
    }

    /// Where a subscriber's replay starts (`None`: go live at once), and
    /// for a cursor request whether the cursor was found.
    fn replay_start(&mut self, head: &RequestHead) -> (Option<u64>, Option<&'static str>) {
        let clock = &self.clock;
        let now = || clock.epoch();
        let next_seq = self.history.last_seq() + 1;
        let start = if let Some(cursor) = resume_cursor(head) {
            match self.history.start_after_cursor(&cursor, now) {
                Start::From(seq) => (Some(seq), Some("found")),
                Start::UnknownCursor => (None, Some("unknown")),
            }
        } else if let Some(since) = head.fetch_since.as_deref() {
            let since = since.trim().parse::<f64>().unwrap_or(f64::INFINITY);
            (Some(self.history.start_since(since, now)), None)
        } else {
            self.history.prune(now);
            (None, None)
        };
        (start.0.filter(|&s| s < next_seq), start.1)
    }
}

/// The cursor a subscriber resumes after: `Last-Event-ID` (an
/// `EventSource` reconnecting), else `?lastEventID=` (its first connection:
/// it cannot set headers), else `X-Fetch-Since-Cursor`.
fn resume_cursor(head: &RequestHead) -> Option<String> {
    head.last_event_id
        .clone()
        .or_else(|| head.query_param("lastEventID"))
        .or_else(|| head.fetch_since_cursor.clone())
}

/// A WebSocket upgrade is asked for and this build serves WebSocket;
/// without the `websocket` feature an upgrade request is an ordinary
/// subscription, as it was before, and the code that would serve it is
/// left out of the build (the constant folds it away).
fn wants_websocket(head: &RequestHead) -> bool {
    websocket::AVAILABLE && head.upgrade_websocket
}

pub(super) fn keep_alive(head: &RequestHead) -> After {
    if head.keep_alive {
        After::KeepAlive
    } else {
        After::Close
    }
}
