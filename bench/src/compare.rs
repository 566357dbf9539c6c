//! `pubsub-load compare`: every scenario against every server in one run,
//! scenario by scenario (so drift hits all servers alike), each server
//! fresh for each scenario (publish: once, with interleaved rounds),
//! pinned to its own CPU. Writes results.json,
//! sweep.csv and summary.md into the output directory and prints the
//! summary with ratios against nchan.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};

use crate::cluster;
use crate::handshakes;
use crate::hist::median;
use crate::proto::Ask;
use crate::runner::CompareOpts;
use crate::runner::{run_one, run_one_over};
use crate::scenarios::{self, Target, TargetTls};
use crate::server::{self, Kind, ServerTls, Spec, Tuning};
use crate::transports;

/// The TLS port in `fanout-tls` and `tls-handshakes` (the plain port + 1).
const TLS_PORT_OFFSET: u16 = 1;

fn tuning_for(scenario: &str) -> Tuning {
    match scenario {
        // Big fan-outs queue a lot per subscriber while the generator
        // catches up; the slow-consumer scenario keeps the default bound.
        "fanout" | "fanout-tls" | "fanout-sse" | "fanout-ws" | "fanout-gzip" => Tuning {
            max_queued_bytes: Some(64 << 20),
            tls: None,
        },
        _ => Tuning {
            max_queued_bytes: None,
            tls: None,
        },
    }
}

fn save(out: &Path, results: &Value) {
    let _ = fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(results).unwrap_or_default(),
    );
}

pub fn compare(opts: &CompareOpts) -> std::io::Result<Value> {
    fs::create_dir_all(&opts.out)?;
    fs::create_dir_all(&opts.workdir)?;
    let cfg = &opts.cfg;
    let mut results = json!({
        "mode": if opts.quick { "quick" } else { "full" },
        "machine": opts.machine,
        "config": format!("{cfg:?}"),
        "servers": opts.servers.iter().map(|s| json!({"name": s.name, "protocol": s.proto.name(), "port": s.port, "cpu": s.cpu, "kind": format!("{:?}", s.kind)})).collect::<Vec<_>>(),
        "scenarios": {},
    });
    let started = Instant::now();
    for sc in &opts.scenarios {
        let tuning = tuning_for(sc);
        match sc.as_str() {
            "idle" => {
                for spec in &opts.servers {
                    eprintln!(
                        "[{:>5.0}s] idle {} subscribers: {}",
                        started.elapsed().as_secs_f64(),
                        cfg.idle_subs,
                        spec.name
                    );
                    let v = run_one(spec, "idle", &opts.workdir, &tuning, |t| {
                        scenarios::idle(t, cfg, cfg.idle_subs)
                    });
                    eprintln!(
                        "         {}",
                        brief(
                            &v,
                            &["rss_per_subscriber_bytes", "server_cpu_percent", "live"]
                        )
                    );
                    results["scenarios"]["idle"][&spec.name] = v;
                    save(&opts.out, &results);
                }
            }
            "fanout" => {
                for &n in &cfg.sweep {
                    for spec in &opts.servers {
                        eprintln!(
                            "[{:>5.0}s] fan-out {n} subscribers: {}",
                            started.elapsed().as_secs_f64(),
                            spec.name
                        );
                        let v = run_one(spec, &format!("fanout{n}"), &opts.workdir, &tuning, |t| {
                            scenarios::fanout(t, cfg, n)
                        });
                        eprintln!(
                            "         fixed rate p99 {:.1} ms, lost {}; max {:.0} deliveries/s, lost {}, server cpu {:.0}%, generator cpu {:.0}%",
                            v["fixed_rate"]["latency"]["p99_ms"].as_f64().unwrap_or(f64::NAN),
                            v["fixed_rate"]["lost"],
                            v["max_rate"]["deliveries_per_sec"].as_f64().unwrap_or(f64::NAN),
                            v["max_rate"]["lost"],
                            v["max_rate"]["server_cpu_percent"].as_f64().unwrap_or(f64::NAN),
                            v["max_rate"]["generator_cpu_percent"].as_f64().unwrap_or(f64::NAN),
                        );
                        results["scenarios"]["fanout"][n.to_string()][&spec.name] = v;
                        save(&opts.out, &results);
                    }
                }
            }
            "publish" => publish_rounds(opts, &tuning, started, &mut results),
            "slow" => {
                for spec in &opts.servers {
                    eprintln!(
                        "[{:>5.0}s] slow consumers: {}",
                        started.elapsed().as_secs_f64(),
                        spec.name
                    );
                    let v = run_one(spec, "slow", &opts.workdir, &tuning, |t| {
                        scenarios::slow_consumers(t, cfg)
                    });
                    eprintln!(
                        "         healthy p99 {:.1} ms -> {:.1} ms with stalls, rss {} -> {} KiB",
                        v["no_stall"]["latency"]["p99_ms"]
                            .as_f64()
                            .unwrap_or(f64::NAN),
                        v["with_stall"]["latency"]["p99_ms"]
                            .as_f64()
                            .unwrap_or(f64::NAN),
                        v["rss_start_kib"],
                        v["rss_end_kib"],
                    );
                    results["scenarios"]["slow"][&spec.name] = v;
                    save(&opts.out, &results);
                }
            }
            "fanout-tls" => fanout_tls(opts, &tuning, started, &mut results),
            "fanout-sse" => fanout_sse(opts, &tuning, started, &mut results),
            "fanout-ws" | "fanout-gzip" => {
                transports::fanout(opts, sc, &tuning, started, &mut results);
                save(&opts.out, &results);
            }
            "tls-handshakes" => tls_handshakes(opts, &tuning, started, &mut results),
            "cluster" => {
                results["scenarios"]["cluster"] = cluster_scenario(opts, started);
                save(&opts.out, &results);
            }
            other => eprintln!("unknown scenario '{other}' skipped"),
        }
    }
    results["wall_s"] = json!(started.elapsed().as_secs_f64());
    save(&opts.out, &results);
    write_csv(&opts.out, &results, &opts.servers);
    let names: Vec<String> = opts.servers.iter().map(|s| s.name.clone()).collect();
    let summary = summary(&results, &names);
    fs::write(opts.out.join("summary.md"), &summary)?;
    println!("{summary}");
    Ok(results)
}

/// The publish scenario, interleaved: every server is started once and
/// stays up, and each of `cfg.pub_rounds` rounds gives every server a turn
/// of `pub_secs / pub_rounds` seconds, in an order rotated each round.
/// Noise on this shared machine lasts seconds, so back-to-back runs of
/// one server each could land on different weather; interleaved, every
/// round yields a ratio, and the summary reports their median beside the
/// rates. Flatness is judged over each server's whole run (its turns
/// joined), since the same process serves every round.
fn publish_rounds(opts: &CompareOpts, tuning: &Tuning, started: Instant, results: &mut Value) {
    let cfg = &opts.cfg;
    let rounds = cfg.pub_rounds.max(1);
    let secs = cfg.pub_secs / rounds as f64;
    let mut running = Vec::new();
    for spec in &opts.servers {
        if !spec.proto.http_publish() {
            eprintln!(
                "[{:>5.0}s] publish: {} skipped (its publishes have no answer)",
                started.elapsed().as_secs_f64(),
                spec.name
            );
            results["scenarios"]["publish"][&spec.name] = json!({
                "not_applicable": "MQTT QoS 0 publishes have no answer: no requests/s over HTTP"
            });
            continue;
        }
        match server::start(spec, "publish", &opts.workdir, tuning) {
            Ok(srv) => running.push((spec, srv, Vec::<Value>::new())),
            Err(e) => {
                eprintln!("  {}: cannot start: {e}", spec.name);
                results["scenarios"]["publish"][&spec.name] =
                    json!({"error": format!("start: {e}")});
            }
        }
    }
    let n = running.len();
    for round in 0..rounds {
        for k in 0..n {
            let (spec, srv, turns) = &mut running[(k + round) % n];
            eprintln!(
                "[{:>5.0}s] publish round {}/{rounds}, {} connections, {secs:.0} s: {}",
                started.elapsed().as_secs_f64(),
                round + 1,
                cfg.pub_conns,
                spec.name
            );
            let target = Target {
                proto: spec.proto,
                addr: srv.addr,
                pub_addr: srv.pub_addr,
                pid: Some(srv.pid),
                tls: None,
                ask: Ask::default(),
            };
            let v = scenarios::publish_throughput(&target, cfg, secs);
            eprintln!(
                "         {}",
                brief(&v, &["requests_per_sec", "rss_after_kib"])
            );
            turns.push(v);
        }
    }
    let rates: Vec<Vec<f64>> = running
        .iter()
        .map(|(_, _, turns)| {
            turns
                .iter()
                .map(|t| t["requests_per_sec"].as_f64().unwrap_or(0.0))
                .collect()
        })
        .collect();
    let nchan_rates = running
        .iter()
        .position(|(spec, _, _)| spec.name == "nchan")
        .map(|i| rates[i].clone());
    for (i, (spec, srv, turns)) in running.iter_mut().enumerate() {
        let crashed = !srv.alive();
        let status = srv.stop();
        let (log_counts, examples) = srv.log_summary();
        let ratios: Vec<f64> = match &nchan_rates {
            Some(base) => rates[i]
                .iter()
                .zip(base)
                .filter(|(_, b)| **b > 0.0)
                .map(|(a, b)| a / b)
                .collect(),
            None => Vec::new(),
        };
        // Each turn's per-second counts after its first second, joined.
        let per_second: Vec<f64> = turns
            .iter()
            .flat_map(|t| t["per_second"].as_array().cloned().unwrap_or_default())
            .filter(|s| s[0].as_f64().is_some_and(|t| t >= 1.0))
            .filter_map(|s| s[1].as_f64())
            .collect();
        let third = (per_second.len() / 3).max(1);
        let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
        let first = mean(&per_second[..third.min(per_second.len())]);
        let last = mean(&per_second[per_second.len().saturating_sub(third)..]);
        let sum_errors = |kind: &str| -> u64 {
            turns
                .iter()
                .filter_map(|t| t["publisher"][kind].as_object())
                .flat_map(|o| o.values().filter_map(Value::as_u64))
                .sum()
        };
        results["scenarios"]["publish"][&spec.name] = json!({
            "connections": cfg.pub_conns,
            "rounds": rounds,
            "secs_per_round": secs,
            "requests_per_sec": mean(&rates[i]),
            "requests_per_sec_by_round": rates[i],
            "ratio_to_nchan_by_round": ratios,
            "ratio_to_nchan_median": median(&ratios),
            "first_third_per_sec": first,
            "last_third_per_sec": last,
            "last_over_first": if first > 0.0 { last / first } else { 0.0 },
            "errors": sum_errors("status_errors") + sum_errors("io_errors"),
            "server_cpu_percent": mean(&turn_values(turns, &["server_cpu_percent"])),
            "generator_cpu_percent": mean(&turn_values(turns, &["publisher", "cpu_percent"])),
            "rss_after_kib": turns.last().map(|t| t["rss_after_kib"].clone()),
            "turns": turns,
            "server": {
                "crashed_during_run": crashed,
                "exit": status.map(|s| s.to_string()),
                "log_counts": log_counts.into_iter().map(|(k, v)| (k, json!(v))).collect::<serde_json::Map<_, _>>(),
                "log_examples": examples,
                "log": srv.log.display().to_string(),
            },
        });
        if crashed {
            eprintln!("  {}: SERVER EXITED DURING THE RUN", spec.name);
        }
    }
    save(&opts.out, results);
}

/// The `cluster` scenario against the first pubsubd of the run (its port
/// and CPU for the single node; nodes A and B and Redis beside it).
fn cluster_scenario(opts: &CompareOpts, started: Instant) -> Value {
    let Some(redis_server) = &opts.redis_server else {
        eprintln!("cluster skipped: no --redis-server");
        return json!({"error": "no --redis-server given"});
    };
    let Some((spec, bin)) = opts.servers.iter().find_map(|s| match &s.kind {
        Kind::Pubsubd { bin } => Some((s, bin)),
        _ => None,
    }) else {
        eprintln!("cluster skipped: no pubsubd among the servers");
        return json!({"error": "no pubsubd among the servers"});
    };
    let nchan = opts.servers.iter().find_map(|s| match &s.kind {
        Kind::Nchan { nginx, module } => Some(cluster::NchanBins {
            nginx,
            module,
            port: s.port,
        }),
        _ => None,
    });
    cluster::run(&cluster::ClusterOpts {
        nchan,
        bin,
        spec,
        redis_server,
        cfg: &opts.cfg,
        workdir: &opts.workdir,
        started,
    })
}

/// One number from each turn.
fn turn_values(turns: &[Value], path: &[&str]) -> Vec<f64> {
    turns
        .iter()
        .filter_map(|t| path.iter().fold(t, |v, k| &v[*k]).as_f64())
        .collect()
}

/// pubsubd's fan-out over plaintext and over TLS, back to back, at each
/// count of `cfg.tls_sweep`: the same configuration (TLS port open in
/// both), a fresh server for each, the same generator. pubsubd and
/// nginx+nchan (`listen ... ssl`, the same certificate) run it; the
/// other servers are skipped.
fn fanout_tls(opts: &CompareOpts, tuning: &Tuning, started: Instant, results: &mut Value) {
    let Some(files) = &opts.tls else {
        eprintln!("fanout-tls skipped: no certificates (--tls-ca, --tls-cert, --tls-key)");
        results["scenarios"]["fanout-tls"] =
            json!({"error": "no certificates given (--tls-ca, --tls-cert, --tls-key)"});
        return;
    };
    let client = match TargetTls::load(files.ca.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fanout-tls skipped: {e}");
            results["scenarios"]["fanout-tls"] = json!({ "error": e });
            return;
        }
    };
    let cfg = &opts.cfg;
    for &n in &cfg.tls_sweep {
        for spec in &opts.servers {
            if !matches!(spec.kind, Kind::Pubsubd { .. } | Kind::Nchan { .. }) {
                eprintln!(
                    "[{:>5.0}s] fan-out TLS {n} subscribers: {} skipped (no TLS set up)",
                    started.elapsed().as_secs_f64(),
                    spec.name
                );
                continue;
            }
            let tuning = Tuning {
                tls: Some(ServerTls {
                    port: spec.port + TLS_PORT_OFFSET,
                    cert: files.cert.clone(),
                    key: files.key.clone(),
                    record_layer: files.record_layer.clone(),
                }),
                ..tuning.clone()
            };
            for (transport, tls) in [("plain", None), ("tls", Some(&client))] {
                eprintln!(
                    "[{:>5.0}s] fan-out {n} subscribers over {transport}: {}",
                    started.elapsed().as_secs_f64(),
                    spec.name
                );
                let label = format!("fanout-{transport}{n}");
                let v = run_one_over(
                    spec,
                    &label,
                    &opts.workdir,
                    &tuning,
                    tls,
                    Ask::default(),
                    |t| scenarios::fanout(t, cfg, n),
                );
                eprintln!("         {}", fanout_brief(&v));
                results["scenarios"]["fanout-tls"][n.to_string()][transport][&spec.name] = v;
                save(&opts.out, results);
            }
        }
    }
}

/// TLS handshakes per second on the server's core, new sessions then
/// resumed ones (`cfg.max_secs` each), for pubsubd and nginx+nchan with
/// the same certificate on their TLS port; the other servers are skipped.
fn tls_handshakes(opts: &CompareOpts, tuning: &Tuning, started: Instant, results: &mut Value) {
    let Some(files) = &opts.tls else {
        eprintln!("tls-handshakes skipped: no certificates (--tls-ca, --tls-cert, --tls-key)");
        results["scenarios"]["tls-handshakes"] =
            json!({"error": "no certificates given (--tls-ca, --tls-cert, --tls-key)"});
        return;
    };
    for spec in &opts.servers {
        if !matches!(spec.kind, Kind::Pubsubd { .. } | Kind::Nchan { .. }) {
            eprintln!(
                "[{:>5.0}s] TLS handshakes: {} skipped (no TLS set up)",
                started.elapsed().as_secs_f64(),
                spec.name
            );
            continue;
        }
        eprintln!(
            "[{:>5.0}s] TLS handshakes, new then resumed, {:.0} s each: {}",
            started.elapsed().as_secs_f64(),
            opts.cfg.max_secs,
            spec.name
        );
        let tuning = Tuning {
            tls: Some(ServerTls {
                port: spec.port + TLS_PORT_OFFSET,
                cert: files.cert.clone(),
                key: files.key.clone(),
                record_layer: files.record_layer.clone(),
            }),
            ..tuning.clone()
        };
        let mut srv = match server::start(spec, "tls-handshakes", &opts.workdir, &tuning) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("  {}: cannot start: {e}", spec.name);
                results["scenarios"]["tls-handshakes"][&spec.name] =
                    json!({"error": format!("start: {e}")});
                continue;
            }
        };
        let mut v = match srv.tls_addr {
            Some(addr) => handshakes::run(addr, Some(srv.pid), opts.cfg.max_secs),
            None => json!({"error": "no TLS listener configured"}),
        };
        let crashed = !srv.alive();
        let status = srv.stop();
        let (log_counts, examples) = srv.log_summary();
        v["server"] = json!({
            "crashed_during_run": crashed,
            "exit": status.map(|s| s.to_string()),
            "log_counts": log_counts.into_iter().map(|(k, v)| (k, json!(v))).collect::<serde_json::Map<_, _>>(),
            "log_examples": examples,
            "log": srv.log.display().to_string(),
        });
        for phase in ["new", "resumed"] {
            eprintln!(
                "         {phase}: {}",
                brief(
                    &v[phase],
                    &[
                        "handshakes_per_sec",
                        "resumed",
                        "errors",
                        "server_cpu_percent",
                        "generator_cpu_percent",
                        "tls"
                    ]
                )
            );
        }
        results["scenarios"]["tls-handshakes"][&spec.name] = v;
        save(&opts.out, results);
    }
}

/// pubsubd's fan-out to subscribers of its chunked stream, then to
/// subscribers asking for Server-Sent Events (`Accept:
/// text/event-stream`), back to back at each count of `cfg.sse_sweep`: a
/// fresh server for each, the same configuration, publishers and
/// generator. Only the pubsubd built here runs it (the SSE framing is its
/// own; PyPubSub and the peers have no such stream on these URLs).
fn fanout_sse(opts: &CompareOpts, tuning: &Tuning, started: Instant, results: &mut Value) {
    let cfg = &opts.cfg;
    for &n in &cfg.sse_sweep {
        for spec in &opts.servers {
            if !matches!(spec.kind, Kind::Pubsubd { .. }) {
                eprintln!(
                    "[{:>5.0}s] fan-out SSE {n} subscribers: {} skipped (pubsubd's framing)",
                    started.elapsed().as_secs_f64(),
                    spec.name
                );
                continue;
            }
            for (framing, sse) in [("chunked", false), ("sse", true)] {
                eprintln!(
                    "[{:>5.0}s] fan-out {n} subscribers, {framing}: {}",
                    started.elapsed().as_secs_f64(),
                    spec.name
                );
                let label = format!("fanout-{framing}{n}");
                let ask = Ask {
                    sse,
                    ..Ask::default()
                };
                let v = run_one_over(spec, &label, &opts.workdir, tuning, None, ask, |t| {
                    scenarios::fanout(t, cfg, n)
                });
                eprintln!("         {}", fanout_brief(&v));
                results["scenarios"]["fanout-sse"][n.to_string()][framing][&spec.name] = v;
                save(&opts.out, results);
            }
        }
    }
}

/// One fan-out's figures on a line, for the progress log.
fn fanout_brief(v: &Value) -> String {
    format!(
        "fixed rate p50 {:.1} ms p99 {:.1} ms, lost {}; max {:.0} deliveries/s, lost {}, server cpu {:.0}%, generator cpu {:.0}%; rss per idle subscriber {:.0} B{}",
        v["fixed_rate"]["latency"]["p50_ms"].as_f64().unwrap_or(f64::NAN),
        v["fixed_rate"]["latency"]["p99_ms"].as_f64().unwrap_or(f64::NAN),
        v["fixed_rate"]["lost"],
        v["max_rate"]["deliveries_per_sec"].as_f64().unwrap_or(f64::NAN),
        v["max_rate"]["lost"],
        v["max_rate"]["server_cpu_percent"].as_f64().unwrap_or(f64::NAN),
        v["max_rate"]["generator_cpu_percent"].as_f64().unwrap_or(f64::NAN),
        v["rss_per_idle_subscriber_bytes"].as_f64().unwrap_or(f64::NAN),
        v["max_rate"]["publisher"]["tls"]
            .as_str()
            .map(|s| format!(", {s}"))
            .unwrap_or_default(),
    )
}

/// A scenario that runs pubsubd's fan-out two ways back to back, and the
/// keys of the two ways in `results.json`.
struct Pair {
    scenario: &'static str,
    /// The way compared against (plaintext, the chunked stream).
    base: &'static str,
    /// The way measured (TLS, SSE).
    other: &'static str,
    /// How the summary names them.
    base_label: &'static str,
    other_label: &'static str,
}

const TLS_PAIR: Pair = Pair {
    scenario: "fanout-tls",
    base: "plain",
    other: "tls",
    base_label: "plaintext",
    other_label: "TLS",
};

const SSE_PAIR: Pair = Pair {
    scenario: "fanout-sse",
    base: "chunked",
    other: "sse",
    base_label: "chunked",
    other_label: "SSE",
};

impl Pair {
    /// Other ÷ base for one figure at `n` subscribers.
    fn ratio(&self, sc: &Value, n: &str, server: &str, field: &[&str]) -> Option<f64> {
        let (base, other) = (
            self.value(sc, n, self.base, server, field)?,
            self.value(sc, n, self.other, server, field)?,
        );
        (base != 0.0).then(|| other / base)
    }

    fn value(&self, sc: &Value, n: &str, way: &str, server: &str, field: &[&str]) -> Option<f64> {
        field
            .iter()
            .fold(&sc[self.scenario][n][way][server], |x, k| &x[*k])
            .as_f64()
    }

    /// The subscriber counts the run has, ascending.
    fn sweep(&self, sc: &Value) -> Vec<usize> {
        let mut ns: Vec<usize> = sc[self.scenario]
            .as_object()
            .map(|o| o.keys().filter_map(|k| k.parse().ok()).collect())
            .unwrap_or_default();
        ns.sort();
        ns
    }
}

fn brief(v: &Value, keys: &[&str]) -> String {
    if let Some(e) = v.get("error") {
        return format!("error: {e}");
    }
    keys.iter()
        .map(|k| match v[*k].as_f64() {
            Some(x) => format!("{k} {x:.1}"),
            None => format!("{k} {}", v[*k]),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn write_csv(out: &Path, results: &Value, servers: &[Spec]) {
    let mut csv = String::from(
        "server,subscribers,live,rate_latency_p50_ms,rate_latency_p99_ms,rate_latency_max_ms,rate_lost,max_deliveries_per_sec,max_latency_p50_ms,max_latency_p99_ms,max_lost,max_server_cpu_pct,max_generator_cpu_pct\n",
    );
    if let Some(sweep) = results["scenarios"]["fanout"].as_object() {
        let mut ns: Vec<(usize, &Value)> = sweep
            .iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
            .collect();
        ns.sort_by_key(|x| x.0);
        for (n, per) in ns {
            for s in servers {
                let v = &per[&s.name];
                let f = |p: &[&str]| {
                    let mut x = v;
                    for k in p {
                        x = &x[*k];
                    }
                    x.as_f64().map(|x| format!("{x:.3}")).unwrap_or_default()
                };
                let _ = writeln!(
                    csv,
                    "{},{n},{},{},{},{},{},{},{},{},{},{},{}",
                    s.name,
                    f(&["live"]),
                    f(&["fixed_rate", "latency", "p50_ms"]),
                    f(&["fixed_rate", "latency", "p99_ms"]),
                    f(&["fixed_rate", "latency", "max_ms"]),
                    f(&["fixed_rate", "lost"]),
                    f(&["max_rate", "deliveries_per_sec"]),
                    f(&["max_rate", "latency", "p50_ms"]),
                    f(&["max_rate", "latency", "p99_ms"]),
                    f(&["max_rate", "lost"]),
                    f(&["max_rate", "server_cpu_percent"]),
                    f(&["max_rate", "generator_cpu_percent"]),
                );
            }
        }
    }
    let _ = fs::write(out.join("sweep.csv"), csv);
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn fmt(x: Option<f64>, digits: usize) -> String {
    match x {
        Some(x) if x.is_finite() => {
            if x.abs() >= 10_000.0 {
                format!("{:.0}k", x / 1000.0)
            } else {
                format!("{x:.digits$}")
            }
        }
        _ => "—".into(),
    }
}

/// A target against one peer: (peer's name, ours, theirs).
type PeerCheck = Box<dyn Fn(&str, f64, f64) -> bool>;

/// Whether pubsubd's value meets a target.
enum Check {
    /// On its own.
    Abs(Box<dyn Fn(f64) -> bool>),
    /// Against every peer that has a value: (peer's name, ours, theirs).
    Peers(PeerCheck),
}

fn abs(f: impl Fn(f64) -> bool + 'static) -> Option<Check> {
    Some(Check::Abs(Box::new(f)))
}

fn peers(f: impl Fn(&str, f64, f64) -> bool + 'static) -> Option<Check> {
    Some(Check::Peers(Box::new(f)))
}

/// One row of the summary: a figure per server, the ratios and the target.
struct Row {
    figure: String,
    values: Vec<Option<f64>>,
    digits: usize,
    /// The target as text and as a check of pubsubd's value.
    target: String,
    check: Option<Check>,
    /// A scenario whose result may say a server does not apply ("n/a").
    scenario: Option<&'static str>,
}

/// One figure for every server of the run, in column order.
type PerServer<'a> = dyn Fn(&dyn Fn(&str) -> Option<f64>) -> Vec<Option<f64>> + 'a;

/// The figures per server over TLS at `n` subscribers (`fanout-tls`),
/// with issue 15's targets against nginx+nchan over TLS.
fn tls_rows(rows: &mut Vec<Row>, sc: &Value, n: &str, per: &PerServer) {
    let tls = |s: &str, field: &[&str]| TLS_PAIR.value(sc, n, TLS_PAIR.other, s, field);
    rows.push(Row {
        figure: format!("TLS fan-out: deliveries/s, {n} subscribers, publish flat out"),
        values: per(&|s| tls(s, &["max_rate", "deliveries_per_sec"])),
        digits: 0,
        target: "≥ 2× nchan".into(),
        check: peers(|peer, ours, theirs| peer != "nchan" || ours >= 2.0 * theirs),
        scenario: None,
    });
    rows.push(Row {
        figure: format!("  … TLS: deliveries per server CPU-second, {n} subscribers"),
        values: per(&|s| tls(s, &["max_rate", "deliveries_per_server_cpu_s"])),
        digits: 0,
        target: "".into(),
        check: None,
        scenario: None,
    });
    rows.push(Row {
        figure: format!("  … TLS: generator CPU %, {n} subscribers, flat out"),
        values: per(&|s| tls(s, &["max_rate", "generator_cpu_percent"])),
        digits: 0,
        target: "".into(),
        check: None,
        scenario: None,
    });
    rows.push(Row {
        figure: format!("  … TLS: server RSS per idle subscriber (bytes), {n} subscribers"),
        values: per(&|s| tls(s, &["rss_per_idle_subscriber_bytes"])),
        digits: 0,
        target: "≤ ¼ of nchan".into(),
        check: peers(|peer, ours, theirs| peer != "nchan" || ours * 4.0 <= theirs),
        scenario: None,
    });
}

/// `tls-handshakes`: completed handshakes per second, new and resumed.
fn handshake_rows(rows: &mut Vec<Row>, sc: &Value, per: &PerServer) {
    if !sc["tls-handshakes"].is_object() {
        return;
    }
    for phase in ["new", "resumed"] {
        let hs = |s: &str, k: &str| sc["tls-handshakes"][s][phase][k].as_f64();
        rows.push(Row {
            figure: format!("TLS handshakes/s, {phase} sessions, flat out"),
            values: per(&|s| hs(s, "handshakes_per_sec")),
            digits: 0,
            target: "report".into(),
            check: None,
            scenario: None,
        });
        rows.push(Row {
            figure: format!("  … {phase}: handshakes per server CPU-second"),
            values: per(&|s| hs(s, "handshakes_per_server_cpu_s")),
            digits: 0,
            target: "".into(),
            check: None,
            scenario: None,
        });
        rows.push(Row {
            figure: format!("  … {phase}: server CPU %"),
            values: per(&|s| hs(s, "server_cpu_percent")),
            digits: 0,
            target: "".into(),
            check: None,
            scenario: None,
        });
    }
}

/// The summary table of a run (`results.json`), one column per server.
pub fn summary(results: &Value, names: &[String]) -> String {
    let sc = &results["scenarios"];
    let val = |scenario: &[&str], server: &str, field: &[&str]| -> Option<f64> {
        let mut x = sc;
        for k in scenario {
            x = &x[*k];
        }
        x = &x[server];
        for k in field {
            x = &x[*k];
        }
        num(x)
    };
    let mut sweep: Vec<usize> = sc["fanout"]
        .as_object()
        .map(|o| o.keys().filter_map(|k| k.parse().ok()).collect())
        .unwrap_or_default();
    sweep.sort();
    let big = sweep
        .iter()
        .copied()
        .filter(|&n| n <= 10_000)
        .max()
        .or(sweep.last().copied());
    let mid = if sweep.contains(&1000) {
        Some(1000)
    } else {
        sweep.first().copied()
    };
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut rows: Vec<Row> = Vec::new();
    let per = |f: &dyn Fn(&str) -> Option<f64>| names.iter().map(|n| f(n)).collect::<Vec<_>>();
    for n in [big, mid]
        .into_iter()
        .flatten()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .rev()
    {
        let ns = n.to_string();
        rows.push(Row {
            figure: format!("fan-out deliveries/s, {n} subscribers, publish flat out"),
            values: per(&|s| val(&["fanout", &ns], s, &["max_rate", "deliveries_per_sec"])),
            digits: 0,
            target: "≥ 2× every peer".into(),
            check: peers(|_, p, c| p >= 2.0 * c),
            scenario: None,
        });
    }
    let lat_rate = results["config"]
        .as_str()
        .and_then(|c| c.split("lat_rate: ").nth(1))
        .and_then(|c| c.split(',').next())
        .unwrap_or("?");
    if let Some(n) = big {
        let ns = n.to_string();
        rows.push(Row {
            figure: format!("delivery latency p99 (ms), {n} subscribers at {lat_rate} events/s"),
            values: per(&|s| val(&["fanout", &ns], s, &["fixed_rate", "latency", "p99_ms"])),
            digits: 1,
            target: "≤ every peer (≤ ½ nchan)".into(),
            check: peers(|name, p, c| p <= if name == "nchan" { 0.5 * c } else { c }),
            scenario: None,
        });
    }
    let idle_n = sc["idle"]
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(|v| v["subscribers"].as_u64());
    if let Some(n) = idle_n {
        rows.push(Row {
            figure: format!("server RSS per idle subscriber (bytes), {n} idle"),
            values: per(&|s| val(&["idle"], s, &["rss_per_subscriber_bytes"])),
            digits: 0,
            target: "≤ 1024 and ≤ every peer".into(),
            check: peers(|_, p, c| p <= 1024.0 && p <= c),
            scenario: None,
        });
        rows.push(Row {
            figure: format!(
                "server CPU % holding {n} idle subscribers (a keep-alive every 5 s, but nchan: none)"
            ),
            values: per(&|s| val(&["idle"], s, &["server_cpu_percent"])),
            digits: 2,
            target: "≤ 3 %".into(),
            check: abs(|p| p <= 3.0),
            scenario: None,
        });
    }
    if sc["publish"].is_object() {
        rows.push(Row {
            figure: "publish requests/s, 32 keep-alive connections".into(),
            values: per(&|s| val(&["publish"], s, &["requests_per_sec"])),
            digits: 0,
            target: "≥ 1.5× nchan".into(),
            check: peers(|name, p, c| name != "nchan" || p >= 1.5 * c),
            scenario: Some("publish"),
        });
        rows.push(Row {
            figure: "  … median of the per-round ratios to nchan (rounds interleaved)".into(),
            values: per(&|s| val(&["publish"], s, &["ratio_to_nchan_median"])),
            digits: 2,
            target: "≥ 1.5".into(),
            check: abs(|p| p >= 1.5),
            scenario: Some("publish"),
        });
        rows.push(Row {
            figure: "  … last third ÷ first third of the run (flat = 1.0)".into(),
            values: per(&|s| val(&["publish"], s, &["last_over_first"])),
            digits: 2,
            target: "flat (≥ 0.9)".into(),
            check: abs(|p| p >= 0.9),
            scenario: Some("publish"),
        });
        rows.push(Row {
            figure: "  … server CPU % (mean of the turns)".into(),
            values: per(&|s| val(&["publish"], s, &["server_cpu_percent"])),
            digits: 0,
            target: "".into(),
            check: None,
            scenario: Some("publish"),
        });
        rows.push(Row {
            figure: "  … generator CPU % (its one core; near 100 = it is the limit)".into(),
            values: per(&|s| val(&["publish"], s, &["generator_cpu_percent"])),
            digits: 0,
            target: "".into(),
            check: None,
            scenario: Some("publish"),
        });
        rows.push(Row {
            figure: "  … publish errors (non-2xx + I/O)".into(),
            values: per(&|s| val(&["publish"], s, &["errors"])),
            digits: 0,
            target: "0".into(),
            check: abs(|p| p == 0.0),
            scenario: Some("publish"),
        });
    }
    if sc["slow"].is_object() {
        rows.push(Row {
            figure: "slow consumers: healthy p99 (ms), no stall".into(),
            values: per(&|s| val(&["slow"], s, &["no_stall", "latency", "p99_ms"])),
            digits: 1,
            target: "".into(),
            check: None,
            scenario: None,
        });
        rows.push(Row {
            figure: "slow consumers: healthy p99 (ms), with stalled".into(),
            values: per(&|s| val(&["slow"], s, &["with_stall", "latency", "p99_ms"])),
            digits: 1,
            target: "≤ 2× no-stall".into(),
            check: None,
            scenario: None,
        });
        rows.push(Row {
            figure: "  … with-stall p99 ÷ no-stall p99".into(),
            values: per(&|s| val(&["slow"], s, &["healthy_p99_ratio"])),
            digits: 2,
            target: "≤ 2".into(),
            check: abs(|p| p <= 2.0),
            scenario: None,
        });
        rows.push(Row {
            figure: "  … server RSS growth, last third of the stall (KiB/s)".into(),
            values: per(&|s| val(&["slow"], s, &["rss_growth_kib_per_s_late"])),
            digits: 1,
            target: "bounded (≈ 0)".into(),
            check: abs(|p| p <= 10.0),
            scenario: None,
        });
        rows.push(Row {
            figure: "  … server RSS: peak during stall − before (KiB)".into(),
            values: per(&|s| {
                Some(
                    val(&["slow"], s, &["rss_peak_during_stall_kib"])?
                        - val(&["slow"], s, &["rss_no_stall_end_kib"])?,
                )
            }),
            digits: 0,
            target: "".into(),
            check: None,
            scenario: None,
        });
    }
    let tls_sweep = TLS_PAIR.sweep(sc);
    let sse_sweep = SSE_PAIR.sweep(sc);
    for (pair, sweep) in [(&TLS_PAIR, &tls_sweep), (&SSE_PAIR, &sse_sweep)] {
        // issue 14: SSE costs at most a tenth of the chunked stream's rate,
        // and no memory per idle subscriber; TLS has no target.
        let sse = pair.scenario == SSE_PAIR.scenario;
        let (other, base) = (pair.other_label, pair.base_label);
        for &n in sweep.iter().rev() {
            let ns = n.to_string();
            if !sse {
                tls_rows(&mut rows, sc, &ns, &per);
            }
            rows.push(Row {
                figure: format!(
                    "{other} fan-out ÷ {base}: deliveries/s, {n} subscribers, publish flat out"
                ),
                values: per(&|s| pair.ratio(sc, &ns, s, &["max_rate", "deliveries_per_sec"])),
                digits: 2,
                target: if sse { "≥ 0.9".into() } else { "".into() },
                check: if sse { abs(|p| p >= 0.9) } else { None },
                scenario: None,
            });
            rows.push(Row {
                figure: format!(
                    "  … {other} ÷ {base}: deliveries per server CPU-second, {n} subscribers, flat out"
                ),
                values: per(&|s| {
                    pair.ratio(sc, &ns, s, &["max_rate", "deliveries_per_server_cpu_s"])
                }),
                digits: 2,
                target: if sse {
                    "≥ 0.9 (the fair figure when the server is starved)".into()
                } else {
                    "".into()
                },
                check: if sse { abs(|p| p >= 0.9) } else { None },
                scenario: None,
            });
            rows.push(Row {
                figure: format!(
                    "  … {other} ÷ {base}: latency p99, {n} subscribers at {lat_rate} events/s"
                ),
                values: per(&|s| pair.ratio(sc, &ns, s, &["fixed_rate", "latency", "p99_ms"])),
                digits: 2,
                target: "".into(),
                check: None,
                scenario: None,
            });
            rows.push(Row {
                figure: format!(
                    "  … {other} ÷ {base}: server RSS per idle subscriber, {n} subscribers"
                ),
                values: per(&|s| pair.ratio(sc, &ns, s, &["rss_per_idle_subscriber_bytes"])),
                digits: 2,
                target: if sse {
                    "the same (≤ 1.1)".into()
                } else {
                    "".into()
                },
                check: if sse { abs(|p| p <= 1.1) } else { None },
                scenario: None,
            });
        }
    }
    handshake_rows(&mut rows, sc, &per);
    let ours_idx = names.iter().position(|s| *s == "pubsubd");
    let peer_idx: Vec<usize> = (0..names.len()).filter(|&i| Some(i) != ours_idx).collect();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Mode: {}; machine: {}",
        results["mode"].as_str().unwrap_or("?"),
        results["machine"]["summary"].as_str().unwrap_or("?")
    );
    let _ = writeln!(md);
    let mut head = String::from("| figure |");
    let mut rule = String::from("|---|");
    for n in &names {
        let _ = write!(head, " {n} |");
        rule.push_str("---|");
    }
    for &i in &peer_idx {
        let _ = write!(head, " pubsubd ÷ {} |", names[i]);
        rule.push_str("---|");
    }
    head.push_str(" target | met |");
    rule.push_str("---|---|");
    let _ = writeln!(md, "{head}\n{rule}");
    for r in &rows {
        let _ = write!(md, "| {} |", r.figure);
        let na = |i: usize| {
            r.scenario
                .is_some_and(|scn| sc[scn][names[i]]["not_applicable"].is_string())
        };
        for (i, v) in r.values.iter().enumerate() {
            let cell = if na(i) {
                "n/a".into()
            } else {
                fmt(*v, r.digits)
            };
            let _ = write!(md, " {cell} |");
        }
        let ours = ours_idx.and_then(|i| r.values[i]);
        for &i in &peer_idx {
            let ratio = match (ours, r.values[i]) {
                _ if na(i) => "n/a".into(),
                (Some(a), Some(b)) if b != 0.0 => format!("{:.2}×", a / b),
                _ => "—".into(),
            };
            let _ = write!(md, " {ratio} |");
        }
        let met = match (&r.check, ours) {
            (Some(Check::Abs(c)), Some(p)) => Some(c(p)),
            (Some(Check::Peers(c)), Some(p)) => {
                let theirs: Vec<(&str, f64)> = peer_idx
                    .iter()
                    .filter_map(|&i| Some((names[i], r.values[i]?)))
                    .collect();
                (!theirs.is_empty()).then(|| theirs.iter().all(|(n, v)| c(n, p, *v)))
            }
            _ => None,
        };
        let met = match met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        let _ = writeln!(md, " {} | {met} |", r.target);
    }
    let suite = tls_sweep
        .iter()
        .flat_map(|n| names.iter().map(move |s| (n, s)))
        .filter_map(|(n, s)| {
            let suite = sc["fanout-tls"][n.to_string()]["tls"][*s]["max_rate"]["publisher"]["tls"]
                .as_str()?;
            Some(format!("{s}: {suite}"))
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join("; ");
    pair_table(
        &mut md,
        sc,
        &TLS_PAIR,
        &tls_sweep,
        &names,
        lat_rate,
        &format!(
            "TLS fan-out against plaintext ({suite}): the same server configuration \
             (TLS port open in both), a fresh server for each, run back to back. \
             Subscribers and publishers use the same transport."
        ),
    );
    pair_table(
        &mut md,
        sc,
        &SSE_PAIR,
        &sse_sweep,
        &names,
        lat_rate,
        "SSE fan-out against the chunked stream: the same server configuration, \
         a fresh server for each, run back to back; the subscribers of the second \
         send `Accept: text/event-stream`, the publishers are the same.",
    );
    transports::table(&mut md, sc);
    cluster::table(&mut md, &sc["cluster"]);
    // Misbehaviour seen.
    let mut notes = Vec::new();
    let mut walk = |path: String, v: &Value| {
        for s in &names {
            let x = &v[*s];
            if x.is_null() {
                continue;
            }
            if x["server"]["crashed_during_run"] == json!(true) {
                notes.push(format!("{s} {path}: server process exited during the run"));
            }
            if let Some(e) = x.get("error") {
                notes.push(format!("{s} {path}: {e}"));
            }
            for phase in ["fixed_rate", "max_rate", "no_stall", "with_stall"] {
                let p = &x[phase];
                if let Some(l) = p["lost"].as_u64() {
                    if l > 0 {
                        notes.push(format!(
                            "{s} {path} {phase}: {l} deliveries lost of {}",
                            p["expected_deliveries"]
                        ));
                    }
                }
                if let Some(c) = p["subscribers_closed_by_server"].as_u64() {
                    if c > 0 {
                        notes.push(format!(
                            "{s} {path} {phase}: {c} healthy subscribers closed by the server"
                        ));
                    }
                }
                if let Some(l) = p["publisher"]["late"].as_u64() {
                    if l > 0 {
                        notes.push(format!(
                            "{s} {path} {phase}: the server answered too slowly to keep the rate; {l} scheduled events skipped (overloaded)"
                        ));
                    }
                }
                if let Some(e) = p["publisher"]["status_errors"].as_object() {
                    if !e.is_empty() {
                        notes.push(format!("{s} {path} {phase}: publish errors {}", json!(e)));
                    }
                }
            }
            if let Some(f) = x["failed"].as_u64() {
                if f > 0 {
                    notes.push(format!(
                        "{s} {path}: {f} subscriptions failed to open: {}",
                        x["setup_errors"]
                    ));
                }
            }
            if let Some(e) = x["publisher"]["status_errors"].as_object() {
                if !e.is_empty() {
                    notes.push(format!(
                        "{s} {path}: publish errors {} (first: {})",
                        json!(e),
                        x["publisher"]["first_error_response"]
                            .as_str()
                            .unwrap_or("")
                            .replace('\n', " ")
                            .replace('\r', "")
                    ));
                }
            }
            if let Some(e) = x["publisher"]["io_errors"].as_object() {
                if !e.is_empty() {
                    notes.push(format!("{s} {path}: publisher I/O errors {}", json!(e)));
                }
            }
            if let Some(c) = x["server"]["log_counts"].as_object() {
                for (k, n) in c {
                    if k != "warning" || !path.contains("slow") {
                        notes.push(format!("{s} {path}: server log: {n} × {k}"));
                    }
                }
            }
            if let Some(g) = x["max_rate"]["generator_cpu_percent"].as_f64() {
                if g > 90.0 {
                    notes.push(format!(
                        "{s} {path}: generator CPU {g:.0}% — the generator may be the bottleneck"
                    ));
                }
            }
        }
    };
    for key in ["idle", "publish", "slow"] {
        if sc[key].is_object() {
            walk(key.to_string(), &sc[key]);
        }
    }
    for n in &sweep {
        walk(format!("fanout {n}"), &sc["fanout"][n.to_string()]);
    }
    for (pair, sweep) in [(&TLS_PAIR, &tls_sweep), (&SSE_PAIR, &sse_sweep)] {
        for n in sweep {
            for way in [pair.base, pair.other] {
                walk(
                    format!("{} {n} {way}", pair.scenario),
                    &sc[pair.scenario][n.to_string()][way],
                );
            }
        }
    }
    if let Some(e) = sc["fanout-tls"]["error"].as_str() {
        notes.push(format!("fanout-tls not run: {e}"));
    }
    if !notes.is_empty() {
        let _ = writeln!(md, "\nObserved during the run:\n");
        for n in notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    md
}

/// A pair scenario's figures side by side: the two ways and the ratio.
fn pair_table(
    md: &mut String,
    sc: &Value,
    pair: &Pair,
    sweep: &[usize],
    names: &[&str],
    rate: &str,
    intro: &str,
) {
    let ran: Vec<&str> = names
        .iter()
        .copied()
        .filter(|s| {
            sweep
                .iter()
                .any(|n| sc[pair.scenario][n.to_string()][pair.other][*s].is_object())
        })
        .collect();
    if ran.is_empty() {
        return;
    }
    let (a, b) = (pair.base_label, pair.other_label);
    let _ = writeln!(md, "\n{intro} Server: {}.\n", ran.join(", "));
    let _ = writeln!(
        md,
        "| server | subscribers | deliveries/s {a} | deliveries/s {b} | {b} ÷ {a} | \
         p50 / p99 (ms) at {rate} ev/s, {a} | p50 / p99 (ms), {b} | \
         server RSS per idle subscriber (bytes), {a} / {b} | \
         server CPU % flat out, {a} / {b} | \
         deliveries per server CPU-second, {a} / {b} | its kernel share, {a} / {b} | \
         generator CPU %, {a} / {b} | \
         connect all (s), {a} / {b} | lost, {a} / {b} |"
    );
    let _ = writeln!(
        md,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for s in &ran {
        for n in sweep {
            let ns = n.to_string();
            let v = |way: &str, f: &[&str]| pair.value(sc, &ns, way, s, f);
            let both = |f: &[&str], d: usize| {
                format!("{} / {}", fmt(v(pair.base, f), d), fmt(v(pair.other, f), d))
            };
            let lat = |way: &str| {
                format!(
                    "{} / {}",
                    fmt(v(way, &["fixed_rate", "latency", "p50_ms"]), 1),
                    fmt(v(way, &["fixed_rate", "latency", "p99_ms"]), 1)
                )
            };
            let lost = |way: &str| {
                let l = |phase: &str| v(way, &[phase, "lost"]).unwrap_or(0.0);
                l("fixed_rate") + l("max_rate")
            };
            let _ = writeln!(
                md,
                "| {s} | {n} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
                fmt(v(pair.base, &["max_rate", "deliveries_per_sec"]), 0),
                fmt(v(pair.other, &["max_rate", "deliveries_per_sec"]), 0),
                pair.ratio(sc, &ns, s, &["max_rate", "deliveries_per_sec"])
                    .map(|r| format!("{r:.2}×"))
                    .unwrap_or_else(|| "—".into()),
                lat(pair.base),
                lat(pair.other),
                both(&["rss_per_idle_subscriber_bytes"], 0),
                both(&["max_rate", "server_cpu_percent"], 0),
                both(&["max_rate", "deliveries_per_server_cpu_s"], 0),
                both(&["max_rate", "server_kernel_share"], 2),
                both(&["max_rate", "generator_cpu_percent"], 0),
                both(&["setup_s"], 1),
                lost(pair.base),
                lost(pair.other),
            );
        }
    }
}
