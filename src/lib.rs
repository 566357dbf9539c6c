//! pubsubd: a single-core, epoll-driven pub/sub server that speaks Apache
//! PyPubSub's HTTP + JSON protocol.
//!
//! The shape: `main` (CLI, signals, binding) → [`Server`] → `reactor` (the
//! mio loop: sockets only) → `hub` (all state and what happens to it) →
//! pure modules (`http`, `topics`, `event`, `json_check`, `acl`, `config`,
//! `backlog`). What happens to a published event is told in `hub`'s module
//! documentation as one call chain.
//!
//! Embedding: bind the listeners (see [`bind_configured`]), make a
//! [`Control`], build a [`Server`] and `run` it on a thread of its own; the
//! `Control` stops it.

pub mod acl;
pub mod backlog;
pub mod basic_auth;
pub mod clock;
pub mod config;
pub mod conn;
pub mod control;
pub mod error;
pub mod event;
pub mod http;
pub mod hub;
mod json_check;
pub mod metrics;
mod persist;
mod reactor;
pub mod tls;
pub mod topics;

use std::io;
use std::net::SocketAddr;

pub use config::Config;
pub use control::Control;
pub use error::StartError;
pub use hub::AclFile;

/// The sockets the server accepts on, already bound (and listening).
pub struct Listeners {
    pub plain: std::net::TcpListener,
    /// Needs `server.tls` in the configuration.
    pub tls: Option<std::net::TcpListener>,
}

/// A listening socket through socket2: an explicit accept backlog, and
/// `::` meaning IPv6 and IPv4 while a specific v6 address means just that.
pub fn bind(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(!addr.ip().is_unspecified())?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Binds the listeners `config.server` names (the TLS one if configured).
pub fn bind_configured(config: &Config) -> Result<Listeners, StartError> {
    let server = &config.server;
    let listen = |port: u16| {
        let addr = SocketAddr::new(server.bind, port);
        bind(addr, server.listen_backlog).map_err(|source| StartError::Listen { addr, source })
    };
    Ok(Listeners {
        plain: listen(server.port)?,
        tls: match &server.tls {
            Some(tls) => Some(listen(tls.port)?),
            None => None,
        },
    })
}

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
        let mut sockets = vec![(listeners.plain, false)];
        if let Some(tls) = listeners.tls {
            if config.server.tls.is_none() {
                return Err(StartError::Tls(
                    "a TLS listener needs server.tls in the configuration".into(),
                ));
            }
            sockets.push((tls, true));
        }
        let reactor = reactor::Reactor::new(config, acl, sockets, control)?;
        Ok(Server { reactor })
    }

    /// Where it listens, and whether each address speaks TLS.
    pub fn local_addrs(&self) -> Vec<(SocketAddr, bool)> {
        self.reactor.local_addrs()
    }

    /// Serves until the `Control` given to `new` asks it to shut down.
    pub fn run(mut self) -> io::Result<()> {
        self.reactor.run()
    }
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
