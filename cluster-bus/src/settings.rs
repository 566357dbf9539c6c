//! What the server hands the bus: where Redis is (a URL or Sentinels,
//! with their AUTH), the stream, its bounds and timeouts, and the reader's
//! fixed sizes. `Debug` and `redact` never show a password.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Entries asked for per `XREAD`.
pub const READ_COUNT: usize = 1024;
/// How long one `XREAD` blocks waiting for new entries.
pub const READ_BLOCK: Duration = Duration::from_millis(1000);
/// Cursors remembered for de-duplication, at least.
pub const SEEN_MIN: usize = 10_000;

/// Where Redis is.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// `redis://[user:password@]host:port/db` or `rediss://…`.
    Url(String),
    /// Ask Sentinels for the master.
    Sentinel(SentinelTarget),
}

/// Where the Sentinels are, the master to ask them for, and the AUTH each
/// side needs.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SentinelTarget {
    pub master: String,
    /// `host:port` of each Sentinel.
    pub nodes: Vec<String>,
    /// AUTH for the master and its replicas.
    pub username: Option<String>,
    pub password: Option<String>,
    /// AUTH for the Sentinels (their own `requirepass`).
    pub sentinel_password: Option<String>,
}

impl fmt::Debug for Target {
    /// Never shows a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Url(url) => write!(f, "Url({})", redact(url)),
            Target::Sentinel(s) => f
                .debug_struct("Sentinel")
                .field("master", &s.master)
                .field("nodes", &s.nodes)
                .field("auth", &s.password.is_some())
                .finish(),
        }
    }
}

/// What the bus needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    pub target: Target,
    /// The stream's key; nodes with the same key form one cluster.
    pub stream: String,
    /// Entries the stream keeps (approximate trim on every append).
    pub max_len: u64,
    /// Connecting, and each command.
    pub timeout: Duration,
    /// PEM CA certificates for `rediss://` with a private CA.
    pub ca_file: Option<PathBuf>,
    /// Entries loaded into the backlog on start (the newest).
    pub load: usize,
    /// This node's name in the entries it appends.
    pub node: String,
    /// A node that has not recorded its progress for this long no longer
    /// holds the others back.
    pub node_timeout: Duration,
}

/// `url` with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_string(),
    }
}
