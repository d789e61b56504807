#!/usr/bin/env bash
# Runs every check and test: the UI's type check, unit tests and build; rustfmt; clippy with
# warnings as errors; and every Rust test in the workspace (unit, end-to-end across real peers
# on loopback, the CLI as a user runs it, the relay path, the desktop shell's tests).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== ui: typecheck, unit tests, build"
(cd ui && npm run --silent typecheck && npm test --silent && npm run build --silent)

echo "== rustfmt"
cargo fmt --all -- --check

echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== build the ferry binary for the end-to-end tests (its own feature set)"
cargo build --locked -p ferry-cli --bin ferry
export FERRY_BIN="${CARGO_TARGET_DIR:-target}/debug/ferry"

echo "== tests"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "all tests: %d passed, %d failed\n", p, f }' "$log"
