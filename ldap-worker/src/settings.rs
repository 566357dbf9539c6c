//! What the pool is told: how to reach the directory, what to ask it, and
//! the pool's own bounds (workers, queue, cache). Plain data with the
//! defaults pubsubd documents, and the worst-case time of one job that
//! follows from it.

use std::path::PathBuf;
use std::time::Duration;

/// How to reach the directory and what to ask it. See PROTOCOL.md, `clients.ldap`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LdapSettings {
    /// `ldap://host[:port]`, `ldaps://host[:port]` or `ldapi://...`.
    pub uri: String,
    /// The DN to bind as, `%s` standing for the (DN-escaped) user name.
    pub user_dn: String,
    /// Base DN of the membership searches (subtree).
    pub base_scope: String,
    /// Search filters, `%s` standing for the (filter-escaped) user name; the DNs
    /// of the entries found are the user's groups.
    pub membership_patterns: Vec<String>,
    /// Connect timeout (TCP + TLS) and the timeout of every operation.
    pub timeout: Duration,
    /// How long a successful answer is reused for the same credentials; zero
    /// disables the cache.
    pub cache_ttl: Duration,
    /// Most cached credentials.
    pub cache_entries: usize,
    /// Worker threads (at least one is started).
    pub workers: usize,
    /// Capacity of the job queue (at least one).
    pub queue: usize,
    /// Extra trusted CA certificates (PEM), on top of the system's, for
    /// `ldaps://` and StartTLS.
    pub ca_file: Option<PathBuf>,
}

impl Default for LdapSettings {
    fn default() -> LdapSettings {
        LdapSettings {
            uri: String::new(),
            user_dn: String::new(),
            base_scope: String::new(),
            membership_patterns: Vec::new(),
            timeout: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(60),
            cache_entries: 10_000,
            workers: 4,
            queue: 1024,
            ca_file: None,
        }
    }
}

impl LdapSettings {
    /// The longest one job can take once a worker has picked it up (connect,
    /// bind, each search (twice: per entry and in total), unbind). Queueing
    /// time comes on top.
    pub fn max_job_time(&self) -> Duration {
        let ops = 3u32.saturating_add(
            u32::try_from(self.membership_patterns.len())
                .unwrap_or(u32::MAX)
                .saturating_mul(2),
        );
        self.timeout.saturating_mul(ops)
    }
}
