//! `/metrics`: a snapshot of what the hub, its helper pools and the process
//! counted, written in the Prometheus (OpenMetrics) text format by the
//! official `prometheus-client` crate. Nothing is shared or atomic on the
//! fan-out path: the hub counts in plain integers and a registry is built
//! for each scrape.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::stats::{LdapCounts, SqsCounts, Stats};

/// The content type `/metrics` is served with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Everything one scrape shows.
pub struct Snapshot<'a> {
    pub stats: &'a Stats,
    pub subscribers: usize,
    /// Live subscribers by transport (`stream`, `sse`, `websocket`), and
    /// how many of them are compressed (`compressed`, counted again).
    pub transports: &'a [(&'static str, usize)],
    /// Open connections by protocol state.
    pub connections: &'a [(&'static str, usize)],
    pub backlog_events: usize,
    pub backlog_bytes: usize,
    pub replays: usize,
    /// Bytes held in request buffers (the input budget's use).
    pub input_bytes: usize,
    pub ldap: Option<LdapCounts>,
    pub sqs: Option<SqsCounts>,
    pub cluster: Option<crate::stats::ClusterStatus>,
}

type Labels = Vec<(String, String)>;

fn counter(r: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    r.register(name, help, c);
}

fn gauge(r: &mut Registry, name: &str, help: &str, value: u64) {
    let g = Gauge::<i64>::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    r.register(name, help, g);
}

fn counter_family(r: &mut Registry, name: &str, help: &str, label: &str, values: &[(&str, u64)]) {
    let family = Family::<Labels, Counter>::default();
    for (value, n) in values {
        family
            .get_or_create(&vec![(label.to_owned(), (*value).to_owned())])
            .inc_by(*n);
    }
    r.register(name, help, family);
}

/// The text of one scrape.
pub fn render(s: &Snapshot<'_>) -> String {
    let mut root = Registry::default();
    let r = root.sub_registry_with_prefix("pubsubd");
    gauge(r, "subscribers", "Live subscribers", s.subscribers as u64);
    let connections = Family::<Labels, Gauge>::default();
    for (state, n) in s.connections {
        connections
            .get_or_create(&vec![("state".to_owned(), (*state).to_owned())])
            .set(*n as i64);
    }
    r.register("connections", "Open connections by state", connections);
    let transports = Family::<Labels, Gauge>::default();
    for (transport, n) in s.transports {
        transports
            .get_or_create(&vec![("transport".to_owned(), (*transport).to_owned())])
            .set(*n as i64);
    }
    r.register(
        "subscribers_by_transport",
        "Live subscribers by transport (compressed: those of any transport that are)",
        transports,
    );
    let st = s.stats;
    counter_family(
        r,
        "events_published",
        "Events accepted, by where they came from",
        "source",
        &[
            ("http", st.published_http),
            ("sqs", st.published_sqs),
            ("cluster", st.published_cluster),
        ],
    );
    counter(
        r,
        "publishes_deduplicated",
        "Publishes answered 202 with no new event (their Idempotency-Key was already in the window)",
        st.deduplicated,
    );
    counter(
        r,
        "deliveries",
        "Event frames queued for subscribers (live and replayed)",
        st.deliveries,
    );
    counter(r, "bytes_sent", "Bytes written to clients", st.bytes_sent);
    counter_family(
        r,
        "subscribers_dropped",
        "Subscribers dropped, by reason",
        "reason",
        &[
            ("queue_full", st.dropped_queue_full),
            ("write_timeout", st.dropped_write_timeout),
            ("replay_fell_behind", st.dropped_replay_behind),
        ],
    );
    let statuses: Vec<(String, u64)> = st
        .responses()
        .map(|(code, n)| (code.to_string(), n))
        .collect();
    let statuses: Vec<(&str, u64)> = statuses.iter().map(|(c, n)| (c.as_str(), *n)).collect();
    counter_family(
        r,
        "requests",
        "Requests answered, by status",
        "status",
        &statuses,
    );
    gauge(
        r,
        "backlog_events",
        "Events kept for replay",
        s.backlog_events as u64,
    );
    gauge(
        r,
        "backlog_bytes",
        "JSON bytes of the events kept for replay",
        s.backlog_bytes as u64,
    );
    gauge(
        r,
        "input_bytes",
        "Bytes held for request heads and bodies (server.max_input_bytes caps it)",
        s.input_bytes as u64,
    );
    gauge(
        r,
        "replays_in_progress",
        "Subscribers being sent the backlog",
        s.replays as u64,
    );
    counter(
        r,
        "tls_handshakes",
        "TLS handshakes completed",
        st.tls_handshakes,
    );
    counter(
        r,
        "tls_handshake_failures",
        "TLS handshakes that failed",
        st.tls_handshake_failures,
    );
    if let Some(ldap) = &s.ldap {
        gauge(
            r,
            "ldap_queue_depth",
            "LDAP lookups waiting for a worker",
            ldap.queued as u64,
        );
        counter(
            r,
            "ldap_lookups",
            "LDAP lookups sent to the server",
            ldap.lookups,
        );
        counter(
            r,
            "ldap_lookup_failures",
            "LDAP lookups that granted nothing",
            ldap.failures,
        );
        counter(
            r,
            "ldap_cache_hits",
            "LDAP lookups answered from the cache",
            ldap.cache_hits,
        );
        let seconds = Counter::<f64, AtomicU64>::default();
        seconds.inc_by(ldap.lookup_time.as_secs_f64());
        r.register(
            "ldap_lookup_seconds",
            "Time spent in LDAP lookups (divide by ldap_lookups_total for the mean)",
            seconds,
        );
        gauge(
            r,
            "ldap_reachable",
            "1 if the last LDAP connection reached the server",
            u64::from(ldap.reachable != Some(false)),
        );
    }
    if let Some(sqs) = &s.sqs {
        counter(r, "sqs_received", "SQS messages received", sqs.received);
        counter(r, "sqs_deleted", "SQS messages deleted", sqs.deleted);
        counter(r, "sqs_errors", "SQS calls that failed", sqs.errors);
    }
    if let Some(c) = &s.cluster {
        gauge(
            r,
            "cluster_up",
            "1 when the stream is loaded and both Redis links are up",
            u64::from(c.ready()),
        );
        gauge(
            r,
            "cluster_lag_milliseconds",
            "Age of the last stream entry when this node delivered it",
            c.lag_ms,
        );
        gauge(
            r,
            "cluster_appends_waiting",
            "Publishes waiting for Redis to acknowledge their append",
            c.appends_waiting as u64,
        );
        counter_family(
            r,
            "cluster_appends",
            "Publishes by outcome: acknowledged (202), refused (503, not stored), unknown (504, sent with no answer in time), deduplicated (202 for an Idempotency-Key already in the stream)",
            "outcome",
            &[
                ("acknowledged", c.acknowledged),
                ("refused", c.refused),
                ("unknown", c.unknown),
                ("deduplicated", c.deduplicated),
            ],
        );
        counter(
            r,
            "cluster_held_back",
            "Publishes refused (503) because a live node was near the trim horizon",
            c.held_back,
        );
        gauge(
            r,
            "cluster_slowest_lag_entries",
            "Entries the slowest live node has not read yet",
            c.slowest_lag,
        );
        let lags = Family::<Labels, Gauge>::default();
        for (node, lag, live) in &c.nodes {
            lags.get_or_create(&vec![
                ("node".to_owned(), node.clone()),
                ("live".to_owned(), live.to_string()),
            ])
            .set(i64::try_from(*lag).unwrap_or(i64::MAX));
        }
        r.register(
            "cluster_node_lag_entries",
            "Entries each node has not read yet, as it last recorded in Redis",
            lags,
        );
        counter(
            r,
            "cluster_delivered",
            "Events delivered from the stream",
            c.delivered,
        );
        counter(
            r,
            "cluster_duplicates",
            "Repeated cursors dropped",
            c.duplicates,
        );
        counter(
            r,
            "cluster_resets",
            "Times the stream was found reset",
            c.resets,
        );
        counter(
            r,
            "cluster_gaps",
            "Times entries were trimmed before this node read them",
            c.gaps,
        );
    }
    process_metrics(&mut root);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &root);
    out
}

/// The standard `process_*` figures, read from /proc.
fn process_metrics(r: &mut Registry) {
    let page = page_size();
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        if let Some(pages) = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u64>().ok())
        {
            gauge(
                r,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                pages * page,
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            r,
            "process_open_fds",
            "Open file descriptors",
            fds.count() as u64,
        );
    }
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14, stime 15, starttime 22.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let ticks = clock_ticks();
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        let seconds = Counter::<f64, AtomicU64>::default();
        seconds.inc_by((utime + stime) as f64 / ticks);
        r.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            seconds,
        );
    }
    if let (Some(start), Some(boot)) = (field(22), boot_time()) {
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(boot + start as f64 / ticks);
        r.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            g,
        );
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant of the system.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a constant of the system.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 {
        n as f64
    } else {
        100.0
    }
}

/// When the system booted, from /proc/stat's `btime`.
fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|t| t.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_names_labels_and_process_figures() {
        let mut stats = Stats::default();
        for _ in 0..3 {
            stats.published(crate::stats::Source::Http);
        }
        stats.deliveries += 7;
        stats.responded(202);
        stats.responded(202);
        let text = render(&Snapshot {
            stats: &stats,
            subscribers: 2,
            transports: &[("stream", 1), ("websocket", 1), ("compressed", 1)],
            connections: &[("stream", 2), ("head", 1)],
            backlog_events: 5,
            backlog_bytes: 500,
            replays: 0,
            input_bytes: 0,
            cluster: None,
            ldap: None,
            sqs: Some(SqsCounts {
                received: 4,
                deleted: 4,
                errors: 1,
            }),
        });
        for line in [
            "pubsubd_subscribers 2",
            "pubsubd_connections{state=\"stream\"} 2",
            "pubsubd_subscribers_by_transport{transport=\"websocket\"} 1",
            "pubsubd_events_published_total{source=\"http\"} 3",
            "pubsubd_deliveries_total 7",
            "pubsubd_requests_total{status=\"202\"} 2",
            "pubsubd_backlog_events 5",
            "pubsubd_sqs_errors_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        for name in [
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_cpu_seconds_total ",
            "process_start_time_seconds ",
        ] {
            assert!(text.lines().any(|l| l.starts_with(name)), "{name}\n{text}");
        }
        assert!(!text.contains("ldap_"));
        assert!(text.ends_with("# EOF\n"));
    }
}
