#!/usr/bin/env bash
# Instructions per publish and per delivery, counted by callgrind: a
# regression guard that is repeatable on a shared machine, where timings
# are not (issue 15). The workloads and the arithmetic are in
# bench/instructions.py; this builds the release server, checks for
# valgrind and makes a throw-away certificate for the TLS workloads
# (make_test_pki, tests/common/harness.sh; skipped without openssl).
#
#   bench/instructions.sh                      print the figures
#   bench/instructions.sh --check FILE         exit 1 if either is >10 % above FILE's
#   bench/instructions.sh --record FILE        write the figures to FILE
#   PUBSUBD_BIN=path bench/instructions.sh     measure another binary (an
#                                              older commit's), no build
# Further options are passed to bench/instructions.py (see --help): the
# sizes, and --keep DIR to keep each callgrind.out for callgrind_annotate.
# 5-30 s on the busy 2-core machine of bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/common/harness.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

if ! command -v valgrind >/dev/null 2>&1; then
  echo "instructions: skipped (valgrind is not installed)"
  exit 0
fi

bin="${PUBSUBD_BIN:-}"
commit=""
if [ -z "$bin" ]; then
  cargo build --release -q -p pubsubd --bin pubsubd
  bin="$CARGO_TARGET_DIR/release/pubsubd"
  commit="$(git rev-parse --short HEAD 2>/dev/null || true)"
  if [ -n "$commit" ] && ! git diff --quiet HEAD 2>/dev/null; then
    commit="$commit (with uncommitted changes)"
  fi
fi

pki=$(mktemp -d)
trap 'rm -rf "$pki"' EXIT
tls=()
if make_test_pki "$pki"; then
  tls=(--tls-ca "$pki/ca.pem" --tls-cert "$pki/cert.pem" --tls-key "$pki/key.pem")
fi

status=0
python3 bench/instructions.py --bin "$bin" --commit "$commit" "${tls[@]}" "$@" || status=$?
case "$status" in
  0) echo "instructions: ok" ;;
  1) echo "instructions: FAILED" ;;
  *) echo "instructions: FAILED (the run did not complete)" ;;
esac
exit "$status"
