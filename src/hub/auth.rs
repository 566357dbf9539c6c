//! Who a request's credentials make it: HTTP Basic auth checked against the
//! ACL file on the event loop's thread (cheap), or, for users not in the file,
//! against LDAP on the `ldap-worker` pool while the connection is parked.
//!
//! A parked connection carries its serial number as the job's tag; a reply
//! for a connection that has since closed (its slab key possibly reused) is
//! dropped. A full LDAP queue, an LDAP failure or a reply that does not
//! come back in time all mean "no grant": the request goes on without
//! private access, and nothing waits on LDAP but that one client.
//!
//! Uses: `acl`, `ldap`, `conns` (parking and resuming).

use std::path::PathBuf;

use log::{info, warn};

use super::table::{AfterAuth, Parked, State};
use super::Hub;
use crate::acl::{Acl, AuthOutcome, Grant};
use crate::basic_auth::parse_basic_auth;
use crate::http::RequestHead;

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
        parked: Parked,
    ) {
        let (Some(ldap), Some(conn)) = (self.ldap.as_mut(), self.conns.get(key)) else {
            return self.resume(key, parked, None);
        };
        match ldap.submit(key, conn.serial(), user, password) {
            Ok(wait) => {
                self.conns
                    .set_state(key, State::Authenticating(Box::new(parked)));
                let deadline = self.clock.now() + wait;
                self.conns.set_deadline(key, deadline);
            }
            Err(user) => {
                warn!("LDAP queue full: {user} continues without private access");
                self.resume(key, parked, None);
            }
        }
    }

    /// Takes the LDAP pool's answers and resumes the connections they are for.
    pub(super) fn take_ldap_replies(&mut self) {
        let Some(ldap) = &mut self.ldap else { return };
        for (key, tag, grant) in ldap.replies() {
            self.resume_parked(key, tag, grant);
        }
    }

    /// A parked connection whose wait is over (reply or deadline).
    pub(super) fn resume_parked(&mut self, key: usize, serial: u64, grant: Option<Grant>) {
        let Some(parked) = self.conns.take_parked(key, serial) else {
            return;
        };
        if let Some(ldap) = &mut self.ldap {
            ldap.forget(serial);
        }
        self.resume(key, *parked, grant);
        // Bytes that arrived while parked (a publish body) wait in the buffer.
        self.conns.rerun(key);
    }

    fn resume(&mut self, key: usize, parked: Parked, grant: Option<Grant>) {
        match parked.then {
            AfterAuth::Subscribe(sub) => self.open_stream(key, parked.head, sub, grant),
            AfterAuth::Publish(topics) => self.continue_publish(key, parked.head, topics, grant),
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
