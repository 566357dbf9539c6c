//! The admin listener's endpoints, answered by the event loop itself (so a
//! wedged loop fails `/healthz`): `/healthz`, `/readyz`, `/metrics`, the
//! status page `/` with its `/stats` JSON and its `/events` feed of public
//! events (SSE). It never serves subscriptions or publishes, and its
//! clients are ordinary connections with the same limits as any other.
//!
//! Uses: reads every part (counts, states, feeds' counters) for
//! `/metrics`, `/readyz` and the page; `conns` to answer.

use serde_json::json;

use super::requests::{keep_alive, After};
use super::table::{Access, State};
use super::Hub;
use crate::http::{BodyKind, Method, RequestHead};
use crate::metrics::{self, Snapshot};
use crate::stats;
use crate::topics::Subscription;

/// The status page: one self-contained file, no external resources.
const STATUS_PAGE: &str = include_str!("status.html");
impl Hub {
    pub(super) fn dispatch_admin(&mut self, key: usize, mut head: RequestHead) {
        let after = match head.body {
            BodyKind::None => keep_alive(&head),
            // A body on an admin request is not read: close after answering.
            _ => After::Close,
        };
        let get = matches!(head.method, Method::Get | Method::Head);
        let path = head.path().to_owned();
        match (get, path.as_str()) {
            (true, "/healthz") => self.admin_reply(key, &head, 200, TEXT, b"ok\n", after),
            (true, "/readyz") => {
                let (ready, body) = self.readiness();
                let status = if ready { 200 } else { 503 };
                self.admin_reply(key, &head, status, JSON, body.as_bytes(), after);
            }
            (true, "/metrics") => {
                let text = self.render_metrics();
                self.admin_reply(
                    key,
                    &head,
                    200,
                    metrics::CONTENT_TYPE,
                    text.as_bytes(),
                    after,
                );
            }
            (true, "/" | "/index.html") => {
                self.admin_reply(key, &head, 200, HTML, STATUS_PAGE.as_bytes(), after)
            }
            (true, "/stats") => {
                let body = self.stats_json();
                self.admin_reply(key, &head, 200, JSON, body.as_bytes(), after);
            }
            (true, "/events") if head.method == Method::Get && head.body == BodyKind::None => {
                // Every public event, as SSE; no credentials are looked
                // at, so private events never match.
                head.accept_sse = true;
                head.authorization = None;
                head.ignore_upgrade();
                match Subscription::parse("/") {
                    Ok(sub) => self.open_stream(key, head, sub, Access::default()),
                    Err(_) => self.admin_reply(key, &head, 500, TEXT, b"", After::Close),
                }
            }
            (true, _) => self.admin_reply(key, &head, 404, TEXT, b"Not found.\n", after),
            (false, _) => self.admin_reply(
                key,
                &head,
                405,
                TEXT,
                b"The admin listener serves GET only.\n",
                After::Close,
            ),
        }
    }

    fn admin_reply(
        &mut self,
        key: usize,
        head: &RequestHead,
        status: u16,
        content_type: &str,
        body: &[u8],
        after: After,
    ) {
        let body = (head.method != Method::Head).then_some((content_type, body));
        let extra = [("Cache-Control", "no-store")];
        self.respond_typed(key, status, body, &extra, after);
    }

    /// The LDAP pool's counters, when LDAP is configured.
    fn ldap_stats(&self) -> Option<stats::LdapCounts> {
        self.ldap.as_ref().map(|ldap| ldap.counts())
    }

    /// Whether this server should get traffic, and why not.
    fn readiness(&self) -> (bool, String) {
        let mut checks = serde_json::Map::new();
        let mut not_ready = Vec::new();
        let mut check = |name: &str, state: &str, ok: bool| {
            checks.insert(name.into(), state.into());
            if !ok {
                not_ready.push(name.to_owned());
            }
        };
        let stopping = self.is_shutting_down();
        check(
            "listeners",
            if stopping { "shutting down" } else { "ok" },
            !stopping,
        );
        check(
            "acl",
            if self.acl_ok {
                "ok"
            } else {
                "last reload failed"
            },
            self.acl_ok,
        );
        match self.ldap_stats() {
            None => check("ldap", "not configured", true),
            Some(stats) => match stats.reachable {
                Some(false) => check("ldap", "unreachable", false),
                Some(true) => check("ldap", "ok", true),
                None => check("ldap", "no lookup yet", true),
            },
        }
        if let Some(status) = self.cluster_status() {
            let state = if status.ready() {
                "ok"
            } else if !status.loaded {
                "loading the stream"
            } else {
                "Redis unreachable"
            };
            check("cluster", state, status.ready());
        }
        let ready = not_ready.is_empty();
        let body = json!({"ready": ready, "not_ready": not_ready, "checks": checks});
        (ready, body.to_string() + "\n")
    }

    /// The open connections by protocol state.
    fn connections_by_state(&self) -> [(&'static str, usize); 6] {
        let mut counts = [
            ("head", 0),
            ("body", 0),
            ("authenticating", 0),
            ("stream", 0),
            ("closing", 0),
            ("appending", 0),
        ];
        for (_, conn) in self.conns.iter() {
            let i = match conn.state() {
                State::Head => 0,
                State::Body(_) => 1,
                State::Authenticating(_) => 2,
                State::Stream(_) => 3,
                State::Closing => 4,
                State::Appending(_) => 5,
            };
            counts[i].1 += 1;
        }
        counts
    }

    fn replays_in_progress(&self) -> usize {
        self.conns.iter().filter(|(_, c)| c.is_replaying()).count()
    }

    /// Live subscribers by transport, as `/metrics` and the page name them.
    fn transports(&self) -> [(&'static str, usize); 4] {
        let t = self.conns.transports();
        [
            ("stream", t.stream),
            ("sse", t.sse),
            ("websocket", t.websocket),
            ("compressed", t.compressed),
        ]
    }

    fn render_metrics(&self) -> String {
        let connections = self.connections_by_state();
        metrics::render(&Snapshot {
            stats: &self.stats,
            subscribers: self.conns.subscribers(),
            transports: &self.transports(),
            connections: &connections,
            backlog_events: self.history.backlog().len(),
            backlog_bytes: self.history.backlog().bytes(),
            replays: self.replays_in_progress(),
            input_bytes: self.conns.input_bytes(),
            cluster: self.cluster_status(),
            ldap: self.ldap_stats(),
            sqs: self.sqs.as_ref().map(|feed| feed.counts()),
        })
    }

    /// What the status page polls.
    fn stats_json(&self) -> String {
        let history: Vec<_> = self
            .activity
            .history()
            .map(|(t, e, d)| json!([t, e, d]))
            .collect();
        let topics: Vec<_> = self
            .activity
            .busiest(10)
            .into_iter()
            .map(|(t, n)| json!([t, n]))
            .collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "now": self.clock.epoch(),
            "uptime": self.clock.epoch() - self.activity.started(),
            "subscribers": self.conns.subscribers(),
            "transports": self.transports().iter().map(|&(t, n)| (t.to_owned(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "connections": self.conns.len(),
            "events_published": self.stats.published_total(),
            "deliveries": self.stats.deliveries,
            "bytes_sent": self.stats.bytes_sent,
            "backlog_events": self.history.backlog().len(),
            "history": history,
            "topics": topics,
        })
        .to_string()
    }
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
const HTML: &str = "text/html; charset=utf-8";
