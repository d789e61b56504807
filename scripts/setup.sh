#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks to build and test Ferry: the WebKitGTK/GTK
# libraries for the desktop shell, Xvfb, WebKitWebDriver + tauri-driver and a D-Bus session
# for the desktop end-to-end test, gnome-keyring to stand for an OS keychain in the at-rest
# tests, Debian's second Rust toolchain with its library source, MinGW and Wine for the
# Windows check (scripts/windows.sh), and the UI's npm packages.
# Needs root (or sudo) for apt; skips apt when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(pkg-config libwebkit2gtk-4.1-dev libgtk-3-dev libayatana-appindicator3-dev librsvg2-dev xvfb
      webkit2gtk-driver dbus-daemon gnome-keyring)
# The Windows check: only where apt has Debian's rustc-web (Debian 12 and later); elsewhere
# scripts/windows.sh says it skipped.
if apt-cache show rustc-web >/dev/null 2>&1 || dpkg -s rustc-web >/dev/null 2>&1; then
  pkgs+=(rustc-web cargo-web rust-web-clippy rust-web-src gcc-mingw-w64-x86-64 wine64)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "setup: Rust is missing: install it with rustup (https://rustup.rs) and run this again" >&2
  exit 1
fi

# Drives the real app over WebDriver in tests/tests/desktop.rs.
if ! command -v tauri-driver >/dev/null && [ ! -x "$HOME/.cargo/bin/tauri-driver" ]; then
  echo "setup: installing tauri-driver"
  cargo install tauri-driver --locked --version '^2' --quiet
fi

(cd ui && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent)
echo "setup: done"
