//! Running one scenario against one server: start it fresh, point the
//! generator at it (plain or TLS, with what its subscribers ask for), run,
//! stop it and note how it ended. Shared by `compare` and the transport
//! scenarios (`transports`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use crate::proto::Ask;
use crate::scenarios::{Cfg, Target, TargetTls};
use crate::server::{self, Spec, Tuning};

/// The throw-away certificates for `fanout-tls` (bench/run.sh makes them).
pub struct TlsFiles {
    /// The CA the generator trusts.
    pub ca: PathBuf,
    /// The server's certificate (signed by `ca`, naming 127.0.0.1) and key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// pubsubd's `server.tls.record_layer` (`--tls-record-layer`);
    /// `None`: its default.
    pub record_layer: Option<String>,
}

/// What `compare` is asked to run.
pub struct CompareOpts {
    pub servers: Vec<Spec>,
    pub cfg: Cfg,
    pub quick: bool,
    pub scenarios: Vec<String>,
    pub out: PathBuf,
    pub workdir: PathBuf,
    pub machine: Value,
    pub tls: Option<TlsFiles>,
    /// `redis-server` for the `cluster` scenario (None: it is skipped).
    pub redis_server: Option<PathBuf>,
}

/// Runs one scenario against one freshly started server.
pub(crate) fn run_one(
    spec: &Spec,
    label: &str,
    workdir: &Path,
    tuning: &Tuning,
    f: impl FnOnce(&Target) -> Value,
) -> Value {
    run_one_over(spec, label, workdir, tuning, None, Ask::default(), f)
}

/// `run_one`, with the generator speaking TLS to the server's TLS port
/// when `tls` is given (`tuning.tls` must configure that port), and its
/// subscribers asking for what `ask` says (SSE, a WebSocket, gzip).
pub(crate) fn run_one_over(
    spec: &Spec,
    label: &str,
    workdir: &Path,
    tuning: &Tuning,
    tls: Option<&TargetTls>,
    ask: Ask,
    f: impl FnOnce(&Target) -> Value,
) -> Value {
    let t0 = Instant::now();
    let mut srv = match server::start(spec, label, workdir, tuning) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("  {}: cannot start: {e}", spec.name);
            return json!({"error": format!("start: {e}")});
        }
    };
    let addr = match (tls, srv.tls_addr) {
        (None, _) => srv.addr,
        (Some(_), Some(a)) => a,
        (Some(_), None) => {
            srv.stop();
            return json!({"error": "no TLS listener configured"});
        }
    };
    let target = Target {
        proto: spec.proto,
        addr,
        pub_addr: if tls.is_some() { addr } else { srv.pub_addr },
        pid: Some(srv.pid),
        tls: tls.cloned(),
        ask,
    };
    let mut v = f(&target);
    let crashed = !srv.alive();
    let status = srv.stop();
    let (log_counts, examples) = srv.log_summary();
    v["server"] = json!({
        "crashed_during_run": crashed,
        "exit": status.map(|s| s.to_string()),
        "log_counts": log_counts.into_iter().map(|(k, v)| (k, json!(v))).collect::<serde_json::Map<_, _>>(),
        "log_examples": examples,
        "log": srv.log.display().to_string(),
        "wall_s": t0.elapsed().as_secs_f64(),
    });
    if crashed {
        eprintln!("  {}: SERVER EXITED DURING THE RUN", spec.name);
    }
    v
}
