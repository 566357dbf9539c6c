//! Opening a connection to Redis: from the URL (`redis://`, `rediss://`
//! with an optional private CA) or through Sentinel, with the connect
//! timeout and a read/write timeout on every command.
//!
//! The Sentinel lookup is done here (`SENTINEL get-master-addr-by-name`,
//! then `ROLE` on the answer) rather than with the client's helper, so that
//! every step has the configured timeout: a stopped Sentinel must not hang
//! a helper thread.

use std::time::Duration;

use redis::{Client, Connection, Value};

use crate::entry::text;
use crate::settings::{redact, Settings, Target};

/// Opens connections to the current master.
#[derive(Clone)]
pub struct Opener {
    kind: Kind,
    timeout: Duration,
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
        Ok(Opener {
            kind,
            timeout: settings.timeout,
        })
    }

    /// A connection to the master with `read_timeout` on reads (a blocking
    /// `XREAD` needs longer than the command timeout) and the command
    /// timeout on writes.
    pub fn open(&self, read_timeout: Duration) -> Result<Connection, String> {
        let client = match &self.kind {
            Kind::Direct(client) => client.clone(),
            Kind::Sentinel {
                master,
                sentinels,
                ca,
                userinfo,
            } => self.ask_sentinels(master, sentinels, ca.as_deref(), userinfo)?,
        };
        let conn = self.connect(&client, read_timeout)?;
        Ok(conn)
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
