//! What a configuration reload (SIGHUP) may change while the server runs,
//! and what needs a restart: listeners, the backlog's file, the LDAP pool,
//! the SQS pollers and the cluster are set up once at start-up.
//! `clients.tokens` changes live: `setup::reload` reads its key again. The
//! TLS files and record layer change for new connections.

use super::Config;

/// The configuration to run with after a reload: `new` for every key that
/// can change live, `running`'s for the others; and one note per key that
/// changed but needs a restart.
pub fn merge(running: &Config, new: Config) -> (Config, Vec<String>) {
    let mut notes = Vec::new();
    let mut next = new;
    let mut keep = |changed: bool, key: &str| {
        if changed {
            notes.push(format!("{key} changed: it takes effect after a restart"));
        }
    };
    let (old, new) = (&running.server, &mut next.server);
    keep(old.bind != new.bind, "server.bind");
    keep(old.port != new.port, "server.port");
    keep(
        old.listen_backlog != new.listen_backlog,
        "server.listen_backlog",
    );
    keep(old.admin != new.admin, "server.admin");
    keep(old.reuse_port != new.reuse_port, "server.reuse_port");
    keep(
        old.tls.as_ref().map(|t| t.port) != new.tls.as_ref().map(|t| t.port),
        "server.tls.port",
    );
    keep(
        old.backlog.storage != new.backlog.storage,
        "server.backlog.storage",
    );
    new.bind = old.bind;
    new.port = old.port;
    new.listen_backlog = old.listen_backlog;
    new.admin = old.admin.clone();
    new.reuse_port = old.reuse_port;
    new.backlog.storage = old.backlog.storage.clone();
    match (&old.tls, &mut new.tls) {
        // Files may change, and the record layer (and the testing key's
        // record limit): the reactor rebuilds the TLS config from the new
        // settings, which new connections get; open ones keep theirs. The
        // port and whether TLS is on may not change.
        (Some(old_tls), Some(new_tls)) => new_tls.port = old_tls.port,
        (old_tls, new_tls) => *new_tls = old_tls.clone(),
    }
    keep(running.clients.ldap != next.clients.ldap, "clients.ldap");
    next.clients.ldap = running.clients.ldap.clone();
    keep(running.sqs != next.sqs, "sqs");
    next.sqs = running.sqs.clone();
    // Compared as values: `Debug` hides the Redis password.
    keep(running.cluster != next.cluster, "cluster");
    next.cluster = running.cluster.clone();
    (next, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text).expect("test config").0
    }

    #[test]
    fn live_keys_change_and_fixed_keys_are_kept_with_a_note() {
        let running = parse("server: {port: 2069, ping_interval: 5s}\n");
        let new = parse(
            "server: {port: 3000, ping_interval: 2s, max_queued_bytes: 4096}\n\
             clients: {payloaders: [10.0.0.0/8], oldschoolers: [svnwcsub], secure_topics: [x]}\n",
        );
        let (next, notes) = merge(&running, new);
        assert_eq!(next.server.port, 2069);
        assert_eq!(next.server.ping_interval, std::time::Duration::from_secs(2));
        assert_eq!(next.server.max_queued_bytes, 4096);
        assert_eq!(next.clients.payloaders.len(), 1);
        assert_eq!(next.clients.oldschoolers, ["svnwcsub"]);
        assert_eq!(next.clients.secure_topics, ["x"]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].starts_with("server.port changed"));
    }

    #[cfg(feature = "tokens")]
    #[test]
    fn tokens_change_live() {
        let secret = "0123456789abcdef0123456789abcdef";
        let running = parse("clients: {tokens: {key: a.pem, algorithms: [ES256]}}\n");
        let new = parse(&format!(
            "clients: {{tokens: {{secret: {secret}, cookie: c}}}}\n"
        ));
        let (next, notes) = merge(&running, new);
        let tokens = next.clients.tokens.expect("tokens");
        assert_eq!(tokens.algorithms, ["HS256"]);
        assert_eq!(tokens.cookie.as_deref(), Some("c"));
        assert!(notes.is_empty(), "{notes:?}");
        let (next, notes) = merge(&running, parse(""));
        assert!(
            next.clients.tokens.is_none(),
            "tokens can be turned off live"
        );
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn tls_files_reload_but_not_its_port() {
        let running = parse("server: {tls: {port: 2070, cert: a.pem, key: a.key}}\n");
        let new = parse("server: {tls: {port: 2071, cert: b.pem, key: b.key}}\n");
        let (next, notes) = merge(&running, new);
        let tls = next.server.tls.expect("tls");
        assert_eq!(tls.port, 2070);
        assert_eq!(tls.cert, std::path::PathBuf::from("b.pem"));
        assert!(notes[0].starts_with("server.tls.port"));
        let (next, notes) = merge(&running, parse(""));
        assert!(next.server.tls.is_some(), "TLS cannot be turned off live");
        assert!(notes[0].starts_with("server.tls.port"));
    }

    #[test]
    fn the_tls_record_layer_reloads_for_new_connections() {
        let running = parse("server: {tls: {port: 2070, cert: a.pem, key: a.key}}\n");
        let new = parse(
            "server: {tls: {port: 2070, cert: a.pem, key: a.key, record_layer: rustls, \
             testing_records_per_key: 1024}}\n",
        );
        let (next, notes) = merge(&running, new);
        let tls = next.server.tls.expect("tls");
        assert_eq!(tls.record_layer, crate::config::RecordLayerKind::Rustls);
        assert_eq!(tls.testing_records_per_key, Some(1024));
        assert!(notes.is_empty(), "no restart needed: {notes:?}");
    }
}
