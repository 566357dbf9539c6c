//! pubsubd: a single-core, epoll-driven pub/sub server that speaks Apache
//! PyPubSub's HTTP + JSON protocol.
//!
//! What happens to a published event: `reactor` reads the bytes, `requests`
//! parses the publish (`http`), checks who may publish (`acl`), builds the
//! event (`event`), and `fanout` queues its shared frame on every matching
//! subscriber (`topics` index) to be written at the end of the turn.

pub mod acl;
mod auth;
pub mod backlog;
pub mod basic_auth;
pub mod config;
pub mod conn;
pub mod event;
mod fanout;
pub mod http;
mod json_check;
mod persist;
pub mod reactor;
mod requests;
pub mod tls;
pub mod topics;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

pub use config::Config;
pub use reactor::Reactor;

/// Binds the configured listeners, logs their addresses and serves until
/// SIGTERM or SIGINT.
pub fn run(config: Config, acl_path: PathBuf) -> io::Result<()> {
    let acl = auth::AclFile::load(acl_path).map_err(io::Error::other)?;
    let server = &config.server;
    let listen = |port: u16| {
        let addr = SocketAddr::new(server.bind, port);
        reactor::bind(addr, server.listen_backlog)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
    };
    let tls_config = match &server.tls {
        Some(tls) => Some(tls::load_config(tls).map_err(io::Error::other)?),
        None => None,
    };
    let listener = listen(server.port)?;
    let mut announce = vec![format!("pubsubd listening on {}", listener.local_addr()?)];
    let mut listeners = vec![(listener, false)];
    if let Some(tls) = &server.tls {
        let listener = listen(tls.port)?;
        announce.push(format!(
            "pubsubd listening for TLS on {}",
            listener.local_addr()?
        ));
        listeners.push((listener, true));
    }
    let mut reactor = Reactor::new(config, acl, listeners, tls_config)?;
    // Announced once signals are handled, so a SIGTERM sent by whoever
    // waited for this line ends the server cleanly.
    for line in announce {
        log::info!("{line}");
    }
    reactor.run()
}
