//! `pypubsub.yaml`: the typed configuration, its defaults, and the parser.
//!
//! The raw YAML is walked by hand (rather than derived) so that every problem
//! names its key: an unknown key is a warning, a value of the wrong type is an
//! error that stops start-up. Durations accept `45s`, `30m`, `12h`, `7d`,
//! `200ms` or a plain number of seconds.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde_yaml::{Mapping, Value};

/// Everything the server needs to know, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub clients: ClientsConfig,
    /// The raw `sqs:` section, if any (interpreted by the SQS feed).
    pub sqs: Option<Value>,
    /// The raw `clients.ldap:` section, if any (interpreted by the ACL module).
    pub ldap: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: IpAddr,
    pub port: u16,
    pub max_payload_size: usize,
    pub backlog: BacklogConfig,
    pub tls: Option<TlsConfig>,
    /// Streaming and non-streaming connections together; `None` = derived
    /// from the open-files limit at start-up.
    pub max_connections: Option<usize>,
    /// Bytes that may wait in one subscriber's output queue before it is dropped.
    pub max_queued_bytes: usize,
    /// A subscriber whose socket accepts nothing for this long is dropped.
    pub write_timeout: Duration,
    /// A request's head and body must arrive within this; also the idle
    /// keep-alive timeout between requests.
    pub request_timeout: Duration,
    pub max_head_size: usize,
    pub max_headers: usize,
    pub ping_interval: Duration,
    pub listen_backlog: i32,
    pub log_level: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BacklogConfig {
    /// Events kept in memory; 0 disables replay.
    pub size: usize,
    /// Older events are never replayed; `None` = no age limit.
    pub max_age: Option<Duration>,
    /// The events' JSON bytes kept at most (oldest dropped first), so a
    /// large `size` of large events cannot take all memory.
    pub max_bytes: usize,
    pub storage: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    pub port: u16,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub chain: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ClientsConfig {
    pub payloaders: Vec<IpNet>,
    pub oldschoolers: Vec<String>,
    pub secure_topics: Vec<String>,
}

impl Default for Config {
    /// The built-in configuration: port 2069 on all addresses, publishing from
    /// loopback only.
    fn default() -> Self {
        Config {
            server: ServerConfig {
                bind: IpAddr::from([0, 0, 0, 0]),
                port: 2069,
                max_payload_size: 102_400,
                backlog: BacklogConfig {
                    size: 0,
                    max_age: None,
                    max_bytes: 256 << 20,
                    storage: None,
                },
                tls: None,
                max_connections: None,
                max_queued_bytes: 1 << 20,
                write_timeout: Duration::from_secs(10),
                request_timeout: Duration::from_secs(30),
                max_head_size: 16 * 1024,
                max_headers: 64,
                ping_interval: Duration::from_secs(5),
                listen_backlog: 1024,
                log_level: None,
            },
            clients: ClientsConfig {
                payloaders: vec![
                    "127.0.0.0/8".parse().expect("valid literal"),
                    "::1/128".parse().expect("valid literal"),
                ],
                oldschoolers: Vec::new(),
                secure_topics: Vec::new(),
            },
            sqs: None,
            ldap: None,
        }
    }
}

/// A configuration problem; the message names the key.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

impl Config {
    /// Parses YAML text. Returns the config and the warnings (unknown keys).
    pub fn parse(text: &str) -> Result<(Config, Vec<String>), ConfigError> {
        let root: Value =
            serde_yaml::from_str(text).map_err(|e| ConfigError(format!("invalid YAML: {e}")))?;
        let mut warnings = Vec::new();
        let mut config = Config::default();
        let root = match root {
            Value::Null => return Ok((config, warnings)),
            Value::Mapping(m) => m,
            _ => return err("the configuration must be a YAML mapping"),
        };
        for (key, value) in &root {
            match key_str(key, "")? {
                "server" => parse_server(value, &mut config.server, &mut warnings)?,
                "clients" => parse_clients(value, &mut config, &mut warnings)?,
                "sqs" => config.sqs = non_null(value),
                other => warnings.push(format!("unknown configuration key '{other}' ignored")),
            }
        }
        Ok((config, warnings))
    }
}

fn non_null(v: &Value) -> Option<Value> {
    (!v.is_null()).then(|| v.clone())
}

fn key_str<'a>(key: &'a Value, prefix: &str) -> Result<&'a str, ConfigError> {
    key.as_str()
        .ok_or_else(|| ConfigError(format!("{prefix}: keys must be strings, found {key:?}")))
}

/// A section that may be absent (`~`) or a mapping.
fn section<'a>(v: &'a Value, name: &str) -> Result<Option<&'a Mapping>, ConfigError> {
    match v {
        Value::Null => Ok(None),
        Value::Mapping(m) => Ok(Some(m)),
        _ => err(format!("{name} must be a mapping")),
    }
}

fn parse_server(
    v: &Value,
    s: &mut ServerConfig,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let Some(map) = section(v, "server")? else {
        return Ok(());
    };
    for (key, value) in map {
        let name = key_str(key, "server")?;
        let path = format!("server.{name}");
        match name {
            "bind" => s.bind = parse_bind(value, &path)?,
            "port" => s.port = uint(value, &path, u16::MAX as u64)? as u16,
            "max_payload_size" => {
                s.max_payload_size = uint(value, &path, u32::MAX as u64)? as usize
            }
            "backlog" => parse_backlog(value, &mut s.backlog, warnings)?,
            "tls" => s.tls = parse_tls(value)?,
            "max_connections" => {
                s.max_connections =
                    Some(uint(value, &path, 100_000_000)? as usize).filter(|&n| n > 0)
            }
            "max_queued_bytes" => s.max_queued_bytes = positive(value, &path, 1 << 40)? as usize,
            "write_timeout" => s.write_timeout = positive_duration(value, &path)?,
            "request_timeout" => s.request_timeout = positive_duration(value, &path)?,
            "max_head_size" => s.max_head_size = positive(value, &path, 1 << 24)? as usize,
            "max_headers" => s.max_headers = positive(value, &path, 1024)? as usize,
            "ping_interval" => s.ping_interval = positive_duration(value, &path)?,
            "listen_backlog" => s.listen_backlog = positive(value, &path, 65_535)? as i32,
            "log_level" => s.log_level = Some(string(value, &path)?),
            _ => warnings.push(format!("unknown configuration key '{path}' ignored")),
        }
    }
    Ok(())
}

fn parse_bind(v: &Value, path: &str) -> Result<IpAddr, ConfigError> {
    let text = string(v, path)?;
    let text = text.trim_start_matches('[').trim_end_matches(']');
    match text {
        "localhost" => Ok(IpAddr::from([127, 0, 0, 1])),
        "" => Ok(IpAddr::from([0, 0, 0, 0])),
        _ => text
            .parse()
            .map_err(|_| ConfigError(format!("{path} must be an IP address, found '{text}'"))),
    }
}

fn parse_backlog(
    v: &Value,
    b: &mut BacklogConfig,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let Some(map) = section(v, "server.backlog")? else {
        return Ok(());
    };
    for (key, value) in map {
        let name = key_str(key, "server.backlog")?;
        let path = format!("server.backlog.{name}");
        match name {
            "size" => b.size = uint(value, &path, 100_000_000)? as usize,
            "max_age" => b.max_age = Some(duration(value, &path)?).filter(|d| !d.is_zero()),
            "max_bytes" => b.max_bytes = positive(value, &path, 1 << 40)? as usize,
            "storage" => {
                b.storage = match value {
                    Value::Null => None,
                    _ => Some(PathBuf::from(string(value, &path)?))
                        .filter(|p| !p.as_os_str().is_empty()),
                }
            }
            _ => warnings.push(format!("unknown configuration key '{path}' ignored")),
        }
    }
    Ok(())
}

fn parse_tls(v: &Value) -> Result<Option<TlsConfig>, ConfigError> {
    let Some(map) = section(v, "server.tls")? else {
        return Ok(None);
    };
    let get = |k: &str| map.get(Value::String(k.into()));
    let port = match get("port") {
        Some(p) => uint(p, "server.tls.port", u16::MAX as u64)? as u16,
        None => return err("server.tls.port is required when server.tls is set"),
    };
    let path_of = |k: &str| -> Result<Option<PathBuf>, ConfigError> {
        match get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Ok(Some(PathBuf::from(string(v, &format!("server.tls.{k}"))?))),
        }
    };
    let cert = path_of("cert")?.ok_or_else(|| ConfigError("server.tls.cert is required".into()))?;
    let key = path_of("key")?.ok_or_else(|| ConfigError("server.tls.key is required".into()))?;
    Ok(Some(TlsConfig {
        port,
        cert,
        key,
        chain: path_of("chain")?,
    }))
}

fn parse_clients(
    v: &Value,
    config: &mut Config,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let Some(map) = section(v, "clients")? else {
        return Ok(());
    };
    let c = &mut config.clients;
    for (key, value) in map {
        let name = key_str(key, "clients")?;
        let path = format!("clients.{name}");
        match name {
            "payloaders" => {
                c.payloaders = string_list(value, &path)?
                    .iter()
                    .map(|s| parse_net(s, &path))
                    .collect::<Result<_, _>>()?
            }
            "oldschoolers" => c.oldschoolers = string_list(value, &path)?,
            "secure_topics" => c.secure_topics = string_list(value, &path)?,
            "ldap" => config.ldap = non_null(value),
            _ => warnings.push(format!("unknown configuration key '{path}' ignored")),
        }
    }
    Ok(())
}

/// A CIDR, or a bare address meaning just that host.
fn parse_net(s: &str, path: &str) -> Result<IpNet, ConfigError> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    err(format!(
        "{path}: '{s}' is not an IP network like 127.0.0.1/32"
    ))
}

fn string(v: &Value, path: &str) -> Result<String, ConfigError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => err(format!("{path} must be a string")),
    }
}

/// A list of strings; `~` is the empty list.
fn string_list(v: &Value, path: &str) -> Result<Vec<String>, ConfigError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Sequence(items) => items.iter().map(|item| string(item, path)).collect(),
        _ => err(format!("{path} must be a list")),
    }
}

fn uint(v: &Value, path: &str, max: u64) -> Result<u64, ConfigError> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    match n {
        Some(n) if n <= max => Ok(n),
        _ => err(format!("{path} must be a whole number from 0 to {max}")),
    }
}

fn positive(v: &Value, path: &str, max: u64) -> Result<u64, ConfigError> {
    match uint(v, path, max)? {
        0 => err(format!("{path} must be greater than 0")),
        n => Ok(n),
    }
}

fn positive_duration(v: &Value, path: &str) -> Result<Duration, ConfigError> {
    let d = duration(v, path)?;
    if d.is_zero() {
        return err(format!("{path} must be greater than 0"));
    }
    Ok(d)
}

fn duration(v: &Value, path: &str) -> Result<Duration, ConfigError> {
    let parsed = match v {
        Value::Number(n) => n.as_f64().and_then(seconds),
        Value::String(s) => parse_duration(s),
        _ => None,
    };
    parsed.ok_or_else(|| {
        ConfigError(format!(
            "{path} must be a duration like 45s, 30m, 12h, 7d, 200ms or a number of seconds"
        ))
    })
}

fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && (0.0..=1e10).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

/// `45s`, `30m`, `12h`, `7d`, `200ms`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        "w" => 7.0 * 86_400.0,
        _ => return None,
    };
    seconds(number * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("45s"), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("12h"), Some(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("200ms"), Some(Duration::from_millis(200)));
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("-5s"), None);
    }

    #[test]
    fn reference_config_parses() {
        let text = r#"
server:
  bind: 0.0.0.0
  port: 2069
  max_payload_size: 102400
  backlog: {size: 100, max_age: 48h, storage: backlog.json}
  tls: {port: 2070, cert: domain.crt, key: domain.key, chain: chain.pem}
clients:
  payloaders: [127.0.0.1/24, "::1/128"]
  oldschoolers: [svnwcsub]
  secure_topics: ~
sqs:
  myqueue: {queue: q.fifo, region: us-east-1}
"#;
        let (c, warnings) = Config::parse(text).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(c.server.port, 2069);
        assert_eq!(c.server.backlog.size, 100);
        assert_eq!(
            c.server.backlog.max_age,
            Some(Duration::from_secs(48 * 3600))
        );
        assert_eq!(
            c.server.backlog.storage,
            Some(PathBuf::from("backlog.json"))
        );
        assert_eq!(c.server.tls.as_ref().unwrap().port, 2070);
        assert_eq!(c.clients.payloaders.len(), 2);
        assert_eq!(c.clients.oldschoolers, vec!["svnwcsub".to_string()]);
        assert!(c.clients.secure_topics.is_empty());
        assert!(c.sqs.is_some());
    }

    #[test]
    fn unknown_keys_warn_and_wrong_types_fail() {
        let (_, warnings) = Config::parse("server:\n  colour: blue\nextra: 1\n").unwrap();
        assert_eq!(warnings.len(), 2);
        assert!(warnings[0].contains("server.colour"));
        let e = Config::parse("server:\n  port: [1]\n").unwrap_err();
        assert!(e.0.contains("server.port"), "{e}");
        let e = Config::parse("server:\n  port: 70000\n").unwrap_err();
        assert!(e.0.contains("server.port"), "{e}");
        let e = Config::parse("clients:\n  payloaders: [nonsense]\n").unwrap_err();
        assert!(e.0.contains("clients.payloaders"), "{e}");
        let e = Config::parse("server:\n  ping_interval: 0\n").unwrap_err();
        assert!(e.0.contains("server.ping_interval"), "{e}");
    }

    #[test]
    fn empty_file_is_the_default() {
        let (c, _) = Config::parse("").unwrap();
        assert_eq!(c.server.port, 2069);
        assert_eq!(c.server.backlog, Config::default().server.backlog);
    }

    #[test]
    fn bare_address_is_a_host_network() {
        let (c, _) = Config::parse("clients:\n  payloaders: [10.0.0.1, '::1']\n").unwrap();
        assert_eq!(c.clients.payloaders[0].prefix_len(), 32);
        assert_eq!(c.clients.payloaders[1].prefix_len(), 128);
    }
}
