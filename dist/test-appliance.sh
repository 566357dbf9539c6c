#!/usr/bin/env bash
# The appliance build's targets (README, "Appliance build"): the plaintext
# core (no optional feature), appliance profile, linked statically against
# musl, must be <= 1 MiB stripped and <= 1.5 MiB RSS after start, and must
# answer HEAD / with 204. Needs rustup's x86_64-unknown-linux-musl target; if
# rustup cannot add it, prints a skip line and succeeds.
# Prints one closing line: "appliance: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
source tests/common/harness.sh
passed=0 failed=0
ok() { echo "appliance: ok: $1"; passed=$((passed + 1)); }
bad() { echo "appliance: FAILED: $1" >&2; failed=$((failed + 1)); }
finish() { echo "appliance: $passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit $?; }

target=x86_64-unknown-linux-musl
if ! rustup target list --installed 2>/dev/null | grep -qx "$target" &&
  ! rustup target add "$target" >/dev/null 2>&1; then
  echo "appliance: skipped (rustup could not add the $target target)"
  exit 0
fi
if ! cargo build -q -p pubsubd --profile appliance --no-default-features --target "$target"; then
  bad "cargo build --profile appliance --no-default-features --target $target"
  finish
fi
bin="$(readlink -f "${CARGO_TARGET_DIR:-target}/$target/appliance/pubsubd")"

size=$(stat -c %s "$bin")
[ "$size" -le $((1024 * 1024)) ] && ok "stripped size $size bytes <= 1 MiB" ||
  bad "stripped size $size bytes > 1 MiB"

dir=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
printf 'server:\n  bind: 127.0.0.1\n  port: 0\n' >"$dir/pypubsub.yaml"
(cd "$dir" && exec "$bin" --config pypubsub.yaml --ready-file ready.json) >"$dir/log" 2>&1 &
pid=$!
addr=
if wait_ready "$dir/ready.json" "$pid"; then
  addr=$(ready_addr "$dir/ready.json" plain)
fi
if [ -z "$addr" ]; then
  bad "the appliance build did not start: $(tail -n 5 "$dir/log")"
  finish
fi
code=$(curl -s -o /dev/null -w '%{http_code}' -I --max-time 5 "http://$addr/")
[ "$code" = 204 ] && ok "HEAD / -> 204" || bad "HEAD / -> $code"
rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
[ "$rss" -le 1536 ] && ok "RSS after start $rss KiB <= 1536 KiB" ||
  bad "RSS after start $rss KiB > 1536 KiB"
finish
