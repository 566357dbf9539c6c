//! The LDAP feed's handle: the `ldap-worker` pool, how its group DNs map
//! to grants, and which connection each job is for. Jobs are tagged with the
//! connection's serial; a reply whose connection has gone is dropped.
//! Without the `ldap` feature, `Ldap` is a type with no values: the hub
//! keeps `Option<Ldap>`, which is then always `None`.

#[cfg(feature = "ldap")]
pub use with_ldap::Ldap;
#[cfg(not(feature = "ldap"))]
pub use without_ldap::Ldap;

/// A job the pool took: how long its connection may wait for the answer.
pub type Submitted = Result<std::time::Duration, String>;

#[cfg(feature = "ldap")]
mod with_ldap {
    use std::collections::HashMap;
    use std::time::Duration;

    use ldap_worker::{LdapJob, LdapPool, Proof};
    use log::info;

    use super::super::{FeedError, Wake};
    use super::Submitted;
    use crate::acl::{Grant, LdapAclMap};
    use crate::config::LdapConfig;
    use crate::stats::LdapCounts;

    pub struct Ldap {
        pool: LdapPool,
        map: LdapAclMap,
        /// How long a parked connection waits for its reply at most.
        wait: Duration,
        /// Connection keys by job tag (the connection's serial).
        waiting: HashMap<u64, usize>,
    }

    impl Ldap {
        /// Starts the pool from `clients.ldap`; `None` when not configured.
        pub fn start(config: Option<&LdapConfig>, wake: Wake) -> Result<Option<Ldap>, FeedError> {
            let Some(LdapConfig { settings, map }) = config.cloned() else {
                return Ok(None);
            };
            let wait = settings.max_job_time() + Duration::from_secs(1);
            info!("LDAP: {} with {} workers", settings.uri, settings.workers);
            let pool = LdapPool::start(settings, Box::new(move || wake())).map_err(error)?;
            Ok(Some(Ldap {
                pool,
                map,
                wait,
                waiting: HashMap::new(),
            }))
        }

        /// Queues a lookup for connection `key`: with the user's password,
        /// or (`None`) for a user a verified token names, whose groups are
        /// searched without a bind. A full queue hands the user name back.
        pub fn submit(
            &mut self,
            key: usize,
            tag: u64,
            user: String,
            password: Option<String>,
        ) -> Submitted {
            let proof = match password {
                Some(password) => Proof::Password(password),
                None => Proof::Vouched,
            };
            match self.pool.try_submit(LdapJob { tag, user, proof }) {
                Ok(()) => {
                    self.waiting.insert(tag, key);
                    Ok(self.wait)
                }
                Err(job) => Err(job.user),
            }
        }

        /// The answers so far: (connection key, tag, grant).
        pub fn replies(&mut self) -> Vec<(usize, u64, Option<Grant>)> {
            let replies: Vec<_> = self.pool.replies().try_iter().collect();
            replies
                .into_iter()
                .filter_map(|reply| {
                    let key = self.waiting.remove(&reply.tag)?;
                    let grant = reply.groups.map(|groups| self.map.grant_for(&groups));
                    Some((key, reply.tag, grant))
                })
                .collect()
        }

        /// The connection stopped waiting (deadline, or it went on).
        pub fn forget(&mut self, tag: u64) {
            self.waiting.remove(&tag);
        }

        /// What `--check-config` says of `clients.ldap`: its CA file is
        /// read, nothing is contacted.
        pub fn check(config: Option<&LdapConfig>) -> Result<Option<String>, FeedError> {
            let Some(ldap) = config else {
                return Ok(None);
            };
            ldap_worker::worker::tls_config(ldap.settings.ca_file.as_deref())
                .map_err(|e| error(ldap_worker::StartError::Tls(e)))?;
            Ok(Some(format!("LDAP: {}", ldap.settings.uri)))
        }

        pub fn counts(&self) -> LdapCounts {
            let s = self.pool.stats();
            LdapCounts {
                queued: s.queued,
                lookups: s.lookups,
                failures: s.failures,
                cache_hits: s.cache_hits,
                lookup_time: s.lookup_time,
                reachable: s.reachable,
            }
        }
    }

    fn error(e: ldap_worker::StartError) -> FeedError {
        FeedError {
            feed: "LDAP",
            source: Box::new(e),
        }
    }
}

#[cfg(not(feature = "ldap"))]
mod without_ldap {
    use super::super::{FeedError, Wake};
    use super::Submitted;
    use crate::acl::Grant;
    use crate::config::LdapConfig;
    use crate::stats::LdapCounts;

    /// No LDAP in this build: there is never a value of this type.
    pub enum Ldap {}

    impl Ldap {
        pub fn start(config: Option<&LdapConfig>, _: Wake) -> Result<Option<Ldap>, FeedError> {
            match config {
                Some(never) => match *never {},
                None => Ok(None),
            }
        }

        pub fn check(config: Option<&LdapConfig>) -> Result<Option<String>, FeedError> {
            Self::start(config, std::sync::Arc::new(|| {})).map(|_| None)
        }

        pub fn submit(&mut self, _: usize, _: u64, _: String, _: Option<String>) -> Submitted {
            match *self {}
        }

        pub fn replies(&mut self) -> Vec<(usize, u64, Option<Grant>)> {
            match *self {}
        }

        pub fn forget(&mut self, _: u64) {
            match *self {}
        }

        pub fn counts(&self) -> LdapCounts {
            match *self {}
        }
    }
}
