//! The scenarios. Each takes a target (protocol, address, and the server's
//! PID for /proc measurements), runs with bounded loops and time limits,
//! ends every process it started, and returns its figures as JSON.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::clock::{now_ns, self_cpu_ns};
use crate::fleet::{Fleet, Merged};
use crate::hist::Hist;
use crate::proto::{Ask, Proto};
use crate::publisher::{publish, Mode, PubOpts, PubResult};
use crate::server::{clk_tck, sample, Sample};
use crate::worker::WorkerOpts;

#[derive(Debug, Clone)]
pub struct Target {
    pub proto: Proto,
    /// Where subscribers connect.
    pub addr: SocketAddr,
    /// Where publishers connect (Pushpin's control API; else `addr`).
    pub pub_addr: SocketAddr,
    /// The server's PID, for memory and CPU (None = not measured).
    pub pid: Option<u32>,
    /// Subscribers and publishers speak TLS to `addr`.
    pub tls: Option<TargetTls>,
    /// What subscribers ask for: Server-Sent Events, a WebSocket, gzip.
    pub ask: Ask,
}

/// How the generator's TLS clients trust the server.
#[derive(Debug, Clone)]
pub struct TargetTls {
    /// The CA certificate (PEM) the workers are given.
    pub ca: PathBuf,
    /// The publisher's client configuration (built from `ca`).
    pub config: Arc<rustls::ClientConfig>,
}

impl TargetTls {
    pub fn load(ca: PathBuf) -> Result<TargetTls, String> {
        let config = crate::transport::client_config(&ca)?;
        Ok(TargetTls { ca, config })
    }
}

impl Target {
    fn sample(&self) -> Sample {
        self.pid.map(sample).unwrap_or_default()
    }
}

/// Sizes and durations of every scenario (`full` and `quick` presets).
#[derive(Debug, Clone)]
pub struct Cfg {
    pub size: usize,
    pub per_process: usize,
    pub concurrency: usize,
    pub idle_subs: usize,
    pub idle_window: f64,
    pub sweep: Vec<usize>,
    pub lat_rate: f64,
    pub lat_secs: f64,
    pub max_secs: f64,
    /// Subscriber counts of `fanout-tls` (each over plaintext and TLS).
    pub tls_sweep: Vec<usize>,
    /// Subscriber counts of `fanout-sse` (each chunked and SSE).
    pub sse_sweep: Vec<usize>,
    /// Subscriber counts of `fanout-ws` (chunked, WebSocket; nchan's WebSocket).
    pub ws_sweep: Vec<usize>,
    /// Subscriber counts of `fanout-gzip` (plain, gzip): the generator
    /// keeps an inflater per subscriber, so it stays small.
    pub gzip_sweep: Vec<usize>,
    pub max_pubs: usize,
    pub pub_conns: usize,
    /// Publishing time per server, split into `pub_rounds` turns.
    pub pub_secs: f64,
    pub pub_rounds: usize,
    pub slow_healthy: usize,
    pub slow_stalled: usize,
    pub slow_rate: f64,
    pub slow_base_secs: f64,
    pub slow_stall_secs: f64,
    pub slow_window: f64,
}

impl Cfg {
    pub fn full() -> Cfg {
        Cfg {
            size: 200,
            per_process: 12_000,
            concurrency: 256,
            idle_subs: 10_000,
            idle_window: 30.0,
            // nginx needs more than one connection slot per subscriber at
            // times: 19 000 exhausts its 19 990 worker_connections.
            sweep: vec![100, 1_000, 3_000, 10_000, 15_000],
            lat_rate: 10.0,
            lat_secs: 12.0,
            max_secs: 8.0,
            tls_sweep: vec![1_000, 10_000],
            sse_sweep: vec![1_000, 10_000],
            ws_sweep: vec![1_000, 10_000],
            gzip_sweep: vec![1_000],
            max_pubs: 8,
            pub_conns: 32,
            pub_secs: 40.0,
            pub_rounds: 5,
            slow_healthy: 100,
            slow_stalled: 10,
            slow_rate: 1000.0,
            slow_base_secs: 15.0,
            slow_stall_secs: 60.0,
            slow_window: 5.0,
        }
    }

    pub fn quick() -> Cfg {
        Cfg {
            idle_subs: 2_000,
            idle_window: 10.0,
            sweep: vec![100, 1_000, 3_000],
            tls_sweep: vec![1_000],
            // `sse_sweep` stays 1 000 and 10 000: its target is at 10 000.
            lat_secs: 6.0,
            max_secs: 5.0,
            pub_secs: 12.0,
            pub_rounds: 4,
            slow_base_secs: 6.0,
            slow_stall_secs: 25.0,
            slow_window: 3.0,
            ..Cfg::full()
        }
    }
}

const CHAN: &str = "bench";

fn worker_opts(t: &Target, cfg: &Cfg, count: usize, stalled: usize) -> WorkerOpts {
    WorkerOpts {
        proto: t.proto,
        addr: t.addr,
        chan: CHAN.into(),
        count,
        stalled,
        stalled_rcvbuf: 4096,
        src_first: 10,
        src_count: 40,
        concurrency: cfg.concurrency,
        tls_ca: t.tls.as_ref().map(|x| x.ca.clone()),
        ask: t.ask,
    }
}

fn tls_config(t: &Target) -> Option<Arc<rustls::ClientConfig>> {
    t.tls.as_ref().map(|x| x.config.clone())
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn lat_json(h: &Hist) -> Value {
    json!({
        "samples": h.count(),
        "p50_ms": ms(h.quantile(0.50)),
        "p90_ms": ms(h.quantile(0.90)),
        "p99_ms": ms(h.quantile(0.99)),
        "p999_ms": ms(h.quantile(0.999)),
        "max_ms": ms(h.max()),
    })
}

fn pub_json(p: &PubResult) -> Value {
    let secs = (p.end_ns.saturating_sub(p.start_ns)) as f64 / 1e9;
    json!({
        "sent": p.sent,
        "accepted": p.ok,
        "status_errors": p.status_errors.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_,_>>(),
        "io_errors": p.io_errors,
        "first_error_response": p.first_error_body,
        "late": p.late,
        "reconnects": p.reconnects,
        "request_rtt": lat_json(&p.rtt),
        "seconds": secs,
        "cpu_percent": p.cpu_ns as f64 / 1e9 / secs.max(1e-9) * 100.0,
        "tls": p.tls,
    })
}

/// Waits until every expected delivery arrived, nothing has arrived for
/// `quiet`, or `limit` passed; returns the last report.
fn drain(fleet: &mut Fleet, expected: u64, quiet: Duration, limit: Duration) -> Merged {
    let start = Instant::now();
    let mut last = fleet.report();
    let mut last_change = Instant::now();
    loop {
        if last.received.saturating_sub(last.dups) >= expected
            || last_change.elapsed() >= quiet
            || start.elapsed() >= limit
        {
            return last;
        }
        std::thread::sleep(Duration::from_millis(200));
        let m = fleet.report();
        if m.received != last.received {
            last_change = Instant::now();
        }
        // Keep the phase histogram; window latencies are not used here.
        last = m;
    }
}

fn delivery_json(m: &Merged, p: &PubResult) -> Value {
    let expected = p.ok * m.in_phase;
    let fresh = m.received.saturating_sub(m.dups);
    let span = m.last_ns.saturating_sub(p.start_ns) as f64 / 1e9;
    json!({
        "subscribers_counted": m.in_phase,
        "subscribers_closed_by_server": m.closed,
        "events_accepted": p.ok,
        "expected_deliveries": expected,
        "deliveries": m.received,
        "lost": expected.saturating_sub(fresh),
        "duplicates_or_reordered": m.dups,
        "gaps": m.gaps,
        "stale": m.stale,
        "non_event_lines": m.other,
        "pings": m.pings,
        "bytes": m.bytes,
        "deliveries_per_sec": if span > 0.0 { m.received as f64 / span } else { 0.0 },
        "delivery_span_s": span,
        "latency": lat_json(&m.hist),
        "subscriber_errors": m.errors,
    })
}

fn gen_cpu(m: &Merged, own_cpu_ns: u64, wall_ns: u64) -> f64 {
    (m.cpu_ns + own_cpu_ns) as f64 / wall_ns.max(1) as f64 * 100.0
}

/// N idle subscribers: server memory per subscriber and CPU to hold them.
pub fn idle(t: &Target, cfg: &Cfg, n: usize) -> Value {
    let before = t.sample();
    let mut fleet = match Fleet::spawn(&worker_opts(t, cfg, n, 0), cfg.per_process) {
        Ok(f) => f,
        Err(e) => return json!({"error": format!("spawn workers: {e}")}),
    };
    let ready = fleet.wait_ready(Duration::from_secs(180));
    std::thread::sleep(Duration::from_secs(2));
    let after = t.sample();
    fleet.reset(1);
    let cpu0 = self_cpu_ns();
    let t0 = now_ns();
    std::thread::sleep(Duration::from_secs_f64(cfg.idle_window));
    let end = t.sample();
    let m = fleet.report();
    let wall = now_ns() - t0;
    fleet.quit();
    let live = ready.live.max(1);
    json!({
        "subscribers": n,
        "live": ready.live,
        "failed": ready.failed,
        "setup_errors": ready.errors,
        "rss_before_kib": before.rss_kib,
        "rss_after_kib": after.rss_kib,
        "rss_per_subscriber_bytes": (after.rss_kib as f64 - before.rss_kib as f64) * 1024.0 / live as f64,
        "window_s": cfg.idle_window,
        "server_cpu_percent": end.cpu_percent_since(&after),
        "pings_per_subscriber": m.pings as f64 / live as f64,
        "closed_during_window": m.closed,
        "generator_cpu_percent": gen_cpu(&m, self_cpu_ns() - cpu0, wall),
    })
}

/// N subscribers: latency at a fixed rate, then deliveries/s flat out.
pub fn fanout(t: &Target, cfg: &Cfg, n: usize) -> Value {
    let rss_before = t.sample().rss_kib;
    let setup_start = Instant::now();
    let mut fleet = match Fleet::spawn(&worker_opts(t, cfg, n, 0), cfg.per_process) {
        Ok(f) => f,
        Err(e) => return json!({"error": format!("spawn workers: {e}")}),
    };
    let ready = fleet.wait_ready(Duration::from_secs(180));
    let setup_s = setup_start.elapsed().as_secs_f64();
    // The subscribers are idle until the first publish.
    std::thread::sleep(Duration::from_secs(1));
    let rss_ready = t.sample().rss_kib;
    let mut out = json!({
        "subscribers": n,
        "transport": if t.tls.is_some() { "tls" } else { "plain" },
        "framing": if t.ask.websocket {
            "websocket"
        } else if t.ask.sse {
            "sse"
        } else {
            "chunked"
        },
        "gzip": t.ask.gzip,
        "live": ready.live,
        "failed": ready.failed,
        "worker_processes": fleet.len(),
        "setup_errors": ready.errors,
        "setup_s": setup_s,
        "rss_before_kib": rss_before,
        "rss_with_subscribers_kib": rss_ready,
        "rss_per_idle_subscriber_bytes": (rss_ready as f64 - rss_before as f64) * 1024.0 / ready.live.max(1) as f64,
    });
    // Phase 1: fixed rate, latency.
    fleet.reset(1);
    let opts = PubOpts {
        proto: t.proto,
        addr: t.pub_addr,
        chan: CHAN.into(),
        // Several connections, so a slow answer does not hold the schedule back.
        conns: 4,
        size: cfg.size,
        mode: Mode::Rate(cfg.lat_rate),
        duration: Duration::from_secs_f64(cfg.lat_secs),
        run: 1,
        tls: tls_config(t),
    };
    let cpu0 = self_cpu_ns();
    let s0 = t.sample();
    match publish(&opts, Duration::from_secs(3600), |_, _| {}) {
        Ok(p) => {
            let s1 = t.sample();
            let m = drain(
                &mut fleet,
                p.ok * ready.live,
                Duration::from_secs(3),
                Duration::from_secs(20),
            );
            let wall = now_ns() - p.start_ns;
            let mut d = delivery_json(&m, &p);
            d["rate"] = json!(cfg.lat_rate);
            d["publisher"] = pub_json(&p);
            d["server_cpu_percent"] = json!(s1.cpu_percent_since(&s0));
            d["generator_cpu_percent"] = json!(gen_cpu(&m, self_cpu_ns() - cpu0, wall));
            out["fixed_rate"] = d;
        }
        Err(e) => out["fixed_rate"] = json!({"error": e.to_string()}),
    }
    // Phase 2: as fast as the server answers.
    fleet.reset(2);
    let opts = PubOpts {
        conns: cfg.max_pubs,
        mode: Mode::Max,
        duration: Duration::from_secs_f64(cfg.max_secs),
        run: 2,
        ..opts
    };
    let cpu0 = self_cpu_ns();
    let s0 = t.sample();
    let mut peak_rss = 0;
    let pid = t.pid;
    match publish(&opts, Duration::from_secs(1), |_, _| {
        if let Some(pid) = pid {
            peak_rss = peak_rss.max(sample(pid).rss_kib);
        }
    }) {
        Ok(p) => {
            let s1 = t.sample();
            let m = drain(
                &mut fleet,
                p.ok * ready.live,
                Duration::from_secs(3),
                Duration::from_secs(30),
            );
            let wall = now_ns() - p.start_ns;
            let mut d = delivery_json(&m, &p);
            d["publisher"] = pub_json(&p);
            d["server_cpu_percent"] = json!(s1.cpu_percent_since(&s0));
            // The server's CPU from the first publish to the last delivery:
            // deliveries per CPU-second compare two runs fairly when others
            // take the server's core for part of one of them.
            let s2 = t.sample();
            let cpu_s = s2.cpu_ticks.saturating_sub(s0.cpu_ticks) as f64 / clk_tck();
            d["server_cpu_s"] = json!(cpu_s);
            d["deliveries_per_server_cpu_s"] = if cpu_s > 0.0 {
                json!(m.received as f64 / cpu_s)
            } else {
                Value::Null
            };
            d["server_kernel_share"] = json!(s1.sys_share_since(&s0));
            d["generator_cpu_percent"] = json!(gen_cpu(&m, self_cpu_ns() - cpu0, wall));
            d["peak_rss_kib"] = json!(peak_rss.max(s1.rss_kib));
            out["max_rate"] = d;
        }
        Err(e) => out["max_rate"] = json!({"error": e.to_string()}),
    }
    fleet.quit();
    out
}

/// `conns` keep-alive publishers, depth 1, nobody subscribed, for `secs`.
pub fn publish_throughput(t: &Target, cfg: &Cfg, secs: f64) -> Value {
    let opts = PubOpts {
        proto: t.proto,
        addr: t.pub_addr,
        chan: CHAN.into(),
        conns: cfg.pub_conns,
        size: cfg.size,
        mode: Mode::Max,
        duration: Duration::from_secs_f64(secs),
        run: 1,
        tls: tls_config(t),
    };
    let s0 = t.sample();
    let mut rss = Vec::new();
    let pid = t.pid;
    let res = publish(&opts, Duration::from_secs(1), |at, _| {
        if let Some(pid) = pid {
            rss.push((at, sample(pid).rss_kib));
        }
    });
    let s1 = t.sample();
    match res {
        Ok(p) => {
            let full: Vec<&(f64, u64, u64)> = p.per_second.iter().filter(|s| s.0 >= 1.0).collect();
            let third = (full.len() / 3).max(1);
            let avg = |xs: &[&(f64, u64, u64)]| {
                if xs.is_empty() {
                    0.0
                } else {
                    xs.iter().map(|s| s.1 as f64).sum::<f64>() / xs.len() as f64
                }
            };
            let first = avg(&full[..third.min(full.len())]);
            let last = avg(&full[full.len().saturating_sub(third)..]);
            json!({
                "connections": cfg.pub_conns,
                "requests_per_sec": p.ok as f64 / secs,
                "first_third_per_sec": first,
                "last_third_per_sec": last,
                "last_over_first": if first > 0.0 { last / first } else { 0.0 },
                "publisher": pub_json(&p),
                "per_second": p.per_second.iter().map(|s| json!([s.0, s.1, s.2])).collect::<Vec<_>>(),
                "rss_kib_over_time": rss.iter().map(|r| json!([r.0, r.1])).collect::<Vec<_>>(),
                "rss_before_kib": s0.rss_kib,
                "rss_after_kib": s1.rss_kib,
                "server_cpu_percent": s1.cpu_percent_since(&s0),
                "server_kernel_share": s1.sys_share_since(&s0),
            })
        }
        Err(e) => json!({"error": e.to_string()}),
    }
}

/// Healthy subscribers alone, then with stalled ones added.
pub fn slow_consumers(t: &Target, cfg: &Cfg) -> Value {
    let mut healthy = match Fleet::spawn(&worker_opts(t, cfg, cfg.slow_healthy, 0), cfg.per_process)
    {
        Ok(f) => f,
        Err(e) => return json!({"error": format!("spawn workers: {e}")}),
    };
    let ready = healthy.wait_ready(Duration::from_secs(60));
    let mut out = json!({
        "healthy": cfg.slow_healthy,
        "stalled": cfg.slow_stalled,
        "healthy_live": ready.live,
        "rate": cfg.slow_rate,
        "window_s": cfg.slow_window,
    });
    let pid = t.pid;
    let t_start = Instant::now();
    let mut series: Vec<Value> = Vec::new();
    let run_phase = |fleet: &mut Fleet,
                     stalled: Option<&mut Fleet>,
                     run: u32,
                     secs: f64,
                     series: &mut Vec<Value>|
     -> Value {
        fleet.reset(run);
        let opts = PubOpts {
            proto: t.proto,
            addr: t.pub_addr,
            chan: CHAN.into(),
            conns: 2,
            size: cfg.size,
            mode: Mode::Rate(cfg.slow_rate),
            duration: Duration::from_secs_f64(secs),
            run,
            tls: tls_config(t),
        };
        let mut stalled = stalled;
        let res = publish(&opts, Duration::from_secs_f64(cfg.slow_window), |_, _| {
            let m = fleet.report();
            let stalled_live = stalled.as_mut().map(|s| s.report().stalled_live);
            series.push(json!({
                "t_s": t_start.elapsed().as_secs_f64(),
                "phase": if run == 1 { "no stall" } else { "stalled" },
                "healthy_p99_ms": ms(m.window.quantile(0.99)),
                "healthy_max_ms": ms(m.window.max()),
                "rss_kib": pid.map(|p| sample(p).rss_kib),
                "stalled_open": stalled_live,
                "healthy_closed": m.closed,
            }));
        });
        match res {
            Ok(p) => {
                let m = drain(
                    fleet,
                    p.ok * ready.live,
                    Duration::from_secs(3),
                    Duration::from_secs(15),
                );
                let mut d = delivery_json(&m, &p);
                d["publisher"] = pub_json(&p);
                d
            }
            Err(e) => json!({"error": e.to_string()}),
        }
    };
    let rss0 = t.sample().rss_kib;
    let base = run_phase(&mut healthy, None, 1, cfg.slow_base_secs, &mut series);
    let rss_base_end = t.sample().rss_kib;
    let mut stalled = match Fleet::spawn(
        &worker_opts(t, cfg, cfg.slow_stalled, cfg.slow_stalled),
        cfg.per_process,
    ) {
        Ok(f) => f,
        Err(e) => {
            healthy.quit();
            out["error"] = json!(format!("spawn stalled workers: {e}"));
            return out;
        }
    };
    let sready = stalled.wait_ready(Duration::from_secs(30));
    let with = run_phase(
        &mut healthy,
        Some(&mut stalled),
        2,
        cfg.slow_stall_secs,
        &mut series,
    );
    let rss_end = t.sample().rss_kib;
    let stalled_left = stalled.report().stalled_live;
    healthy.quit();
    stalled.quit();
    let p99 = |v: &Value| v["latency"]["p99_ms"].as_f64().unwrap_or(0.0);
    // Memory growth over the last third of the stalled phase (a bounded
    // server has reached its bound, or dropped the stalled, by then).
    let stalled_rss: Vec<(f64, f64)> = series
        .iter()
        .filter(|s| s["phase"] == "stalled")
        .filter_map(|s| Some((s["t_s"].as_f64()?, s["rss_kib"].as_f64()?)))
        .collect();
    let tail = &stalled_rss[stalled_rss.len() * 2 / 3..];
    let growth = match (tail.first(), tail.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => (b.1 - a.1) / (b.0 - a.0),
        _ => 0.0,
    };
    let peak = stalled_rss.iter().map(|x| x.1).fold(0.0, f64::max);
    out["stalled_connected"] = json!(sready.stalled_live);
    out["stalled_still_open_at_end"] = json!(stalled_left);
    out["no_stall"] = base;
    out["with_stall"] = with;
    out["healthy_p99_ratio"] = json!(p99(&out["with_stall"]) / p99(&out["no_stall"]).max(1e-9));
    out["rss_start_kib"] = json!(rss0);
    out["rss_no_stall_end_kib"] = json!(rss_base_end);
    out["rss_end_kib"] = json!(rss_end);
    out["rss_peak_during_stall_kib"] = json!(peak);
    out["rss_growth_kib_per_s_late"] = json!(growth);
    out["series"] = json!(series);
    out
}
