//! One LDAP conversation: connect, bind as the user (unless the caller
//! vouches for them: then the connection stays anonymous), run the
//! membership searches, collect the DNs found. Runs on a worker thread,
//! blocking.
//!
//! Invariants:
//! - Empty user names and empty passwords are refused before any network
//!   traffic (an empty password is an "unauthenticated bind", which succeeds on
//!   many servers). A vouched-for user is no password: there is no bind.
//! - The user name is DN-escaped where it goes into the bind DN and
//!   filter-escaped where it goes into a search filter, so it cannot change the
//!   shape of either.
//! - Every step has a deadline: the connect (TCP and TLS handshake) and every
//!   operation get `timeout`, and a search also stops once it has run longer
//!   than `timeout` in total or returned more than [`MAX_ENTRIES`] entries.
//! - A failed bind is an `Ok` result with a non-zero code in ldap3: `.success()`
//!   turns it into an error. Any error anywhere means "no groups" (`None`).
//! - The password is never logged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ldap3::{dn_escape, ldap_escape, LdapConn, LdapConnSettings, Scope, SearchEntry};

use crate::proof::Proof;
use crate::settings::LdapSettings;

/// Most entries accepted from all membership searches of one job together.
pub const MAX_ENTRIES: usize = 10_000;

/// Why a lookup produced no groups (for the log line only).
#[derive(Debug)]
pub enum Failure {
    /// Empty user name or password: refused without contacting the server.
    Refused(&'static str),
    /// The server could not be reached (connect, TLS handshake).
    Connect(ldap3::LdapError),
    /// The server answered, but the bind or a search failed (bad credentials,
    /// unknown user, no such base, ...).
    Ldap(ldap3::LdapError),
    /// A search ran past its deadline or returned too many entries.
    Limit(&'static str),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused(why) => write!(f, "refused: {why}"),
            Failure::Connect(e) => write!(f, "cannot reach the server: {e}"),
            Failure::Ldap(e) => write!(f, "{e}"),
            Failure::Limit(why) => write!(f, "{why}"),
        }
    }
}

impl From<ldap3::LdapError> for Failure {
    fn from(e: ldap3::LdapError) -> Failure {
        Failure::Ldap(e)
    }
}

/// Replace each `%s` in `template` with `value`, and `%%` with `%` (the
/// subset of Python's `%` formatting that the reference's templates use).
/// Any other `%` is kept as it is.
pub fn substitute(template: &str, value: &str) -> String {
    let mut out = String::with_capacity(template.len() + value.len());
    let mut rest = template;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('s') {
            out.push_str(value);
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('%') {
            out.push('%');
            rest = tail;
        } else {
            out.push('%');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The DN to bind as: `user_dn` with the DN-escaped user name.
pub fn bind_dn(user_dn: &str, user: &str) -> String {
    substitute(user_dn, &dn_escape(user))
}

/// A membership search filter: `pattern` with the filter-escaped user name.
///
/// Only filter escaping is applied, so a pattern such as
/// `(member=uid=%s,ou=people,...)` finds nothing for a user name holding
/// DN-special characters (`,` `+` `"` `\` `<` `>` `;` `=`): it fails closed.
pub fn member_filter(pattern: &str, user: &str) -> String {
    substitute(pattern, &ldap_escape(user))
}

/// Whether `pattern`, once a user name is substituted, is a filter that ldap3
/// can send (for config validation: a bad pattern would fail every login).
pub fn filter_is_valid(pattern: &str) -> bool {
    ldap3::parse_filter(member_filter(pattern, "user")).is_ok()
}

/// Run one lookup against the server. `Ok(dns)` when the bind succeeded and
/// every search completed.
pub fn lookup(
    settings: &LdapSettings,
    tls: &Arc<rustls::ClientConfig>,
    user: &str,
    proof: &Proof,
) -> Result<Vec<String>, Failure> {
    if user.is_empty() {
        return Err(Failure::Refused("empty user name"));
    }
    let password = match proof {
        Proof::Password(p) if p.is_empty() => return Err(Failure::Refused("empty password")),
        Proof::Password(p) => Some(p.as_str()),
        Proof::Vouched => None,
    };
    let timeout = settings.timeout;
    let conn_settings = LdapConnSettings::new()
        .set_conn_timeout(timeout)
        .set_config(Arc::clone(tls));
    let mut conn =
        LdapConn::with_settings(conn_settings, &settings.uri).map_err(Failure::Connect)?;
    let result = bind_and_search(&mut conn, settings, user, password);
    // Be polite, but never wait long for it: unbind sends and does not read.
    let _ = conn.with_timeout(timeout).unbind();
    result
}

/// Binds as `user` with `password` (`None`: vouched for, no bind), then
/// searches.
fn bind_and_search(
    conn: &mut LdapConn,
    settings: &LdapSettings,
    user: &str,
    password: Option<&str>,
) -> Result<Vec<String>, Failure> {
    let timeout = settings.timeout;
    if let Some(password) = password {
        conn.with_timeout(timeout)
            .simple_bind(&bind_dn(&settings.user_dn, user), password)?
            .success()?;
    }
    let mut groups = Vec::new();
    for pattern in &settings.membership_patterns {
        let filter = member_filter(pattern, user);
        let started = Instant::now();
        // "1.1": no attributes, only the DNs (RFC 4511 4.5.1.8).
        let mut stream = conn.with_timeout(timeout).streaming_search(
            &settings.base_scope,
            Scope::Subtree,
            &filter,
            vec!["1.1"],
        )?;
        let mut failure = None;
        loop {
            match stream.next() {
                Ok(Some(entry)) => {
                    if groups.len() >= MAX_ENTRIES {
                        failure = Some(Failure::Limit("too many entries"));
                        break;
                    }
                    if is_reference_or_intermediate(&entry) {
                        continue;
                    }
                    groups.push(SearchEntry::construct(entry).dn);
                    if started.elapsed() > timeout {
                        failure = Some(Failure::Limit("search took too long"));
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    failure = Some(Failure::Ldap(e));
                    break;
                }
            }
        }
        if let Some(failure) = failure {
            // The caller drops the connection: no need to abandon the search.
            return Err(failure);
        }
        stream.result().success()?;
    }
    Ok(groups)
}

fn is_reference_or_intermediate(entry: &ldap3::ResultEntry) -> bool {
    entry.is_ref() || entry.is_intermediate()
}

/// Everything [`lookup`] needs besides the settings: built once per pool.
pub fn tls_config(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        log::debug!("ldap: loading a system CA certificate: {e}");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    log::debug!("ldap: {added} system CA certificates loaded, {ignored} ignored");
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
        let mut n = 0usize;
        for cert in certs {
            let cert = cert.map_err(|e| format!("bad CA file {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("bad CA certificate in {}: {e}", path.display()))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!("no certificate in CA file {}", path.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("protocol versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// How long to wait at most for one job, for callers that keep their own
/// deadline: connect, bind, each search (twice: per entry and in total), unbind.
pub fn worst_case(settings: &LdapSettings) -> Duration {
    settings.max_job_time()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitute_like_python_percent() {
        assert_eq!(substitute("uid=%s,ou=people", "bob"), "uid=bob,ou=people");
        assert_eq!(substitute("%s", "x"), "x");
        assert_eq!(substitute("(|(uid=%s)(cn=%s))", "x"), "(|(uid=x)(cn=x))");
        assert_eq!(substitute("100%% %s", "x"), "100% x");
        assert_eq!(substitute("no placeholder", "x"), "no placeholder");
        assert_eq!(substitute("odd %d %", "x"), "odd %d %");
        assert_eq!(substitute("", "x"), "");
        // The value is inserted once, never re-scanned for placeholders.
        assert_eq!(substitute("a%sb", "%s%%"), "a%s%%b");
    }

    #[test]
    fn bind_dn_escapes_dn_specials() {
        let t = "uid=%s,ou=people,dc=example,dc=org";
        assert_eq!(bind_dn(t, "alice"), "uid=alice,ou=people,dc=example,dc=org");
        assert_eq!(
            bind_dn(t, "a,ou=admins"),
            "uid=a\\2cou\\3dadmins,ou=people,dc=example,dc=org"
        );
        assert_eq!(bind_dn(t, "a+b"), "uid=a\\2bb,ou=people,dc=example,dc=org");
        assert_eq!(
            bind_dn(t, " lead"),
            "uid=\\20lead,ou=people,dc=example,dc=org"
        );
        assert_eq!(bind_dn(t, "#x"), "uid=\\23x,ou=people,dc=example,dc=org");
    }

    #[test]
    fn member_filter_escapes_filter_specials() {
        let p = "(member=uid=%s,ou=people,dc=example,dc=org)";
        assert_eq!(
            member_filter(p, "alice"),
            "(member=uid=alice,ou=people,dc=example,dc=org)"
        );
        // No wildcard, no injected sub-filter.
        assert_eq!(member_filter("(uid=%s)", "*"), "(uid=\\2a)");
        assert_eq!(
            member_filter("(uid=%s)", "x)(uid=*"),
            "(uid=x\\29\\28uid=\\2a)"
        );
        assert_eq!(member_filter("(uid=%s)", "a\\b"), "(uid=a\\5cb)");
        assert_eq!(member_filter("(uid=%s)", "nul\0"), "(uid=nul\\00)");
        // Parentheses are optional in the reference's sample config; ldap3
        // parses a bare item too.
        assert!(ldap3::parse_filter(member_filter("uid=%s", "bob")).is_ok());
        assert!(ldap3::parse_filter(member_filter(p, "x)(uid=*")).is_ok());
    }

    #[test]
    fn filter_validation() {
        assert!(filter_is_valid(
            "(member=uid=%s,ou=people,dc=example,dc=org)"
        ));
        assert!(filter_is_valid("uid=%s"));
        assert!(filter_is_valid(
            "(&(objectClass=groupOfNames)(member=uid=%s,dc=x))"
        ));
        assert!(!filter_is_valid("(uid=%s"));
        assert!(!filter_is_valid("(uid=%s))"));
        assert!(!filter_is_valid("(&(uid=%s)"));
        assert!(!filter_is_valid(""));
    }

    #[test]
    fn refused_without_network() {
        let settings = LdapSettings {
            // Nothing listens there; a connect attempt would fail differently.
            uri: "ldap://127.0.0.1:1".into(),
            ..LdapSettings::default()
        };
        let tls = tls_config(None).expect("tls config");
        let pw = |p: &str| Proof::Password(p.to_owned());
        assert!(matches!(
            lookup(&settings, &tls, "alice", &pw("")),
            Err(Failure::Refused("empty password"))
        ));
        assert!(matches!(
            lookup(&settings, &tls, "", &pw("pw")),
            Err(Failure::Refused("empty user name"))
        ));
        assert!(matches!(
            lookup(&settings, &tls, "", &Proof::Vouched),
            Err(Failure::Refused("empty user name"))
        ));
        // Nothing listens: the server cannot be reached.
        assert!(matches!(
            lookup(&settings, &tls, "alice", &pw("pw")),
            Err(Failure::Connect(_))
        ));
    }

    #[test]
    fn worst_case_counts_operations() {
        let settings = LdapSettings {
            timeout: Duration::from_secs(2),
            membership_patterns: vec!["a".into(), "b".into()],
            ..LdapSettings::default()
        };
        assert_eq!(worst_case(&settings), Duration::from_secs(14));
    }
}
