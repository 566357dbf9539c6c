//! Who a request's credentials make it: HTTP Basic auth checked against the
//! ACL file on the event loop's thread (cheap), or, for users not in the file,
//! against LDAP on the `ldap-worker` pool while the connection is parked.
//!
//! A parked connection carries its serial number as the job's tag; a reply
//! for a connection that has since closed (its slab key possibly reused) is
//! dropped. A full LDAP queue, an LDAP failure or a reply that does not
//! come back in time all mean "no grant": the request goes on without
//! private access, and nothing waits on LDAP but that one client.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ldap_worker::{LdapJob, LdapPool};
use log::{info, warn};
use mio::Waker;

use super::Hub;
use crate::acl::{Acl, AuthOutcome, Grant, LdapAclMap};
use crate::basic_auth::parse_basic_auth;
use crate::config::LdapConfig;
use crate::conn::{AfterAuth, Pending, State};
use crate::http::RequestHead;

/// The LDAP side: the pool, how its groups map to grants, and the parked
/// connections by tag.
pub struct Ldap {
    pool: LdapPool,
    map: LdapAclMap,
    /// How long a parked connection waits for its reply at most.
    wait: Duration,
    waiting: HashMap<u64, usize>,
}

impl Ldap {
    /// The pool's counters.
    pub fn stats(&self) -> ldap_worker::StatsSnapshot {
        self.pool.stats()
    }

    /// Starts the pool from `clients.ldap`; `None` when not configured.
    pub fn start(config: Option<&LdapConfig>, waker: Arc<Waker>) -> Result<Option<Ldap>, String> {
        let Some(LdapConfig { settings, map }) = config.cloned() else {
            return Ok(None);
        };
        let wait = settings.max_job_time() + Duration::from_secs(1);
        info!("LDAP: {} with {} workers", settings.uri, settings.workers);
        let notify = Box::new(move || {
            let _ = waker.wake();
        });
        let pool = LdapPool::start(settings, notify).map_err(|e| format!("LDAP: {e}"))?;
        Ok(Some(Ldap {
            pool,
            map,
            wait,
            waiting: HashMap::new(),
        }))
    }
}

/// The ACL file and where it came from (for SIGUSR2).
pub struct AclFile {
    pub acl: Acl,
    pub path: PathBuf,
}

impl AclFile {
    /// Loads the ACL at start-up: a missing file means no users; an
    /// unreadable or invalid one is an error.
    pub fn load(path: PathBuf) -> Result<AclFile, crate::error::StartError> {
        if !path.exists() {
            info!(
                "no ACL file at {}: no private access for anyone",
                path.display()
            );
        }
        let acl = match Acl::load(&path) {
            Ok(acl) => acl,
            Err(source) => return Err(crate::error::StartError::Acl { path, source }),
        };
        if !acl.is_empty() {
            info!("ACL: {} users from {}", acl.len(), path.display());
        }
        Ok(AclFile { acl, path })
    }
}

/// The outcome of checking a request's credentials on the event loop's thread.
pub(super) enum Check {
    /// Decided: the grant, if any.
    Done(Option<Grant>),
    /// A user the ACL file does not know: ask LDAP.
    AskLdap(String, String),
}

impl Hub {
    /// Checks Basic credentials against the ACL file.
    pub(super) fn check_credentials(&self, head: &RequestHead) -> Check {
        let Some((user, password)) = head.authorization.as_deref().and_then(parse_basic_auth)
        else {
            return Check::Done(None);
        };
        match self.acl.acl.authenticate(&user, &password) {
            AuthOutcome::Granted(grant) => Check::Done(Some(grant)),
            AuthOutcome::BadPassword => Check::Done(None),
            AuthOutcome::UnknownUser if self.ldap.is_some() => Check::AskLdap(user, password),
            AuthOutcome::UnknownUser => Check::Done(None),
        }
    }

    /// Hands the credentials to LDAP and parks the connection; if LDAP
    /// cannot take the job, the request goes on at once without a grant.
    pub(super) fn park_for_ldap(
        &mut self,
        key: usize,
        user: String,
        password: String,
        pending: Pending,
    ) {
        let (Some(ldap), Some(conn)) = (self.ldap.as_mut(), self.conns.get_mut(key)) else {
            return self.resume(key, pending, None);
        };
        let tag = conn.serial;
        match ldap.pool.try_submit(LdapJob {
            tag,
            user,
            password,
        }) {
            Ok(()) => {
                ldap.waiting.insert(tag, key);
                let wait = ldap.wait;
                conn.state = State::Authenticating(Box::new(pending));
                let deadline = self.clock.now() + wait;
                self.set_deadline(key, deadline);
            }
            Err(job) => {
                warn!(
                    "LDAP queue full: {} continues without private access",
                    job.user
                );
                self.resume(key, pending, None);
            }
        }
    }

    /// Takes the LDAP pool's answers and resumes the connections they are for.
    pub(super) fn take_ldap_replies(&mut self) {
        let Some(ldap) = &mut self.ldap else { return };
        let replies: Vec<_> = ldap.pool.replies().try_iter().collect();
        let mut ready = Vec::with_capacity(replies.len());
        for reply in replies {
            let Some(key) = ldap.waiting.remove(&reply.tag) else {
                continue;
            };
            let grant = reply.groups.map(|groups| ldap.map.grant_for(&groups));
            ready.push((key, reply.tag, grant));
        }
        for (key, tag, grant) in ready {
            self.resume_parked(key, tag, grant);
        }
    }

    /// A parked connection whose wait is over (reply or deadline).
    pub(super) fn resume_parked(&mut self, key: usize, serial: u64, grant: Option<Grant>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.serial != serial || !matches!(conn.state, State::Authenticating(_)) {
            return;
        }
        if let Some(ldap) = &mut self.ldap {
            ldap.waiting.remove(&serial);
        }
        let State::Authenticating(pending) = std::mem::replace(&mut conn.state, State::Head) else {
            return;
        };
        self.resume(key, *pending, grant);
        // Bytes that arrived while parked (a publish body) wait in the buffer.
        self.push_pending(key);
    }

    fn resume(&mut self, key: usize, pending: Pending, grant: Option<Grant>) {
        match pending.then {
            AfterAuth::Subscribe(sub) => self.open_stream(key, pending.head, sub, grant),
            AfterAuth::Publish(topics) => self.continue_publish(key, pending.head, topics, grant),
        }
    }

    /// SIGUSR2: re-reads the ACL file; an invalid file keeps the old ACL.
    /// Open streams keep the access they were granted.
    pub fn reload_acl(&mut self) {
        let path = self.acl.path.clone();
        match Acl::load(&path) {
            Ok(acl) => {
                info!("SIGUSR2: reloaded {} ({} users)", path.display(), acl.len());
                self.acl.acl = acl;
                self.acl_ok = true;
            }
            Err(e) => {
                warn!("SIGUSR2: keeping the old ACL: {}: {e}", path.display());
                self.acl_ok = false;
            }
        }
    }
}
