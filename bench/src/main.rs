//! `pubsub-load`: the load generator and comparison driver for pubsubd.
//!
//! Subcommands:
//! - `compare`: start each server (pubsubd, nginx+nchan, any other given by
//!   a command) per scenario, pinned to one CPU, run every scenario against
//!   each, and print the figures side by side with ratios.
//! - `run`: one scenario against a server that is already running (for
//!   profiling a server started by hand).
//! - `worker`: a subscriber process (spawned by the two above).
//!
//! Everything it connects to is on loopback; every loop is bounded in time;
//! every process it starts is ended by PID.

mod clock;
mod cluster;
mod compare;
mod fleet;
mod handshakes;
mod hist;
mod lines;
mod mqtt;
mod proto;
mod publisher;
mod runner;
mod scenarios;
mod server;
mod sse;
mod transport;
mod transports;
mod worker;
mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use crate::proto::{Ask, Proto};
use crate::scenarios::{Cfg, Target, TargetTls};
use crate::server::{Kind, Spec};

const USAGE: &str = "\
pubsub-load: load generator and server comparison for pubsubd

  pubsub-load compare [--quick] --out DIR [--workdir DIR]
        [--pubsubd BIN] [--nginx BIN --nchan-module SO]
        [--mosquitto BIN] [--pushpin BIN (needs --nginx: its origin)]
        [--server NAME:PROTOCOL:PORT:COMMAND]...   (COMMAND may use {port})
        [--servers pubsubd,nchan,...]   (only these of the above)
        [--scenarios idle,fanout,publish,slow,fanout-tls,fanout-sse,fanout-ws,fanout-gzip,cluster,tls-handshakes] [--sweep 100,1000,...]
        [--tls-sweep 1000,10000] [--tls-ca PEM --tls-cert PEM --tls-key PEM]
        [--tls-record-layer compact|rustls]   (pubsubd's; default: its own)
        [--sse-sweep 1000,10000] [--ws-sweep 1000,10000] [--gzip-sweep 1000]
        [--server-cpu 0] [--machine TEXT] [--redis-server BIN (for cluster)]
  pubsub-load run --target pubsubd|nchan|mqtt|pushpin --addr 127.0.0.1:PORT
        [--pub-addr 127.0.0.1:PORT (Pushpin's publish port)] [--pid PID]
        --scenario idle|fanout|publish|slow [--subs N] [--quick]
        [--lat-secs S] [--max-secs S] [--rate R] [--tls-ca PEM] [--sse | --ws | --gzip]
  pubsub-load summarize --results DIR/results.json   (rewrites DIR/summary.md)
  pubsub-load worker ...   (internal: one subscriber process)

fanout-tls runs the fan-out over plaintext and over TLS back to back for
pubsubd and nginx+nchan (TLS on the port + 1 with --tls-cert/--tls-key:
pubsubd's `server.tls`, nginx's `listen ... ssl`; the generator trusts
--tls-ca). With `run`, --tls-ca makes the generator speak TLS to --addr.

tls-handshakes counts the TLS handshakes pubsubd and nginx+nchan complete
per second on their core, new sessions then resumed ones (TLS 1.3 tickets).

fanout-sse runs pubsubd's fan-out to subscribers of its chunked stream and
to subscribers asking for Server-Sent Events, back to back. With `run`,
--sse makes the subscribers ask for Server-Sent Events.

fanout-ws runs pubsubd's fan-out to subscribers of its chunked stream and
to WebSocket subscribers, and nchan's to its `nchan_subscriber websocket`
subscribers, at each count of --ws-sweep. With `run`, --ws makes the
subscribers open WebSockets.

fanout-gzip runs pubsubd's fan-out to plain and to gzip subscribers
(`Accept-Encoding: gzip`, inflated by the generator as they arrive), at
each count of --gzip-sweep: bytes on the wire and server CPU per delivery.
With `run`, --gzip makes the subscribers ask for gzip.

cluster starts --redis-server (AOF, appendfsync always) and two pubsubd
nodes sharing its stream beside a single pubsubd, all on SERVER_CPU, and
compares publish requests/s (node A) and delivery latency (subscribers on
node B, publisher on node A) with the single node; then the stream key's
XADD ceiling with the redis-benchmark found beside --redis-server.

Servers are started with `taskset -c SERVER_CPU`; run this program itself
pinned to another CPU (bench/run.sh does: taskset -c 1).
";

/// `--key value` pairs (repeatable keys keep every value) and bare flags.
struct Args {
    values: HashMap<String, Vec<String>>,
}

impl Args {
    fn parse(args: &[String]) -> Result<Args, String> {
        let mut values: HashMap<String, Vec<String>> = HashMap::new();
        let mut i = 0;
        while i < args.len() {
            let a = &args[i];
            let Some(key) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument '{a}'"));
            };
            if let Some((k, v)) = key.split_once('=') {
                values.entry(k.into()).or_default().push(v.into());
            } else if i + 1 < args.len() && !args[i + 1].starts_with("--") {
                values
                    .entry(key.into())
                    .or_default()
                    .push(args[i + 1].clone());
                i += 1;
            } else {
                values.entry(key.into()).or_default().push(String::new());
            }
            i += 1;
        }
        Ok(Args { values })
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.values
            .get(k)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    fn all(&self, k: &str) -> Vec<&str> {
        self.values
            .get(k)
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    fn flag(&self, k: &str) -> bool {
        self.values.contains_key(k)
    }

    fn req(&self, k: &str) -> Result<&str, String> {
        self.get(k).ok_or_else(|| format!("--{k} is required"))
    }

    fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> Result<T, String> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{k}: bad number '{v}'")),
        }
    }
}

fn proto(a: &Args) -> Result<Proto, String> {
    let t = a.req("target")?;
    Proto::parse(t).ok_or_else(|| format!("unknown target '{t}' (pubsubd, nchan, mqtt, pushpin)"))
}

fn loopback_addr(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s.parse().map_err(|_| format!("bad address '{s}'"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{addr}: only loopback targets are allowed"));
    }
    Ok(addr)
}

fn worker_main(a: &Args) -> Result<(), String> {
    let opts = worker::WorkerOpts {
        proto: proto(a)?,
        addr: loopback_addr(a.req("addr")?)?,
        chan: a.get("chan").unwrap_or("bench").into(),
        count: a.num("count", 1)?,
        stalled: a.num("stalled", 0)?,
        stalled_rcvbuf: a.num("stalled-rcvbuf", 4096)?,
        src_first: a.num("src-first", 10)?,
        src_count: a.num("src-count", 40)?,
        concurrency: a.num("concurrency", 256)?,
        tls_ca: a.get("tls-ca").map(PathBuf::from),
        ask: ask(a),
    };
    worker::run(opts).map_err(|e| e.to_string())
}

/// `--sse`, `--ws`, `--gzip`: what the subscribers ask for.
fn ask(a: &Args) -> Ask {
    Ask {
        sse: a.flag("sse"),
        websocket: a.flag("ws"),
        gzip: a.flag("gzip"),
    }
}

fn cfg_from(a: &Args) -> Result<Cfg, String> {
    let mut cfg = if a.flag("quick") {
        Cfg::quick()
    } else {
        Cfg::full()
    };
    for (key, sweep) in [
        ("sweep", &mut cfg.sweep),
        ("tls-sweep", &mut cfg.tls_sweep),
        ("sse-sweep", &mut cfg.sse_sweep),
        ("ws-sweep", &mut cfg.ws_sweep),
        ("gzip-sweep", &mut cfg.gzip_sweep),
    ] {
        if let Some(s) = a.get(key) {
            *sweep = s
                .split(',')
                .map(|x| x.trim().parse().map_err(|_| format!("--{key}: bad '{x}'")))
                .collect::<Result<_, _>>()?;
        }
    }
    cfg.lat_secs = a.num("lat-secs", cfg.lat_secs)?;
    cfg.max_secs = a.num("max-secs", cfg.max_secs)?;
    cfg.lat_rate = a.num("rate", cfg.lat_rate)?;
    cfg.idle_subs = a.num("idle-subs", cfg.idle_subs)?;
    cfg.idle_window = a.num("idle-window", cfg.idle_window)?;
    cfg.pub_secs = a.num("pub-secs", cfg.pub_secs)?;
    cfg.pub_conns = a.num("pub-conns", cfg.pub_conns)?;
    cfg.max_pubs = a.num("max-pubs", cfg.max_pubs)?.clamp(1, worker::MAX_PUB);
    cfg.size = a.num("size", cfg.size)?;
    Ok(cfg)
}

fn run_main(a: &Args) -> Result<(), String> {
    let addr = loopback_addr(a.req("addr")?)?;
    let target = Target {
        proto: proto(a)?,
        addr,
        pub_addr: match a.get("pub-addr") {
            Some(p) => loopback_addr(p)?,
            None => addr,
        },
        pid: a
            .get("pid")
            .map(|p| p.parse())
            .transpose()
            .map_err(|_| "bad --pid")?,
        tls: a
            .get("tls-ca")
            .map(|ca| TargetTls::load(PathBuf::from(ca)))
            .transpose()?,
        ask: ask(a),
    };
    let cfg = cfg_from(a)?;
    let v = match a.req("scenario")? {
        "idle" => scenarios::idle(&target, &cfg, a.num("subs", cfg.idle_subs)?),
        "fanout" => scenarios::fanout(&target, &cfg, a.num("subs", 1000)?),
        "publish" => scenarios::publish_throughput(&target, &cfg, cfg.pub_secs),
        "slow" => scenarios::slow_consumers(&target, &cfg),
        s => return Err(format!("unknown scenario '{s}'")),
    };
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    Ok(())
}

fn compare_main(a: &Args) -> Result<(), String> {
    let cpu = a.get("server-cpu").unwrap_or("0").to_string();
    let mut servers = Vec::new();
    if let Some(bin) = a.get("pubsubd") {
        servers.push(Spec {
            name: "pubsubd".into(),
            proto: Proto::Pubsubd,
            port: 18069,
            kind: Kind::Pubsubd { bin: bin.into() },
            cpu: cpu.clone(),
        });
    }
    if let Some(module) = a.get("nchan-module") {
        servers.push(Spec {
            name: "nchan".into(),
            proto: Proto::Nchan,
            port: 18080,
            kind: Kind::Nchan {
                nginx: a.req("nginx")?.into(),
                module: module.into(),
            },
            cpu: cpu.clone(),
        });
    }
    if let Some(bin) = a.get("mosquitto") {
        servers.push(Spec {
            name: "mosquitto".into(),
            proto: Proto::Mqtt,
            port: 18100,
            kind: Kind::Mosquitto { bin: bin.into() },
            cpu: cpu.clone(),
        });
    }
    if let Some(bin) = a.get("pushpin") {
        servers.push(Spec {
            name: "pushpin".into(),
            proto: Proto::Pushpin,
            port: 18110,
            kind: Kind::Pushpin {
                bin: bin.into(),
                nginx: a
                    .get("nginx")
                    .ok_or("--pushpin needs --nginx (its origin)")?
                    .into(),
            },
            cpu: cpu.clone(),
        });
    }
    for s in a.all("server") {
        let mut parts = s.splitn(4, ':');
        let (Some(name), Some(p), Some(port), Some(cmd)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("--server '{s}': want NAME:PROTOCOL:PORT:COMMAND"));
        };
        servers.push(Spec {
            name: name.into(),
            proto: Proto::parse(p).ok_or_else(|| format!("--server: unknown protocol '{p}'"))?,
            port: port
                .parse()
                .map_err(|_| format!("--server: bad port '{port}'"))?,
            kind: Kind::Cmd { cmd: cmd.into() },
            cpu: cpu.clone(),
        });
    }
    if let Some(only) = a.get("servers") {
        let keep: Vec<&str> = only.split(',').map(str::trim).collect();
        servers.retain(|s| keep.contains(&s.name.as_str()));
    }
    if servers.is_empty() {
        return Err("no servers given".into());
    }
    let scenarios = a
        .get("scenarios")
        .unwrap_or("idle,fanout,publish,slow,fanout-tls,fanout-sse,fanout-ws,fanout-gzip,cluster,tls-handshakes")
        .split(',')
        .map(str::to_owned)
        .collect();
    let out = PathBuf::from(a.req("out")?);
    let workdir = a.get("workdir").map(PathBuf::from).unwrap_or_else(|| {
        std::env::temp_dir().join(format!("pubsub-bench-{}", std::process::id()))
    });
    let tls = match (a.get("tls-ca"), a.get("tls-cert"), a.get("tls-key")) {
        (Some(ca), Some(cert), Some(key)) => Some(runner::TlsFiles {
            ca: ca.into(),
            cert: cert.into(),
            key: key.into(),
            record_layer: a.get("tls-record-layer").map(str::to_owned),
        }),
        (None, None, None) => None,
        _ => return Err("--tls-ca, --tls-cert and --tls-key go together".into()),
    };
    let opts = runner::CompareOpts {
        servers,
        cfg: cfg_from(a)?,
        quick: a.flag("quick"),
        scenarios,
        out,
        workdir,
        machine: json!({"summary": a.get("machine").unwrap_or("")}),
        tls,
        redis_server: a.get("redis-server").map(PathBuf::from),
    };
    compare::compare(&opts)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Writes the summary table of an earlier run again (after the table's
/// code changed, without running anything).
fn summarize_main(a: &Args) -> Result<(), String> {
    let path = PathBuf::from(a.req("results")?);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let results: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let names: Vec<String> = results["servers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let md = compare::summary(&results, &names);
    let out = path.with_file_name("summary.md");
    std::fs::write(&out, &md).map_err(|e| format!("{}: {e}", out.display()))?;
    print!("{md}");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let parsed = match Args::parse(&args[1..]) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pubsub-load: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match cmd.as_str() {
        "worker" => worker_main(&parsed),
        "run" => run_main(&parsed),
        "compare" => compare_main(&parsed),
        "summarize" => summarize_main(&parsed),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => Err(format!("unknown command '{other}'")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pubsub-load: {e}");
            ExitCode::FAILURE
        }
    }
}
