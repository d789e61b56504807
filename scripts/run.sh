#!/usr/bin/env bash
# Sets up what a fresh Debian/Ubuntu machine lacks (scripts/setup.sh), then starts Ferry: the
# desktop app when there is a display, otherwise `ferry demo` (two real nodes on loopback that
# pair, chat and swap read receipts in the terminal).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  exec cargo run --release -p ferry-app
else
  echo "run: no display here; running the terminal demo instead of the desktop app"
  exec cargo run --release -p ferry-cli -- demo
fi
