//! The `cluster` scenario (issue 12's performance part): one Redis and two
//! pubsubd nodes sharing its stream, beside a single pubsubd node, all
//! started once and measured in the same run:
//!
//! 1. publish requests/s through node A against the single node, in
//!    interleaved rounds (like `publish`), with the per-round ratio;
//! 2. delivery latency on node B for events published to node A (the
//!    `fanout` scenario with its subscribers on B and its publisher on A),
//!    against the single node serving both;
//! 3. the stream key's own XADD ceiling (`redis-benchmark`, pipelined like
//!    the nodes' writer) on the same Redis, with the same durability.
//!
//! With nginx + nchan among the servers, two nchan instances in Redis mode
//! (`nchan_redis_pass` to the same `redis-server`) run beside pubsubd's
//! nodes: the publish rounds and the latency on the other instance are
//! measured for them too, from the same generator, against the same Redis.
//!
//! Redis runs with `--appendonly yes --appendfsync always` (what the
//! README's promises need), `--save ''`, in its own temporary directory on
//! the single node's port + 4, pinned to the servers' CPU; it is stopped by
//! PID.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::hist::median;
use crate::scenarios::{self, Cfg, Target};
use crate::server::{self, sample, Kind, Running, Spec, Tuning};

/// The stream key the two nodes share.
const STREAM: &str = "pubsub-bench";
/// Ports of nodes A and B and of Redis after the single node's (its TLS
/// port is + 1), like every port of the run: fixed, from the server's.
const NODE_A_OFFSET: u16 = 2;
const NODE_B_OFFSET: u16 = 3;
const REDIS_OFFSET: u16 = 4;
/// Ports of nchan's two Redis-mode instances after the nchan spec's.
const NCHAN_A_OFFSET: u16 = 2;
const NCHAN_B_OFFSET: u16 = 3;
/// The nodes' writer pipelines at most this many appends (cluster-bus).
const WRITER_BATCH: usize = 512;

/// A `redis-server` we started: its port, PID and directory.
pub struct Redis {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

/// Sends `request` on a new connection to `addr` and returns the first
/// line of what comes back (from the first read).
fn first_line(
    addr: SocketAddr,
    request: &[u8],
    connect: Duration,
    read: Duration,
) -> io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, connect)?;
    s.set_read_timeout(Some(read))?;
    s.write_all(request)?;
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string())
}

/// One command in RESP's inline form and the first line of the answer.
fn redis_line(port: u16, cmd: &str) -> io::Result<String> {
    first_line(
        SocketAddr::from(([127, 0, 0, 1], port)),
        format!("{cmd}\r\n").as_bytes(),
        Duration::from_millis(200),
        Duration::from_secs(2),
    )
}

impl Redis {
    /// Starts `bin` on `port`, pinned to `cpu`, in `dir` and waits (at
    /// most 10 s) for it to answer PING.
    pub fn start(bin: &Path, port: u16, dir: &Path, cpu: &str) -> io::Result<Redis> {
        fs::create_dir_all(dir)?;
        let log = fs::File::create(dir.join("redis.log"))?;
        let child = Command::new("taskset")
            .args(["-c", cpu])
            .arg(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--daemonize", "no", "--maxmemory-policy"])
            .arg("noeviction")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut redis = Redis {
            child,
            port,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = redis.child.try_wait() {
                return Err(io::Error::other(format!(
                    "redis-server exited at start-up ({status}); see {}",
                    dir.join("redis.log").display()
                )));
            }
            if redis_line(port, "PING").is_ok_and(|l| l == "+PONG") {
                return Ok(redis);
            }
            if Instant::now() > deadline {
                redis.stop();
                return Err(io::Error::other("redis-server did not answer PING in 10 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// SIGTERM, SIGKILL after 5 s; reaps it.
    pub fn stop(&mut self) {
        // SAFETY: signalling a child we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
            }
        }
    }
}

/// The `cluster` section the nodes get (appended to the single node's
/// configuration, so that is the only difference).
fn cluster_yaml(url: &str) -> String {
    format!("cluster:\n  redis: {url}\n  stream: {STREAM}\n  timeout: 5s\n")
}

/// A shell word (single-quoted).
fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// Starts a cluster node: `bin` with the single node's configuration plus
/// the `cluster` section, on `port`, pinned like the single node.
fn start_node(
    bin: &Path,
    name: &str,
    port: u16,
    cpu: &str,
    url: &str,
    workdir: &Path,
    tuning: &Tuning,
) -> io::Result<Running> {
    let conf = workdir.join(format!("{name}.yaml"));
    fs::write(
        &conf,
        server::pubsubd_conf(port, tuning) + &cluster_yaml(url),
    )?;
    let spec = Spec {
        name: name.into(),
        proto: crate::proto::Proto::Pubsubd,
        port,
        kind: Kind::Cmd {
            cmd: format!("{} --config {}", sh_quote(bin), sh_quote(&conf)),
        },
        cpu: cpu.into(),
    };
    server::start(&spec, "cluster", workdir, tuning)
}

/// Publishes `{}` to `/cluster-warmup` through `node` until it answers 202
/// (the node listens before its Redis links are up), at most 15 s.
fn wait_accepting(node: SocketAddr) -> Result<(), String> {
    wait_publish(
        node,
        b"POST /cluster-warmup HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
}

/// `request` (a publish) to `node` until the answer is 201 or 202, at
/// most 15 s.
fn wait_publish(node: SocketAddr, request: &[u8]) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = String::new();
    while Instant::now() < deadline {
        let attempt = || {
            first_line(
                node,
                request,
                Duration::from_millis(500),
                Duration::from_secs(6),
            )
        };
        match attempt() {
            Ok(l) if l.contains(" 202") || l.contains(" 201") => return Ok(()),
            Ok(l) => last = l,
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("{node} did not accept a publish in 15 s: {last}"))
}

/// nginx and the nchan module, and the nchan spec's port.
pub struct NchanBins<'a> {
    pub nginx: &'a Path,
    pub module: &'a Path,
    pub port: u16,
}

/// Starts one nginx + nchan instance in Redis mode on `port`.
fn start_nchan(
    o: &ClusterOpts,
    n: &NchanBins,
    name: &str,
    port: u16,
    redis_port: u16,
    dir: &Path,
    tuning: &Tuning,
) -> io::Result<Running> {
    let d = dir.join(format!("{name}-nginx"));
    fs::create_dir_all(&d)?;
    let conf = d.join("nginx.conf");
    fs::write(
        &conf,
        server::nginx_redis_conf(&d, port, n.module, redis_port),
    )?;
    let spec = Spec {
        name: name.into(),
        proto: crate::proto::Proto::Nchan,
        port,
        kind: Kind::Cmd {
            cmd: format!(
                "{} -c {} -p {} -e {}",
                sh_quote(n.nginx),
                sh_quote(&conf),
                sh_quote(&d),
                sh_quote(&d.join("error.log"))
            ),
        },
        cpu: o.spec.cpu.clone(),
    };
    server::start(&spec, "cluster", dir, tuning)
}

/// Everything the scenario needs from `compare`.
pub struct ClusterOpts<'a> {
    /// nginx + nchan, when among the servers: its Redis mode beside ours.
    pub nchan: Option<NchanBins<'a>>,
    /// The pubsubd binary and the single node's spec (its port and CPU).
    pub bin: &'a Path,
    pub spec: &'a Spec,
    pub redis_server: &'a Path,
    pub cfg: &'a Cfg,
    pub workdir: &'a Path,
    pub started: Instant,
}

fn log(o: &ClusterOpts, what: &str) {
    eprintln!(
        "[{:>5.0}s] cluster: {what}",
        o.started.elapsed().as_secs_f64()
    );
}

/// The servers of one run, stopped by PID on drop.
struct Servers {
    single: Running,
    redis: Redis,
    a: Running,
    b: Running,
    /// nchan's two Redis-mode instances (publish to the first).
    nchan: Option<(Running, Running)>,
}

impl Servers {
    fn stop(&mut self) -> Value {
        let mut out = json!({});
        for (name, srv) in [
            ("single", &mut self.single),
            ("node_a", &mut self.a),
            ("node_b", &mut self.b),
        ] {
            let crashed = !srv.alive();
            let status = srv.stop();
            let (counts, examples) = srv.log_summary();
            out[name] = json!({
                "crashed_during_run": crashed,
                "exit": status.map(|s| s.to_string()),
                "log_counts": counts.into_iter().map(|(k, v)| (k, json!(v))).collect::<serde_json::Map<_, _>>(),
                "log_examples": examples,
                "log": srv.log.display().to_string(),
            });
        }
        if let Some((na, nb)) = &mut self.nchan {
            for (name, srv) in [("nchan_a", na), ("nchan_b", nb)] {
                let crashed = !srv.alive();
                let status = srv.stop();
                out[name] = json!({
                    "crashed_during_run": crashed,
                    "exit": status.map(|s| s.to_string()),
                    "log": srv.log.display().to_string(),
                });
            }
        }
        self.redis.stop();
        out["redis"] = json!({"dir": self.redis.dir.display().to_string()});
        out
    }
}

/// Runs the scenario; the figures as JSON (`error` when it could not).
pub fn run(o: &ClusterOpts) -> Value {
    let tuning = Tuning {
        max_queued_bytes: Some(64 << 20),
        tls: None,
    };
    let dir = o.workdir.join("cluster");
    let redis_port = o.spec.port + REDIS_OFFSET;
    let redis = match Redis::start(o.redis_server, redis_port, &dir.join("redis"), &o.spec.cpu) {
        Ok(r) => r,
        Err(e) => return json!({"error": format!("redis-server: {e}")}),
    };
    let url = redis.url();
    log(o, &format!("redis-server on {url}, CPU {}", o.spec.cpu));
    let mut redis = Some(redis);
    let mut started: Vec<Running> = Vec::new();
    for (name, port) in [
        ("single", o.spec.port),
        ("node-a", o.spec.port + NODE_A_OFFSET),
        ("node-b", o.spec.port + NODE_B_OFFSET),
    ] {
        let r = if name == "single" {
            let spec = Spec {
                name: "single".into(),
                ..o.spec.clone()
            };
            server::start(&spec, "cluster", &dir, &tuning)
        } else {
            start_node(o.bin, name, port, &o.spec.cpu, &url, &dir, &tuning)
        };
        match r {
            Ok(r) => started.push(r),
            Err(e) => {
                for mut s in started {
                    s.stop();
                }
                if let Some(mut r) = redis.take() {
                    r.stop();
                }
                return json!({"error": format!("start {name}: {e}")});
            }
        }
    }
    let (Some(redis), Some(b), Some(a), Some(single)) =
        (redis, started.pop(), started.pop(), started.pop())
    else {
        return json!({"error": "internal: servers missing"});
    };
    let mut servers = Servers {
        single,
        redis,
        a,
        b,
        nchan: None,
    };
    if let Some(n) = &o.nchan {
        let rport = servers.redis.port;
        let pair = start_nchan(
            o,
            n,
            "nchan-a",
            n.port + NCHAN_A_OFFSET,
            rport,
            &dir,
            &tuning,
        )
        .and_then(|na| {
            match start_nchan(
                o,
                n,
                "nchan-b",
                n.port + NCHAN_B_OFFSET,
                rport,
                &dir,
                &tuning,
            ) {
                Ok(nb) => Ok((na, nb)),
                Err(e) => {
                    let mut na = na;
                    na.stop();
                    Err(e)
                }
            }
        });
        match pair {
            Ok(pair) => {
                log(
                    o,
                    "nchan in Redis mode: two instances on the same redis-server",
                );
                servers.nchan = Some(pair);
            }
            Err(e) => log(o, &format!("nchan in Redis mode not started: {e}")),
        }
    }
    let mut out = json!({
        "redis": {"cpu": o.spec.cpu, "appendfsync": "always", "stream": STREAM},
        "nodes": {"single": servers.single.addr.to_string(), "a": servers.a.addr.to_string(), "b": servers.b.addr.to_string()},
    });
    let mut ready = wait_accepting(servers.a.addr).and_then(|()| wait_accepting(servers.b.addr));
    if let Some((na, _)) = &servers.nchan {
        ready = ready.and_then(|()| {
            wait_publish(
                na.addr,
                b"POST /pub?id=warmup HTTP/1.1\r\nHost: bench\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
            )
        });
    }
    if let Err(e) = ready {
        out["error"] = json!(e);
        out["servers"] = servers.stop();
        return out;
    }
    out["publish"] = publish_rounds(o, &servers);
    // Deeper batches: 256 publisher connections, two rounds each.
    let deep = Cfg {
        pub_conns: 256,
        pub_rounds: 2,
        pub_secs: o.cfg.pub_secs / 2.0,
        ..o.cfg.clone()
    };
    out["publish_256"] = publish_rounds_with(o, &servers, &deep);
    // The same rounds with Redis fsyncing once a second: how much of the
    // cost is the disk's fsync and how much the bus itself.
    let port = servers.redis.port;
    if redis_line(port, "CONFIG SET appendfsync everysec").is_ok_and(|l| l == "+OK") {
        log(o, "again with appendfsync everysec (for comparison only)");
        out["publish_fsync_everysec"] = publish_rounds(o, &servers);
        if !redis_line(port, "CONFIG SET appendfsync always").is_ok_and(|l| l == "+OK") {
            out["error"] = json!("could not set appendfsync back to always");
        }
    }
    out["latency"] = latency(o, &servers);
    out["xadd_ceiling"] = xadd_ceiling(o, &servers.redis);
    out["servers"] = servers.stop();
    out
}

fn target(srv: &Running, pub_addr: SocketAddr) -> Target {
    Target {
        proto: crate::proto::Proto::Pubsubd,
        addr: srv.addr,
        pub_addr,
        pid: Some(srv.pid),
        tls: None,
        ask: crate::proto::Ask::default(),
    }
}

/// Publish requests/s: the single node and node A take turns, the order
/// swapped each round; each cluster turn also records the CPU of node B
/// and Redis (all three share the servers' CPU).
fn publish_rounds(o: &ClusterOpts, s: &Servers) -> Value {
    publish_rounds_with(o, s, o.cfg)
}

/// [`publish_rounds`] with its own sizes (more publisher connections).
fn publish_rounds_with(o: &ClusterOpts, s: &Servers, cfg: &Cfg) -> Value {
    let rounds = cfg.pub_rounds.max(1);
    let secs = cfg.pub_secs / rounds as f64;
    let mut single = Vec::new();
    let mut cluster = Vec::new();
    let mut nchan = Vec::new();
    let sides = if s.nchan.is_some() { 3 } else { 2 };
    for round in 0..rounds {
        for k in 0..sides {
            let side = (k + round) % sides;
            let on_cluster = side == 1;
            log(
                o,
                &format!(
                    "publish round {}/{rounds}, {} connections, {secs:.0} s: {}",
                    round + 1,
                    cfg.pub_conns,
                    ["single", "node A", "nchan A (Redis mode)"][side]
                ),
            );
            if let (2, Some((na, nb))) = (side, &s.nchan) {
                let (b0, r0) = (sample(nb.pid), sample(s.redis.pid()));
                let t = Target {
                    proto: crate::proto::Proto::Nchan,
                    ..target(na, na.addr)
                };
                let mut v = scenarios::publish_throughput(&t, cfg, secs);
                let (b1, r1) = (sample(nb.pid), sample(s.redis.pid()));
                v["node_b_cpu_percent"] = json!(b1.cpu_percent_since(&b0));
                v["redis_cpu_percent"] = json!(r1.cpu_percent_since(&r0));
                nchan.push(v);
            } else if on_cluster {
                let (b0, r0) = (sample(s.b.pid), sample(s.redis.pid()));
                let mut v = scenarios::publish_throughput(&target(&s.a, s.a.addr), cfg, secs);
                let (b1, r1) = (sample(s.b.pid), sample(s.redis.pid()));
                v["node_b_cpu_percent"] = json!(b1.cpu_percent_since(&b0));
                v["redis_cpu_percent"] = json!(r1.cpu_percent_since(&r0));
                cluster.push(v);
            } else {
                single.push(scenarios::publish_throughput(
                    &target(&s.single, s.single.addr),
                    cfg,
                    secs,
                ));
            }
        }
    }
    let rate = |t: &Value| t["requests_per_sec"].as_f64().unwrap_or(0.0);
    let rs: Vec<f64> = single.iter().map(rate).collect();
    let rc: Vec<f64> = cluster.iter().map(rate).collect();
    let rn: Vec<f64> = nchan.iter().map(rate).collect();
    let ratio = |xs: &[f64], ys: &[f64]| -> Vec<f64> {
        xs.iter()
            .zip(ys)
            .filter(|(_, b)| **b > 0.0)
            .map(|(a, b)| a / b)
            .collect()
    };
    let ratios = ratio(&rc, &rs);
    let over_nchan = ratio(&rc, &rn);
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
    let field =
        |ts: &[Value], k: &str| mean(&ts.iter().filter_map(|t| t[k].as_f64()).collect::<Vec<_>>());
    let errors = |ts: &[Value]| -> u64 {
        ts.iter()
            .flat_map(|t| ["status_errors", "io_errors"].map(|k| t["publisher"][k].clone()))
            .filter_map(|o| o.as_object().cloned())
            .flat_map(|o| o.into_iter().filter_map(|(_, v)| v.as_u64()))
            .sum()
    };
    log(
        o,
        &format!(
            "publish: single {:.0}/s, node A {:.0}/s, median ratio {:.2}",
            mean(&rs),
            mean(&rc),
            median(&ratios).unwrap_or(f64::NAN)
        ),
    );
    json!({
        "connections": cfg.pub_conns,
        "rounds": rounds,
        "secs_per_round": secs,
        "single_requests_per_sec": mean(&rs),
        "cluster_requests_per_sec": mean(&rc),
        "single_by_round": rs,
        "cluster_by_round": rc,
        "ratio_by_round": ratios,
        "ratio_median": median(&ratios),
        "single_cpu_percent": field(&single, "server_cpu_percent"),
        "node_a_cpu_percent": field(&cluster, "server_cpu_percent"),
        "node_b_cpu_percent": field(&cluster, "node_b_cpu_percent"),
        "redis_cpu_percent": field(&cluster, "redis_cpu_percent"),
        "single_errors": errors(&single),
        "cluster_errors": errors(&cluster),
        "nchan_requests_per_sec": (!rn.is_empty()).then(|| mean(&rn)),
        "nchan_by_round": rn,
        "cluster_over_nchan_by_round": over_nchan,
        "cluster_over_nchan_median": median(&over_nchan),
        "nchan_a_cpu_percent": (!nchan.is_empty()).then(|| field(&nchan, "server_cpu_percent")),
        "nchan_b_cpu_percent": (!nchan.is_empty()).then(|| field(&nchan, "node_b_cpu_percent")),
        "nchan_redis_cpu_percent": (!nchan.is_empty()).then(|| field(&nchan, "redis_cpu_percent")),
        "nchan_errors": errors(&nchan),
        "single_turns": single,
        "cluster_turns": cluster,
        "nchan_turns": nchan,
    })
}

/// The `fanout` scenario at 1 000 subscribers (the fan-out sweep's own
/// phases: `lat_rate` events/s, then flat out): on the single node, then
/// with the subscribers on node B and the publisher on node A.
fn latency(o: &ClusterOpts, s: &Servers) -> Value {
    const SUBS: usize = 1000;
    log(o, &format!("latency, {SUBS} subscribers: single"));
    let single = scenarios::fanout(&target(&s.single, s.single.addr), o.cfg, SUBS);
    log(
        o,
        &format!("latency, {SUBS} subscribers on node B, publishing to node A"),
    );
    let (a0, r0) = (sample(s.a.pid), sample(s.redis.pid()));
    let mut cluster = scenarios::fanout(&target(&s.b, s.a.addr), o.cfg, SUBS);
    let (a1, r1) = (sample(s.a.pid), sample(s.redis.pid()));
    cluster["node_a_cpu_percent_whole_run"] = json!(a1.cpu_percent_since(&a0));
    cluster["redis_cpu_percent_whole_run"] = json!(r1.cpu_percent_since(&r0));
    let nchan = s.nchan.as_ref().map(|(na, nb)| {
        log(
            o,
            &format!("latency, {SUBS} subscribers on nchan B, publishing to nchan A (Redis mode)"),
        );
        let (a0, r0) = (sample(na.pid), sample(s.redis.pid()));
        let t = Target {
            proto: crate::proto::Proto::Nchan,
            ..target(nb, na.addr)
        };
        let mut v = scenarios::fanout(&t, o.cfg, SUBS);
        let (a1, r1) = (sample(na.pid), sample(s.redis.pid()));
        v["nchan_a_cpu_percent_whole_run"] = json!(a1.cpu_percent_since(&a0));
        v["redis_cpu_percent_whole_run"] = json!(r1.cpu_percent_since(&r0));
        v
    });
    let p = |v: &Value, q: &str| v["fixed_rate"]["latency"][q].as_f64();
    let diff = |q: &str| Some(p(&cluster, q)? - p(&single, q)?);
    log(
        o,
        &format!(
            "latency p50/p99 ms: single {:.2}/{:.2}, cluster {:.2}/{:.2}",
            p(&single, "p50_ms").unwrap_or(f64::NAN),
            p(&single, "p99_ms").unwrap_or(f64::NAN),
            p(&cluster, "p50_ms").unwrap_or(f64::NAN),
            p(&cluster, "p99_ms").unwrap_or(f64::NAN),
        ),
    );
    json!({
        "subscribers": SUBS,
        "rate": o.cfg.lat_rate,
        "p50_ms_over_single": diff("p50_ms"),
        "p99_ms_over_single": diff("p99_ms"),
        "single": single,
        "cluster": cluster,
        "nchan": nchan,
    })
}

/// `redis-benchmark` (beside `redis-server`) appending entries shaped like
/// the nodes' (`c`, `e` of about an event's size, `n`) to a key of its own,
/// pipelined `WRITER_BATCH` deep on one connection (one node's writer) and
/// on two (two nodes). It runs where this program runs (the generator's CPU).
fn xadd_ceiling(o: &ClusterOpts, redis: &Redis) -> Value {
    let bench = o.redis_server.with_file_name("redis-benchmark");
    if !bench.exists() {
        return json!({"error": format!("{} not found", bench.display())});
    }
    // An event as the nodes store it: the body plus pubsubd's four keys.
    let event = "x".repeat(o.cfg.size + 150);
    let n = if o.cfg.pub_secs < 20.0 {
        200_000
    } else {
        500_000
    };
    let mut out = json!({
        "entry_bytes": event.len(),
        "requests": n,
        "pipeline": WRITER_BATCH,
        "key": "xadd-ceiling",
        "appendfsync": "always",
    });
    for clients in [1u32, 2] {
        log(
            o,
            &format!("XADD ceiling, {clients} connection(s), pipeline {WRITER_BATCH}"),
        );
        let r0 = sample(redis.pid());
        let t0 = Instant::now();
        let res = Command::new(&bench)
            .args(["-h", "127.0.0.1", "-p", &redis.port.to_string()])
            .args(["-c", &clients.to_string(), "-n", &n.to_string()])
            .args(["-P", &WRITER_BATCH.to_string(), "--csv"])
            .args(["XADD", "xadd-ceiling", "MAXLEN", "~", "100000", "*"])
            .args(["c", "__rand_int__", "e", &event, "n", "bench"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        let r1 = sample(redis.pid());
        let key = format!("{clients}_connections");
        out[&key] = match res {
            Ok(r) if r.status.success() => {
                let text = String::from_utf8_lossy(&r.stdout).to_string();
                let rps = parse_csv_rps(&text);
                log(
                    o,
                    &format!(
                        "XADD ceiling: {:.0}/s, redis cpu {:.0}%",
                        rps.unwrap_or(f64::NAN),
                        r1.cpu_percent_since(&r0)
                    ),
                );
                json!({
                    "per_sec": rps,
                    "wall_s": t0.elapsed().as_secs_f64(),
                    "redis_cpu_percent": r1.cpu_percent_since(&r0),
                    "csv": text,
                })
            }
            Ok(r) => json!({"error": format!("redis-benchmark: {}", r.status)}),
            Err(e) => json!({"error": format!("redis-benchmark: {e}")}),
        };
    }
    let _ = redis_line(redis.port, "DEL xadd-ceiling");
    out
}

/// The requests/s of `redis-benchmark --csv` (a header line, then
/// `"TEST","RPS",...`).
fn parse_csv_rps(text: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with("\"test\""))
        .find_map(|l| l.split(',').nth(1)?.trim_matches('"').parse().ok())
}

/// The scenario's table (markdown), from its JSON.
pub fn table(md: &mut String, v: &Value) {
    use std::fmt::Write as _;
    if !v.is_object() {
        return;
    }
    if let Some(e) = v["error"].as_str() {
        let _ = writeln!(md, "\ncluster not run: {e}");
        return;
    }
    let f = |x: &Value, d: usize| match x.as_f64() {
        Some(x) if x.is_finite() => format!("{x:.d$}"),
        _ => "—".into(),
    };
    let signed = |x: &Value| match x.as_f64() {
        Some(x) if x.is_finite() => format!("{x:+.2}"),
        _ => "—".into(),
    };
    let met = |ok: Option<bool>| match ok {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "",
    };
    let p = &v["publish"];
    let l = &v["latency"];
    let lat = |side: &str, q: &str| &l[side]["fixed_rate"]["latency"][q];
    let _ = writeln!(
        md,
        "\nCluster (two nodes and one Redis, AOF `appendfsync always`, all on CPU {}; \
         the single node beside them, idle while the cluster runs and vice versa):\n",
        v["redis"]["cpu"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        md,
        "| figure | single node | cluster | cluster ÷ or − single | target | met |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    let ratio = p["ratio_median"].as_f64();
    let _ = writeln!(
        md,
        "| publish requests/s, {} connections (cluster: through node A; ratio: median of {} interleaved rounds) | {} | {} | {}× | ≥ 0.5× | {} |",
        p["connections"],
        p["rounds"],
        f(&p["single_requests_per_sec"], 0),
        f(&p["cluster_requests_per_sec"], 0),
        f(&p["ratio_median"], 2),
        met(ratio.map(|r| r >= 0.5))
    );
    let _ = writeln!(
        md,
        "| … CPU % during publish: single / node A, node B, Redis | {} | {}, {}, {} | | | |",
        f(&p["single_cpu_percent"], 0),
        f(&p["node_a_cpu_percent"], 0),
        f(&p["node_b_cpu_percent"], 0),
        f(&p["redis_cpu_percent"], 0),
    );
    // CPU per publish in µs: a process's % of one core ÷ requests/s.
    let per = |cpu: &Value, rate: &Value| match (cpu.as_f64(), rate.as_f64()) {
        (Some(c), Some(r)) if r > 0.0 => json!(c * 1e4 / r),
        _ => Value::Null,
    };
    let (sr, cr) = (
        &p["single_requests_per_sec"],
        &p["cluster_requests_per_sec"],
    );
    let a_per = per(&p["node_a_cpu_percent"], cr);
    let s_per = per(&p["single_cpu_percent"], sr);
    let _ = writeln!(
        md,
        "| … CPU µs per publish: single / node A, node B, Redis | {} | {}, {}, {} | node A {}× | ≤ 2× | {} |",
        f(&s_per, 1),
        f(&a_per, 1),
        f(&per(&p["node_b_cpu_percent"], cr), 1),
        f(&per(&p["redis_cpu_percent"], cr), 1),
        f(&json!(a_per.as_f64().zip(s_per.as_f64()).map(|(a, s)| a / s)), 2),
        met(a_per.as_f64().zip(s_per.as_f64()).map(|(a, s)| a <= 2.0 * s)),
    );
    let _ = writeln!(
        md,
        "| … publish errors | {} | {} | | 0 | |",
        p["single_errors"], p["cluster_errors"]
    );
    let e = &v["publish_fsync_everysec"];
    if e.is_object() {
        let _ = writeln!(
            md,
            "| … the same with Redis at `appendfsync everysec` (comparison only: no longer durable) | {} | {} | {}× | | |",
            f(&e["single_requests_per_sec"], 0),
            f(&e["cluster_requests_per_sec"], 0),
            f(&e["ratio_median"], 2),
        );
    }
    let d50 = l["p50_ms_over_single"].as_f64();
    let _ = writeln!(
        md,
        "| delivery latency p50 (ms), {} subscribers at {} events/s (cluster: on node B, published to node A) | {} | {} | {} ms | ≤ +1 ms | {} |",
        l["subscribers"],
        l["rate"],
        f(lat("single", "p50_ms"), 2),
        f(lat("cluster", "p50_ms"), 2),
        signed(&l["p50_ms_over_single"]),
        met(d50.map(|d| d <= 1.0))
    );
    let _ = writeln!(
        md,
        "| … p99 (ms) | {} | {} | {} ms | | |",
        f(lat("single", "p99_ms"), 2),
        f(lat("cluster", "p99_ms"), 2),
        signed(&l["p99_ms_over_single"]),
    );
    let lost = |side: &str| &l[side]["fixed_rate"]["lost"];
    let _ = writeln!(
        md,
        "| … deliveries lost | {} | {} | | 0 | |",
        lost("single"),
        lost("cluster")
    );
    let maxr = |side: &str| &l[side]["max_rate"]["deliveries_per_sec"];
    let _ = writeln!(
        md,
        "| fan-out deliveries/s, {} subscribers, publish flat out | {} | {} | | | |",
        l["subscribers"],
        f(maxr("single"), 0),
        f(maxr("cluster"), 0),
    );
    let q = &v["publish_256"];
    if q.is_object() {
        let over = q["ratio_median"].as_f64();
        let _ = writeln!(
            md,
            "| publish requests/s, {} connections (node A; median of {} rounds) | {} | {} | {}× | ≥ 0.4× | {} |",
            q["connections"],
            q["rounds"],
            f(&q["single_requests_per_sec"], 0),
            f(&q["cluster_requests_per_sec"], 0),
            f(&q["ratio_median"], 2),
            met(over.map(|r| r >= 0.4)),
        );
        let cr = &q["cluster_requests_per_sec"];
        let _ = writeln!(
            md,
            "| … CPU µs per publish: single / node A, node B, Redis; nchan A, nchan B, Redis ({} req/s) | {} | {}, {}, {}; {}, {}, {} | | | |",
            f(&q["nchan_requests_per_sec"], 0),
            f(&per(&q["single_cpu_percent"], &q["single_requests_per_sec"]), 1),
            f(&per(&q["node_a_cpu_percent"], cr), 1),
            f(&per(&q["node_b_cpu_percent"], cr), 1),
            f(&per(&q["redis_cpu_percent"], cr), 1),
            f(&per(&q["nchan_a_cpu_percent"], &q["nchan_requests_per_sec"]), 1),
            f(&per(&q["nchan_b_cpu_percent"], &q["nchan_requests_per_sec"]), 1),
            f(&per(&q["nchan_redis_cpu_percent"], &q["nchan_requests_per_sec"]), 1),
        );
    }
    let nr = &p["nchan_requests_per_sec"];
    if nr.is_number() {
        let over = p["cluster_over_nchan_median"].as_f64();
        let _ = writeln!(
            md,
            "| nchan in Redis mode (two nginx+nchan on the same Redis): publish requests/s through nchan A | | {} | pubsubd ÷ nchan {}× | ≥ 2× | {} |",
            f(nr, 0),
            f(&p["cluster_over_nchan_median"], 2),
            met(over.map(|r| r >= 2.0)),
        );
        let _ = writeln!(
            md,
            "| … CPU µs per publish: nchan A, nchan B, Redis | | {}, {}, {} | | | |",
            f(&per(&p["nchan_a_cpu_percent"], nr), 1),
            f(&per(&p["nchan_b_cpu_percent"], nr), 1),
            f(&per(&p["nchan_redis_cpu_percent"], nr), 1),
        );
        if e.is_object() {
            let _ = writeln!(
                md,
                "| … nchan at `appendfsync everysec` | | {} | pubsubd ÷ nchan {}× | ≥ 2× | |",
                f(&e["nchan_requests_per_sec"], 0),
                f(&e["cluster_over_nchan_median"], 2),
            );
        }
        let n = &l["nchan"];
        let _ = writeln!(
            md,
            "| … nchan delivery latency p50 / p99 (ms), subscribers on nchan B | | {} / {} | | | |",
            f(&n["fixed_rate"]["latency"]["p50_ms"], 2),
            f(&n["fixed_rate"]["latency"]["p99_ms"], 2),
        );
        let _ = writeln!(
            md,
            "| … nchan deliveries lost at {} events/s, and publishing flat out | | {}, {} | | | |",
            l["rate"], n["fixed_rate"]["lost"], n["max_rate"]["lost"],
        );
    }
    let _ = writeln!(
        md,
        "| deliveries lost publishing flat out (the overload) | {} | {} | | 0 | |",
        l["single"]["max_rate"]["lost"], l["cluster"]["max_rate"]["lost"],
    );
    let x = &v["xadd_ceiling"];
    for c in ["1_connections", "2_connections"] {
        if x[c].is_object() {
            let _ = writeln!(
                md,
                "| the stream key's XADD ceiling, redis-benchmark, {} pipelined {} deep, {} B entries (Redis CPU {}%) | | {} | | | |",
                c.replace('_', " ").replace("1 connections", "1 connection"),
                x["pipeline"],
                x["entry_bytes"],
                f(&x[c]["redis_cpu_percent"], 0),
                f(&x[c]["per_sec"], 0),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rps() {
        let text =
            "\"test\",\"rps\",\"avg_latency_ms\"\n\"XADD xadd-ceiling\",\"123456.79\",\"1.0\"\n";
        assert_eq!(parse_csv_rps(text), Some(123456.79));
        assert_eq!(parse_csv_rps(""), None);
    }

    #[test]
    fn node_config_adds_only_the_cluster_section() {
        let t = Tuning {
            max_queued_bytes: None,
            tls: None,
        };
        let single = server::pubsubd_conf(18069, &t);
        let node = single.clone() + &cluster_yaml("redis://127.0.0.1:6399/0");
        assert!(node.starts_with(&single));
        assert!(node.ends_with(
            "cluster:\n  redis: redis://127.0.0.1:6399/0\n  stream: pubsub-bench\n  timeout: 5s\n"
        ));
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote(Path::new("/tmp/a b")), "'/tmp/a b'");
        assert_eq!(sh_quote(Path::new("/tmp/it's")), r"'/tmp/it'\''s'");
    }

    #[test]
    fn table_of_an_error() {
        let mut md = String::new();
        table(&mut md, &json!({"error": "redis-server: not found"}));
        assert!(md.contains("cluster not run: redis-server: not found"));
    }
}
