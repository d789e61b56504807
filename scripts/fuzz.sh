#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/, the checks in ferry_proto::fuzzing) for SECONDS
# each (default 60) with cargo-fuzz on the nightly toolchain, starting from the committed seeds
# (fuzz/seeds/), and prints one line per target: executions, corpus size, crashes.
#
# A crash leaves its input in fuzz/artifacts/<target>/. Copy it into fuzz/regressions/<target>/
# and fix the bug: the stable test suite replays that folder (ferry-proto's fuzz_regressions).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: needs the nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
targets=$(ls fuzz/fuzz_targets | sed 's/\.rs$//')
# Its own target folder: sanitizer builds never mix with the stable ones.
export CARGO_TARGET_DIR="$PWD/fuzz/target"
cargo +nightly fuzz build -O 2>&1 | tail -1
printf '%-12s %12s %8s %8s\n' target executions corpus crashes
status=0
for t in $targets; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  cp -n fuzz/seeds/"$t"/* "fuzz/corpus/$t/" 2>/dev/null || true
  log="fuzz/artifacts/$t/last-run.log"
  crashes=0
  cargo +nightly fuzz run -O "$t" "fuzz/corpus/$t" -- -max_total_time="$secs" \
    -rss_limit_mb=4096 -max_len=70000 >"$log" 2>&1 || crashes=1
  runs=$(grep -oE 'Done [0-9]+ runs' "$log" | awk '{print $2}' | tail -1)
  [ -n "$runs" ] || runs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
  [ "$crashes" -eq 0 ] || status=1
  printf '%-12s %12s %8s %8s\n' "$t" "${runs:-?}" "$(ls "fuzz/corpus/$t" | wc -l)" "$crashes"
done
exit "$status"
