#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs fmt, clippy and every
# test with SPORE_REQUIRE_GPU=1, so a GPU test that finds no adapter fails instead of skipping.
#
# On a fresh Debian machine with no Vulkan driver it installs Mesa's software one
# (`mesa-vulkan-drivers`, "llvmpipe"/lavapipe) when it has root or passwordless sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

have_vulkan_driver() {
    local icd found=""
    for icd in /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json; do
        [ -e "$icd" ] && found=1
    done
    [ -n "$found" ] && { ldconfig -p 2>/dev/null | grep 'libvulkan\.so\.1' >/dev/null; }
}

if ! have_vulkan_driver; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="none"; fi
    if [ "$SUDO" != none ] && command -v apt-get >/dev/null; then
        echo "test.sh: no Vulkan driver found; installing Mesa's software Vulkan (mesa-vulkan-drivers)"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
    else
        echo "test.sh: no Vulkan driver and no root/sudo to install one; GPU tests will fail under SPORE_REQUIRE_GPU=1" >&2
    fi
fi

for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
        rustup component add "$component"
    fi
done

# The Vulkan loader complains about a missing runtime dir without a desktop session.
XDG_RUNTIME_DIR="$(mktemp -d)"
export XDG_RUNTIME_DIR
export SPORE_REQUIRE_GPU=1
export RUST_BACKTRACE=1

echo "== cargo fmt --check"
cargo fmt --all -- --check
# The op files are declared by the `ops!` macro, where cargo fmt cannot see them.
rustfmt --edition 2024 --check src/ops/*.rs
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test (SPORE_REQUIRE_GPU=1)"
log="$(mktemp)"
cargo test --workspace 2>&1 | tee "$log"
echo "== CPU kernels again on the portable tier (SPORE_CPU_KERNELS=portable)"
SPORE_CPU_KERNELS=portable cargo test -p spore-kernels-cpu --lib 2>&1 | tee -a "$log" | tail -n 3

# The loader's cargo-fuzz target in smoke mode (~4 min on a fresh 2-core machine: the
# instrumented build dominates). cargo-fuzz passes nightly -Z flags; this stable-only machine
# allows them through RUSTC_BOOTSTRAP=1. The in-test smoke (format_fuzz_smoke) ran above.
echo "== cargo fuzz smoke (format_load)"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
mkdir -p tools/fuzz/corpus/format_load
RUSTC_BOOTSTRAP=1 cargo fuzz run format_load --fuzz-dir tools/fuzz \
    tools/fuzz/corpus/format_load tools/fuzz/seeds -- -runs=50000 2>&1 | tail -n 20
# One closing line for the whole run (cargo's last line is often a crate with no doc tests).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
