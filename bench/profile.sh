#!/usr/bin/env bash
# Profiles pubsubd under load and prints its hotspots.
#
#   bench/profile.sh [SUBSCRIBERS]          fan-out (default 1000 subscribers)
#   bench/profile.sh publish                32 publishers, nobody subscribed
#
# - If hardware counters work (`perf stat -e instructions true`), `perf
#   record -g` samples the server during a fan-out run.
# - Otherwise (virtual machines without a PMU), the server runs under
#   `valgrind --tool=callgrind` for a short run: user-space instructions
#   by function. That cannot see the kernel, so when software-clock
#   sampling works (`perf record -e cpu-clock`), a second run samples the
#   whole CPU, kernel included, for the user/kernel split.
# The server is pinned to CPU 0 and the generator to CPU 1; both are ended
# by PID. Output: bench/results/profile-<date>/hotspots.txt; raw data
# (callgrind.out, perf.data) in a /tmp directory named at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
scenario=fanout
subs="${1:-1000}"
if [ "$subs" = publish ]; then scenario=publish; subs=0; fi
port=18169

cargo build --release -q -p pubsubd -p pubsubd-bench
pubsubd="$CARGO_TARGET_DIR/release/pubsubd"
load="$CARGO_TARGET_DIR/release/pubsub-load"
ulimit -n "$(ulimit -Hn)"

out="bench/results/profile-$scenario-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
raw=$(mktemp -d /tmp/pubsub-profile.XXXXXX) # big raw data stays out of the repo
conf="$raw/pypubsub.yaml"
printf 'server:\n  bind: 127.0.0.1\n  port: %s\n  max_queued_bytes: 67108864\nclients:\n  payloaders: [127.0.0.0/8]\n' "$port" >"$conf"
report="$out/hotspots.txt"
: >"$report"

server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "server did not listen on port $port" >&2
  return 1
}

stop_server() {
  kill -TERM "$server_pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

generate() { # seconds of flat-out publishing, label
  if [ "$scenario" = publish ]; then
    taskset -c 1 "$load" run --target pubsubd --addr "127.0.0.1:$port" --pid "$server_pid" \
      --scenario publish --pub-secs "$1" >"$raw/load-$2.json"
  else
    taskset -c 1 "$load" run --target pubsubd --addr "127.0.0.1:$port" --pid "$server_pid" \
      --scenario fanout --subs "$subs" --lat-secs 2 --max-secs "$1" >"$raw/load-$2.json"
  fi
  python3 - "$raw/load-$2.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
if "max_rate" in r:
    m = r["max_rate"]
    print(f"  generator: {m['deliveries_per_sec']:.0f} deliveries/s, lost {m['lost']}, server CPU {m['server_cpu_percent']:.0f}% (kernel share {m.get('server_kernel_share', 0):.0%})")
else:
    print(f"  generator: {r['requests_per_sec']:.0f} publish requests/s, server CPU {r['server_cpu_percent']:.0f}% (kernel share {r.get('server_kernel_share', 0):.0%})")
PY
}

hw=no
if perf stat -e instructions true 2>&1 | grep -q 'instructions' &&
  ! perf stat -e instructions true 2>&1 | grep -q 'not supported'; then
  hw=yes
fi

if [ "$hw" = yes ]; then
  echo "== perf record (hardware cycles), $scenario, $subs subscribers" | tee -a "$report"
  taskset -c 0 "$pubsubd" --config "$conf" 2>"$raw/server.log" &
  server_pid=$!
  wait_port
  perf record -g -o "$raw/perf.data" -p "$server_pid" -- sleep 14 2>/dev/null &
  perf_pid=$!
  generate 10 perf | tee -a "$report"
  wait "$perf_pid" || true
  stop_server
  perf report -i "$raw/perf.data" --stdio --no-children --sort symbol --percent-limit 1 \
    >"$raw/perf-symbols.txt" 2>/dev/null || true
  grep -v '^$' "$raw/perf-symbols.txt" | head -n 60 | tee -a "$report" || true
  exit 0
fi

echo "== callgrind (hardware counters unavailable here), $scenario, $subs subscribers" | tee -a "$report"
taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$raw/callgrind.out" \
  "$pubsubd" --config "$conf" 2>"$raw/server.log" &
server_pid=$!
wait_port
generate 10 callgrind | tee -a "$report"
stop_server
callgrind_annotate --auto=no --inclusive=no "$raw/callgrind.out" >"$raw/callgrind-self.txt" 2>/dev/null || true
callgrind_annotate --auto=no --inclusive=yes "$raw/callgrind.out" >"$raw/callgrind-inclusive.txt" 2>/dev/null || true
# callgrind_annotate splits a function by the files inlined into it; add
# those lines back up per function.
python3 - "$raw/callgrind-self.txt" "$raw/callgrind-inclusive.txt" <<'PY' | tee -a "$report"
import re, sys
line_re = re.compile(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$")
for path, title, limit in ((sys.argv[1], "self cost (instructions) by function", 25),
                           (sys.argv[2], "inclusive cost by function", 25)):
    total, per = 0, {}
    for line in open(path, errors="replace"):
        m = line_re.match(line)
        if not m:
            continue
        n = int(m.group(1).replace(",", ""))
        what = m.group(2)
        if "PROGRAM TOTALS" in what:
            total = n
            continue
        fn = what.split(":", 1)[1] if ":" in what else what
        fn = re.sub(r" \[.*\]$", "", fn).strip()
        fn = re.sub(r"\s*\([\d,]+x\)$", "", fn).strip()
        if title.startswith("inclusive"):
            per[fn] = max(per.get(fn, 0), n)
        else:
            per[fn] = per.get(fn, 0) + n
    print(f"-- callgrind {title} (total {total:,} Ir)")
    for fn, n in sorted(per.items(), key=lambda kv: -kv[1])[:limit]:
        print(f"{100.0 * n / max(total, 1):6.2f}%  {fn[:150]}")
    print()
PY

if perf record -e cpu-clock -o /dev/null true >/dev/null 2>&1; then
  echo | tee -a "$report"
  echo "== perf record -e cpu-clock (software timer, kernel included), $scenario, $subs subscribers" | tee -a "$report"
  taskset -c 0 "$pubsubd" --config "$conf" 2>"$raw/server-perf.log" &
  server_pid=$!
  wait_port
  perf record -e cpu-clock -g -o "$raw/perf.data" -p "$server_pid" -- sleep 14 2>/dev/null &
  perf_pid=$!
  generate 10 perf | tee -a "$report"
  wait "$perf_pid" || true
  stop_server
  echo "-- by symbol (self time)" | tee -a "$report"
  perf report -i "$raw/perf.data" --stdio --no-children --sort symbol --percent-limit 0.7 -g none \
    >"$raw/perf-symbols.txt" 2>/dev/null || true
  grep -v '^#' "$raw/perf-symbols.txt" | grep -v '^$' | head -n 45 | tee -a "$report" || true
  echo "-- user vs kernel" | tee -a "$report"
  perf report -i "$raw/perf.data" --stdio --no-children --sort dso -g none \
    >"$raw/perf-dso.txt" 2>/dev/null || true
  grep -v '^#' "$raw/perf-dso.txt" | grep -v '^$' | head -n 8 | tee -a "$report" || true
fi
echo "profile written to $report (raw data in $raw)" >&2
