#!/usr/bin/env bash
# Samples one server's CPU (kernel included, `perf record -e cpu-clock`;
# no hardware counters are needed) during the flat-out phase of a fan-out,
# so pubsubd and a peer can be compared function by function.
#
#   bench/profile-peer.sh pubsubd|mosquitto [SUBSCRIBERS]   (default 1000)
#
# The server is pinned to CPU 0 and the generator to CPU 1; both are ended
# by PID. Output: bench/results/profile-peer-<server>-<N>-<date>/hotspots.txt
# (raw perf.data stays in a /tmp directory named at the end). Hold
# /work/bench.lock (flock) while it runs, like run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
server="${1:?pubsubd or mosquitto}"
subs="${2:-1000}"
cargo build --release -q -p pubsubd -p pubsubd-bench
load="$CARGO_TARGET_DIR/release/pubsub-load"
ulimit -n "$(ulimit -Hn)"
raw=$(mktemp -d /tmp/pubsub-peer-profile.XXXXXX)
out="bench/results/profile-peer-$server-$subs-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"

case "$server" in
  pubsubd)
    port=18169 target=pubsubd
    printf 'server:\n  bind: 127.0.0.1\n  port: %s\n  max_queued_bytes: 67108864\nclients:\n  payloaders: [127.0.0.0/8]\n' "$port" >"$raw/conf"
    taskset -c 0 "$CARGO_TARGET_DIR/release/pubsubd" --config "$raw/conf" >"$raw/server.log" 2>&1 &
    ;;
  mosquitto)
    port=18100 target=mqtt
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_connections -1\nlog_dest stderr\nlog_type error\nlog_type warning\n' "$port" >"$raw/conf"
    taskset -c 0 mosquitto -c "$raw/conf" >"$raw/server.log" 2>&1 &
    ;;
  *) echo "unknown server '$server'" >&2; exit 2 ;;
esac
server_pid=$!
gen_pid=""
cleanup() {
  for p in $gen_pid $server_pid; do
    if kill -0 "$p" 2>/dev/null; then kill "$p" 2>/dev/null || true; fi
  done
}
trap cleanup EXIT
sleep 1

# Fixed-rate phase 3 s, then 8 s flat out; perf samples 5 s of the latter.
taskset -c 1 "$load" run --target "$target" --addr "127.0.0.1:$port" --pid "$server_pid" \
  --scenario fanout --subs "$subs" --lat-secs 3 --max-secs 8 >"$raw/run.json" &
gen_pid=$!
# Set-up and the fixed-rate phase (with its drain) take 5-8 s.
sleep "$(( subs >= 10000 ? 10 : 7 ))"
perf record -q -e cpu-clock -g -p "$server_pid" -o "$raw/perf.data" -- sleep 5 2>/dev/null
wait "$gen_pid" || true
gen_pid=""
{
  echo "# $server, fan-out to $subs subscribers, flat out; perf cpu-clock, 5 s"
  grep -E '"deliveries_per_sec"|"server_cpu_percent"|"server_kernel_share"' "$raw/run.json" | tail -3
  echo
  echo "## by binary (kernel vs user space)"
  perf report -i "$raw/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep -v '^#' | grep . | sed -n '1,8p'
  echo
  echo "## by symbol"
  perf report -i "$raw/perf.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null | grep -v '^#' | grep . | sed -n '1,30p'
} >"$out/hotspots.txt"
cat "$out/hotspots.txt"
echo "raw data: $raw" >&2
