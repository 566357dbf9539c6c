#!/usr/bin/env bash
# A soak: the release server with backlog persistence on, driven for
# MINUTES (default 10) by bench/src/bin/soak.rs — a numbered publisher,
# healthy subscribers coming and going (resuming by cursor), slow readers,
# churn, hostile clients (garbage, slowloris, half-closed sockets, oversize
# bodies, forged TLS records), SIGHUP and SIGUSR2 every few seconds; with
# the openssl command, a TLS port too (a throw-away CA and certificate from
# tests/common/harness.sh), and half the healthy, slow and churning
# subscribers on it. The server's addresses come from its ready file.
# Checks and prints: RSS and open fds flat (last third / first third), no
# event lost or doubled for any healthy subscriber, no panic or ERROR in
# the server log, and that the server still answers at the end. Exits
# non-zero on any failure.
#
#   bench/soak.sh [MINUTES]      (fractions work: bench/soak.sh 1 is .ci's)
set -uo pipefail
cd "$(dirname "$0")/.."
source tests/common/harness.sh
minutes="${1:-10}"
secs=$(awk -v m="$minutes" 'BEGIN { s = int(m * 60); print (s < 10 ? 10 : s) }')
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

cargo build --release -q -p pubsubd --bin pubsubd && \
  cargo build --release -q -p pubsubd-bench --bin soak || exit 1
bin="$CARGO_TARGET_DIR/release"

dir="$(mktemp -d)"
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  fi
  rm -rf "$dir"
}
trap cleanup EXIT

tls_line=
if make_test_pki "$dir/pki"; then
  tls_line="  tls: {port: 0, cert: $dir/pki/cert.pem, key: $dir/pki/key.pem}"
else
  echo "soak: no TLS port (the openssl command is missing)"
fi
cat >"$dir/pypubsub.yaml" <<YAML
server:
  bind: 127.0.0.1
  port: 0
  max_payload_size: 102400
  backlog: {size: 1000, max_age: 0, storage: $dir/backlog.json}
$tls_line
clients:
  payloaders: [127.0.0.1/32]
  secure_topics: [deploy]
YAML
cat >"$dir/pypubsub_acl.yaml" <<YAML
alice:
  password: s3cret
  acl: {soak: [soak]}
  topics: [deploy]
YAML

log="$dir/server.log"
ready="$dir/ready.json"
RUST_LOG=info "$bin/pubsubd" --config "$dir/pypubsub.yaml" --acl "$dir/pypubsub_acl.yaml" \
  --ready-file "$ready" >"$log" 2>&1 &
pid=$!
if ! wait_ready "$ready" "$pid"; then
  echo "soak: the server did not start"; cat "$log"; exit 1
fi
addr=$(ready_addr "$ready" plain)
tls_args=()
if [ -n "$tls_line" ]; then
  tls_addr=$(ready_addr "$ready" tls)
  if [ -z "$tls_addr" ]; then
    echo "soak: the TLS listener did not start"; cat "$ready" "$log"; exit 1
  fi
  tls_args=("$tls_addr" "$dir/pki/ca.pem")
fi
echo "soak: pubsubd $pid on $addr${tls_addr:+ and TLS on $tls_addr} for ${secs}s (log $log)"

status=0
"$bin/soak" "$addr" "$pid" "$secs" "${tls_args[@]}" || status=1

# The process answers at the end.
if curl -sS -m 5 -o /dev/null -w '%{http_code}' -I "http://$addr/" | grep -q 204; then
  echo "soak: the server still answers (HEAD / -> 204)"
else
  echo "soak: FAIL the server does not answer at the end"; status=1
fi
bad=$(grep -cE 'panicked|ERROR' "$log")
if [ "$bad" -gt 0 ]; then
  echo "soak: FAIL $bad panic/ERROR lines in the log:"; grep -E 'panicked|ERROR' "$log" | head -5
  status=1
else
  echo "soak: no panic or ERROR in the server log ($(wc -l <"$log") lines)"
fi
[ "$status" = 0 ] && echo "soak: ok" || echo "soak: FAILED"
exit "$status"
