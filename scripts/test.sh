#!/usr/bin/env bash
# Runs every check and test: the UI's type check, unit tests and build; rustfmt; clippy with
# warnings as errors; every Rust test in the workspace (unit, end-to-end across real peers
# on loopback, the CLI as a user runs it, the relay path, the desktop shell's tests); and the
# Windows build with the engine's unit tests under Wine (scripts/windows.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# Absolute, so the test binaries (which run in their crate's folder) and the cargo they start
# for the desktop app find the same target folder as this script.
CARGO_TARGET_DIR="$(./scripts/target-dir.sh)"
export CARGO_TARGET_DIR
# Test homes keep their data key in a file, never in the developer's OS keychain.
export FERRY_KEYCHAIN=off

echo "== ui: typecheck, unit tests, build"
(cd ui && npm run --silent typecheck && npm test --silent && npm run build --silent)

echo "== rustfmt"
cargo fmt --all -- --check

echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== build the ferry binary for the end-to-end tests (its own feature set)"
cargo build --locked -p ferry-cli --bin ferry
export FERRY_BIN="$CARGO_TARGET_DIR/debug/ferry"

echo "== tests"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# --no-fail-fast: every test binary runs, so one failure never hides the others.
status=0
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log" || status=$?
# The Windows build and the engine's unit tests on Windows APIs (under Wine); its test
# results count in the closing line.
./scripts/windows.sh 2>&1 | tee -a "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary). A test binary that
# died before printing its result (a crash, an abort) counts as one failure: cargo names it in
# "error: test failed, to rerun pass ..." without a "test result: FAILED" line of its own.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i }
                       if ($3 == "FAILED.") reported++ }
     /^error: test failed, to rerun pass/ { failed_targets++ }
     END { if (failed_targets > reported) f += failed_targets - reported
           printf "all tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
