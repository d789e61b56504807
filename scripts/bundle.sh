#!/usr/bin/env bash
# Builds the installers with the Tauri CLI: `scripts/bundle.sh` makes the .deb on Linux (the
# AppImage needs linuxdeploy from the internet); pass other targets as arguments on their
# platforms, e.g. `scripts/bundle.sh msi` or `scripts/bundle.sh dmg`.
#
# The root tauri.conf.json is the one config. The CLI wants it in the crate folder with paths
# relative to that folder, so this writes a generated copy to src-tauri/tauri.conf.json
# (paths rewritten, version from the workspace), runs the CLI, and deletes the copy.
set -euo pipefail
cd "$(dirname "$0")/.."
targets="${*:-deb}"
# Absolute, so the Tauri CLI's cargo (which runs in src-tauri/) and the listing below agree.
CARGO_TARGET_DIR="$(./scripts/target-dir.sh)"
export CARGO_TARGET_DIR
(cd ui && npm run build --silent)
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
python3 - "$version" <<'PY'
import json, sys
conf = json.load(open("tauri.conf.json"))
conf["version"] = sys.argv[1]
conf["build"]["frontendDist"] = "../" + conf["build"]["frontendDist"]
conf["bundle"]["icon"] = ["../" + p for p in conf["bundle"]["icon"]]
conf["$schema"] = conf.get("$schema")
with open("src-tauri/tauri.conf.json", "w") as f:
    json.dump(conf, f, indent=2)
    f.write("\n")
PY
trap 'rm -f src-tauri/tauri.conf.json' EXIT
TAURI_APP_PATH=src-tauri TAURI_FRONTEND_PATH=ui ui/node_modules/.bin/tauri build --bundles ${targets// /,}
echo "bundle: $(ls "$CARGO_TARGET_DIR"/release/bundle/*/* 2>/dev/null | tr '\n' ' ')"
