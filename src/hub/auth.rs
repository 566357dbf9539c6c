//! Who a request's credentials make it: a signed token (`clients.tokens`,
//! verified on the event loop's thread by `tokens::Tokens`), or HTTP Basic
//! auth checked against the ACL file on the event loop's thread (cheap),
//! or, for users not in the file, against LDAP on the `ldap-worker` pool
//! while the connection is parked. This is the one credential check:
//! every request that may see or publish private events (a subscription,
//! a publish, a WebSocket handshake) goes through `check_credentials`.
//!
//! A token's `pubsub` claim is its grant; without one, its `sub` names a
//! user of the ACL file (or, asked without a password, of LDAP) whose
//! grant applies. A token that does not verify
//! is a 401, never a stream with fewer events than asked; one that does
//! carries its expiry, at which a stream it opened ends.
//!
//! A parked connection carries its serial number as the job's tag; a reply
//! for a connection that has since closed (its slab key possibly reused) is
//! dropped. A full LDAP queue, an LDAP failure or a reply that does not
//! come back in time all mean "no grant": the request goes on without
//! private access, and nothing waits on LDAP but that one client.
//!
//! Uses: `tokens`, `acl`, `ldap`, `conns` (parking and resuming).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::requests::After;
use super::table::{Access, AfterAuth, Parked, State};
use super::Hub;
use crate::acl::{Acl, AuthOutcome, Grant};
use crate::basic_auth::parse_basic_auth;
use crate::http::RequestHead;
use crate::tokens::{Bearer, Holder, Refusal, TokenCheck};

/// `WWW-Authenticate` of a 401 for a token that does not verify (RFC 6750 3).
const INVALID_TOKEN: (&str, &str) = ("WWW-Authenticate", "Bearer error=\"invalid_token\"");

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
    /// Decided: the grant, if any, and until when.
    Done(Access),
    /// A user the ACL file does not know: ask LDAP, with the password
    /// (`None`: a verified token names the user), for a request whose
    /// token expires `until`.
    AskLdap(String, Option<String>, Option<Instant>),
    /// A token that does not verify: 401.
    BadToken(Refusal),
}

impl Hub {
    /// Checks the request's token, else its Basic credentials against the
    /// ACL file. Without a token in the request this costs one look at
    /// the `Authorization` header, the query and `Cookie`, as before.
    pub(super) fn check_credentials(&self, head: &RequestHead) -> Check {
        if let Some(tokens) = &self.tokens {
            match tokens.check(head, self.cookie_ok(head), || self.clock.epoch()) {
                TokenCheck::Absent => {}
                TokenCheck::Refused(why) => return Check::BadToken(why),
                TokenCheck::Valid(bearer) => return self.bearer_check(bearer),
            }
        }
        let Some((user, password)) = head.authorization.as_deref().and_then(parse_basic_auth)
        else {
            return Check::Done(Access::default());
        };
        let grant = match self.acl.acl.authenticate(&user, &password) {
            AuthOutcome::Granted(grant) => Some(grant),
            AuthOutcome::BadPassword => None,
            AuthOutcome::UnknownUser if self.ldap.is_some() => {
                return Check::AskLdap(user, Some(password), None)
            }
            AuthOutcome::UnknownUser => None,
        };
        Check::Done(Access { grant, until: None })
    }

    /// Whether a token in the request's cookie may count: not when the
    /// request names an `Origin` that `clients.cors_origins` does not list
    /// by name. A browser sends the cookie to this origin from any site's
    /// page, and a WebSocket handshake (unlike a cross-origin
    /// `EventSource`) is answered whatever its origin: without this, any
    /// page could read its visitor's private events.
    fn cookie_ok(&self, head: &RequestHead) -> bool {
        let Some(origin) = head.origin.as_deref() else {
            return true;
        };
        let origin = origin.trim();
        self.config
            .clients
            .cors_origins
            .iter()
            .any(|entry| entry != "*" && entry.eq_ignore_ascii_case(origin))
    }

    /// What a valid token allows: its own grant, or that of the user its
    /// `sub` names (in the ACL file, else in LDAP); until its expiry on
    /// the hub's clock.
    fn bearer_check(&self, bearer: Bearer) -> Check {
        let left = bearer.expires - self.clock.epoch();
        let until = Some(self.clock.now() + Duration::from_secs_f64(left.clamp(0.0, 1e9)));
        let grant = match bearer.holder {
            Holder::Grant(grant) => Some(grant),
            Holder::User(user) => match self.acl.acl.grant_of(&user) {
                AuthOutcome::Granted(grant) => Some(grant),
                AuthOutcome::BadPassword => None,
                AuthOutcome::UnknownUser if self.ldap.is_some() => {
                    return Check::AskLdap(user, None, until)
                }
                AuthOutcome::UnknownUser => None,
            },
            Holder::Nobody => None,
        };
        Check::Done(Access { grant, until })
    }

    /// 401 for a token that does not verify (why, in the body; the token
    /// itself is never logged).
    pub(super) fn refuse_token(&mut self, key: usize, why: &Refusal, after: After) {
        debug!("{key}: token refused: {why}");
        let body = format!("Invalid token: {why}.\n");
        let body = ("text/plain; charset=utf-8", body.as_bytes());
        self.respond_typed(key, 401, Some(body), &[INVALID_TOKEN], after);
    }

    /// Whether a token's expiry has passed (while the request was parked).
    pub(super) fn expired(&self, until: Option<Instant>) -> bool {
        until.is_some_and(|t| t <= self.clock.now())
    }

    /// Hands the credentials to LDAP and parks the connection; if LDAP
    /// cannot take the job, the request goes on at once without a grant.
    pub(super) fn park_for_ldap(
        &mut self,
        key: usize,
        user: String,
        password: Option<String>,
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
        let access = Access {
            grant,
            until: parked.until,
        };
        match parked.then {
            AfterAuth::Subscribe(sub) => self.open_stream(key, parked.head, sub, access),
            AfterAuth::Publish(topics) => {
                self.continue_publish(key, parked.head, topics, access.grant)
            }
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
