//! How far each node has read, kept in Redis beside the stream: a hash
//! `<stream>:nodes` with one field per node, `"<read> <epoch ms>"`, where
//! `read` counts the stream's entries up to and including the node's
//! position (the scale of `XINFO STREAM`'s `entries-added`).
//!
//! A reader refreshes its field with its reads (at most every 50 ms: each
//! `HSET` is a write Redis fsyncs) and takes everybody's fields in the
//! same pipeline; from them and `entries-added` it reports
//! each node's lag (entries appended that the node has not read). A node
//! whose field is older than `node_timeout` is not live: it holds nobody
//! back. A node that stops cleanly removes its field; one silent for
//! [`forget_after`] (a crash: a restarted node has a new name) is removed
//! by the first reader that sees it so.
//!
//! Invariant: lags are never under-reported from a stale view. A field is
//! refreshed after its node read, so a stored count can only be behind;
//! `entries-added` is taken in the same pipeline as the fields, so the
//! only entries not seen are those appended since, which the server adds
//! for its own appends and covers with a margin for the others'.

use crate::resp::Reply;

/// The hash beside `stream`.
pub fn hash_key(stream: &str) -> String {
    format!("{stream}:nodes")
}

/// A field's value.
pub fn encode(read: u64, epoch_ms: u64) -> String {
    format!("{read} {epoch_ms}")
}

fn decode(value: &str) -> Option<(u64, u64)> {
    let (read, ms) = value.split_once(' ')?;
    Some((read.parse().ok()?, ms.parse().ok()?))
}

/// One node's standing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLag {
    pub node: String,
    /// Entries appended that it has not read.
    pub lag: u64,
    /// Reported within `node_timeout`.
    pub live: bool,
}

/// What a reader saw with its last read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Progress {
    /// `entries-added` of the stream.
    pub head: u64,
    /// Every node in the hash (this one included once it has reported).
    pub nodes: Vec<NodeLag>,
    /// Fields not refreshed for [`forget_after`]: nodes that crashed (a
    /// restarted node has a new name), removed by the reader that saw them.
    pub forget: Vec<String>,
}

/// How long a silent node's field stays in the hash: ten `node_timeout`s,
/// at least ten minutes (one that comes back later just reports anew).
pub fn forget_after(node_timeout_ms: u64) -> u64 {
    node_timeout_ms.saturating_mul(10).max(600_000)
}

impl Progress {
    /// From an `HGETALL` reply, the stream's `entries-added` and the time.
    pub fn from_hash(reply: &Reply, head: u64, now_ms: u64, node_timeout_ms: u64) -> Progress {
        let mut nodes = Vec::new();
        let mut forget = Vec::new();
        if let Some(items) = reply.array() {
            for kv in items.chunks(2) {
                let [k, v] = kv else { continue };
                let (Some(node), Some((read, ms))) = (k.text(), v.text().and_then(decode)) else {
                    continue;
                };
                if now_ms.saturating_sub(ms) > forget_after(node_timeout_ms) {
                    forget.push(node.to_string());
                    continue;
                }
                nodes.push(NodeLag {
                    node: node.to_string(),
                    lag: head.saturating_sub(read),
                    live: now_ms.saturating_sub(ms) <= node_timeout_ms,
                });
            }
        }
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        Progress {
            head,
            nodes,
            forget,
        }
    }

    /// The largest lag of a live node (0 when none is).
    pub fn slowest_live(&self) -> u64 {
        self.nodes
            .iter()
            .filter(|n| n.live)
            .map(|n| n.lag)
            .max()
            .unwrap_or(0)
    }

    /// The nodes that are not live (their fields stay: a node that
    /// returns finds its gap from the stream, not from here).
    pub fn dead(&self) -> impl Iterator<Item = &str> {
        self.nodes
            .iter()
            .filter(|n| !n.live)
            .map(|n| n.node.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }

    #[test]
    fn lags_and_liveness_from_the_hash() {
        let reply = Reply::Array(vec![
            bulk("b"),
            bulk(&encode(90, 10_000)),
            bulk("a"),
            bulk(&encode(100, 9_500)),
            bulk("stale"),
            bulk(&encode(10, 1_000)),
            bulk("junk"),
            bulk("x y"),
        ]);
        let p = Progress::from_hash(&reply, 100, 10_100, 5_000);
        assert_eq!(
            p.nodes,
            vec![
                NodeLag {
                    node: "a".into(),
                    lag: 0,
                    live: true
                },
                NodeLag {
                    node: "b".into(),
                    lag: 10,
                    live: true
                },
                NodeLag {
                    node: "stale".into(),
                    lag: 90,
                    live: false
                },
            ]
        );
        assert_eq!(p.slowest_live(), 10, "a dead node holds nobody back");
        assert_eq!(p.dead().collect::<Vec<_>>(), vec!["stale"]);
        // A count ahead of the head (a reset stream) is no lag.
        let p = Progress::from_hash(&Reply::Array(vec![bulk("a"), bulk("5 1")]), 2, 1, 10);
        assert_eq!(p.slowest_live(), 0);
        assert_eq!(Progress::from_hash(&Reply::Nil, 7, 0, 0).slowest_live(), 0);
        // A field silent for ten node_timeouts (and ten minutes) goes.
        let old = Reply::Array(vec![
            bulk("gone"),
            bulk(&encode(1, 0)),
            bulk("a"),
            bulk("5 1000000"),
        ]);
        let p = Progress::from_hash(&old, 5, 1_000_001, 30_000);
        assert_eq!(p.forget, vec!["gone".to_string()]);
        assert_eq!(p.nodes.len(), 1);
    }
}
