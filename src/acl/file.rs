//! The ACL file (`pypubsub_acl.yaml`): users, their passwords (plaintext
//! or `$5$`/`$6$` hashes) and grants; the verified-hash cache and the
//! per-user throttling of hash checks.
//!
//! Invariants:
//! - A malformed user entry is logged (user name and reason) and *disabled*:
//!   it never authenticates, and, as in the reference, the user is still
//!   "known", so the name does not fall through to LDAP.
//! - A user listed twice: the last entry wins, as PyYAML does, with a warning
//!   naming the user. (serde_yaml refuses duplicate keys in a `Mapping`, so
//!   the top level is read with our own visitor that keeps every pair.)
//! - Plaintext passwords are compared in constant time (in the length of the
//!   stored password). Hashed passwords (`$5$` SHA-256-crypt and `$6$`
//!   SHA-512-crypt, as made by `mkpasswd -m sha-512` or `openssl passwd -6`)
//!   are verified with the `sha-crypt` crate; cost (release build, this 2-core
//!   box): `$5$` ≈ 0.33 ms, `$6$` ≈ 1.4 ms at the default 5000 rounds, linear in
//!   `rounds=`. Entries above [`MAX_HASH_ROUNDS`] are refused at load so one
//!   check can never stall the event loop for long, and a successful check is
//!   remembered (keyed digest, never the password) until the next reload, so a
//!   reconnect storm costs one hash per user.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_yaml::Value;

use super::Grant;
use crate::yaml::{key_text, kind, scalar_text};

/// Highest `rounds=` accepted in a `$5$`/`$6$` hash (≈14 ms for `$6$`).
pub const MAX_HASH_ROUNDS: u32 = 50_000;

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
        let pairs = match serde_yaml::from_str::<TopLevel>(text).map_err(AclError::Yaml)? {
            TopLevel::Null => return Ok(Acl::default()),
            TopLevel::Pairs(pairs) => pairs,
            TopLevel::Other(found) => return Err(AclError::NotAMapping(found)),
        };
        let mut users = HashMap::with_capacity(pairs.len());
        for (key, mut value) in with_merged_entries(pairs) {
            let Value::String(name) = key else {
                log::warn!(
                    "ACL: entry {} ignored: user names must be strings (quote it)",
                    scalar_text(&key)
                );
                continue;
            };
            value.apply_merge().map_err(AclError::Yaml)?;
            let entry = match parse_user(&name, &value) {
                Ok(user) => Entry::Valid(user),
                Err(why) => {
                    log::warn!("ACL: user {name:?} disabled: {why}");
                    Entry::Disabled
                }
            };
            if users.insert(name.clone(), entry).is_some() {
                log::warn!("ACL: user {name:?} is listed more than once: the last entry wins");
            }
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

    /// The grant of `user` without a password: for a verified token whose
    /// `sub` names the user (the token stands in for the password). A
    /// disabled (malformed) entry grants nothing, as it would with one.
    pub fn grant_of(&self, user: &str) -> AuthOutcome {
        match self.users.get(user) {
            None => AuthOutcome::UnknownUser,
            Some(Entry::Valid(u)) => AuthOutcome::Granted(u.grant.clone()),
            Some(Entry::Disabled) => AuthOutcome::BadPassword,
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

/// The top level of an ACL file as written: every (key, value) pair of the
/// mapping in order, duplicates included (serde_yaml's `Mapping` refuses
/// them; PyYAML keeps the last, and so do we).
enum TopLevel {
    Null,
    Pairs(Vec<(Value, Value)>),
    /// Not a mapping: what it is instead.
    Other(&'static str),
}

impl<'de> serde::Deserialize<'de> for TopLevel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TopLevel, D::Error> {
        d.deserialize_any(TopLevelVisitor)
    }
}

struct TopLevelVisitor;

impl<'de> serde::de::Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping of user names to entries")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
        let mut pairs = Vec::new();
        while let Some(pair) = map.next_entry::<Value, Value>()? {
            pairs.push(pair);
        }
        Ok(TopLevel::Pairs(pairs))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(TopLevel::Other("a list"))
    }

    fn visit_unit<E>(self) -> Result<TopLevel, E> {
        Ok(TopLevel::Null)
    }

    fn visit_none<E>(self) -> Result<TopLevel, E> {
        Ok(TopLevel::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a number"))
    }

    fn visit_str<E>(self, _: &str) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a string"))
    }
}

/// A top-level merge key (`<<: *users`) brings in the merged mapping's
/// entries, below the ones written out (as YAML merge keys do).
fn with_merged_entries(pairs: Vec<(Value, Value)>) -> Vec<(Value, Value)> {
    let is_merge = |k: &Value| k.as_str() == Some("<<");
    if !pairs.iter().any(|(k, _)| is_merge(k)) {
        return pairs;
    }
    let (merges, explicit): (Vec<_>, Vec<_>) = pairs.into_iter().partition(|(k, _)| is_merge(k));
    let mut out = Vec::new();
    for (_, merged) in merges {
        let mappings = match merged {
            Value::Mapping(m) => vec![m],
            Value::Sequence(items) => items
                .into_iter()
                .filter_map(|v| match v {
                    Value::Mapping(m) => Some(m),
                    _ => None,
                })
                .collect(),
            other => {
                log::warn!("ACL: merge key ignored: it merges {}", kind(&other));
                continue;
            }
        };
        for (k, v) in mappings.into_iter().flatten() {
            let shadowed = explicit.iter().any(|(e, _)| *e == k)
                || out.iter().any(|(o, _): &(Value, Value)| *o == k);
            if !shadowed {
                out.push((k, v));
            }
        }
    }
    out.extend(explicit);
    out
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
    fn a_token_names_a_user_without_a_password() {
        let acl = Acl::parse(&format!("{SAMPLE}broken: {{acl: {{}}}}\n")).expect("parses");
        assert_eq!(
            acl.grant_of("alice"),
            acl.authenticate("alice", "s3cret"),
            "the same grant as with the password"
        );
        assert_eq!(acl.grant_of("bob"), AuthOutcome::UnknownUser);
        assert_eq!(acl.grant_of("broken"), AuthOutcome::BadPassword);
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
    fn duplicate_user_last_entry_wins_with_a_warning() {
        let text = "a: {password: x}\nb: {password: z}\na: {password: y, topics: [t]}\n";
        let Some(lines) = warnings(|| {
            let acl = Acl::parse(text).expect("parses, as PyYAML does");
            assert_eq!(acl.len(), 2);
            assert_eq!(acl.authenticate("a", "x"), AuthOutcome::BadPassword);
            let g = granted(acl.authenticate("a", "y"));
            assert_eq!(g.publish_topics, strings(&["t"]));
            assert!(matches!(
                acl.authenticate("b", "z"),
                AuthOutcome::Granted(_)
            ));
        }) else {
            return;
        };
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(
            lines[0].contains("\"a\"") && lines[0].contains("more than once"),
            "{lines:#?}"
        );
        // A valid entry after a disabled one (and the reverse) wins too.
        let acl = Acl::parse("a: {password: 5}\na: {password: ok}\nb: {password: ok}\nb: 7\n")
            .expect("parses");
        assert!(matches!(
            acl.authenticate("a", "ok"),
            AuthOutcome::Granted(_)
        ));
        assert_eq!(acl.authenticate("b", "ok"), AuthOutcome::BadPassword);
        // Duplicate keys inside one entry are still a YAML error.
        assert!(matches!(
            Acl::parse("a: {password: x, password: y}\n"),
            Err(AclError::Yaml(_))
        ));
    }

    #[test]
    fn top_level_merge_key() {
        let text = "base: &base\n  bob: {password: b}\n  carol: {password: c}\n<<: *base\ncarol: {password: C}\n";
        let acl = Acl::parse(text).expect("parses");
        assert!(matches!(
            acl.authenticate("bob", "b"),
            AuthOutcome::Granted(_)
        ));
        assert!(matches!(
            acl.authenticate("carol", "C"),
            AuthOutcome::Granted(_)
        ));
        assert_eq!(acl.authenticate("carol", "c"), AuthOutcome::BadPassword);
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
}
