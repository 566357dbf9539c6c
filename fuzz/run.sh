#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 20) each, one at a time, from
# the seed corpus in fuzz/corpus/<target>/; what libFuzzer finds new goes to
# a scratch directory, so the repo's seeds stay small. Crashes land in
# fuzz/artifacts/<target>/ and fail the run. Needs `cargo +nightly fuzz`.
# (`fuzz run` builds each target itself; the build time is not counted.)
#   fuzz/run.sh [SECONDS] [TARGET...]
set -uo pipefail
cd "$(dirname "$0")"
secs="${1:-20}"
shift || true
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: skipped (needs the nightly toolchain and cargo-fuzz: cargo install cargo-fuzz)"
  exit 0
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=0
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  out="$scratch/$t.log"
  if cargo +nightly fuzz run "$t" "$scratch/$t" "corpus/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 >"$out" 2>&1; then
    runs=$(awk '/stat::number_of_executed_units/ {print $2}' "$out")
    cov=$(grep -o 'cov: [0-9]*' "$out" | tail -1)
    echo "fuzz: $t ok, ${runs:-?} execs in ${secs}s, ${cov:-cov: ?}"
  else
    failed=1
    echo "fuzz: $t FAILED (artifacts in fuzz/artifacts/$t):"
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$out" | head -5
  fi
done
exit "$failed"
