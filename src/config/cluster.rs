//! The `cluster` section → [`ClusterConfig`]: where the Redis stream that
//! nodes share lives, validated at start-up whether or not this build has
//! the `cluster` feature. Absent (or `~`): a single node, as before.
//!
//! ```yaml
//! cluster:
//!   redis: redis://[user:password@]host:6379/0   # rediss:// for TLS
//!   stream: pubsub        # nodes with the same key form one cluster
//!   max_len: 100000       # default max(backlog.size, 10000)
//!   timeout: 5s           # connect and each command
//!   node_timeout: 30s     # a node silent this long holds nobody back
//!   ca_file: ~            # PEM CA for rediss:// with a private CA
//!   sentinel: ~           # instead of redis: {master: NAME, nodes: ["host:26379"]}
//!                         #   optional: username, password (master and replicas),
//!                         #   sentinel_password (the Sentinels' requirepass)
//! ```
//!
//! Exactly one of `redis` and `sentinel` is required. Errors name the key,
//! e.g. `cluster.redis: must start with redis:// or rediss://`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde_yaml::Value;

use super::ConfigError;
use crate::yaml::{
    entries, err, nonempty_string, positive, positive_duration, section, string_list,
};

/// Entries the stream keeps at least, by default.
pub const DEFAULT_MAX_LEN: u64 = 10_000;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_STREAM: &str = "pubsub";

/// `cluster`, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub redis: ClusterRedis,
    pub stream: String,
    /// `None`: max(backlog.size, 10000), settled once the backlog is known.
    pub max_len: Option<u64>,
    pub timeout: Duration,
    /// A node that has not recorded its progress for this long is not
    /// live: it no longer holds publishes back.
    pub node_timeout: Duration,
    pub ca_file: Option<PathBuf>,
}

/// How Redis is found (`Debug` goes through [`ClusterConfig`]'s).
#[derive(Clone, PartialEq, Eq)]
pub enum ClusterRedis {
    Url(String),
    Sentinel(SentinelConfig),
}

/// `cluster.sentinel`: where the Sentinels are, which master to ask for,
/// and the AUTH each side needs (never logged).
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelConfig {
    pub master: String,
    pub nodes: Vec<String>,
    /// AUTH for the master and its replicas (`username` for a Redis 6 ACL
    /// user; the password alone authenticates as `default`).
    pub username: Option<String>,
    pub password: Option<String>,
    /// AUTH for the Sentinels themselves (their own `requirepass`).
    pub sentinel_password: Option<String>,
}

impl ClusterConfig {
    /// The stream's length limit for a backlog of `backlog_size` events.
    pub fn max_len(&self, backlog_size: usize) -> u64 {
        self.max_len
            .unwrap_or_else(|| (backlog_size as u64).max(DEFAULT_MAX_LEN))
    }
}

impl fmt::Debug for ClusterConfig {
    /// Never shows the password in the URL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redis = match &self.redis {
            ClusterRedis::Url(url) => redact(url),
            ClusterRedis::Sentinel(s) => format!("sentinel {} {:?}", s.master, s.nodes),
        };
        f.debug_struct("ClusterConfig")
            .field("redis", &redis)
            .field("stream", &self.stream)
            .field("max_len", &self.max_len)
            .field("timeout", &self.timeout)
            .field("node_timeout", &self.node_timeout)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl fmt::Debug for ClusterRedis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterRedis::Url(url) => write!(f, "Url({})", redact(url)),
            ClusterRedis::Sentinel(s) => write!(f, "Sentinel({}, {:?})", s.master, s.nodes),
        }
    }
}

/// The URL with its password (if any) replaced by `***`.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (userinfo, host) = rest.rsplit_once('@').unwrap_or(("", rest));
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_string(),
    }
}

/// Validates `cluster`; `~` means no cluster.
pub fn parse(v: &Value, warnings: &mut Vec<String>) -> Result<Option<ClusterConfig>, ConfigError> {
    let Some(map) = section(v, "cluster")? else {
        return Ok(None);
    };
    let mut redis = None;
    let mut sentinel = None;
    let mut stream = DEFAULT_STREAM.to_string();
    let mut max_len = None;
    let mut timeout = DEFAULT_TIMEOUT;
    let mut node_timeout = DEFAULT_NODE_TIMEOUT;
    let mut ca_file = None;
    for (name, key, value) in entries(map, "cluster")? {
        let at = key.as_str();
        if value.is_null() {
            continue;
        }
        match name.as_str() {
            "redis" => {
                let url = nonempty_string(value, at)?;
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    return err(at, "must start with redis:// or rediss://");
                }
                redis = Some(url);
            }
            "stream" => stream = nonempty_string(value, at)?,
            "max_len" => max_len = Some(positive(value, at, 1 << 40)?),
            "timeout" => timeout = positive_duration(value, at)?,
            "node_timeout" => node_timeout = positive_duration(value, at)?,
            "ca_file" => ca_file = Some(PathBuf::from(nonempty_string(value, at)?)),
            "sentinel" => sentinel = Some(parse_sentinel(value, at, warnings)?),
            _ => warnings.push(format!("unknown configuration key '{at}' ignored")),
        }
    }
    let redis = match (redis, sentinel) {
        (Some(url), None) => ClusterRedis::Url(url),
        (None, Some(sentinel)) => ClusterRedis::Sentinel(sentinel),
        (Some(_), Some(_)) => return err("cluster", "give either redis or sentinel, not both"),
        (None, None) => return err("cluster.redis", "is required (or cluster.sentinel)"),
    };
    Ok(Some(ClusterConfig {
        redis,
        stream,
        max_len,
        timeout,
        node_timeout,
        ca_file,
    }))
}

fn parse_sentinel(
    v: &Value,
    at: &str,
    warnings: &mut Vec<String>,
) -> Result<SentinelConfig, ConfigError> {
    let Some(map) = section(v, at)? else {
        return err(at, "must be a mapping");
    };
    let mut master = None;
    let mut nodes = Vec::new();
    let (mut username, mut password, mut sentinel_password) = (None, None, None);
    for (name, key, value) in entries(map, at)? {
        let key = key.as_str();
        match name.as_str() {
            "master" => master = Some(nonempty_string(value, key)?),
            "nodes" => {
                nodes = string_list(value, key)?;
                for node in &nodes {
                    let valid = node.rsplit_once(':').is_some_and(|(h, p)| {
                        !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0)
                    });
                    if !valid {
                        return err(key, format!("'{node}' is not host:port"));
                    }
                }
            }
            "username" if !value.is_null() => username = Some(nonempty_string(value, key)?),
            "password" if !value.is_null() => password = Some(nonempty_string(value, key)?),
            "sentinel_password" if !value.is_null() => {
                sentinel_password = Some(nonempty_string(value, key)?)
            }
            "username" | "password" | "sentinel_password" => {}
            _ => warnings.push(format!("unknown configuration key '{key}' ignored")),
        }
    }
    let Some(master) = master else {
        return err(&format!("{at}.master"), "is required");
    };
    if nodes.is_empty() {
        return err(&format!("{at}.nodes"), "must list at least one Sentinel");
    }
    Ok(SentinelConfig {
        master,
        nodes,
        username,
        password,
        sentinel_password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Option<ClusterConfig>, String> {
        let v: Value = serde_yaml::from_str(text).expect("yaml");
        parse(&v, &mut Vec::new()).map_err(|e| e.to_string())
    }

    #[test]
    fn full_and_default() {
        let c = parse_text(
            "redis: redis://u:pw@127.0.0.1:6379/0\nstream: s\nmax_len: 50\ntimeout: 200ms\nnode_timeout: 2s\nca_file: ca.pem\nsentinel: ~\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            c.redis,
            ClusterRedis::Url("redis://u:pw@127.0.0.1:6379/0".into())
        );
        assert_eq!(c.stream, "s");
        assert_eq!(c.max_len(5), 50);
        assert_eq!(c.timeout, Duration::from_millis(200));
        assert_eq!(c.node_timeout, Duration::from_secs(2));
        assert_eq!(c.ca_file, Some(PathBuf::from("ca.pem")));
        assert!(!format!("{c:?}").contains("pw"));
        let c = parse_text("redis: redis://h").unwrap().unwrap();
        assert_eq!(c.stream, "pubsub");
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.node_timeout, DEFAULT_NODE_TIMEOUT);
        assert_eq!(c.max_len(100), 10_000);
        assert_eq!(c.max_len(50_000), 50_000);
        assert!(parse_text("~").unwrap().is_none());
    }

    #[test]
    fn sentinel() {
        let c = parse_text("sentinel: {master: m, nodes: ['127.0.0.1:26379', 'h:1']}")
            .unwrap()
            .unwrap();
        assert_eq!(
            c.redis,
            ClusterRedis::Sentinel(SentinelConfig {
                master: "m".into(),
                nodes: vec!["127.0.0.1:26379".into(), "h:1".into()],
                username: None,
                password: None,
                sentinel_password: None,
            })
        );
        let c = parse_text(
            "sentinel: {master: m, nodes: ['h:1'], username: u, password: 'p w', sentinel_password: s}",
        )
        .unwrap()
        .unwrap();
        let ClusterRedis::Sentinel(s) = &c.redis else {
            panic!("{:?}", c.redis)
        };
        assert_eq!(
            (
                s.username.as_deref(),
                s.password.as_deref(),
                s.sentinel_password.as_deref()
            ),
            (Some("u"), Some("p w"), Some("s"))
        );
        assert!(!format!("{c:?}").contains("p w"), "{c:?}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = |t: &str| parse_text(t).unwrap_err();
        assert_eq!(
            e("stream: s"),
            "cluster.redis: is required (or cluster.sentinel)"
        );
        assert_eq!(
            e("redis: http://h"),
            "cluster.redis: must start with redis:// or rediss://"
        );
        assert_eq!(
            e("redis: redis://h\nsentinel: {master: m, nodes: ['h:1']}"),
            "cluster: give either redis or sentinel, not both"
        );
        assert_eq!(
            e("redis: redis://h\ntimeout: 0"),
            "cluster.timeout: must be greater than 0"
        );
        assert_eq!(
            e("redis: redis://h\nmax_len: 0"),
            "cluster.max_len: must be greater than 0"
        );
        assert_eq!(
            e("sentinel: {nodes: ['h:1']}"),
            "cluster.sentinel.master: is required"
        );
        assert_eq!(
            e("sentinel: {master: m, nodes: [h]}"),
            "cluster.sentinel.nodes: 'h' is not host:port"
        );
        assert_eq!(
            e("sentinel: {master: m}"),
            "cluster.sentinel.nodes: must list at least one Sentinel"
        );
        assert_eq!(e("[1]"), "cluster: must be a mapping, found a list");
    }
}
