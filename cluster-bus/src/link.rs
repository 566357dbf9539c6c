//! Opening a connection to Redis: from the URL (`redis://`, `rediss://`
//! with an optional private CA) or through Sentinel, with the connect
//! timeout and a read/write timeout on every command.
//!
//! The Sentinel lookup is done here (`SENTINEL get-master-addr-by-name`,
//! then `ROLE` on the answer) rather than with the client's helper, so that
//! every step has the configured timeout: a stopped Sentinel must not hang
//! a helper thread.

use std::sync::Arc;
use std::time::Duration;

use redis::{Client, Connection, ConnectionAddr, Value};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::settings::{redact, Settings, Target};
use crate::wire::{Address, Wire};

/// Opens connections to the current master.
#[derive(Clone)]
pub struct Opener {
    kind: Kind,
    timeout: Duration,
    /// For `rediss://` on the bus's own connections ([`Wire`]).
    tls: Option<Arc<rustls::ClientConfig>>,
}

#[derive(Clone)]
enum Kind {
    Direct(Client),
    Sentinel {
        master: String,
        sentinels: Vec<Client>,
        ca: Option<Vec<u8>>,
        /// `user:password@` (percent-encoded) for the master, or empty.
        userinfo: String,
    },
}

impl Opener {
    /// Checks the URL (or the Sentinel list) and reads the CA file.
    pub fn new(settings: &Settings) -> Result<Opener, String> {
        let ca = match &settings.ca_file {
            Some(path) => {
                Some(std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?)
            }
            None => None,
        };
        let tls_ca = ca.clone();
        let kind = match &settings.target {
            Target::Url(url) => Kind::Direct(client(url, ca.as_deref())?),
            Target::Sentinel(s) => {
                let sentinel_auth = userinfo(None, s.sentinel_password.as_deref());
                Kind::Sentinel {
                    master: s.master.clone(),
                    sentinels: s
                        .nodes
                        .iter()
                        .map(|n| client(&format!("redis://{sentinel_auth}{n}/"), None))
                        .collect::<Result<_, _>>()?,
                    ca,
                    userinfo: userinfo(s.username.as_deref(), s.password.as_deref()),
                }
            }
        };
        let wants_tls = match &settings.target {
            Target::Url(url) => url.starts_with("rediss://"),
            Target::Sentinel(_) => tls_ca.is_some(),
        };
        let tls = if wants_tls {
            Some(tls_config(tls_ca.as_deref())?)
        } else {
            None
        };
        Ok(Opener {
            kind,
            timeout: settings.timeout,
            tls,
        })
    }

    /// The master's address (asking the Sentinels if configured).
    fn master(&self) -> Result<Client, String> {
        match &self.kind {
            Kind::Direct(client) => Ok(client.clone()),
            Kind::Sentinel {
                master,
                sentinels,
                ca,
                userinfo,
            } => self.ask_sentinels(master, sentinels, ca.as_deref(), userinfo),
        }
    }

    /// A connection of the bus's own ([`Wire`]) to the master, opened
    /// within `timeout`.
    pub fn open_wire(&self, timeout: Duration) -> Result<Wire, String> {
        let client = self.master()?;
        let info = client.get_connection_info();
        let (host, port, tls) = match info.addr() {
            ConnectionAddr::Tcp(host, port) => (host.clone(), *port, None),
            ConnectionAddr::TcpTls { host, port, .. } => {
                let tls = self.tls.clone().ok_or("rediss:// without a TLS setup")?;
                (host.clone(), *port, Some(tls))
            }
            _ => return Err("only TCP connections are supported".into()),
        };
        let settings = info.redis_settings();
        let address = Address {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            tls,
            username: settings.username().map(str::to_string),
            password: settings.password().map(str::to_string),
            db: settings.db(),
        };
        Wire::connect(&address, timeout)
    }

    fn connect(&self, client: &Client, read_timeout: Duration) -> Result<Connection, String> {
        let conn = client
            .get_connection_with_timeout(self.timeout)
            .map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(read_timeout))
            .map_err(|e| e.to_string())?;
        conn.set_write_timeout(Some(self.timeout))
            .map_err(|e| e.to_string())?;
        Ok(conn)
    }

    /// The first Sentinel that names a master that says it is one.
    fn ask_sentinels(
        &self,
        master: &str,
        sentinels: &[Client],
        ca: Option<&[u8]>,
        userinfo: &str,
    ) -> Result<Client, String> {
        let mut last = String::from("no Sentinel configured");
        for sentinel in sentinels {
            let addr = self.connect(sentinel, self.timeout).and_then(|mut conn| {
                let reply: Value = redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(master)
                    .query(&mut conn)
                    .map_err(|e| e.to_string())?;
                match reply {
                    Value::Array(parts) if parts.len() == 2 => {
                        match (text(&parts[0]), text(&parts[1])) {
                            (Some(host), Some(port)) => Ok((host, port)),
                            _ => Err("unexpected SENTINEL reply".to_string()),
                        }
                    }
                    _ => Err(format!("Sentinel does not know master {master:?}")),
                }
            });
            let (host, port) = match addr {
                Ok(addr) => addr,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            let scheme = if ca.is_some() { "rediss" } else { "redis" };
            let candidate = client(&format!("{scheme}://{userinfo}{host}:{port}/"), ca)?;
            match self.is_master(&candidate) {
                Ok(true) => return Ok(candidate),
                Ok(false) => last = format!("{host}:{port} is not a master (yet)"),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn is_master(&self, client: &Client) -> Result<bool, String> {
        let mut conn = self.connect(client, self.timeout)?;
        let role: Value = redis::cmd("ROLE")
            .query(&mut conn)
            .map_err(|e| e.to_string())?;
        Ok(matches!(&role, Value::Array(parts)
            if parts.first().and_then(text).as_deref() == Some("master")))
    }
}

/// The text of a bulk or simple string (the Sentinel's replies).
fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The TLS client setup: `ca` (PEM) as the only roots, else the system's.
fn tls_config(ca: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("ca_file: {e}"))?;
                roots.add(cert).map_err(|e| format!("ca_file: {e}"))?;
            }
            if roots.is_empty() {
                return Err("ca_file: no certificate in it".into());
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A client for `url`, with `ca` as the only trusted roots for TLS.
fn client(url: &str, ca: Option<&[u8]>) -> Result<Client, String> {
    let result = match ca {
        Some(pem) if url.starts_with("rediss://") => Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.to_vec()),
            },
        ),
        _ => Client::open(url),
    };
    result.map_err(|e| format!("{}: {e}", redact(url)))
}

/// `user:password@` for a URL, each part percent-encoded (a password may
/// hold `@`, `:` or `/`); empty without a password.
fn userinfo(username: Option<&str>, password: Option<&str>) -> String {
    fn encode(part: &str) -> String {
        part.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    match password {
        Some(pw) => format!("{}:{}@", encode(username.unwrap_or("")), encode(pw)),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://u:secret@h:6379/0"),
            "redis://u:***@h:6379/0"
        );
        assert_eq!(redact("redis://:secret@h"), "redis://:***@h");
        assert_eq!(redact("redis://h:6379/0"), "redis://h:6379/0");
    }

    #[test]
    fn credentials_survive_the_url() {
        for (user, pw) in [
            (None, "p@ss:w/rd%?#"),
            (Some("me@home"), "x y"),
            (None, "é"),
        ] {
            let url = format!("redis://{}127.0.0.1:6379/", userinfo(user, Some(pw)));
            let c = Client::open(url.as_str()).expect(&url);
            let info = c.get_connection_info().redis_settings();
            assert_eq!(info.password(), Some(pw), "{url}");
            assert_eq!(info.username(), user, "{url}");
        }
        assert_eq!(userinfo(Some("u"), None), "");
    }
}
