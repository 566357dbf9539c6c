//! The `clients.ldap` section → [`LdapConfig`]: the `ldap-worker` pool's
//! settings and the group DN → grant map, validated at start-up.
//!
//! Keys besides the reference's (`uri`, `user_dn`, `base_scope`,
//! `membership_patterns`, `acl`):
//! - `publish_topics`: group DN → secured topics its members may publish to;
//! - `timeout` (default 5 s, at most 300 s), `cache_ttl` (default 60 s, 0 =
//!   off, at most a day): durations in the shared grammar (`500ms`, `5s`,
//!   `2m`, `1d`, or a number of seconds);
//! - `workers` (default 4), `queue` (default 1024);
//! - `ca_file`: extra trusted CA certificates (PEM) for `ldaps://`.
//!
//! Errors name the key, e.g. `clients.ldap.user_dn: must be a string`;
//! unknown keys, patterns without `%s` and empty segments are warnings.

use std::path::PathBuf;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use super::ConfigError;
use crate::acl::{Grant, LdapAclMap};
use crate::yaml::{
    duration, entries, err, key_text, kind, nonempty_string, present, scalar_text, section,
    uint_range,
};

const LDAP: &str = "clients.ldap";

const KNOWN_KEYS: [&str; 11] = [
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

/// `clients.ldap`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapConfig {
    pub settings: ldap_worker::LdapSettings,
    pub map: LdapAclMap,
}

/// Validates `clients.ldap`; `~` means LDAP is not configured.
pub fn parse(v: &Value, warnings: &mut Vec<String>) -> Result<Option<LdapConfig>, ConfigError> {
    let Some(m) = section(v, LDAP)? else {
        return Ok(None);
    };
    for (key, _) in m {
        if !key.as_str().is_some_and(|k| KNOWN_KEYS.contains(&k)) {
            warnings.push(format!(
                "unknown configuration key '{LDAP}.{}' ignored",
                key_text(key)
            ));
        }
    }
    let settings = parse_settings(m, warnings)?;
    let map = parse_map(m, warnings)?;
    Ok(Some(LdapConfig { settings, map }))
}

fn parse_settings(
    m: &Mapping,
    warnings: &mut Vec<String>,
) -> Result<ldap_worker::LdapSettings, ConfigError> {
    let mut s = ldap_worker::LdapSettings::default();
    let at = |key: &str| format!("{LDAP}.{key}");
    // Only strings: a number here is a mistake, not a name.
    let required = |key: &str| match present(m, key) {
        Some(v @ Value::String(_)) => nonempty_string(v, &at(key)),
        Some(other) => err(&at(key), format!("must be a string, found {}", kind(other))),
        None => err(&at(key), "is required (a string)"),
    };
    s.uri = required("uri")?;
    let scheme_ok = ["ldap://", "ldaps://", "ldapi://"]
        .iter()
        .any(|p| s.uri.len() > p.len() && s.uri[..p.len()].eq_ignore_ascii_case(p));
    if !scheme_ok {
        return err(
            &at("uri"),
            format!(
                "must be an ldap://, ldaps:// or ldapi:// URI, found {:?}",
                s.uri
            ),
        );
    }
    s.user_dn = required("user_dn")?;
    if !s.user_dn.contains("%s") {
        return err(
            &at("user_dn"),
            format!("must contain %s (the user name), found {:?}", s.user_dn),
        );
    }
    s.base_scope = required("base_scope")?;
    if let Some(v) = present(m, "membership_patterns") {
        let path = at("membership_patterns");
        let Value::Sequence(items) = v else {
            return err(&path, "must be a list of search filters");
        };
        for (i, item) in items.iter().enumerate() {
            let key = format!("{path}[{i}]");
            let Value::String(pattern) = item else {
                return err(&key, "must be a string (a search filter)");
            };
            if !ldap_worker::filter_is_valid(pattern) {
                return err(&key, format!("is not a valid LDAP filter: {pattern:?}"));
            }
            if !pattern.contains("%s") {
                warnings.push(format!("{key} has no %s: every user gets the same groups"));
            }
            s.membership_patterns.push(pattern.clone());
        }
    }
    if let Some(v) = present(m, "timeout") {
        s.timeout = duration(v, &at("timeout"))?;
        if s.timeout.is_zero() || s.timeout > Duration::from_secs(300) {
            return err(
                &at("timeout"),
                "must be more than 0 and at most 300 seconds",
            );
        }
    }
    if let Some(v) = present(m, "cache_ttl") {
        s.cache_ttl = duration(v, &at("cache_ttl"))?;
        if s.cache_ttl > Duration::from_secs(86_400) {
            return err(&at("cache_ttl"), "must be at most a day");
        }
    }
    if let Some(v) = present(m, "workers") {
        s.workers = uint_range(v, &at("workers"), 1, 64)? as usize;
    }
    if let Some(v) = present(m, "queue") {
        s.queue = uint_range(v, &at("queue"), 1, 1_000_000)? as usize;
    }
    if let Some(v) = present(m, "ca_file") {
        let Value::String(path) = v else {
            return err(&at("ca_file"), "must be a string (a PEM file path)");
        };
        s.ca_file = Some(PathBuf::from(path));
    }
    Ok(s)
}

/// `acl` (group DN → named segments, or a bare list: one segment) and
/// `publish_topics` (group DN → secured topics), merged by normalised DN.
fn parse_map(m: &Mapping, warnings: &mut Vec<String>) -> Result<LdapAclMap, ConfigError> {
    let mut map = LdapAclMap::default();
    if let Some(v) = present(m, "acl") {
        let Value::Mapping(groups) = v else {
            return err(
                &format!("{LDAP}.acl"),
                "must be a mapping of group DNs to ACL segments",
            );
        };
        for (dn, segments) in groups {
            let dn = group_dn(dn, "acl")?;
            let path = format!("{LDAP}.acl[{dn:?}]");
            let mut grant = Grant::default();
            match segments {
                Value::Sequence(items) => grant.segments.push(topic_list(items, &path)?),
                Value::Mapping(named) => {
                    for (name, _, topics) in entries(named, &path)? {
                        let path = format!("{path}.{name}");
                        let Value::Sequence(items) = topics else {
                            return err(&path, "must be a list of topics");
                        };
                        let topics = topic_list(items, &path)?;
                        if !grant.segments.contains(&topics) {
                            grant.segments.push(topics);
                        }
                    }
                }
                _ => {
                    return err(
                        &path,
                        "must be a mapping of segment names to topic lists, \
                         or a list of topics (one segment)",
                    )
                }
            }
            for (i, segment) in grant.segments.iter().enumerate() {
                if segment.is_empty() {
                    warnings.push(format!(
                        "{path}: segment {i} is empty: it grants every private event"
                    ));
                }
            }
            map.add(dn, &grant);
        }
    }
    if let Some(v) = present(m, "publish_topics") {
        let Value::Mapping(groups) = v else {
            return err(
                &format!("{LDAP}.publish_topics"),
                "must be a mapping of group DNs to lists of secured topics",
            );
        };
        for (dn, topics) in groups {
            let dn = group_dn(dn, "publish_topics")?;
            let path = format!("{LDAP}.publish_topics[{dn:?}]");
            let Value::Sequence(items) = topics else {
                return err(&path, "must be a list of topics");
            };
            let grant = Grant {
                segments: Vec::new(),
                publish_topics: topic_list(items, &path)?,
            };
            map.add(dn, &grant);
        }
    }
    Ok(map)
}

fn group_dn<'a>(dn: &'a Value, under: &str) -> Result<&'a str, ConfigError> {
    match dn {
        Value::String(dn) => Ok(dn),
        other => err(
            &format!("{LDAP}.{under}"),
            format!(
                "keys must be group DNs (strings), found {}",
                scalar_text(other)
            ),
        ),
    }
}

/// Topics must be strings: `2024` is not the topic `"2024"`.
fn topic_list(items: &[Value], path: &str) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::String(s) => out.push(s.clone()),
            other => {
                return err(
                    path,
                    format!(
                        "must be a list of topics (strings): {} is not a string (quote it)",
                        scalar_text(other)
                    ),
                )
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::may_publish;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

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
        ldap_warned(text).map(|(s, map, _)| (s, map))
    }

    fn ldap_warned(
        text: &str,
    ) -> Result<(ldap_worker::LdapSettings, LdapAclMap, Vec<String>), String> {
        let v: Value = serde_yaml::from_str(text).expect("yaml");
        let mut warnings = Vec::new();
        match parse(&v, &mut warnings) {
            Ok(Some(c)) => Ok((c.settings, c.map, warnings)),
            Ok(None) => Err("not configured".into()),
            Err(e) => Err(e.to_string()),
        }
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
        // One duration grammar: days parse here too (and then meet the range).
        let (s, _) = ldap(&format!("{base}cache_ttl: 1d\n")).expect("1d");
        assert_eq!(s.cache_ttl, Duration::from_secs(86_400));
        let e = ldap_err(&format!("{base}timeout: 1d\n"));
        assert_eq!(
            e,
            "clients.ldap.timeout: must be more than 0 and at most 300 seconds"
        );
        assert!(ldap_err(&format!("{base}cache_ttl: 25h\n")).starts_with("clients.ldap.cache_ttl"));
    }

    #[test]
    fn ldap_errors_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("[]", "clients.ldap: must be a mapping"),
            ("user_dn: uid=%s\nbase_scope: dc=x", "clients.ldap.uri: is required"),
            ("uri: 5\nuser_dn: uid=%s\nbase_scope: dc=x", "clients.ldap.uri: must be a string"),
            ("uri: http://h\nuser_dn: uid=%s\nbase_scope: dc=x", "clients.ldap.uri: must be an ldap://"),
            ("uri: ldap://\nuser_dn: uid=%s\nbase_scope: dc=x", "clients.ldap.uri: must be an ldap://"),
            ("uri: ldap://h\nbase_scope: dc=x", "clients.ldap.user_dn: is required"),
            ("uri: ldap://h\nuser_dn: [a]\nbase_scope: dc=x", "clients.ldap.user_dn: must be a string"),
            ("uri: ldap://h\nuser_dn: uid=bob\nbase_scope: dc=x", "clients.ldap.user_dn: must contain %s"),
            ("uri: ldap://h\nuser_dn: uid=%s", "clients.ldap.base_scope: is required"),
            ("uri: ldap://h\nuser_dn: uid=%s\nbase_scope: ''", "clients.ldap.base_scope: must not be empty"),
            (
                "uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nmembership_patterns: (uid=%s)",
                "clients.ldap.membership_patterns: must be a list",
            ),
            (
                // The reference's sample config has this shape (a mapping item).
                "uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nmembership_patterns:\n  - member=uid=%s,dc=x:\n",
                "clients.ldap.membership_patterns[0]: must be a string",
            ),
            (
                "uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nmembership_patterns: ['(uid=%s']",
                "clients.ldap.membership_patterns[0]: is not a valid LDAP filter",
            ),
            ("uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nworkers: 0", "clients.ldap.workers: must be a whole number"),
            ("uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nworkers: 1.5", "clients.ldap.workers: must be a whole number"),
            ("uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nqueue: many", "clients.ldap.queue: must be a whole number"),
            ("uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nca_file: [x]", "clients.ldap.ca_file: must be a string"),
            ("uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nacl: [x]", "clients.ldap.acl: must be a mapping"),
            ("uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nacl: {1: [x]}", "clients.ldap.acl: keys must be group DNs"),
            (
                "uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nacl: {cn=a: x}",
                "clients.ldap.acl[\"cn=a\"]: must be a mapping of segment names",
            ),
            (
                "uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nacl: {cn=a: {ops: x}}",
                "clients.ldap.acl[\"cn=a\"].ops: must be a list of topics",
            ),
            (
                "uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nacl: {cn=a: {ops: [x, 1]}}",
                "clients.ldap.acl[\"cn=a\"].ops: must be a list of topics (strings): 1 is not",
            ),
            (
                "uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\nacl: {cn=a: [x, {y: z}]}",
                "clients.ldap.acl[\"cn=a\"]: must be a list of topics (strings): a mapping",
            ),
            (
                "uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\npublish_topics: [deploy]",
                "clients.ldap.publish_topics: must be a mapping",
            ),
            (
                "uri: ldap://h\nuser_dn: uid=%s\nbase_scope: dc=x\npublish_topics: {cn=a: deploy}",
                "clients.ldap.publish_topics[\"cn=a\"]: must be a list of topics",
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
        let (s, map, warnings) = ldap_warned(
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
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("clients.ldap.frobnicate"),
            "{warnings:?}"
        );
        assert!(warnings[1].contains("segment 0 is empty"), "{warnings:?}");
    }
}
