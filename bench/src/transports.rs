//! The `fanout-ws` and `fanout-gzip` scenarios of `compare`, and their
//! part of the summary: pubsubd's fan-out over its chunked stream against
//! the same fan-out to WebSocket subscribers (and nchan's to its
//! `nchan_subscriber websocket` ones), and to gzip subscribers; a fresh
//! server for each run, the same publishers and generator, back to back.
//!
//! Results go to `scenarios[SCENARIO][N][WAY][SERVER]`, WAY being
//! `chunked`, `websocket` or `gzip`.

use std::fmt::Write as _;
use std::time::Instant;

use serde_json::Value;

use crate::proto::Ask;
use crate::runner::{run_one_over, CompareOpts};
use crate::scenarios;
use crate::server::{Kind, Tuning};

/// The ways each scenario runs, and what the subscribers ask for.
fn ways(scenario: &str) -> [(&'static str, Ask); 2] {
    let base = ("chunked", Ask::default());
    if scenario == "fanout-gzip" {
        let gzip = Ask {
            gzip: true,
            ..Ask::default()
        };
        [base, ("gzip", gzip)]
    } else {
        let ws = Ask {
            websocket: true,
            ..Ask::default()
        };
        [base, ("websocket", ws)]
    }
}

pub fn fanout(
    opts: &CompareOpts,
    scenario: &str,
    tuning: &Tuning,
    started: Instant,
    results: &mut Value,
) {
    let cfg = &opts.cfg;
    let sweep = if scenario == "fanout-gzip" {
        &cfg.gzip_sweep
    } else {
        &cfg.ws_sweep
    };
    for &n in sweep {
        for spec in &opts.servers {
            let pubsubd = matches!(spec.kind, Kind::Pubsubd { .. });
            // nchan serves WebSocket subscribers; gzip is pubsubd's alone.
            let nchan_ws = matches!(spec.kind, Kind::Nchan { .. }) && scenario == "fanout-ws";
            if !pubsubd && !nchan_ws {
                continue;
            }
            for (way, ask) in ways(scenario) {
                if !pubsubd && way != "websocket" {
                    continue;
                }
                eprintln!(
                    "[{:>5.0}s] fan-out {n} subscribers, {way}: {}",
                    started.elapsed().as_secs_f64(),
                    spec.name
                );
                let label = format!("{scenario}-{way}{n}");
                let v = run_one_over(spec, &label, &opts.workdir, tuning, None, ask, |t| {
                    scenarios::fanout(t, cfg, n)
                });
                eprintln!(
                    "         max {:.0} deliveries/s, {:.0} per server CPU-s, lost {}; {:.0} B per idle subscriber; {:.1} B on the wire per delivery",
                    v["max_rate"]["deliveries_per_sec"].as_f64().unwrap_or(f64::NAN),
                    v["max_rate"]["deliveries_per_server_cpu_s"].as_f64().unwrap_or(f64::NAN),
                    v["max_rate"]["lost"],
                    v["rss_per_idle_subscriber_bytes"].as_f64().unwrap_or(f64::NAN),
                    wire_per_delivery(&v).unwrap_or(f64::NAN),
                );
                results["scenarios"][scenario][n.to_string()][way][&spec.name] = v;
            }
        }
    }
}

/// Bytes the subscribers read per event delivered (flat-out phase).
fn wire_per_delivery(v: &Value) -> Option<f64> {
    let m = &v["max_rate"];
    let (bytes, n) = (m["bytes"].as_f64()?, m["deliveries"].as_f64()?);
    (n > 0.0).then(|| bytes / n)
}

fn get(
    sc: &Value,
    scenario: &str,
    n: &str,
    way: &str,
    server: &str,
    field: &[&str],
) -> Option<f64> {
    field
        .iter()
        .fold(&sc[scenario][n][way][server], |x, k| &x[*k])
        .as_f64()
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    }
}

fn num(x: Option<f64>) -> String {
    x.map_or("–".into(), |x| format!("{x:.0}"))
}

/// One figure of a run: (way, server) → value.
type Figure<'a> = Box<dyn Fn(&str, &str) -> Option<f64> + 'a>;

/// The summary's section for both scenarios (nothing if neither ran).
pub fn table(md: &mut String, sc: &Value) {
    for scenario in ["fanout-ws", "fanout-gzip"] {
        let Some(runs) = sc[scenario].as_object() else {
            continue;
        };
        let mut ns: Vec<usize> = runs.keys().filter_map(|k| k.parse().ok()).collect();
        ns.sort();
        let other = if scenario == "fanout-ws" {
            "websocket"
        } else {
            "gzip"
        };
        let _ = writeln!(md);
        let _ = writeln!(
            md,
            "### {scenario}: pubsubd chunked against {other}{}",
            if scenario == "fanout-ws" {
                " (and nchan's WebSocket)"
            } else {
                ""
            }
        );
        let _ = writeln!(md);
        let _ = writeln!(
            md,
            "| subscribers | figure | pubsubd chunked | pubsubd {other} | {other} ÷ chunked |{}",
            if scenario == "fanout-ws" {
                " nchan websocket | pubsubd ÷ nchan |"
            } else {
                ""
            }
        );
        let _ = writeln!(
            md,
            "|---|---|---|---|---|{}",
            if scenario == "fanout-ws" {
                "---|---|"
            } else {
                ""
            }
        );
        for n in ns {
            let ns = n.to_string();
            let figures: [(&str, Figure); 5] = [
                (
                    "deliveries/s flat out",
                    Box::new(|w, s| {
                        get(sc, scenario, &ns, w, s, &["max_rate", "deliveries_per_sec"])
                    }),
                ),
                (
                    "deliveries per server CPU-second",
                    Box::new(|w, s| {
                        get(
                            sc,
                            scenario,
                            &ns,
                            w,
                            s,
                            &["max_rate", "deliveries_per_server_cpu_s"],
                        )
                    }),
                ),
                (
                    "server RSS per idle subscriber (B)",
                    Box::new(|w, s| {
                        get(sc, scenario, &ns, w, s, &["rss_per_idle_subscriber_bytes"])
                    }),
                ),
                (
                    "latency p99 at the fixed rate (ms, ×1000)",
                    Box::new(|w, s| {
                        get(
                            sc,
                            scenario,
                            &ns,
                            w,
                            s,
                            &["fixed_rate", "latency", "p99_ms"],
                        )
                        .map(|x| x * 1000.0)
                    }),
                ),
                (
                    "bytes on the wire per delivery",
                    Box::new(|w, s| wire_per_delivery(&sc[scenario][&ns][w][s])),
                ),
            ];
            for (figure, f) in &figures {
                let (base, ours) = (f("chunked", "pubsubd"), f(other, "pubsubd"));
                let _ = write!(
                    md,
                    "| {n} | {figure} | {} | {} | {} |",
                    num(base),
                    num(ours),
                    ratio(ours, base)
                );
                if scenario == "fanout-ws" {
                    let nchan = f("websocket", "nchan");
                    let _ = write!(md, " {} | {} |", num(nchan), ratio(ours, nchan));
                }
                let _ = writeln!(md);
            }
        }
    }
}
