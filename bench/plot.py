#!/usr/bin/env python3
"""Plots a `pubsub-load compare` run: delivery latency and deliveries/s
against the number of subscribers, one line per server.

    python bench/plot.py bench/results/<run>/results.json bench/fanout.png
"""
import json
import sys
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"pubsubd": "tab:blue", "nchan": "tab:orange", "mosquitto": "tab:green", "pushpin": "tab:red"}


def main(src, dst):
    with open(src) as f:
        r = json.load(f)
    sweep = r["scenarios"].get("fanout", {})
    ns = sorted(int(n) for n in sweep)
    if not ns:
        sys.exit("plot: no fan-out sweep in this run; no plot")
    servers = [s["name"] for s in r["servers"]]
    fig, (lat, thr) = plt.subplots(1, 2, figsize=(12, 4.8))
    rate = None
    for s in servers:
        color = COLORS.get(s)
        pts = [(n, sweep[str(n)].get(s, {})) for n in ns]
        fixed = [(n, v["fixed_rate"]) for n, v in pts if "latency" in v.get("fixed_rate", {})]
        if fixed:
            rate = fixed[0][1].get("rate", rate)
            xs = [n for n, _ in fixed]
            lat.plot(xs, [v["latency"]["p99_ms"] for _, v in fixed], "o-", color=color, label=f"{s} p99")
            lat.plot(xs, [v["latency"]["p50_ms"] for _, v in fixed], "s--", color=color, alpha=0.6, label=f"{s} p50")
        mx = [(n, v["max_rate"]) for n, v in pts if "deliveries_per_sec" in v.get("max_rate", {})]
        if mx:
            thr.plot([n for n, _ in mx], [v["deliveries_per_sec"] / 1000 for _, v in mx], "o-", color=color, label=s)
    lat.set_xscale("log")
    lat.set_yscale("log")
    lat.set_xlabel("subscribers")
    lat.set_ylabel("delivery latency (ms, publish → receipt)")
    lat.set_title(f"Latency at {rate or '?'} events/s")
    lat.grid(True, which="both", alpha=0.3)
    lat.legend()
    thr.set_xscale("log")
    thr.set_xlabel("subscribers")
    thr.set_ylabel("deliveries per second (thousands)")
    thr.set_title("Fan-out, publishing as fast as the server answers")
    thr.set_ylim(bottom=0)
    thr.grid(True, which="both", alpha=0.3)
    thr.legend()
    machine = "\n".join(textwrap.wrap(r.get("machine", {}).get("summary", ""), 150))
    fig.suptitle(f"pubsubd vs {', '.join(x for x in servers if x != 'pubsubd')}, one core each, 200-byte events ({r.get('mode')} run)\n{machine}", fontsize=9)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
