#!/usr/bin/env bash
# A soak: the release server with backlog persistence on, driven for
# MINUTES (default 10) by bench/src/bin/soak.rs — a numbered publisher,
# healthy subscribers coming and going (resuming by cursor), slow readers,
# churn, hostile clients (garbage, slowloris, half-closed sockets, oversize
# bodies, forged TLS records), SIGHUP and SIGUSR2 every few seconds; with
# the openssl command, a TLS port too, and half the healthy, slow and
# churning subscribers on it. Checks and prints: RSS and
# open fds flat (last third / first third), no event lost or doubled for
# any healthy subscriber, no panic or ERROR in the server log, and that the
# server still answers at the end. Exits non-zero on any failure.
#
#   bench/soak.sh [MINUTES]      (fractions work: bench/soak.sh 1 is .ci's)
set -uo pipefail
cd "$(dirname "$0")/.."
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
# A self-signed leaf (CA:FALSE: rustls refuses a CA as an end entity).
cat >"$dir/cert.cnf" <<CNF
[req]
distinguished_name = dn
x509_extensions = leaf
prompt = no
[dn]
CN = localhost
[leaf]
basicConstraints = critical, CA:FALSE
subjectAltName = DNS:localhost
CNF
if command -v openssl >/dev/null 2>&1 &&
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" -days 2 \
    -config "$dir/cert.cnf" >/dev/null 2>&1; then
  tls_line="  tls: {port: 0, cert: $dir/cert.pem, key: $dir/key.pem}"
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
RUST_LOG=info "$bin/pubsubd" --config "$dir/pypubsub.yaml" --acl "$dir/pypubsub_acl.yaml" \
  >"$log" 2>&1 &
pid=$!
# The address after "$1" in the server's log, waited for up to 10 s.
logged_addr() {
  local found=
  for _ in $(seq 100); do
    found=$(grep -o "$1 [0-9.:]*" "$log" | head -1 | awk '{print $NF}')
    [ -n "$found" ] && break
    sleep 0.1
  done
  echo "$found"
}
addr=$(logged_addr 'listening on')
if [ -z "$addr" ]; then
  echo "soak: the server did not start"; cat "$log"; exit 1
fi
tls_args=()
if [ -n "$tls_line" ]; then
  tls_addr=$(logged_addr 'listening for TLS on')
  if [ -z "$tls_addr" ]; then
    echo "soak: the TLS listener did not start"; cat "$log"; exit 1
  fi
  tls_args=("$tls_addr" "$dir/cert.pem")
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
