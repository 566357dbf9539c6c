//! Who may see private events and publish to secured topics: the ACL file
//! (`pypubsub_acl.yaml`), HTTP Basic credentials, the secured-topics rule and
//! the `clients.ldap` section. Pure logic: no sockets, no threads, no LDAP
//! traffic (that is the `ldap-worker` crate's job).
//!
//! Flow: [`parse_basic_auth`] → [`Acl::authenticate`] → `Granted(grant)`, or
//! `UnknownUser` → (LDAP configured) an `ldap_worker::LdapJob` → the reply's
//! group DNs → [`LdapAclMap::grant_for`]. A subscriber then sees a private event
//! when [`Grant::can_see`]; a publisher passes [`may_publish`].
//!
//! Invariants:
//! - Bad credentials are never an error, only "no grant".
//! - A malformed user entry in the ACL file is logged (user name and reason)
//!   and *disabled*: it never authenticates, and, as in the reference, the user
//!   is still "known", so the name does not fall through to LDAP.
//! - Plaintext passwords are compared in constant time (in the length of the
//!   stored password). Hashed passwords (`$5$` SHA-256-crypt and `$6$`
//!   SHA-512-crypt, as made by `mkpasswd -m sha-512` or `openssl passwd -6`)
//!   are verified with the `sha-crypt` crate; cost (release build, this 2-core
//!   box): `$5$` ≈ 0.33 ms, `$6$` ≈ 1.4 ms at the default 5000 rounds, linear in
//!   `rounds=`. Entries above [`MAX_HASH_ROUNDS`] are refused at load so one
//!   check can never stall the event loop for long, and a successful check is
//!   remembered (keyed digest, never the password) until the next reload, so a
//!   reconnect storm costs one hash per user.
//! - Topic names compare as exact strings; LDAP group DNs compare
//!   case-insensitively with insignificant whitespace removed.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_yaml::{Mapping, Value};

/// Highest `rounds=` accepted in a `$5$`/`$6$` hash (≈14 ms for `$6$`).
pub const MAX_HASH_ROUNDS: u32 = 50_000;

/// Longest `Authorization` header value [`parse_basic_auth`] looks at.
pub const MAX_AUTH_HEADER: usize = 8 * 1024;

// ---------------------------------------------------------------------------
// Grants

/// What an authenticated user has: ACL segments (each a list of topics, all of
/// which an event must carry for the segment to match) and the secured topics
/// the user may publish to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    pub segments: Vec<Vec<String>>,
    pub publish_topics: Vec<String>,
}

impl Grant {
    /// True when some segment's topics are all among the event's topics. As in
    /// the reference (`all(el in topics for el in segment)`), an empty segment
    /// matches every event; a grant without segments matches none.
    pub fn can_see(&self, event_topics: &[String]) -> bool {
        self.segments
            .iter()
            .any(|segment| segment.iter().all(|t| event_topics.contains(t)))
    }

    /// Add `other`'s segments and publish topics (no duplicates).
    pub fn merge(&mut self, other: &Grant) {
        for segment in &other.segments {
            if !self.segments.contains(segment) {
                self.segments.push(segment.clone());
            }
        }
        for topic in &other.publish_topics {
            if !self.publish_topics.contains(topic) {
                self.publish_topics.push(topic.clone());
            }
        }
    }

    /// No segments and no publish topics.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty() && self.publish_topics.is_empty()
    }
}

/// The secured-topics rule (the reference's): if the event carries any topic
/// listed in `clients.secure_topics`, it may be published only by an
/// authenticated user whose `publish_topics` cover every secured topic present,
/// and then the client address does not matter; otherwise the address decides
/// (`ip_allowed`: inside `clients.payloaders`).
///
/// `path_topics` should be the request path's segments *including* a leading
/// `private`: the reference checks every segment of the path, so a secured
/// topic named `private` guards all private publishing.
pub fn may_publish(
    secure_topics: &[String],
    path_topics: &[String],
    grant: Option<&Grant>,
    ip_allowed: bool,
) -> bool {
    let mut secured = secure_topics
        .iter()
        .filter(|s| path_topics.contains(s))
        .peekable();
    if secured.peek().is_none() {
        return ip_allowed;
    }
    match grant {
        Some(grant) => secured.all(|s| grant.publish_topics.contains(s)),
        None => false,
    }
}

// ---------------------------------------------------------------------------
// The ACL file

/// The ACL file, parsed. Cheap to replace on reload (SIGUSR2): build a new one,
/// keep the old one if loading fails.
#[derive(Debug, Default)]
pub struct Acl {
    users: HashMap<String, Entry>,
    verified: Mutex<Verified>,
}

#[derive(Debug)]
enum Entry {
    Valid(User),
    /// Malformed in the file: known, never authenticates.
    Disabled,
}

#[derive(Debug)]
struct User {
    password: Password,
    grant: Grant,
}

enum Password {
    Plain(String),
    /// A `$5$` or `$6$` hash string, checked for shape at load.
    ShaCrypt(String),
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Password::Plain(_) => f.write_str("Plain(<redacted>)"),
            Password::ShaCrypt(_) => f.write_str("ShaCrypt(<redacted>)"),
        }
    }
}

/// Hashed passwords already verified: user → keyed digest of the password;
/// and when a hash check last failed for a user. One entry per user at
/// most in each, so bounded by the file.
#[derive(Debug, Default)]
struct Verified {
    key: RandomState,
    by_user: HashMap<String, u64>,
    failed_at: HashMap<String, Instant>,
}

/// After a wrong password for a user with a hashed entry, further attempts
/// for that user are refused without hashing for this long: a client
/// guessing passwords cannot make the event loop spend more than one hash
/// per user per second.
const HASH_RETRY_DELAY: Duration = Duration::from_secs(1);

/// The result of checking credentials against the ACL file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Right password: the user's grant (possibly without any segment).
    Granted(Grant),
    /// Not in the file: try LDAP if it is configured.
    UnknownUser,
    /// In the file, and the password is wrong or the entry is disabled
    /// (malformed). Do not try LDAP (the reference does not either).
    BadPassword,
}

/// Why the ACL file could not be used at all.
#[derive(Debug)]
pub enum AclError {
    /// The file exists but could not be read (permissions, a directory, not UTF-8).
    Read { path: PathBuf, source: io::Error },
    /// Not valid YAML.
    Yaml(serde_yaml::Error),
    /// Valid YAML, but the top level is not a mapping of user names.
    NotAMapping(&'static str),
}

impl fmt::Display for AclError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AclError::Read { path, source } => {
                write!(f, "cannot read ACL file {}: {source}", path.display())
            }
            AclError::Yaml(e) => write!(f, "ACL file is not valid YAML: {e}"),
            AclError::NotAMapping(found) => write!(
                f,
                "ACL file must be a mapping of user names to entries, found {found}"
            ),
        }
    }
}

impl std::error::Error for AclError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AclError::Read { source, .. } => Some(source),
            AclError::Yaml(e) => Some(e),
            AclError::NotAMapping(_) => None,
        }
    }
}

impl Acl {
    /// Read and parse the ACL file. A missing file is an empty ACL (no private
    /// delivery; the caller logs it); an unreadable file or invalid YAML is an
    /// error. Malformed user entries are logged and disabled, not errors.
    pub fn load(path: &Path) -> Result<Acl, AclError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Acl::parse(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Acl::default()),
            Err(source) => Err(AclError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Parse the text of an ACL file (see [`Acl::load`]).
    pub fn parse(text: &str) -> Result<Acl, AclError> {
        let mut doc: Value = serde_yaml::from_str(text).map_err(AclError::Yaml)?;
        doc.apply_merge().map_err(AclError::Yaml)?;
        let map = match doc {
            Value::Null => return Ok(Acl::default()),
            Value::Mapping(map) => map,
            other => return Err(AclError::NotAMapping(kind(&other))),
        };
        let mut users = HashMap::with_capacity(map.len());
        for (key, value) in &map {
            let Value::String(name) = key else {
                log::warn!(
                    "ACL: entry {} ignored: user names must be strings (quote it)",
                    scalar_text(key)
                );
                continue;
            };
            let entry = match parse_user(name, value) {
                Ok(user) => Entry::Valid(user),
                Err(why) => {
                    log::warn!("ACL: user {name:?} disabled: {why}");
                    Entry::Disabled
                }
            };
            users.insert(name.clone(), entry);
        }
        Ok(Acl {
            users,
            verified: Mutex::default(),
        })
    }

    /// Number of user entries (disabled ones included).
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// No user entries.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Check credentials. Cost: constant-time compare for plaintext entries;
    /// one sha-crypt verification (≤ [`MAX_HASH_ROUNDS`]) for hashed ones,
    /// skipped when the same password was verified before.
    pub fn authenticate(&self, user: &str, password: &str) -> AuthOutcome {
        let Some(entry) = self.users.get(user) else {
            return AuthOutcome::UnknownUser;
        };
        let Entry::Valid(u) = entry else {
            return AuthOutcome::BadPassword;
        };
        let ok = match &u.password {
            Password::Plain(stored) => ct_eq(stored.as_bytes(), password.as_bytes()),
            Password::ShaCrypt(hash) => self.check_hash(user, hash, password),
        };
        if ok {
            AuthOutcome::Granted(u.grant.clone())
        } else {
            AuthOutcome::BadPassword
        }
    }

    fn check_hash(&self, user: &str, hash: &str, password: &str) -> bool {
        let mut verified = self
            .verified
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let digest = verified.key.hash_one(password.as_bytes());
        if verified.by_user.get(user) == Some(&digest) {
            return true;
        }
        if verified
            .failed_at
            .get(user)
            .is_some_and(|t| t.elapsed() < HASH_RETRY_DELAY)
        {
            return false;
        }
        if !sha_crypt_verify(hash, password) {
            verified.failed_at.insert(user.to_owned(), Instant::now());
            return false;
        }
        verified.failed_at.remove(user);
        verified.by_user.insert(user.to_owned(), digest);
        true
    }
}

fn parse_user(name: &str, value: &Value) -> Result<User, String> {
    let Value::Mapping(map) = value else {
        return Err(format!("entry must be a mapping, found {}", kind(value)));
    };
    let password = match map.get("password") {
        None | Some(Value::Null) => return Err("no password".into()),
        Some(Value::String(p)) if p.is_empty() => return Err("empty password".into()),
        Some(Value::String(p)) => parse_password(p)?,
        Some(other) => {
            return Err(format!(
                "password must be a string, found {} (quote it)",
                kind(other)
            ))
        }
    };
    let mut grant = Grant::default();
    match map.get("acl") {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(segments)) => {
            for (seg_name, topics) in segments {
                let seg_name = key_text(seg_name);
                let Value::Sequence(items) = topics else {
                    return Err(format!(
                        "acl segment {seg_name} must be a list of topics, found {}",
                        kind(topics)
                    ));
                };
                match string_items(items) {
                    Ok(topics) => {
                        if topics.is_empty() {
                            log::warn!(
                                "ACL: user {name:?}: acl segment {seg_name} is empty: \
                                 it grants every private event"
                            );
                        }
                        if !grant.segments.contains(&topics) {
                            grant.segments.push(topics);
                        }
                    }
                    Err(bad) => log::warn!(
                        "ACL: user {name:?}: acl segment {seg_name} ignored: topic {bad} is \
                         not a string (quote it)"
                    ),
                }
            }
        }
        Some(other) => {
            return Err(format!(
                "acl must be a mapping of segment names to topic lists, found {}",
                kind(other)
            ))
        }
    }
    match map.get("topics") {
        None | Some(Value::Null) => {}
        Some(Value::Sequence(items)) => {
            for item in items {
                match item {
                    Value::String(t) => {
                        if !grant.publish_topics.contains(t) {
                            grant.publish_topics.push(t.clone());
                        }
                    }
                    other => log::warn!(
                        "ACL: user {name:?}: publish topic {} ignored: not a string (quote it)",
                        scalar_text(other)
                    ),
                }
            }
        }
        Some(other) => log::warn!(
            "ACL: user {name:?}: topics ignored: must be a list of secured topics, found {}",
            kind(other)
        ),
    }
    Ok(User { password, grant })
}

fn parse_password(p: &str) -> Result<Password, String> {
    if p.starts_with("$5$") || p.starts_with("$6$") {
        check_sha_crypt_shape(p)?;
        return Ok(Password::ShaCrypt(p.to_owned()));
    }
    const UNSUPPORTED: &[&str] = &["$1$", "$2a$", "$2b$", "$2y$", "$argon2", "$y$", "$7$", "{"];
    if let Some(scheme) = UNSUPPORTED.iter().find(|s| p.starts_with(**s)) {
        if *scheme != "{" || p.starts_with("{SSHA") || p.starts_with("{CRYPT}") {
            return Err(format!(
                "password looks like an unsupported hash ({scheme}...); \
                 use plaintext or $6$/$5$ (mkpasswd -m sha-512, openssl passwd -6)"
            ));
        }
    }
    Ok(Password::Plain(p.to_owned()))
}

/// `$5$[rounds=N$]salt$hash` / `$6$...`, with the lengths and alphabets glibc
/// produces, and N within [1000, MAX_HASH_ROUNDS].
fn check_sha_crypt_shape(p: &str) -> Result<(), String> {
    let hash_len = if p.starts_with("$5$") { 43 } else { 86 };
    let fields: Vec<&str> = p[3..].split('$').collect();
    let (rounds, salt, hash) = match fields.as_slice() {
        [salt, hash] => (None, *salt, *hash),
        [rounds, salt, hash] => (Some(*rounds), *salt, *hash),
        _ => return Err("malformed $5$/$6$ password hash".into()),
    };
    if let Some(rounds) = rounds {
        let n: u32 = rounds
            .strip_prefix("rounds=")
            .and_then(|n| n.parse().ok())
            .ok_or("malformed rounds= in password hash")?;
        if !(1000..=MAX_HASH_ROUNDS).contains(&n) {
            return Err(format!(
                "password hash rounds={n} outside 1000..={MAX_HASH_ROUNDS} \
                 (checked on the event loop: keep it cheap)"
            ));
        }
    }
    let crypt64 = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
    };
    if salt.is_empty() || salt.len() > 16 || !crypt64(salt) {
        return Err("malformed salt in password hash".into());
    }
    if hash.len() != hash_len || !crypt64(hash) {
        return Err("malformed digest in password hash".into());
    }
    Ok(())
}

fn sha_crypt_verify(hash: &str, password: &str) -> bool {
    use sha_crypt::{PasswordVerifier, ShaCrypt};
    ShaCrypt::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// Equality whose running time depends only on `secret`'s length, not on
/// where `given` differs, nor on `given`'s length.
fn ct_eq(secret: &[u8], given: &[u8]) -> bool {
    let mut diff = 0u8;
    for (i, &s) in secret.iter().enumerate() {
        let g = if given.is_empty() {
            0
        } else {
            given[i % given.len()]
        };
        diff |= s ^ g;
    }
    std::hint::black_box(diff) == 0 && secret.len() == given.len()
}

// ---------------------------------------------------------------------------
// HTTP Basic

/// Parse an `Authorization` header value: `Basic base64(user:password)`. The
/// scheme is case-insensitive; whitespace around and inside the token is
/// tolerated, and so is missing padding. Invalid base64, invalid UTF-8, no `:`
/// or another scheme → `None`. The password may contain `:`.
pub fn parse_basic_auth(header_value: &[u8]) -> Option<(String, String)> {
    if header_value.len() > MAX_AUTH_HEADER {
        return None;
    }
    let value = trim_ascii(header_value);
    let split = value.iter().position(|b| b.is_ascii_whitespace())?;
    let (scheme, token) = value.split_at(split);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64_decode(token)?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn trim_ascii(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !first.is_ascii_whitespace() {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !last.is_ascii_whitespace() {
            break;
        }
        s = rest;
    }
    s
}

/// Standard-alphabet base64 (RFC 4648 §4). ASCII whitespace is skipped;
/// padding is optional, but if present it must complete the last quantum and
/// end the input.
fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 2);
    let mut acc = 0u32;
    let mut n = 0usize; // data characters seen
    let mut padding = 0usize;
    for &c in input {
        if c.is_ascii_whitespace() {
            continue;
        }
        if c == b'=' {
            padding += 1;
            continue;
        }
        if padding > 0 {
            return None; // data after padding
        }
        acc = (acc << 6) | value(c)?;
        n += 1;
        if n.is_multiple_of(4) {
            out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
            acc = 0;
        }
    }
    match (n % 4, padding) {
        (0, 0) => {}
        (2, 0) | (2, 2) => out.push((acc >> 4) as u8),
        (3, 0) | (3, 1) => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
        _ => return None,
    }
    Some(out)
}

// ---------------------------------------------------------------------------
// LDAP configuration

/// `clients.ldap.acl` and `clients.ldap.publish_topics`, by normalised group DN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LdapAclMap {
    groups: HashMap<String, Grant>,
}

impl LdapAclMap {
    /// The union of the grants of every configured group among `group_dns`
    /// (the DNs an LDAP lookup found). DNs compare case-insensitively, with
    /// whitespace around `,` and `=` ignored.
    pub fn grant_for(&self, group_dns: &[String]) -> Grant {
        let mut grant = Grant::default();
        for dn in group_dns {
            if let Some(g) = self.groups.get(&normalize_dn(dn)) {
                grant.merge(g);
            }
        }
        grant
    }

    /// Number of configured groups.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// No configured group.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// Lower-case, whitespace around RDN separators and `=` removed, inner runs of
/// whitespace collapsed to one space.
pub fn normalize_dn(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| {
            rdn.split('=')
                .map(|part| part.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join("=")
        })
        .collect::<Vec<_>>()
        .join(",")
        .to_lowercase()
}

const LDAP: &str = "clients.ldap";

/// Validate the `clients.ldap` section (see PROTOCOL.md) into the worker pool's
/// settings and the group → grant map. Keys besides the reference's (`uri`,
/// `user_dn`, `base_scope`, `membership_patterns`, `acl`):
/// - `publish_topics`: group DN → secured topics its members may publish to;
/// - `timeout` (default 5 s), `cache_ttl` (default 60 s, 0 = off): seconds, or
///   a string like `500ms`, `5s`, `2m`;
/// - `workers` (default 4), `queue` (default 1024);
/// - `ca_file`: extra trusted CA certificates (PEM) for `ldaps://`.
///
/// Errors name the key, e.g. `clients.ldap.user_dn must be a string`.
pub fn parse_ldap_section(v: &Value) -> Result<(ldap_worker::LdapSettings, LdapAclMap), String> {
    let Value::Mapping(m) = v else {
        return Err(format!("{LDAP} must be a mapping, found {}", kind(v)));
    };
    let mut s = ldap_worker::LdapSettings::default();
    for (key, _) in m {
        let known = [
            "uri",
            "user_dn",
            "base_scope",
            "membership_patterns",
            "acl",
            "publish_topics",
            "timeout",
            "cache_ttl",
            "workers",
            "queue",
            "ca_file",
        ];
        if !key.as_str().is_some_and(|k| known.contains(&k)) {
            log::warn!("{LDAP}.{} is not a known key: ignored", scalar_text(key));
        }
    }

    s.uri = required_string(m, "uri")?;
    let scheme_ok = ["ldap://", "ldaps://", "ldapi://"]
        .iter()
        .any(|p| s.uri.len() > p.len() && s.uri[..p.len()].eq_ignore_ascii_case(p));
    if !scheme_ok {
        return Err(format!(
            "{LDAP}.uri must be an ldap://, ldaps:// or ldapi:// URI, found {:?}",
            s.uri
        ));
    }
    s.user_dn = required_string(m, "user_dn")?;
    if !s.user_dn.contains("%s") {
        return Err(format!(
            "{LDAP}.user_dn must contain %s (the user name), found {:?}",
            s.user_dn
        ));
    }
    s.base_scope = required_string(m, "base_scope")?;
    if let Some(v) = present(m, "membership_patterns") {
        let path = format!("{LDAP}.membership_patterns");
        let Value::Sequence(items) = v else {
            return Err(format!("{path} must be a list of search filters"));
        };
        for (i, item) in items.iter().enumerate() {
            let Value::String(pattern) = item else {
                return Err(format!("{path}[{i}] must be a string (a search filter)"));
            };
            if !ldap_worker::filter_is_valid(pattern) {
                return Err(format!(
                    "{path}[{i}] is not a valid LDAP filter: {pattern:?}"
                ));
            }
            if !pattern.contains("%s") {
                log::warn!("{path}[{i}] has no %s: every user gets the same groups");
            }
            s.membership_patterns.push(pattern.clone());
        }
    }
    if let Some(v) = present(m, "timeout") {
        s.timeout = duration(v, "timeout")?;
        if s.timeout.is_zero() || s.timeout > Duration::from_secs(300) {
            return Err(format!(
                "{LDAP}.timeout must be more than 0 and at most 300 seconds"
            ));
        }
    }
    if let Some(v) = present(m, "cache_ttl") {
        s.cache_ttl = duration(v, "cache_ttl")?;
        if s.cache_ttl > Duration::from_secs(86_400) {
            return Err(format!("{LDAP}.cache_ttl must be at most a day"));
        }
    }
    if let Some(v) = present(m, "workers") {
        s.workers = integer(v, "workers", 1, 64)?;
    }
    if let Some(v) = present(m, "queue") {
        s.queue = integer(v, "queue", 1, 1_000_000)?;
    }
    if let Some(v) = present(m, "ca_file") {
        let Value::String(path) = v else {
            return Err(format!("{LDAP}.ca_file must be a string (a PEM file path)"));
        };
        s.ca_file = Some(PathBuf::from(path));
    }

    let mut map = LdapAclMap::default();
    if let Some(v) = present(m, "acl") {
        let Value::Mapping(groups) = v else {
            return Err(format!(
                "{LDAP}.acl must be a mapping of group DNs to ACL segments"
            ));
        };
        for (dn, segments) in groups {
            let Value::String(dn) = dn else {
                return Err(format!(
                    "{LDAP}.acl keys must be group DNs (strings), found {}",
                    scalar_text(dn)
                ));
            };
            let path = format!("{LDAP}.acl[{dn:?}]");
            let mut grant = Grant::default();
            match segments {
                Value::Sequence(items) => grant.segments.push(topic_list(items, &path)?),
                Value::Mapping(named) => {
                    for (name, topics) in named {
                        let path = format!("{path}.{}", key_text(name));
                        let Value::Sequence(items) = topics else {
                            return Err(format!("{path} must be a list of topics"));
                        };
                        let topics = topic_list(items, &path)?;
                        if !grant.segments.contains(&topics) {
                            grant.segments.push(topics);
                        }
                    }
                }
                _ => {
                    return Err(format!(
                        "{path} must be a mapping of segment names to topic lists, \
                         or a list of topics (one segment)"
                    ))
                }
            }
            for (i, segment) in grant.segments.iter().enumerate() {
                if segment.is_empty() {
                    log::warn!("{path}: segment {i} is empty: it grants every private event");
                }
            }
            map.groups
                .entry(normalize_dn(dn))
                .or_default()
                .merge(&grant);
        }
    }
    if let Some(v) = present(m, "publish_topics") {
        let Value::Mapping(groups) = v else {
            return Err(format!(
                "{LDAP}.publish_topics must be a mapping of group DNs to lists of secured topics"
            ));
        };
        for (dn, topics) in groups {
            let Value::String(dn) = dn else {
                return Err(format!(
                    "{LDAP}.publish_topics keys must be group DNs (strings), found {}",
                    scalar_text(dn)
                ));
            };
            let path = format!("{LDAP}.publish_topics[{dn:?}]");
            let Value::Sequence(items) = topics else {
                return Err(format!("{path} must be a list of topics"));
            };
            let grant = Grant {
                segments: Vec::new(),
                publish_topics: topic_list(items, &path)?,
            };
            map.groups
                .entry(normalize_dn(dn))
                .or_default()
                .merge(&grant);
        }
    }
    Ok((s, map))
}

fn present<'a>(m: &'a Mapping, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

fn required_string(m: &Mapping, key: &str) -> Result<String, String> {
    match present(m, key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Some(Value::String(_)) => Err(format!("{LDAP}.{key} must not be empty")),
        Some(_) => Err(format!("{LDAP}.{key} must be a string")),
        None => Err(format!("{LDAP}.{key} is required (a string)")),
    }
}

fn topic_list(items: &[Value], path: &str) -> Result<Vec<String>, String> {
    string_items(items).map_err(|bad| {
        format!("{path} must be a list of topics (strings): {bad} is not a string (quote it)")
    })
}

/// The items as strings, or the first non-string item's text.
fn string_items(items: &[Value]) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::String(s) => out.push(s.clone()),
            other => return Err(scalar_text(other)),
        }
    }
    Ok(out)
}

fn integer(v: &Value, key: &str, min: u64, max: u64) -> Result<usize, String> {
    v.as_u64()
        .filter(|n| (min..=max).contains(n))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("{LDAP}.{key} must be an integer from {min} to {max}"))
}

/// Seconds as a number, or a string: `250ms`, `5s`, `2m`, `1h`, or a bare number
/// of seconds.
fn duration(v: &Value, key: &str) -> Result<Duration, String> {
    let bad =
        || format!("{LDAP}.{key} must be a duration: seconds, or a string like 500ms, 5s, 2m");
    let secs = match v {
        Value::Number(n) => n.as_f64().ok_or_else(bad)?,
        Value::String(s) => {
            let s = s.trim();
            let (number, unit) = if let Some(n) = s.strip_suffix("ms") {
                (n, 0.001)
            } else if let Some(n) = s.strip_suffix('s') {
                (n, 1.0)
            } else if let Some(n) = s.strip_suffix('m') {
                (n, 60.0)
            } else if let Some(n) = s.strip_suffix('h') {
                (n, 3600.0)
            } else {
                (s, 1.0)
            };
            number.trim().parse::<f64>().map_err(|_| bad())? * unit
        }
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// A mapping key as written: strings bare, other scalars as YAML shows them.
fn key_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => scalar_text(other),
    }
}

/// A short rendering of a YAML value for log lines.
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "~".into(),
        other => kind(other).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn granted(outcome: AuthOutcome) -> Grant {
        match outcome {
            AuthOutcome::Granted(g) => g,
            other => panic!("expected a grant, got {other:?}"),
        }
    }

    const SAMPLE: &str = "
alice:
  password: s3cret
  acl:                        # named segments; each a list of topics, ANDed
    repo_access: [git, private-repo.git]
    list_access: [email, example.org, dev]
  topics: [deploy, release]   # secured topics alice may publish to
testuser:
  password: foobar
  acl:
    title_of_my_first_access_segment:
      - git
      - privaterepo.git
";

    // `openssl passwd -6 -salt abcdefgh s3cret` / `openssl passwd -5 ...`
    const SHA512_S3CRET: &str = "$6$abcdefgh$Z7KfoKnKTSZrzo5VZ0YubGLQOj9ov6sHo9TmE3zIU/\
                                 LHKhpE30zCnZ0mcIXYf9r9rQ4DYaXoxAFSPFlcWdxjB.";
    const SHA256_S3CRET: &str = "$5$abcdefgh$OcHWp0Vj4l19dnE2g4tHD4hbItEZgO0bjRV6LjwCLoA";
    // glibc: crypt("pw", "$6$rounds=1000$saltsalt$") (Python's `crypt` module).
    const SHA512_ROUNDS_PW: &str = "$6$rounds=1000$saltsalt$nII71HJmawaDYdXrUHYtoWV/pe6ZN/eQ\
                                    zrZXdKjhrcMU0onLRg6A5m38udZu.lA6f53rIQturF4FMx1X99KF/0";

    #[test]
    fn sample_file_authenticates() {
        let acl = Acl::parse(SAMPLE).expect("parses");
        assert_eq!(acl.len(), 2);
        let g = granted(acl.authenticate("alice", "s3cret"));
        assert_eq!(
            g.segments,
            vec![
                strings(&["git", "private-repo.git"]),
                strings(&["email", "example.org", "dev"])
            ]
        );
        assert_eq!(g.publish_topics, strings(&["deploy", "release"]));
        let g = granted(acl.authenticate("testuser", "foobar"));
        assert_eq!(g.segments, vec![strings(&["git", "privaterepo.git"])]);
        assert!(g.publish_topics.is_empty());
    }

    #[test]
    fn wrong_unknown_and_empty_credentials() {
        let acl = Acl::parse(SAMPLE).expect("parses");
        assert_eq!(acl.authenticate("alice", "s3cre"), AuthOutcome::BadPassword);
        assert_eq!(
            acl.authenticate("alice", "s3cret "),
            AuthOutcome::BadPassword
        );
        assert_eq!(
            acl.authenticate("alice", "S3CRET"),
            AuthOutcome::BadPassword
        );
        assert_eq!(acl.authenticate("alice", ""), AuthOutcome::BadPassword);
        assert_eq!(acl.authenticate("bob", "s3cret"), AuthOutcome::UnknownUser);
        assert_eq!(
            acl.authenticate("Alice", "s3cret"),
            AuthOutcome::UnknownUser
        );
        assert_eq!(acl.authenticate("", ""), AuthOutcome::UnknownUser);
    }

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"s3cret", b"s3cret"));
        assert!(!ct_eq(b"s3cret", b"s3cres"));
        assert!(!ct_eq(b"s3cret", b"s3cret!"));
        assert!(!ct_eq(b"s3cret", b"s3c"));
        assert!(!ct_eq(b"s3cret", b""));
        assert!(!ct_eq(b"", b"x"));
        assert!(ct_eq(b"", b""));
        // Repeating a prefix must not fool the wrap-around indexing.
        assert!(!ct_eq(b"abab", b"ab"));
        assert!(!ct_eq(b"aaaa", b"a"));
    }

    #[test]
    fn top_level_errors_and_empty_files() {
        assert!(matches!(
            Acl::parse("- a\n- b\n"),
            Err(AclError::NotAMapping("a list"))
        ));
        assert!(matches!(
            Acl::parse("just text"),
            Err(AclError::NotAMapping("a string"))
        ));
        assert!(matches!(Acl::parse("a: [b\n"), Err(AclError::Yaml(_))));
        assert!(matches!(
            Acl::parse("\tbad: indent"),
            Err(AclError::Yaml(_))
        ));
        assert!(Acl::parse("").expect("empty file").is_empty());
        assert!(Acl::parse("~\n").expect("null").is_empty());
        assert!(Acl::parse("# only a comment\n")
            .expect("comment")
            .is_empty());
        let e = Acl::parse("- a").unwrap_err().to_string();
        assert!(e.contains("mapping of user names"), "{e}");
    }

    #[test]
    fn malformed_entries_are_disabled_others_load() {
        let text = r#"
good:
  password: pw
  acl: {a: [x]}
scalar_entry: hello
list_entry: [1, 2]
no_password:
  acl: {a: [x]}
null_password:
  password: ~
empty_password:
  password: ""
numeric_password:
  password: 12345
acl_is_a_list:
  password: pw
  acl: [x, y]
segment_not_a_list:
  password: pw
  acl:
    fine: [x]
    bad: x
123:
  password: pw
"#;
        let acl = Acl::parse(text).expect("parses");
        assert_eq!(acl.len(), 9, "every string-named entry is known");
        assert!(matches!(
            acl.authenticate("good", "pw"),
            AuthOutcome::Granted(_)
        ));
        for (user, pw) in [
            ("scalar_entry", "hello"),
            ("list_entry", ""),
            ("no_password", ""),
            ("null_password", ""),
            ("empty_password", ""),
            ("numeric_password", "12345"),
            ("acl_is_a_list", "pw"),
            ("segment_not_a_list", "pw"),
        ] {
            assert_eq!(
                acl.authenticate(user, pw),
                AuthOutcome::BadPassword,
                "{user}"
            );
        }
        // A non-string key is skipped entirely: that name is unknown (LDAP may
        // be tried), as `"123" in acl` is false in the reference.
        assert_eq!(acl.authenticate("123", "pw"), AuthOutcome::UnknownUser);
    }

    /// Warnings logged on this thread while `f` runs; `None` when another
    /// logger was installed first (then the messages are not checked).
    fn warnings(f: impl FnOnce()) -> Option<Vec<String>> {
        use std::cell::RefCell;
        use std::sync::OnceLock;
        thread_local! {
            static LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
        }
        struct Capture;
        impl log::Log for Capture {
            fn enabled(&self, m: &log::Metadata<'_>) -> bool {
                m.level() <= log::Level::Warn
            }
            fn log(&self, r: &log::Record<'_>) {
                if self.enabled(r.metadata()) {
                    LINES.with(|l| l.borrow_mut().push(r.args().to_string()));
                }
            }
            fn flush(&self) {}
        }
        static INSTALLED: OnceLock<bool> = OnceLock::new();
        let ours = *INSTALLED.get_or_init(|| {
            let ok = log::set_logger(&Capture).is_ok();
            if ok {
                log::set_max_level(log::LevelFilter::Warn);
            }
            ok
        });
        LINES.with(|l| l.borrow_mut().clear());
        f();
        ours.then(|| LINES.with(|l| l.borrow_mut().drain(..).collect()))
    }

    #[test]
    fn malformed_entries_are_logged_with_name_and_reason() {
        let Some(lines) = warnings(|| {
            Acl::parse(
                "ok: {password: pw}\nbob: {password: 12}\neve: {password: pw, acl: {s: x}}\n\
                 mal: {password: pw, acl: {dead: [1]}, topics: deploy}\n7: {password: pw}\n",
            )
            .expect("parses");
        }) else {
            return;
        };
        let has = |needle: &[&str]| lines.iter().any(|l| needle.iter().all(|n| l.contains(n)));
        assert!(
            has(&["\"bob\"", "disabled", "password must be a string"]),
            "{lines:#?}"
        );
        assert!(
            has(&["\"eve\"", "disabled", "acl segment s must be a list"]),
            "{lines:#?}"
        );
        assert!(
            has(&["\"mal\"", "segment dead ignored", "1 is not a string"]),
            "{lines:#?}"
        );
        assert!(has(&["\"mal\"", "topics ignored"]), "{lines:#?}");
        assert!(
            has(&["entry 7 ignored", "user names must be strings"]),
            "{lines:#?}"
        );
        assert!(!lines.iter().any(|l| l.contains("\"ok\"")), "{lines:#?}");
        assert_eq!(lines.len(), 5, "{lines:#?}");
    }

    #[test]
    fn odd_but_usable_entries() {
        let text = r#"
nothing_granted:
  password: pw
null_acl:
  password: pw
  acl: ~
  topics: ~
numeric_topic:
  password: pw
  acl:
    dead: [git, 2024]
    alive: [git, "2024"]
  topics: [deploy, 7, release, deploy]
string_topics:
  password: pw
  topics: deploy
empty_segment:
  password: pw
  acl: {everything: []}
duplicate_segments:
  password: pw
  acl: {a: [x, y], b: [x, y]}
"#;
        let acl = Acl::parse(text).expect("parses");
        assert_eq!(
            granted(acl.authenticate("nothing_granted", "pw")),
            Grant::default()
        );
        assert_eq!(
            granted(acl.authenticate("null_acl", "pw")),
            Grant::default()
        );
        // A segment with a non-string topic never matched in the reference
        // (2024 != "2024"): it is dropped; the rest of the entry stands.
        let g = granted(acl.authenticate("numeric_topic", "pw"));
        assert_eq!(g.segments, vec![strings(&["git", "2024"])]);
        assert_eq!(g.publish_topics, strings(&["deploy", "release"]));
        assert!(granted(acl.authenticate("string_topics", "pw"))
            .publish_topics
            .is_empty());
        let g = granted(acl.authenticate("empty_segment", "pw"));
        assert!(g.can_see(&strings(&["anything"])));
        assert!(g.can_see(&[]));
        let g = granted(acl.authenticate("duplicate_segments", "pw"));
        assert_eq!(g.segments.len(), 1);
    }

    #[test]
    fn yaml_merge_keys_and_anchors() {
        let text = r#"
base: &base
  password: pw
  acl: {git: [git]}
carol:
  <<: *base
  topics: [deploy]
dave:
  <<: *base
  password: other
"#;
        let acl = Acl::parse(text).expect("parses");
        let g = granted(acl.authenticate("carol", "pw"));
        assert_eq!(g.segments, vec![strings(&["git"])]);
        assert_eq!(g.publish_topics, strings(&["deploy"]));
        assert!(matches!(
            acl.authenticate("dave", "other"),
            AuthOutcome::Granted(_)
        ));
        assert_eq!(acl.authenticate("dave", "pw"), AuthOutcome::BadPassword);
    }

    #[test]
    fn duplicate_user_is_an_error() {
        // PyYAML keeps the last; serde_yaml refuses. Refusing is safer (which
        // password did the admin mean?) and the old ACL stays in force.
        assert!(matches!(
            Acl::parse("a: {password: x}\na: {password: y}\n"),
            Err(AclError::Yaml(_))
        ));
    }

    #[test]
    fn load_missing_unreadable_and_good_files() {
        let dir = std::env::temp_dir().join(format!("acl-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let missing = Acl::load(&dir.join("nope.yaml")).expect("missing is empty");
        assert!(missing.is_empty());
        match Acl::load(&dir) {
            Err(AclError::Read { path, .. }) => assert_eq!(path, dir),
            other => panic!("reading a directory: {other:?}"),
        }
        let file = dir.join("acl.yaml");
        std::fs::write(&file, SAMPLE).expect("write");
        assert_eq!(Acl::load(&file).expect("loads").len(), 2);
        std::fs::write(&file, b"alice: {password: \xff\xfe}\n").expect("write");
        assert!(matches!(Acl::load(&file), Err(AclError::Read { .. })));
        std::fs::write(&file, "alice: [").expect("write");
        assert!(matches!(Acl::load(&file), Err(AclError::Yaml(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn hashed_passwords() {
        let text = format!(
            "h6: {{password: '{SHA512_S3CRET}', acl: {{a: [x]}}}}\n\
             h5: {{password: '{SHA256_S3CRET}'}}\n\
             rounds: {{password: '{SHA512_ROUNDS_PW}'}}\n"
        );
        let acl = Acl::parse(&text).expect("parses");
        let g = granted(acl.authenticate("h6", "s3cret"));
        assert_eq!(g.segments, vec![strings(&["x"])]);
        assert!(matches!(
            acl.authenticate("h5", "s3cret"),
            AuthOutcome::Granted(_)
        ));
        assert!(matches!(
            acl.authenticate("rounds", "pw"),
            AuthOutcome::Granted(_)
        ));
        assert_eq!(acl.authenticate("h6", "s3cre"), AuthOutcome::BadPassword);
        assert_eq!(acl.authenticate("h5", ""), AuthOutcome::BadPassword);
        assert_eq!(
            acl.authenticate("rounds", "s3cret"),
            AuthOutcome::BadPassword
        );
        // The hash string itself is not the password.
        assert_eq!(
            acl.authenticate("h6", SHA512_S3CRET),
            AuthOutcome::BadPassword
        );
    }

    #[test]
    fn verified_hash_is_remembered_by_digest_only() {
        let acl = Acl::parse(&format!("h: {{password: '{SHA512_S3CRET}'}}\n")).expect("parses");
        assert!(matches!(
            acl.authenticate("h", "s3cret"),
            AuthOutcome::Granted(_)
        ));
        {
            let v = acl.verified.lock().expect("lock");
            assert_eq!(v.by_user.len(), 1);
            assert!(!format!("{:?}", *v).contains("s3cret"));
        }
        // Remembered: still granted; a wrong password still refused.
        assert!(matches!(
            acl.authenticate("h", "s3cret"),
            AuthOutcome::Granted(_)
        ));
        assert_eq!(acl.authenticate("h", "wrong"), AuthOutcome::BadPassword);
        assert!(matches!(
            acl.authenticate("h", "s3cret"),
            AuthOutcome::Granted(_)
        ));
        assert!(!format!("{acl:?}").contains("s3cret"));
        assert!(!format!("{acl:?}").contains("Z7Kfo"));
    }

    #[test]
    fn bad_or_unsupported_hashes_disable_the_entry() {
        let too_many = SHA512_ROUNDS_PW.replace("rounds=1000", "rounds=999999");
        let too_few = SHA512_ROUNDS_PW.replace("rounds=1000", "rounds=999");
        let cases = [
            ("truncated", "$6$abcdefgh$Z7KfoKnKTSZ".to_string()),
            ("no_salt", "$6$$x".to_string()),
            ("extra_field", format!("{SHA256_S3CRET}$x")),
            (
                "bad_rounds",
                SHA512_ROUNDS_PW.replace("rounds=1000", "rounds=lots"),
            ),
            ("too_many_rounds", too_many),
            ("too_few_rounds", too_few),
            (
                "long_salt",
                "$5$abcdefghijklmnopq$OcHWp0Vj4l19dnE2g4tHD4hbItEZgO0bjRV6LjwCLoA".into(),
            ),
            (
                "bcrypt",
                "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy".into(),
            ),
            (
                "argon2",
                "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA".into(),
            ),
            ("md5", "$1$salt$hash".into()),
            ("ssha", "{SSHA}ePBnkGg1ULqRmOfID4JynEDX3lQ8Sz9t".into()),
        ];
        let mut text = String::new();
        for (user, pw) in &cases {
            text.push_str(&format!("{user}: {{password: '{pw}'}}\n"));
        }
        let acl = Acl::parse(&text).expect("parses");
        for (user, pw) in &cases {
            assert_eq!(
                acl.authenticate(user, pw),
                AuthOutcome::BadPassword,
                "{user}"
            );
            assert_eq!(
                acl.authenticate(user, "s3cret"),
                AuthOutcome::BadPassword,
                "{user}"
            );
        }
        // Plain passwords that merely contain `$` or braces are fine.
        let acl =
            Acl::parse("a: {password: 'pa$$word'}\nb: {password: '{curly}'}\n").expect("parses");
        assert!(matches!(
            acl.authenticate("a", "pa$$word"),
            AuthOutcome::Granted(_)
        ));
        assert!(matches!(
            acl.authenticate("b", "{curly}"),
            AuthOutcome::Granted(_)
        ));
    }

    #[test]
    fn can_see_matrix() {
        let g = Grant {
            segments: vec![
                strings(&["git", "private-repo.git"]),
                strings(&["email", "dev"]),
            ],
            publish_topics: vec![],
        };
        assert!(g.can_see(&strings(&["git", "private-repo.git"])));
        assert!(g.can_see(&strings(&["private-repo.git", "git", "commit"])));
        assert!(g.can_see(&strings(&["dev", "email"])));
        assert!(!g.can_see(&strings(&["git"])));
        assert!(!g.can_see(&strings(&["git", "other.git"])));
        assert!(!g.can_see(&strings(&["email", "git"])));
        assert!(!g.can_see(&[]));
        assert!(!Grant::default().can_see(&strings(&["git"])));
        assert!(!Grant::default().can_see(&[]));
        let everything = Grant {
            segments: vec![vec![]],
            publish_topics: vec![],
        };
        assert!(everything.can_see(&[]));
        assert!(everything.can_see(&strings(&["x"])));
    }

    #[test]
    fn merge_unions_without_duplicates() {
        let mut a = Grant {
            segments: vec![strings(&["a"])],
            publish_topics: strings(&["deploy"]),
        };
        a.merge(&Grant {
            segments: vec![strings(&["a"]), strings(&["b", "c"])],
            publish_topics: strings(&["deploy", "release"]),
        });
        assert_eq!(a.segments, vec![strings(&["a"]), strings(&["b", "c"])]);
        assert_eq!(a.publish_topics, strings(&["deploy", "release"]));
        assert!(!a.is_empty());
        assert!(Grant::default().is_empty());
    }

    #[test]
    fn secured_topics_rule() {
        let secure = strings(&["deploy", "release"]);
        let deployer = Grant {
            segments: vec![],
            publish_topics: strings(&["deploy"]),
        };
        let both = Grant {
            segments: vec![],
            publish_topics: strings(&["release", "deploy"]),
        };
        let none = Grant::default();
        let t = |s: &[&str]| strings(s);
        // No secured topic: the address decides, the grant does not matter.
        assert!(may_publish(&secure, &t(&["fruits"]), None, true));
        assert!(!may_publish(&secure, &t(&["fruits"]), None, false));
        assert!(!may_publish(&secure, &t(&["fruits"]), Some(&both), false));
        assert!(may_publish(&[], &t(&["deploy"]), None, true));
        // Secured topic: the grant decides, the address does not matter.
        assert!(!may_publish(&secure, &t(&["deploy", "x"]), None, true));
        assert!(!may_publish(&secure, &t(&["deploy"]), Some(&none), true));
        assert!(may_publish(
            &secure,
            &t(&["deploy", "x"]),
            Some(&deployer),
            false
        ));
        assert!(may_publish(
            &secure,
            &t(&["x", "deploy"]),
            Some(&deployer),
            true
        ));
        assert!(!may_publish(
            &secure,
            &t(&["deploy", "release"]),
            Some(&deployer),
            true
        ));
        assert!(may_publish(
            &secure,
            &t(&["release", "deploy"]),
            Some(&both),
            false
        ));
        // `private` is a path segment like any other.
        let private = strings(&["private"]);
        assert!(!may_publish(&private, &t(&["private", "x"]), None, true));
        assert!(may_publish(&private, &t(&["x"]), None, true));
    }

    #[test]
    fn basic_auth_parsing() {
        let ok = |h: &str, u: &str, p: &str| {
            assert_eq!(
                parse_basic_auth(h.as_bytes()),
                Some((u.to_string(), p.to_string())),
                "{h:?}"
            )
        };
        ok("Basic YWxpY2U6czNjcmV0", "alice", "s3cret");
        ok("basic YWxpY2U6czNjcmV0", "alice", "s3cret");
        ok("BASIC YWxpY2U6czNjcmV0", "alice", "s3cret");
        ok("  Basic \t YWxpY2U6czNjcmV0 \r\n", "alice", "s3cret");
        ok("Basic YWxp Y2U6 czNj cmV0", "alice", "s3cret");
        // "a:b:c" → password "b:c"; "a:" → empty password; ":" → empty both.
        ok("Basic YTpiOmM=", "a", "b:c");
        ok("Basic YTpiOmM", "a", "b:c");
        ok("Basic YTo=", "a", "");
        ok("Basic Og==", "", "");
        // UTF-8 user and password (RFC 7617 charset=UTF-8): "jürgen:pässword"
        ok("Basic asO8cmdlbjpww6Rzc3dvcmQ=", "jürgen", "pässword");
        let none = |h: &[u8]| assert_eq!(parse_basic_auth(h), None, "{h:?}");
        none(b"");
        none(b"Basic");
        none(b"Basic ");
        none(b"Basic    ");
        none(b"BasicYWxpY2U6czNjcmV0");
        none(b"Bearer YWxpY2U6czNjcmV0");
        none(b"Digest username=\"alice\"");
        none(b"Basic YWxpY2U"); // "alice": no colon
        none(b"Basic YWxpY2U6czNjcmV0!"); // not base64
        none(b"Basic YWxpY2U6czNjcmV0=="); // wrong padding
        none(b"Basic YTo=YTo="); // data after padding
        none(b"Basic Y"); // 1 mod 4
        none(b"Basic YWxpY2U6czNjcmV0 extra!");
        none(b"Basic //79:"); // invalid UTF-8 after decoding
        none(b"Basic \xff\xfe");
        let long = format!("Basic {}", "QUFB".repeat(MAX_AUTH_HEADER / 4));
        none(long.as_bytes());
    }

    #[test]
    fn base64_vectors() {
        // RFC 4648 §10.
        for (enc, dec) in [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg==", "foob"),
            ("Zm9vYmE=", "fooba"),
            ("Zm9vYmFy", "foobar"),
            ("Zg", "f"),
            ("Zm8", "fo"),
        ] {
            assert_eq!(
                base64_decode(enc.as_bytes()),
                Some(dec.as_bytes().to_vec()),
                "{enc}"
            );
        }
        assert_eq!(base64_decode(b"+/+/"), Some(vec![0xfb, 0xff, 0xbf]));
        assert_eq!(
            base64_decode(b"-_-_"),
            None,
            "URL-safe alphabet is not Basic's"
        );
        assert_eq!(base64_decode(b"Zg="), None);
        assert_eq!(base64_decode(b"Zm9v="), None);
        assert_eq!(base64_decode(b"Zm9vY"), None);
        assert_eq!(base64_decode(b"="), None);
    }

    // ---- LDAP section ----

    const LDAP_SAMPLE: &str = r#"
uri: ldaps://ldap.example.org
user_dn: uid=%s,ou=people,dc=example,dc=org     # %s = user name; bind with the password
base_scope: dc=example,dc=org
membership_patterns:                            # search filters, %s = user name;
  - (member=uid=%s,ou=people,dc=example,dc=org) #  the DNs found are the user's groups
  - (uid=%s)
acl:                                            # group DN → named segments
  "cn=admins,ou=groups,dc=example,dc=org":
    accounts: [accounts]
    ops: [infra, restricted]
  "uid=jane,ou=people,dc=example,dc=org": [hr]   # a bare list: one segment
"#;

    fn ldap(text: &str) -> Result<(ldap_worker::LdapSettings, LdapAclMap), String> {
        parse_ldap_section(&serde_yaml::from_str(text).expect("yaml"))
    }

    fn ldap_err(text: &str) -> String {
        ldap(text).expect_err("should be refused")
    }

    #[test]
    fn ldap_sample_section() {
        let (s, map) = ldap(LDAP_SAMPLE).expect("parses");
        assert_eq!(s.uri, "ldaps://ldap.example.org");
        assert_eq!(s.user_dn, "uid=%s,ou=people,dc=example,dc=org");
        assert_eq!(s.base_scope, "dc=example,dc=org");
        assert_eq!(
            s.membership_patterns,
            strings(&["(member=uid=%s,ou=people,dc=example,dc=org)", "(uid=%s)"])
        );
        let defaults = ldap_worker::LdapSettings::default();
        assert_eq!(s.timeout, defaults.timeout);
        assert_eq!(s.cache_ttl, defaults.cache_ttl);
        assert_eq!(s.workers, defaults.workers);
        assert_eq!(s.queue, defaults.queue);
        assert_eq!(s.ca_file, None);
        assert_eq!(map.len(), 2);

        let admins = map.grant_for(&strings(&["cn=admins,ou=groups,dc=example,dc=org"]));
        assert_eq!(
            admins.segments,
            vec![strings(&["accounts"]), strings(&["infra", "restricted"])]
        );
        let jane = map.grant_for(&strings(&["uid=jane,ou=people,dc=example,dc=org"]));
        assert_eq!(jane.segments, vec![strings(&["hr"])]);
        let both = map.grant_for(&strings(&[
            "uid=jane,ou=people,dc=example,dc=org",
            "cn=other,dc=example,dc=org",
            "CN=Admins, OU=Groups, DC=example, DC=org",
        ]));
        assert_eq!(both.segments.len(), 3);
        assert!(both.publish_topics.is_empty());
        assert_eq!(map.grant_for(&[]), Grant::default());
        assert_eq!(
            map.grant_for(&strings(&["cn=nobody,dc=example,dc=org"])),
            Grant::default()
        );
    }

    #[test]
    fn ldap_extensions() {
        let (s, map) = ldap(
            r#"
uri: ldap://127.0.0.1:3890
user_dn: uid=%s,ou=people,dc=example,dc=org
base_scope: dc=example,dc=org
timeout: 2.5
cache_ttl: 0
workers: 2
queue: 16
ca_file: /etc/ssl/private-ca.pem
acl:
  cn=ops,dc=example,dc=org: {ops: [infra]}
  "CN=Ops , DC=Example,DC=org": {more: [infra, db]}
publish_topics:
  cn=ops,dc=example,dc=org: [deploy]
  cn=release,dc=example,dc=org: [release, deploy]
"#,
        )
        .expect("parses");
        assert_eq!(s.timeout, Duration::from_millis(2500));
        assert_eq!(s.cache_ttl, Duration::ZERO);
        assert_eq!(s.workers, 2);
        assert_eq!(s.queue, 16);
        assert_eq!(s.ca_file, Some(PathBuf::from("/etc/ssl/private-ca.pem")));
        assert!(s.membership_patterns.is_empty());
        // Two spellings of one DN merge.
        assert_eq!(map.len(), 2);
        let ops = map.grant_for(&strings(&["cn=ops,dc=example,dc=org"]));
        assert_eq!(
            ops.segments,
            vec![strings(&["infra"]), strings(&["infra", "db"])]
        );
        assert_eq!(ops.publish_topics, strings(&["deploy"]));
        let g = map.grant_for(&strings(&[
            "cn=ops,dc=example,dc=org",
            "cn=release,dc=example,dc=org",
        ]));
        assert_eq!(g.publish_topics, strings(&["deploy", "release"]));
        assert!(may_publish(
            &strings(&["release"]),
            &strings(&["release"]),
            Some(&g),
            false
        ));
    }

    #[test]
    fn ldap_durations() {
        let base = "uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\n";
        for (v, expect) in [
            ("5", Duration::from_secs(5)),
            ("0.25", Duration::from_millis(250)),
            ("'750ms'", Duration::from_millis(750)),
            ("3s", Duration::from_secs(3)),
            ("1m", Duration::from_secs(60)),
            ("'2'", Duration::from_secs(2)),
        ] {
            let (s, _) = ldap(&format!("{base}timeout: {v}\ncache_ttl: {v}\n")).expect(v);
            assert_eq!(s.timeout, expect, "{v}");
            assert_eq!(s.cache_ttl, expect, "{v}");
        }
        for v in ["0", "-1", "abc", "5x", "[5]", "301", "1h", "true", ".nan"] {
            let e = ldap_err(&format!("{base}timeout: {v}\n"));
            assert!(e.starts_with("clients.ldap.timeout"), "{v}: {e}");
        }
        assert!(ldap_err(&format!("{base}cache_ttl: 2d\n")).starts_with("clients.ldap.cache_ttl"));
        assert!(ldap_err(&format!("{base}cache_ttl: 25h\n")).starts_with("clients.ldap.cache_ttl"));
    }

    #[test]
    fn ldap_errors_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("[]", "clients.ldap must be a mapping"),
            ("user_dn: uid=%s\nbase_scope: dc=x", "clients.ldap.uri is required"),
            ("uri: 5\nuser_dn: uid=%s\nbase_scope: dc=x", "clients.ldap.uri must be a string"),
            ("uri: http://h\nuser_dn: uid=%s\nbase_scope: dc=x", "clients.ldap.uri must be an ldap://"),
            ("uri: ldap://\nuser_dn: uid=%s\nbase_scope: dc=x", "clients.ldap.uri must be an ldap://"),
            ("uri: ldap://h\nbase_scope: dc=x", "clients.ldap.user_dn is required"),
            ("uri: ldap://h\nuser_dn: [a]\nbase_scope: dc=x", "clients.ldap.user_dn must be a string"),
            ("uri: ldap://h\nuser_dn: uid=bob\nbase_scope: dc=x", "clients.ldap.user_dn must contain %s"),
            ("uri: ldap://h\nuser_dn: uid=%s", "clients.ldap.base_scope is required"),
            ("uri: ldap://h\nuser_dn: uid=%s\nbase_scope: ''", "clients.ldap.base_scope must not be empty"),
            (
                "uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nmembership_patterns: (uid=%s)",
                "clients.ldap.membership_patterns must be a list",
            ),
            (
                // The reference's sample config has this shape (a mapping item).
                "uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nmembership_patterns:\n  - member=uid=%s,dc=x:\n",
                "clients.ldap.membership_patterns[0] must be a string",
            ),
            (
                "uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nmembership_patterns: ['(uid=%s']",
                "clients.ldap.membership_patterns[0] is not a valid LDAP filter",
            ),
            ("uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nworkers: 0", "clients.ldap.workers must be an integer"),
            ("uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nworkers: 1.5", "clients.ldap.workers must be an integer"),
            ("uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nqueue: many", "clients.ldap.queue must be an integer"),
            ("uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nca_file: [x]", "clients.ldap.ca_file must be a string"),
            ("uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nacl: [x]", "clients.ldap.acl must be a mapping"),
            ("uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nacl: {1: [x]}", "clients.ldap.acl keys must be group DNs"),
            (
                "uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nacl: {cn=a: x}",
                "clients.ldap.acl[\"cn=a\"] must be a mapping of segment names",
            ),
            (
                "uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nacl: {cn=a: {ops: x}}",
                "clients.ldap.acl[\"cn=a\"].ops must be a list of topics",
            ),
            (
                "uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nacl: {cn=a: {ops: [x, 1]}}",
                "clients.ldap.acl[\"cn=a\"].ops must be a list of topics (strings): 1 is not",
            ),
            (
                "uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nacl: {cn=a: [x, {y: z}]}",
                "clients.ldap.acl[\"cn=a\"] must be a list of topics (strings): a mapping",
            ),
            (
                "uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\npublish_topics: [deploy]",
                "clients.ldap.publish_topics must be a mapping",
            ),
            (
                "uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\npublish_topics: {cn=a: deploy}",
                "clients.ldap.publish_topics[\"cn=a\"] must be a list of topics",
            ),
        ];
        for (text, want) in cases {
            let e = ldap_err(text);
            assert!(e.starts_with(want), "{text:?}\n  got:  {e}\n  want: {want}");
        }
    }

    #[test]
    fn ldap_lenient_bits() {
        // Nulls are "absent"; unknown keys are only warned about; an empty
        // segment list is allowed (it matches everything, as in the file ACL).
        let (s, map) = ldap(
            "uri: LDAPS://h:636\nuser_dn: ' uid=%s,dc=x '\nbase_scope: dc=x\n\
             membership_patterns: ~\nacl: {cn=all: {all: []}}\ntimeout: ~\nfrobnicate: 1\n",
        )
        .expect("parses");
        assert_eq!(s.user_dn, "uid=%s,dc=x");
        assert!(s.membership_patterns.is_empty());
        assert_eq!(s.timeout, Duration::from_secs(5));
        assert!(map
            .grant_for(&strings(&["cn=all"]))
            .can_see(&strings(&["x"])));
    }

    #[test]
    fn dn_normalisation() {
        assert_eq!(
            normalize_dn(" CN = Admins ,  OU=Groups,dc=Example , dc=ORG "),
            "cn=admins,ou=groups,dc=example,dc=org"
        );
        assert_eq!(normalize_dn("cn=Big   Team,dc=x"), "cn=big team,dc=x");
        assert_ne!(normalize_dn("cn=a,dc=x"), normalize_dn("cn=b,dc=x"));
        assert_eq!(normalize_dn(""), "");
    }
}
