//! `pypubsub.yaml`: the one typed configuration schema, its defaults, and
//! the start-up validation of every section.
//!
//! The raw YAML is walked by hand (rather than derived) so that every problem
//! names its key: an unknown key is a warning, a value of the wrong type is an
//! error ([`ConfigError`]: file, key, message) that stops start-up. Every
//! section is validated here, before the server starts, into plain typed
//! structs: nothing downstream sees YAML.
//!
//! Layout: this file holds the schema and the `server` and `clients`
//! sections; [`yaml`] the one set of helpers and the one duration grammar
//! (`45s 30m 12h 7d 200ms` or a number of seconds); [`ldap`] the
//! `clients.ldap` section; [`tokens`] the `clients.tokens` section;
//! [`sqs`] the `sqs` section; [`cluster`] the `cluster` section.

pub mod cluster;
#[cfg(feature = "ldap")]
pub mod ldap;
pub mod reload;
pub mod sqs;
#[cfg(feature = "tokens")]
pub mod tokens;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde_yaml::Value;

pub use cluster::{ClusterConfig, ClusterRedis};
#[cfg(feature = "ldap")]
pub use ldap::LdapConfig;

/// Without the `ldap` feature there is no LDAP configuration: the section
/// is warned about and ignored.
#[cfg(not(feature = "ldap"))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LdapConfig {}
#[cfg(feature = "tokens")]
pub use tokens::{TokenKey, TokensConfig};

/// Without the `tokens` feature there is no token configuration: the
/// section is warned about and ignored (no token is ever accepted).
#[cfg(not(feature = "tokens"))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokensConfig {}
use crate::yaml::{
    self, entries, err, positive, positive_duration, section, string, string_list, uint,
};
pub use crate::yaml::{parse_duration, ConfigError};
pub use sqs::{SqsCredentials, SqsEndpoint, SqsQueueConfig};

/// Everything the server needs to know, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub clients: ClientsConfig,
    /// The `sqs:` queues (validated even when the `sqs` feature is off).
    pub sqs: Vec<SqsQueueConfig>,
    /// `cluster:`: nodes sharing events through Redis (validated even when
    /// the `cluster` feature is off).
    pub cluster: Option<ClusterConfig>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: IpAddr,
    pub port: u16,
    pub max_payload_size: usize,
    /// Bytes held for request heads and bodies across all connections;
    /// past it, a request bigger than 16 KiB is answered 503.
    pub max_input_bytes: usize,
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
    /// `SO_REUSEPORT` on the plain and TLS listeners (not the admin one):
    /// several nodes of one cluster on one port, one per core.
    pub reuse_port: bool,
    pub log_level: Option<String>,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`, the status
    /// page); `None`: none.
    pub admin: Option<AdminConfig>,
}

impl ServerConfig {
    /// The admin listener on `port` (127.0.0.1 unless the file says where).
    pub fn set_admin_port(&mut self, port: u16) {
        let bind = self
            .admin
            .as_ref()
            .map_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), |a| a.bind);
        self.admin = Some(AdminConfig { bind, port });
    }
}

/// `server.admin`: where the admin listener binds.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub bind: IpAddr,
    pub port: u16,
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
    /// Who seals and opens TLS 1.3 records after the handshake.
    pub record_layer: RecordLayerKind,
    /// For tests only: records sealed under one key before the server
    /// updates it, lower than the cipher's own limit (never higher).
    pub testing_records_per_key: Option<u64>,
}

impl TlsConfig {
    /// `server.tls` with these files and every other key at its default.
    pub fn new(port: u16, cert: PathBuf, key: PathBuf) -> TlsConfig {
        TlsConfig {
            port,
            cert,
            key,
            chain: None,
            record_layer: RecordLayerKind::Compact,
            testing_records_per_key: None,
        }
    }
}

/// `server.tls.record_layer`: after a TLS 1.3 handshake, the server's own
/// compact record layer (`compact`, the default: ~1.2 KB less per idle
/// connection) or rustls's throughout (`rustls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordLayerKind {
    Compact,
    Rustls,
}

/// The least `server.tls.testing_records_per_key` may be: a key update
/// every record or two would only cost the server time.
pub const MIN_TESTING_RECORDS_PER_KEY: u64 = 64;
/// The most: AES-GCM's own limit here (2^24 records), which a test key
/// may lower but never raise.
pub const MAX_TESTING_RECORDS_PER_KEY: u64 = 1 << 24;

#[derive(Debug, Clone)]
pub struct ClientsConfig {
    pub payloaders: Vec<IpNet>,
    pub oldschoolers: Vec<String>,
    pub secure_topics: Vec<String>,
    /// Origins whose browser pages may publish and subscribe (`*`: any);
    /// empty: no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// `clients.ldap`: the worker pool's settings and the group → grant map.
    pub ldap: Option<LdapConfig>,
    /// `clients.tokens`: the signed tokens (JWT) accepted, and where.
    pub tokens: Option<TokensConfig>,
}

impl Config {
    /// What the server runs with when there is no `pypubsub.yaml`: the
    /// defaults, plus the admin listener on 127.0.0.1:2099 so a newcomer
    /// sees `/metrics` and the status page.
    pub fn embedded() -> Config {
        let mut config = Config::default();
        config.server.admin = Some(AdminConfig {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: DEFAULT_ADMIN_PORT,
        });
        config
    }
}

impl Default for Config {
    /// The defaults every key falls back to: port 2069 on all addresses,
    /// publishing from loopback only, no admin listener.
    fn default() -> Self {
        Config {
            server: ServerConfig {
                bind: IpAddr::from([0, 0, 0, 0]),
                port: 2069,
                max_payload_size: 102_400,
                max_input_bytes: 64 << 20,
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
                reuse_port: false,
                log_level: None,
                admin: None,
            },
            clients: ClientsConfig {
                payloaders: vec![
                    "127.0.0.0/8".parse().expect("valid literal"),
                    "::1/128".parse().expect("valid literal"),
                ],
                oldschoolers: Vec::new(),
                secure_topics: Vec::new(),
                cors_origins: Vec::new(),
                ldap: None,
                tokens: None,
            },
            sqs: Vec::new(),
            cluster: None,
        }
    }
}

impl Config {
    /// Parses YAML text. Returns the config and the warnings (unknown keys,
    /// suspicious values).
    pub fn parse(text: &str) -> Result<(Config, Vec<String>), ConfigError> {
        let root: Value = serde_yaml::from_str(text)
            .map_err(|e| ConfigError::new("", format!("invalid YAML: {e}")))?;
        let mut warnings = Vec::new();
        let mut config = Config::default();
        let root = match root {
            Value::Null => return Ok((config, warnings)),
            Value::Mapping(m) => m,
            _ => return err("", "the configuration must be a YAML mapping"),
        };
        for (name, key, value) in entries(&root, "")? {
            match name.as_str() {
                "server" => parse_server(value, &mut config.server, &mut warnings)?,
                "clients" => parse_clients(value, &mut config.clients, &mut warnings)?,
                "sqs" => config.sqs = sqs::parse(value, &mut warnings)?,
                "cluster" => config.cluster = cluster::parse(value, &mut warnings)?,
                _ => warnings.push(format!("unknown configuration key '{key}' ignored")),
            }
        }
        if config.cluster.is_some() && config.server.backlog.storage.take().is_some() {
            // The stream is the durable backlog; a file per node would
            // replay events the others never had.
            warnings.push(
                "server.backlog.storage is ignored in cluster mode: the Redis stream is the backlog"
                    .into(),
            );
        }
        if config.server.reuse_port && config.cluster.is_none() {
            warnings.push(
                "server.reuse_port without a cluster section: each process on the port has its own events"
                    .into(),
            );
        }
        Ok((config, warnings))
    }

    /// Reads and parses `path`; the error names the file. `PUBSUBD_ADMIN_PORT`
    /// in the environment sets the admin listener's port (on 127.0.0.1 if
    /// the file names none): one shared file for several nodes on one host
    /// (`dist/pubsubd@.service`), each with its own admin port.
    pub fn load(path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("cannot read: {e}")).in_file(path))?;
        let (mut config, warnings) = Config::parse(&text).map_err(|e| e.in_file(path))?;
        if let Some(port) = std::env::var_os("PUBSUBD_ADMIN_PORT") {
            let port = port
                .to_str()
                .and_then(|p| p.parse::<u16>().ok())
                .ok_or_else(|| ConfigError::new("PUBSUBD_ADMIN_PORT", "must be a port number"))?;
            config.server.set_admin_port(port);
        }
        Ok((config, warnings))
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
    for (name, path, value) in entries(map, "server")? {
        let path = path.as_str();
        match name.as_str() {
            "bind" => s.bind = parse_bind(value, path)?,
            "port" => s.port = uint(value, path, u16::MAX as u64)? as u16,
            "max_payload_size" => s.max_payload_size = uint(value, path, u32::MAX as u64)? as usize,
            "max_input_bytes" => s.max_input_bytes = positive(value, path, 1 << 40)? as usize,
            "backlog" => parse_backlog(value, &mut s.backlog, warnings)?,
            "tls" => s.tls = parse_tls(value, warnings)?,
            "max_connections" => {
                s.max_connections =
                    Some(uint(value, path, 100_000_000)? as usize).filter(|&n| n > 0)
            }
            "max_queued_bytes" => s.max_queued_bytes = positive(value, path, 1 << 40)? as usize,
            "write_timeout" => s.write_timeout = positive_duration(value, path)?,
            "request_timeout" => s.request_timeout = positive_duration(value, path)?,
            "max_head_size" => s.max_head_size = positive(value, path, 1 << 24)? as usize,
            "max_headers" => s.max_headers = positive(value, path, 1024)? as usize,
            "ping_interval" => s.ping_interval = positive_duration(value, path)?,
            "listen_backlog" => s.listen_backlog = positive(value, path, 65_535)? as i32,
            "reuse_port" => s.reuse_port = yaml::boolean(value, path)?,
            "log_level" => s.log_level = Some(string(value, path)?),
            "admin" => s.admin = parse_admin(value)?,
            _ => warnings.push(format!("unknown configuration key '{path}' ignored")),
        }
    }
    Ok(())
}

/// The admin port a configuration gets when it names none.
pub const DEFAULT_ADMIN_PORT: u16 = 2099;

fn parse_admin(v: &Value) -> Result<Option<AdminConfig>, ConfigError> {
    let Some(map) = section(v, "server.admin")? else {
        return Ok(None);
    };
    let mut admin = AdminConfig {
        bind: IpAddr::from([127, 0, 0, 1]),
        port: DEFAULT_ADMIN_PORT,
    };
    for (name, path, value) in entries(map, "server.admin")? {
        match name.as_str() {
            "bind" => admin.bind = parse_bind(value, &path)?,
            "port" => admin.port = uint(value, &path, u16::MAX as u64)? as u16,
            _ => return err(&path, "unknown key (bind and port are allowed)"),
        }
    }
    Ok(Some(admin))
}

fn parse_bind(v: &Value, path: &str) -> Result<IpAddr, ConfigError> {
    let text = string(v, path)?;
    let text = text.trim_start_matches('[').trim_end_matches(']');
    match text {
        "localhost" => Ok(IpAddr::from([127, 0, 0, 1])),
        "" => Ok(IpAddr::from([0, 0, 0, 0])),
        _ => text
            .parse()
            .or_else(|_| err(path, format!("must be an IP address, found '{text}'"))),
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
    for (name, path, value) in entries(map, "server.backlog")? {
        let path = path.as_str();
        match name.as_str() {
            "size" => b.size = uint(value, path, 100_000_000)? as usize,
            "max_age" => b.max_age = Some(yaml::duration(value, path)?).filter(|d| !d.is_zero()),
            "max_bytes" => b.max_bytes = positive(value, path, 1 << 40)? as usize,
            "storage" => {
                b.storage = match value {
                    Value::Null => None,
                    _ => Some(PathBuf::from(string(value, path)?))
                        .filter(|p| !p.as_os_str().is_empty()),
                }
            }
            _ => warnings.push(format!("unknown configuration key '{path}' ignored")),
        }
    }
    Ok(())
}

fn parse_tls(v: &Value, warnings: &mut Vec<String>) -> Result<Option<TlsConfig>, ConfigError> {
    let Some(map) = section(v, "server.tls")? else {
        return Ok(None);
    };
    let mut record_layer = RecordLayerKind::Compact;
    let mut testing_records_per_key = None;
    for (name, path, value) in entries(map, "server.tls")? {
        match name.as_str() {
            "port" | "cert" | "key" | "chain" => {}
            "record_layer" => {
                record_layer = match string(value, &path)?.trim() {
                    "compact" => RecordLayerKind::Compact,
                    "rustls" => RecordLayerKind::Rustls,
                    other => {
                        return err(&path, format!("must be compact or rustls, found '{other}'"))
                    }
                }
            }
            "testing_records_per_key" if !value.is_null() => {
                let n = yaml::uint_range(
                    value,
                    &path,
                    MIN_TESTING_RECORDS_PER_KEY,
                    MAX_TESTING_RECORDS_PER_KEY,
                )?;
                testing_records_per_key = Some(n);
                warnings.push(format!(
                    "{path} is set: for tests only (the server updates its TLS keys every {n} records)"
                ));
            }
            "testing_records_per_key" => {}
            _ => warnings.push(format!("unknown configuration key '{path}' ignored")),
        }
    }
    let port = match map.get("port") {
        Some(p) => uint(p, "server.tls.port", u16::MAX as u64)? as u16,
        None => return err("server.tls.port", "is required when server.tls is set"),
    };
    let path_of = |k: &str| -> Result<Option<PathBuf>, ConfigError> {
        match yaml::present(map, k) {
            None => Ok(None),
            Some(v) => Ok(Some(PathBuf::from(string(v, &format!("server.tls.{k}"))?))),
        }
    };
    let Some(cert) = path_of("cert")? else {
        return err("server.tls.cert", "is required");
    };
    let Some(key) = path_of("key")? else {
        return err("server.tls.key", "is required");
    };
    Ok(Some(TlsConfig {
        port,
        cert,
        key,
        chain: path_of("chain")?,
        record_layer,
        testing_records_per_key,
    }))
}

fn parse_clients(
    v: &Value,
    c: &mut ClientsConfig,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let Some(map) = section(v, "clients")? else {
        return Ok(());
    };
    for (name, path, value) in entries(map, "clients")? {
        let path = path.as_str();
        match name.as_str() {
            "payloaders" => {
                c.payloaders = string_list(value, path)?
                    .iter()
                    .map(|s| parse_net(s, path))
                    .collect::<Result<_, _>>()?
            }
            "oldschoolers" => c.oldschoolers = string_list(value, path)?,
            "secure_topics" => c.secure_topics = string_list(value, path)?,
            "cors_origins" => c.cors_origins = string_list(value, path)?,
            #[cfg(feature = "ldap")]
            "ldap" => c.ldap = ldap::parse(value, warnings)?,
            #[cfg(not(feature = "ldap"))]
            "ldap" => {
                if !value.is_null() {
                    warnings.push("clients.ldap is ignored: this build has no LDAP support".into())
                }
            }
            #[cfg(feature = "tokens")]
            "tokens" => c.tokens = tokens::parse(value, warnings)?,
            #[cfg(not(feature = "tokens"))]
            "tokens" => {
                if !value.is_null() {
                    warnings
                        .push("clients.tokens is ignored: this build has no token support".into())
                }
            }
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
    err(
        path,
        format!("'{s}' is not an IP network like 127.0.0.1/32"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(c.sqs.len(), 1);
        assert_eq!(c.sqs[0].name, "myqueue");
    }

    #[test]
    fn unknown_keys_warn_and_wrong_types_fail() {
        let (_, warnings) = Config::parse("server:\n  colour: blue\nextra: 1\n").unwrap();
        assert_eq!(warnings.len(), 2);
        assert!(warnings[0].contains("server.colour"));
        let e = Config::parse("server:\n  port: [1]\n").unwrap_err();
        assert_eq!(e.key, "server.port", "{e}");
        let e = Config::parse("server:\n  port: 70000\n").unwrap_err();
        assert_eq!(e.key, "server.port", "{e}");
        let e = Config::parse("clients:\n  payloaders: [nonsense]\n").unwrap_err();
        assert_eq!(e.key, "clients.payloaders", "{e}");
        let e = Config::parse("server:\n  ping_interval: 0\n").unwrap_err();
        assert_eq!(e.key, "server.ping_interval", "{e}");
    }

    #[test]
    fn empty_file_is_the_default() {
        let (c, _) = Config::parse("").unwrap();
        assert_eq!(c.server.port, 2069);
        assert_eq!(c.server.backlog, Config::default().server.backlog);
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let e = Config::parse("server:\n  port: [1]\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "server.port: must be a whole number from 0 to 65535"
        );
        let e = Config::parse("[1]").unwrap_err();
        assert_eq!(e.to_string(), "the configuration must be a YAML mapping");
        let dir = std::env::temp_dir().join(format!("config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("pypubsub.yaml");
        std::fs::write(&file, "server:\n  ping_interval: soon\n").expect("write");
        let e = Config::load(&file).unwrap_err();
        assert_eq!(e.file.as_deref(), Some(file.as_path()));
        assert_eq!(e.key, "server.ping_interval");
        assert!(
            e.to_string().starts_with(&format!(
                "{}: server.ping_interval: must be a duration",
                file.display()
            )),
            "{e}"
        );
        std::fs::write(&file, "server:\n  ping_interval: 1d\n").expect("write");
        let (c, _) = Config::load(&file).expect("loads");
        assert_eq!(c.server.ping_interval, Duration::from_secs(86_400));
        let e = Config::load(&dir.join("missing.yaml")).unwrap_err();
        assert!(e.to_string().contains("missing.yaml: cannot read"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tls_record_layer_and_the_testing_key_are_validated() {
        let tls = |extra: &str| {
            Config::parse(&format!(
                "server: {{tls: {{port: 2070, cert: c.pem, key: k.pem{extra}}}}}\n"
            ))
        };
        let (c, warnings) = tls("").expect("defaults");
        let t = c.server.tls.expect("tls");
        assert_eq!(t.record_layer, RecordLayerKind::Compact);
        assert_eq!(t.testing_records_per_key, None);
        assert!(warnings.is_empty(), "{warnings:?}");
        let (c, _) = tls(", record_layer: rustls").expect("rustls");
        assert_eq!(
            c.server.tls.expect("tls").record_layer,
            RecordLayerKind::Rustls
        );
        let e = tls(", record_layer: openssl").unwrap_err();
        assert_eq!(
            e.to_string(),
            "server.tls.record_layer: must be compact or rustls, found 'openssl'"
        );
        // The testing key: said to be for tests, bounded both ways.
        let (c, warnings) = tls(", testing_records_per_key: 1024").expect("in range");
        assert_eq!(
            c.server.tls.expect("tls").testing_records_per_key,
            Some(1024)
        );
        assert!(warnings[0].contains("for tests only"), "{warnings:?}");
        for bad in ["63", "16777217", "-1", "lots"] {
            let e = tls(&format!(", testing_records_per_key: {bad}")).unwrap_err();
            assert_eq!(
                e.to_string(),
                "server.tls.testing_records_per_key: must be a whole number from 64 to 16777216",
                "{bad}"
            );
        }
        let (_, warnings) = tls(", colour: blue").expect("unknown key");
        assert!(warnings[0].contains("server.tls.colour"), "{warnings:?}");
    }

    #[test]
    fn bare_address_is_a_host_network() {
        let (c, _) = Config::parse("clients:\n  payloaders: [10.0.0.1, '::1']\n").unwrap();
        assert_eq!(c.clients.payloaders[0].prefix_len(), 32);
        assert_eq!(c.clients.payloaders[1].prefix_len(), 128);
    }
}
