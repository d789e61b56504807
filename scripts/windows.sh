#!/usr/bin/env bash
# Checks the Windows build from Linux, and runs the engine's unit tests on Windows APIs:
# - clippy (warnings as errors) of every crate for x86_64-pc-windows-gnu;
# - ferry-core's unit tests, cross-built and run under Wine. Among them, the control pipe's
#   owner-only security descriptor and the same-user check on both of its ends.
#
# rustup's toolchain here has no Windows standard library and cannot fetch one, so this uses
# Debian's rustc-web with its library source (rust-web-src) to build std (-Zbuild-std), MinGW
# to link, and Wine 8 to run. scripts/setup.sh installs them where apt has them; elsewhere this
# says it skipped.
#
# What Wine cannot show: a second user (it runs everything as one), and FIRST_PIPE_INSTANCE,
# which it does not enforce (the test skips that one check under FERRY_UNDER_WINE).
set -euo pipefail
cd "$(dirname "$0")/.."

rustc=/usr/bin/rustc
cargo=/usr/bin/cargo
src=/usr/lib/rustlib/src/rust/library
for need in "$rustc" "$cargo" "$src" /usr/bin/cargo-clippy /usr/bin/x86_64-w64-mingw32-gcc /usr/lib/wine/wine64; do
  if [ ! -e "$need" ]; then
    echo "windows: SKIPPED, $need is missing (Debian: rustc-web cargo-web rust-web-clippy rust-web-src gcc-mingw-w64-x86-64 wine64)"
    exit 0
  fi
done

target_dir="$(./scripts/target-dir.sh)/windows"
triple=x86_64-pc-windows-gnu
# Debian's toolchain first (its cargo, rustc and clippy match its library source); it may
# build std (RUSTC_BOOTSTRAP), and its own target folder keeps it apart from rustup's builds.
export PATH="/usr/bin:$PATH" RUSTC="$rustc" RUSTC_BOOTSTRAP=1
unset RUSTC_WRAPPER
build_std=(-Zbuild-std=std,panic_abort,test --target "$triple" --target-dir "$target_dir" --locked)

echo "== windows: clippy"
cargo clippy "${build_std[@]}" -p ferry-core -p ferry-cli -p ferry-app --all-targets -- -D warnings

echo "== windows: ferry-core unit tests under Wine"
cargo test "${build_std[@]}" -p ferry-core --lib --no-run
exe="$(ls -t "$target_dir/$triple/debug/deps"/ferry_core-*.exe | head -n 1)"
# Wine 8 lacks ProcessPrng (bcryptprimitives.dll), which Rust's std calls for random bytes:
# a stand-in beside the test binary answers with RtlGenRandom.
stub="$target_dir/winestub"
mkdir -p "$stub"
cat > "$stub/prng.c" <<'EOF'
#include <windows.h>
#include <ntsecapi.h>
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!RtlGenRandom(data, n)) return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
EOF
x86_64-w64-mingw32-gcc -shared -O2 -o "$(dirname "$exe")/bcryptprimitives.dll" "$stub/prng.c" -ladvapi32

export WINEPREFIX="$target_dir/wineprefix" WINEDEBUG=-all FERRY_UNDER_WINE=1 FERRY_KEYCHAIN=off
# Wine writes its own chatter (no display, no tray) to stderr; the tests' output is on stdout.
timeout 900 /usr/lib/wine/wine64 "$exe" --test-threads 2 2>"$target_dir/wine.log" \
  || { echo "windows: the tests failed; Wine's log:" >&2; tail -n 40 "$target_dir/wine.log" >&2; exit 1; }
