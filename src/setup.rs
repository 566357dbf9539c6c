//! Setting up what the hub is built from, at start and on SIGHUP: the
//! backlog (loaded from its storage file) and the writer that keeps that
//! file, every feed (LDAP pool, SQS pollers, cluster bus) started the same
//! way (`feeds/`), the token verifier with its key (read again on every
//! SIGHUP), the connection limit from the open-files limit, and the
//! configuration and TLS files a reload may apply. The reactor and the
//! hub's own tests build the hub through [`hub_parts`] alike.

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use log::{info, warn};

use crate::backlog::{self, Backlog};
use crate::clock::Clock;
use crate::config::{Config, TlsConfig};
use crate::error::StartError;
use crate::feeds::cluster::ClusterFeed;
use crate::feeds::ldap::Ldap;
use crate::feeds::sqs::Sqs;
use crate::feeds::Wake;
use crate::hub::{AclFile, Cluster, History, HubParts, Reloaded};
use crate::persist::{self, Persister};
use crate::tls;
use crate::tokens::Tokens;

/// How often at most the backlog file is rewritten.
const PERSIST_INTERVAL: Duration = Duration::from_secs(2);

/// Everything the hub is built from: the backlog, its file, each feed
/// started (their threads call `wake` after sending), the connection
/// limit. Fails on the first part that cannot start.
pub fn hub_parts(
    config: Config,
    acl: AclFile,
    wake: Wake,
    clock: Box<dyn Clock>,
) -> Result<HubParts, StartError> {
    let history = open_history(&config)?;
    let sqs = Sqs::start(&config.sqs, wake.clone())?;
    let backlog_size = config.server.backlog.size;
    let cluster =
        ClusterFeed::start(config.cluster.as_ref(), backlog_size, wake.clone())?.map(Cluster::new);
    let ldap = Ldap::start(config.clients.ldap.as_ref(), wake)?;
    let tokens = Tokens::load(config.clients.tokens.as_ref())?;
    if let Some(tokens) = &tokens {
        info!("{}", tokens.summary());
    }
    Ok(HubParts {
        max_connections: max_connections(config.server.max_connections),
        config,
        acl,
        tokens,
        ldap,
        history,
        sqs,
        cluster,
        clock,
    })
}

/// The backlog, loaded from its storage file if one is configured, and the
/// writer that keeps that file up to date.
fn open_history(config: &Config) -> Result<History, StartError> {
    let settings = &config.server.backlog;
    let mut backlog =
        Backlog::new(settings.size, settings.max_age).with_max_bytes(settings.max_bytes);
    let Some(path) = settings.storage.as_ref().filter(|_| backlog.is_enabled()) else {
        return Ok(History::new(backlog, None));
    };
    for event in persist::load(path) {
        backlog.push(Rc::new(event));
    }
    backlog.prune(crate::event::epoch_now());
    let lines = backlog.iter().map(|e| backlog::storage_line(e)).collect();
    let persister = Persister::start(path.clone(), PERSIST_INTERVAL, lines).map_err(|e| {
        StartError::Backlog {
            path: path.clone(),
            source: e,
        }
    })?;
    Ok(History::new(backlog, Some(persister)))
}

/// SIGHUP: re-reads the configuration file and the token key; `Some` is
/// what to run with next, `None` (logged) keeps the running configuration.
pub fn reload(path: &Path, running: &Config) -> Option<Reloaded> {
    if !path.exists() {
        info!(
            "SIGHUP: {} does not exist; keeping the running configuration",
            path.display()
        );
        return None;
    }
    match Config::load(path) {
        Ok((new, warnings)) => {
            for w in warnings {
                warn!("SIGHUP: {w}");
            }
            let (mut next, notes) = crate::config::reload::merge(running, new);
            for note in notes {
                warn!("SIGHUP: {note}");
            }
            let tokens = match Tokens::load(next.clients.tokens.as_ref()) {
                Ok(tokens) => {
                    if let Some(t) = &tokens {
                        info!("SIGHUP: {}", t.summary());
                    }
                    Some(tokens)
                }
                Err(e) => {
                    warn!("SIGHUP: keeping the running clients.tokens and its key: {e}");
                    next.clients.tokens = running.clients.tokens.clone();
                    None
                }
            };
            crate::logging::set_log_level(next.server.log_level.as_deref());
            let max_connections = max_connections(next.server.max_connections);
            info!("SIGHUP: reloaded {}", path.display());
            Some(Reloaded {
                config: next,
                max_connections,
                tokens,
            })
        }
        Err(e) => {
            warn!("SIGHUP: keeping the running configuration: {e}");
            None
        }
    }
}

/// SIGHUP: the TLS certificate and key read again (`Some`: for new
/// connections; those already open keep theirs). `None` (logged) keeps
/// the running pair: no TLS configured, or the new files do not load.
pub fn reload_tls(settings: Option<&TlsConfig>) -> Option<Arc<tls::ServerConfig>> {
    let Some(settings) = settings else {
        info!("SIGHUP: no TLS configured; nothing to reload");
        return None;
    };
    match tls::load_config(settings) {
        Ok(config) => {
            info!("SIGHUP: reloaded the TLS certificate and key");
            Some(config)
        }
        Err(e) => {
            warn!("SIGHUP: keeping the old TLS certificate: {e}");
            None
        }
    }
}

/// `server.max_connections`, kept within the open-files limit: past it,
/// accept() fails and clients wait unanswered, so keep the limit where
/// excess clients can still be accepted and refused with a 503.
fn max_connections(configured: Option<usize>) -> usize {
    let fd_bound = default_max_connections();
    match configured {
        Some(n) if n > fd_bound => {
            warn!(
                "server.max_connections {n} is above what the open-files limit allows; using {fd_bound}"
            );
            fd_bound
        }
        Some(n) => n,
        None => fd_bound,
    }
}

/// The open-files limit, less a reserve for listeners, files and workers.
fn default_max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    let fds = if ok { limit.rlim_cur as usize } else { 1024 };
    fds.saturating_sub(64).max(16)
}
