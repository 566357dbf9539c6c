#!/usr/bin/env bash
# Runs the pubsubd benchmark suite: pubsubd against nginx+nchan, mosquitto
# (MQTT) and Pushpin (and any other server given with --server
# NAME:PROTOCOL:PORT:COMMAND), side by side in one run, and prints the
# figures with pubsubd's ratio to each peer.
#
#   bench/run.sh            the full comparison (about 25 minutes with the four servers)
#   bench/run.sh --quick    a few minutes, smaller counts
#   bench/run.sh --quick --scenarios fanout --sweep 100,1000
#   bench/run.sh --quick --scenarios fanout-tls,tls-handshakes   plaintext vs TLS, handshakes/s
#   bench/run.sh --quick --scenarios fanout-sse   pubsubd chunked vs SSE
#   bench/run.sh --quick --servers pubsubd,mosquitto   only these servers
#   bench/run.sh --quick --scenarios cluster   two nodes + Redis vs one node
#
# Servers run pinned to CPU 0 (taskset -c 0), the load generator to CPU 1.
# Results go to bench/results/<date>-<mode>/ (results.json, sweep.csv,
# summary.md); the plot to bench/fanout.png (full runs) or
# bench/results/<run>/fanout.png.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/common/harness.sh
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
export DEBIAN_FRONTEND=noninteractive

mode=full
args=()
for a in "$@"; do
  case "$a" in
    --quick) mode=quick; args+=("$a") ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) args+=("$a") ;;
  esac
done

# 1. Release binaries (one cargo invocation).
cargo build --release -q -p pubsubd -p pubsubd-bench
pubsubd="$CARGO_TARGET_DIR/release/pubsubd"
load="$CARGO_TARGET_DIR/release/pubsub-load"

# 2. nginx + nchan from Debian, if missing. The package may start a system
#    nginx on port 80: stop it (by its service or its PID file only).
if ! command -v nginx >/dev/null 2>&1 || ! dpkg -s libnginx-mod-nchan >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq nginx libnginx-mod-nchan >/dev/null
  service nginx stop >/dev/null 2>&1 || true
  if [ -s /run/nginx.pid ]; then kill "$(cat /run/nginx.pid)" 2>/dev/null || true; fi
fi
nginx_bin=$(command -v nginx)
module=$(dpkg -L libnginx-mod-nchan | grep 'ngx_nchan_module\.so$' | head -n1)

# 2b. mosquitto and Pushpin (with condure and zurl) from Debian, if
#     missing. Their packages may start system services (mosquitto on
#     1883, Pushpin on 7999): stop them by service or PID file only.
if ! command -v mosquitto >/dev/null 2>&1 || ! command -v pushpin >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq mosquitto pushpin >/dev/null
  for svc in mosquitto pushpin zurl; do service "$svc" stop >/dev/null 2>&1 || true; done
  for pidf in /run/mosquitto/mosquitto.pid /run/pushpin/pushpin.pid; do
    if [ -s "$pidf" ]; then kill "$(cat "$pidf")" 2>/dev/null || true; fi
  done
fi
mosquitto_bin=$(command -v mosquitto)
pushpin_bin=$(command -v pushpin)

# 3. The machine the figures come from.
cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
mem_total=$(free -h | awk '/^Mem:/ {print $2}')
machine="$(nproc) CPUs ($cpu_model), $mem_total RAM, Linux $(uname -r), nginx $($nginx_bin -v 2>&1 | sed 's/.*nginx\///'), nchan $(dpkg-query -W -f='${Version}' libnginx-mod-nchan), mosquitto $(dpkg-query -W -f='${Version}' mosquitto), pushpin $(dpkg-query -W -f='${Version}' pushpin) (condure $(dpkg-query -W -f='${Version}' condure), zurl $(dpkg-query -W -f='${Version}' zurl))"
# redis-server (Debian's) for the cluster scenario, if installed; the
# scenario starts its own on the pubsubd port + 4, and is skipped without it.
redis_args=()
if command -v redis-server >/dev/null 2>&1; then
  redis_args=(--redis-server "$(command -v redis-server)")
  machine="$machine, $(redis-server --version | cut -d' ' -f1-3)"
fi
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain -- src 2>/dev/null)" ]; then rev="$rev+dirty"; fi
machine="$machine, pubsubd $rev"
echo "machine: $machine" >&2
if [ "$(nproc)" -lt 2 ]; then
  echo "warning: fewer than 2 CPUs; server and generator will share one" >&2
fi

# 4. Open files: everything this container allows (the hard limit).
ulimit -n "$(ulimit -Hn)"

stamp=$(date +%Y%m%d-%H%M%S)
out="bench/results/$stamp-$mode"
mkdir -p "$out"
work=$(mktemp -d /tmp/pubsub-bench.XXXXXX)
echo "results: $out   server logs: $work" >&2

# 5. A throw-away CA and server certificate for fanout-tls (ECDSA P-256,
#    PKCS#8 keys, for localhost and 127.0.0.1; tests/common/harness.sh).
tls_args=()
if make_test_pki "$work/tls"; then
  tls="$work/tls"
  tls_args=(--tls-ca "$tls/ca.pem" --tls-cert "$tls/cert.pem" --tls-key "$tls/key.pem")
else
  echo "warning: no openssl; the fanout-tls scenario will be skipped" >&2
fi

taskset -c 1 "$load" compare "${args[@]}" "${tls_args[@]}" \
  --out "$out" --workdir "$work" \
  --pubsubd "$pubsubd" \
  --nginx "$nginx_bin" --nchan-module "$module" \
  --mosquitto "$mosquitto_bin" --pushpin "$pushpin_bin" \
  --server-cpu 0 "${redis_args[@]}" \
  --machine "$machine"
cp "$out/summary.md" "bench/results/latest-$mode.md"

# 6. The plot (matplotlib in the project's virtualenv), when the run has
#    the fan-out sweep it plots.
if [ "$(wc -l <"$out/sweep.csv")" -le 1 ]; then exit 0; fi
py="$root/.venv/bin/python"
if [ ! -x "$py" ]; then python3 -m venv "$root/.venv"; fi
if ! "$py" -c 'import matplotlib' 2>/dev/null; then
  "$py" -m pip install -q --disable-pip-version-check matplotlib || true
fi
png="$out/fanout.png"
if "$py" bench/plot.py "$out/results.json" "$png"; then
  if [ "$mode" = full ]; then cp "$png" bench/fanout.png; fi
  echo "plot: $png" >&2
fi
