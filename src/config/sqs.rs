//! The `sqs` section → one [`SqsQueueConfig`] per queue: plain data,
//! validated at start-up whether or not this build has the `sqs` feature
//! (the `sqs-feed` crate polls; the server maps these onto its settings).
//!
//! `sqs` is a mapping of entry names to `{queue, region, delete, key,
//! secret, endpoint, wait_time}`. The region defaults to `AWS_REGION`, then
//! `AWS_DEFAULT_REGION`, then `us-east-1`; the endpoint to the region's AWS
//! endpoint. Errors name the key, e.g. `sqs.myqueue.queue: is required`.

use std::fmt;

use serde_yaml::Value;

use super::ConfigError;
use crate::yaml::{boolean, duration, entries, err, nonempty_string, section};

/// Long-poll seconds when `wait_time` is not set (the SQS maximum).
const DEFAULT_WAIT_TIME: u32 = 20;

/// One entry of the `sqs:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct SqsQueueConfig {
    /// The entry's name in the configuration (for logs).
    pub name: String,
    /// A queue name (resolved with GetQueueUrl) or a queue URL.
    pub queue: String,
    pub region: String,
    /// Delete messages once taken.
    pub delete: bool,
    /// From `key` and `secret`; `None` = the standard AWS chain.
    pub credentials: Option<SqsCredentials>,
    pub endpoint: SqsEndpoint,
    /// Long-poll seconds, 1 to 20.
    pub wait_time: u32,
}

/// Configured AWS credentials. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SqsCredentials {
    pub access_key: String,
    pub secret_key: String,
}

impl fmt::Debug for SqsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqsCredentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

/// Where requests go: scheme, `host[:port]` (default port left out, as in
/// the `Host` header) and the base path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsEndpoint {
    pub https: bool,
    pub authority: String,
    pub path: String,
}

impl SqsEndpoint {
    /// The regional AWS endpoint, e.g. `https://sqs.us-east-1.amazonaws.com/`.
    pub fn aws(region: &str) -> SqsEndpoint {
        let domain = if region.starts_with("cn-") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        };
        SqsEndpoint {
            https: true,
            authority: format!("sqs.{region}.{domain}"),
            path: "/".into(),
        }
    }

    /// Parses `http://host[:port][/path]` or `https://…`.
    pub fn parse(text: &str) -> Result<SqsEndpoint, String> {
        let text = text.trim();
        let lower = text.to_ascii_lowercase();
        let (https, rest) = if lower.starts_with("https://") {
            (true, &text[8..])
        } else if lower.starts_with("http://") {
            (false, &text[7..])
        } else {
            return Err("must start with http:// or https://".into());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err("must not contain user information".into());
        }
        if path.contains(['?', '#']) {
            return Err("must not have a query or fragment".into());
        }
        if !path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
        {
            return Err("path may only contain letters, digits, '/', '-', '.', '_', '~'".into());
        }
        let (host, port) = split_host_port(authority)?;
        let default_port = if https { 443 } else { 80 };
        let authority = match port {
            Some(p) if p != default_port => format!("{host}:{p}"),
            _ => host.to_ascii_lowercase(),
        };
        let mut path = path.to_string();
        if !path.ends_with('/') {
            path.push('/');
        }
        Ok(SqsEndpoint {
            https,
            authority: authority.to_ascii_lowercase(),
            path,
        })
    }

    /// `scheme://authority/path/`.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority, self.path)
    }
}

fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), String> {
    let bad_port = || "has an invalid port".to_string();
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']').ok_or("has an unterminated [IPv6] host")?;
        let host = &authority[..end + 2];
        match &rest[end + 1..] {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':').ok_or_else(bad_port)?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let valid_host = !host.is_empty()
        && (host.starts_with('[')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)));
    if !valid_host {
        return Err("has an invalid host".into());
    }
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(bad_port)?,
        ),
    };
    Ok((host, port))
}

/// Validates the `sqs:` section; `~` is no queue.
pub fn parse(
    section_value: &Value,
    warnings: &mut Vec<String>,
) -> Result<Vec<SqsQueueConfig>, ConfigError> {
    parse_with_env(section_value, warnings, &|k| std::env::var(k).ok())
}

fn parse_with_env(
    section_value: &Value,
    warnings: &mut Vec<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<SqsQueueConfig>, ConfigError> {
    let map = match section_value {
        Value::Null => return Ok(Vec::new()),
        Value::Mapping(m) => m,
        _ => return err("sqs", "must be a mapping of names to queue settings"),
    };
    let mut queues = Vec::new();
    for (name, at_entry, entry) in entries(map, "sqs")? {
        let Some(entry) = section(entry, &at_entry)? else {
            return err(&at_entry, "must be a mapping");
        };
        let mut queue = None;
        let mut region = None;
        let mut delete = false;
        let mut key = None;
        let mut secret = None;
        let mut endpoint = None;
        let mut wait_time = DEFAULT_WAIT_TIME;
        for (k, at, v) in entries(entry, &at_entry)? {
            let at = at.as_str();
            match k.as_str() {
                "queue" => queue = Some(nonempty_string(v, at)?),
                "region" => {
                    let r = nonempty_string(v, at)?.to_ascii_lowercase();
                    if !is_region(&r) {
                        return err(at, "must be a region name like us-east-1");
                    }
                    region = Some(r);
                }
                "delete" => delete = boolean(v, at)?,
                "key" => key = Some(nonempty_string(v, at)?),
                "secret" => secret = Some(nonempty_string(v, at)?),
                "endpoint" => {
                    let text = nonempty_string(v, at)?;
                    endpoint = Some(SqsEndpoint::parse(&text).or_else(|e| err(at, e))?)
                }
                "wait_time" => {
                    let d = duration(v, at)?;
                    wait_time = match d.as_secs() {
                        s @ 1..=20 if d.subsec_nanos() == 0 => s as u32,
                        _ => return err(at, "must be a whole number of seconds from 1 to 20"),
                    }
                }
                _ => warnings.push(format!("unknown configuration key '{at}' ignored")),
            }
        }
        let Some(queue) = queue else {
            return err(&format!("{at_entry}.queue"), "is required");
        };
        let credentials = match (key, secret) {
            (Some(access_key), Some(secret_key)) => Some(SqsCredentials {
                access_key,
                secret_key,
            }),
            (None, None) => None,
            _ => return err(&at_entry, "key and secret must be given together"),
        };
        let region = region
            .or_else(|| env_region(env))
            .unwrap_or_else(|| "us-east-1".into());
        let endpoint = endpoint.unwrap_or_else(|| SqsEndpoint::aws(&region));
        queues.push(SqsQueueConfig {
            name,
            queue,
            region,
            delete,
            credentials,
            endpoint,
            wait_time,
        });
    }
    Ok(queues)
}

fn is_region(r: &str) -> bool {
    !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `AWS_REGION`, then `AWS_DEFAULT_REGION`.
fn env_region(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .filter_map(|k| env(k))
        .map(|r| r.trim().to_ascii_lowercase())
        .find(|r| is_region(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parsed without the process environment (no AWS_REGION).
    fn parse_config(text: &str) -> Result<Vec<SqsQueueConfig>, String> {
        let v: Value = serde_yaml::from_str(text).expect("yaml");
        parse_with_env(&v, &mut Vec::new(), &|_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn config_full_entry() {
        let queues = parse_config(
            "myqueue:\n  queue: myQueueName.fifo\n  region: us-east-1\n  delete: true\n  \
             key: AKID\n  secret: s3cret\n  endpoint: http://127.0.0.1:9324\n  wait_time: 1\n",
        )
        .unwrap();
        assert_eq!(
            queues,
            vec![SqsQueueConfig {
                name: "myqueue".into(),
                queue: "myQueueName.fifo".into(),
                region: "us-east-1".into(),
                delete: true,
                credentials: Some(SqsCredentials {
                    access_key: "AKID".into(),
                    secret_key: "s3cret".into(),
                }),
                endpoint: SqsEndpoint {
                    https: false,
                    authority: "127.0.0.1:9324".into(),
                    path: "/".into(),
                },
                wait_time: 1,
            }]
        );
        assert!(!format!("{queues:?}").contains("s3cret"));
    }

    #[test]
    fn config_defaults() {
        let q = &parse_config("a: {queue: q, region: eu-west-1}").unwrap()[0];
        assert!(!q.delete);
        assert_eq!(q.credentials, None);
        assert_eq!(q.wait_time, 20);
        assert_eq!(q.endpoint.url(), "https://sqs.eu-west-1.amazonaws.com/");
        let q = &parse_config("a: {queue: q, region: cn-north-1, delete: yes}").unwrap()[0];
        assert!(q.delete);
        assert_eq!(q.endpoint.url(), "https://sqs.cn-north-1.amazonaws.com.cn/");
        assert!(parse_config("~").unwrap().is_empty());
    }

    #[test]
    fn config_errors_name_the_key() {
        let e = |text: &str| parse_config(text).unwrap_err();
        assert_eq!(
            e("[1]"),
            "sqs: must be a mapping of names to queue settings"
        );
        assert_eq!(e("a: 3"), "sqs.a: must be a mapping, found a number");
        assert_eq!(e("a: {region: us-east-1}"), "sqs.a.queue: is required");
        assert_eq!(
            e("a: {queue: [x]}"),
            "sqs.a.queue: must be a string, found a list"
        );
        assert_eq!(e("a: {queue: ''}"), "sqs.a.queue: must not be empty");
        assert_eq!(
            e("a: {queue: q, delete: maybe}"),
            "sqs.a.delete: must be true or false"
        );
        assert_eq!(
            e("a: {queue: q, key: k}"),
            "sqs.a: key and secret must be given together"
        );
        assert_eq!(
            e("a: {queue: q, wait_time: 0}"),
            "sqs.a.wait_time: must be a whole number of seconds from 1 to 20"
        );
        assert_eq!(
            e("a: {queue: q, wait_time: 21}"),
            "sqs.a.wait_time: must be a whole number of seconds from 1 to 20"
        );
        assert_eq!(
            e("a: {queue: q, endpoint: 'ftp://x'}"),
            "sqs.a.endpoint: must start with http:// or https://"
        );
        assert_eq!(
            e("a: {queue: q, endpoint: 'http://h:99999'}"),
            "sqs.a.endpoint: has an invalid port"
        );
        assert_eq!(
            e("a: {queue: q, region: 'us east'}"),
            "sqs.a.region: must be a region name like us-east-1"
        );
    }

    #[test]
    fn endpoints() {
        let url = |t: &str| SqsEndpoint::parse(t).map(|e| e.url());
        assert_eq!(
            url("http://127.0.0.1:9324").unwrap(),
            "http://127.0.0.1:9324/"
        );
        assert_eq!(
            url("HTTPS://Sqs.Example.COM:443/").unwrap(),
            "https://sqs.example.com/"
        );
        assert_eq!(url("http://h:80/base").unwrap(), "http://h/base/");
        assert_eq!(url("http://[::1]:9324").unwrap(), "http://[::1]:9324/");
        let e = SqsEndpoint::parse("http://[::1]:9324").unwrap();
        assert_eq!(e.authority, "[::1]:9324");
        assert!(url("http://user@h").is_err());
        assert!(url("http://h/?q").is_err());
        assert!(url("http://").is_err());
        assert!(url("http://h:0").is_err());
        assert!(url("http://h/a b").is_err());
    }

    #[test]
    fn wait_time_is_a_duration() {
        let w = |v: &str| parse_config(&format!("a: {{queue: q, wait_time: {v}}}"));
        assert_eq!(w("5").unwrap()[0].wait_time, 5);
        assert_eq!(w("5s").unwrap()[0].wait_time, 5);
        assert_eq!(w("20s").unwrap()[0].wait_time, 20);
        assert!(w("1.5").is_err());
        assert!(w("1m").is_err());
        assert!(w("500ms").is_err());
    }

    #[test]
    fn region_and_unknown_keys() {
        let v: Value = serde_yaml::from_str("a: {queue: q, colour: blue}").expect("yaml");
        let mut warnings = Vec::new();
        let env = |k: &str| (k == "AWS_REGION").then(|| "ap-south-1".to_string());
        let q = parse_with_env(&v, &mut warnings, &env).expect("parses");
        assert_eq!(q[0].region, "ap-south-1");
        assert_eq!(q[0].endpoint.url(), "https://sqs.ap-south-1.amazonaws.com/");
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("sqs.a.colour"), "{warnings:?}");
    }

    #[test]
    fn region_from_environment() {
        let env = |k: &str| (k == "AWS_DEFAULT_REGION").then(|| "EU-CENTRAL-1".to_string());
        assert_eq!(env_region(&env).as_deref(), Some("eu-central-1"));
        assert_eq!(env_region(&|_| None), None);
    }
}
