#!/usr/bin/env bash
# Runs every test of the project on a fresh Debian machine (as root):
# installs what is missing, builds libapexalloc.so, then runs the core,
# hosted, bare-metal and system tests (cargo), the test kernels under QEMU,
# and a one-iteration smoke pass of the benchmark suite.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s ==\n' "$*"; }

step "installing what is missing"
bash tests/install-deps.sh
apt_get() {
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
command -v qemu-system-x86_64 >/dev/null || apt_get qemu-system-x86
for lib in libjemalloc.so.2 libtcmalloc_minimal.so.4 libmimalloc.so.2; do
    if ! ldconfig -p | grep -q "$lib"; then
        apt_get libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0
        break
    fi
done
rustup target list --installed | grep -q x86_64-unknown-none \
    || rustup target add x86_64-unknown-none

step "building libapexalloc.so"
cargo build --release -p apexalloc-preload

step "workspace tests (core, hosted, bare-metal, system tests under LD_PRELOAD)"
cargo test --workspace --no-fail-fast

step "test kernels under QEMU"
(cd qemu && cargo test)

step "benchmark suite smoke pass"
python3 tests/bench/run.py --smoke --require-apex --out target/bench-smoke

echo
echo "all tests passed"
