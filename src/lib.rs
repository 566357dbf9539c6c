//! pubsubd: a single-core, epoll-driven pub/sub server that speaks Apache
//! PyPubSub's HTTP + JSON protocol.
//!
//! The shape: `main` (CLI, signals, binding) → [`Server`] → `reactor` (the
//! mio loop: sockets only) → `hub` (all state and what happens to it) →
//! pure modules (`http`, `websocket`, `compress`, `topics`, `event`,
//! `json_check`, `acl`, `config`, `backlog`). What happens to a published event is told in `hub`'s module
//! documentation as one call chain.
//!
//! Embedding: bind the listeners (see [`bind_configured`]), make a
//! [`Control`], build a [`Server`] and `run` it on a thread of its own; the
//! `Control` stops it.

pub mod acl;
pub mod backlog;
pub mod basic_auth;
pub mod clock;
pub mod compress;
pub mod config;
pub mod control;
pub mod error;
pub mod event;
pub mod feeds;
pub mod http;
pub mod hub;
pub mod json_check;
pub mod listeners;
pub mod logging;
#[cfg(feature = "admin")]
pub mod metrics;
pub mod out_queue;
mod persist;
mod reactor;
pub mod ready_file;
pub mod setup;
pub mod stats;
pub mod tls;
pub mod tokens;
#[cfg(all(fuzzing, feature = "tls"))]
pub use tls::fuzz_records;
pub mod topics;
pub mod websocket;
pub mod yaml;

use std::io;
use std::net::SocketAddr;

pub use config::Config;
pub use control::Control;
pub use error::StartError;
pub use hub::AclFile;
pub use listeners::{bind, bind_configured, ListenerKind, Listeners};

/// A server ready to run: its listeners registered, its helper threads
/// (LDAP, backlog writer, SQS) started.
pub struct Server {
    reactor: reactor::Reactor,
}

impl Server {
    pub fn new(
        config: Config,
        acl: AclFile,
        listeners: Listeners,
        control: Control,
    ) -> Result<Server, StartError> {
        let mut sockets = vec![(listeners.plain, ListenerKind::Plain)];
        if let Some(tls) = listeners.tls {
            if config.server.tls.is_none() {
                return Err(StartError::Tls(tls::TlsError::NoSettings));
            }
            sockets.push((tls, ListenerKind::Tls));
        }
        if let Some(admin) = listeners.admin {
            sockets.push((admin, ListenerKind::Admin));
        }
        let reactor = reactor::Reactor::new(config, acl, sockets, control)?;
        Ok(Server { reactor })
    }

    /// Where SIGHUP (`Control::reload_config`) re-reads the configuration
    /// from; without it, a reload only re-reads the TLS files.
    pub fn reload_config_from(mut self, path: std::path::PathBuf) -> Server {
        self.reactor.set_config_file(path);
        self
    }

    /// Where it listens, and what each address speaks.
    pub fn local_addrs(&self) -> Vec<(SocketAddr, ListenerKind)> {
        self.reactor.local_addrs()
    }

    /// Serves until the `Control` given to `new` asks it to shut down.
    pub fn run(mut self) -> io::Result<()> {
        self.reactor.run()
    }
}

pub use logging::set_log_level;

/// What `--check-config` checks beyond parsing: the files a start would
/// read (TLS, the LDAP CA, the token key), without binding or connecting;
/// one line per part that is set up.
pub fn check(config: &Config) -> Result<Vec<String>, StartError> {
    let server = &config.server;
    let mut lines = vec![format!("listening on {}:{}", server.bind, server.port)];
    if let Some(tls) = &server.tls {
        tls::load_config(tls).map_err(StartError::Tls)?;
        let layer = match tls.record_layer {
            config::RecordLayerKind::Compact => "compact record layer",
            config::RecordLayerKind::Rustls => "rustls record layer",
        };
        lines.push(format!(
            "TLS on port {} with {} ({layer})",
            tls.port,
            tls.cert.display()
        ));
    }
    if let Some(admin) = &server.admin {
        lines.push(format!("admin listener on {}:{}", admin.bind, admin.port));
    }
    if server.backlog.size > 0 {
        lines.push(format!(
            "backlog of {} events{}",
            server.backlog.size,
            match &server.backlog.storage {
                Some(path) => format!(", stored in {}", path.display()),
                None => String::new(),
            }
        ));
    }
    lines.extend(feeds::ldap::Ldap::check(config.clients.ldap.as_ref())?);
    lines.extend(tokens::Tokens::check_config(
        config.clients.tokens.as_ref(),
    )?);
    if let Some(cluster) = &config.cluster {
        lines.push(format!(
            "cluster: stream {:?} (Redis not contacted by this check)",
            cluster.stream
        ));
        if !cfg!(feature = "cluster") {
            lines.push("warning: this build has no cluster support; the section is ignored".into());
        }
    }
    for queue in &config.sqs {
        lines.push(format!("SQS queue {} ({})", queue.name, queue.queue));
    }
    if !cfg!(feature = "sqs") && !config.sqs.is_empty() {
        lines.push("warning: this build has no SQS support; the sqs section is ignored".into());
    }
    Ok(lines)
}

/// Builds a server on `listeners` and serves until `control` stops it.
pub fn run(
    config: Config,
    acl: AclFile,
    listeners: Listeners,
    control: Control,
) -> Result<(), StartError> {
    Server::new(config, acl, listeners, control)?
        .run()
        .map_err(StartError::Io)
}
