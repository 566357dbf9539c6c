//! The listening sockets: binding them (socket2: an explicit accept
//! backlog, `only_v6` set on purpose, no `SO_REUSEPORT`) from the
//! configuration, and what each one speaks.
//!
//! Invariant: a `Listeners` holds sockets that are bound and listening;
//! an admin port that cannot be bound is only skipped when the caller
//! says so (the embedded default's 2099 may be taken).

use std::io;
use std::net::SocketAddr;

use crate::config::Config;
use crate::error::StartError;

/// The sockets the server accepts on, already bound (and listening).
pub struct Listeners {
    pub plain: std::net::TcpListener,
    /// Needs `server.tls` in the configuration.
    pub tls: Option<std::net::TcpListener>,
    /// `/metrics`, `/healthz`, `/readyz` and the status page; never
    /// subscriptions or publishes.
    pub admin: Option<std::net::TcpListener>,
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Plain,
    Tls,
    Admin,
}

impl ListenerKind {
    /// Its name in the ready file (`plain`, `tls`, `admin`).
    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::Plain => "plain",
            ListenerKind::Tls => "tls",
            ListenerKind::Admin => "admin",
        }
    }
}

/// A listening socket through socket2: an explicit accept backlog, and
/// `::` meaning IPv6 and IPv4 while a specific v6 address means just that.
/// With `reuse_port`, `SO_REUSEPORT`: processes of the same user on the same
/// port each get a share of the new connections (`server.reuse_port`).
pub fn bind(addr: SocketAddr, backlog: i32, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(!addr.ip().is_unspecified())?;
    }
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Binds the listeners `config.server` names (TLS and admin if
/// configured). With `admin_optional`, an admin port that cannot be bound
/// is logged and skipped (the embedded default's 2099 may be taken).
pub fn bind_configured(config: &Config, admin_optional: bool) -> Result<Listeners, StartError> {
    let server = &config.server;
    let listen = |port: u16| {
        let addr = SocketAddr::new(server.bind, port);
        bind(addr, server.listen_backlog, server.reuse_port)
            .map_err(|source| StartError::Listen { addr, source })
    };
    Ok(Listeners {
        plain: listen(server.port)?,
        tls: match &server.tls {
            Some(tls) => Some(listen(tls.port)?),
            None => None,
        },
        admin: match &server.admin {
            None => None,
            Some(_) if !cfg!(feature = "admin") => {
                log::warn!("server.admin is ignored: this build has no admin listener");
                None
            }
            Some(admin) => {
                let addr = SocketAddr::new(admin.bind, admin.port);
                // Each node's own figures: never a shared port.
                match bind(addr, server.listen_backlog, false) {
                    Ok(l) => Some(l),
                    Err(e) if admin_optional => {
                        log::warn!("no admin listener: cannot listen on {addr}: {e}");
                        None
                    }
                    Err(source) => return Err(StartError::Listen { addr, source }),
                }
            }
        },
    })
}
