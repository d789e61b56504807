#!/usr/bin/env bash
# Prints cargo's target folder as an absolute path, wherever it is: `target/` in the
# workspace, or a CARGO_TARGET_DIR (absolute or relative) or build.target-dir from config.
# Scripts source nothing else for it, so a relative path never leaks into a test's cwd.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --no-deps --offline \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
