#!/usr/bin/env bash
# Runs every test of the project on a fresh Debian machine (as root):
# installs what is missing, builds libapexalloc.so, checks formatting,
# lints and documentation, then runs the core, hosted, bare-metal and
# system tests (cargo), the test kernels under QEMU, and a one-iteration
# smoke pass of the benchmark suite.
#
# Every stage runs even when an earlier one failed (only a failed install
# stops the run: nothing after it could work). The run ends with one line
# per stage (status and time) and a last line `N passed, M failed`; the
# exit status is 0 only if every stage passed.
set -uo pipefail
cd "$(dirname "$0")/.."

stage_names=()
stage_results=()
stage_times=()

now() { printf '%s' "${EPOCHREALTIME:-$(date +%s.%N)}"; }

# run_stage NAME FUNCTION: runs FUNCTION in a subshell with `set -e`, so the
# first failing command ends that stage only, and records the outcome.
run_stage() {
    local name=$1 fn=$2 start rc elapsed
    printf '\n== %s ==\n' "$name"
    start=$(now)
    (
        set -e
        "$fn"
    )
    rc=$?
    elapsed=$(awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    stage_names+=("$name")
    stage_times+=("$elapsed")
    if [ "$rc" -eq 0 ]; then
        stage_results+=(PASS)
    else
        stage_results+=(FAIL)
        printf '== %s: FAILED (exit status %d) ==\n' "$name" "$rc"
    fi
    return "$rc"
}

# summary [NOTE]: prints the per-stage table, NOTE, and `N passed, M failed`;
# exits 1 if any stage failed.
summary() {
    local i passed=0 failed=0
    printf '\n== summary ==\n'
    for i in "${!stage_names[@]}"; do
        printf '  %-4s  %-52s %7ss\n' "${stage_results[$i]}" "${stage_names[$i]}" "${stage_times[$i]}"
        if [ "${stage_results[$i]}" = PASS ]; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
        fi
    done
    if [ $# -gt 0 ]; then
        printf '%s\n' "$1"
    fi
    printf '%d passed, %d failed\n' "$passed" "$failed"
    [ "$failed" -eq 0 ] || exit 1
    exit 0
}

apt_get() {
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "${APT_UPDATED:-}" ]; then
        apt-get update -qq
        APT_UPDATED=1
    fi
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install_deps() {
    bash tests/install-deps.sh
    command -v qemu-system-x86_64 >/dev/null || apt_get qemu-system-x86
    local lib
    for lib in libjemalloc.so.2 libtcmalloc_minimal.so.4 libmimalloc.so.2; do
        if ! ldconfig -p | grep -q "$lib"; then
            apt_get libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0
            break
        fi
    done
    rustup target list --installed | grep -q x86_64-unknown-none \
        || rustup target add x86_64-unknown-none
    rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed | grep -q '^clippy' || rustup component add clippy
}

build_library() {
    cargo build --release -p apexalloc-preload
}

# The workspace and the test-kernel crate (excluded from the workspace).
check_format() {
    cargo fmt --all -- --check
    (cd qemu && cargo fmt --all -- --check)
}

lint() {
    cargo clippy --workspace --all-targets -- -D warnings
    # The Valgrind client requests and their example exist only with the feature.
    cargo clippy -p apexalloc --all-targets --features valgrind -- -D warnings
}

# Warnings (broken intra-doc links, ...) fail the stage.
build_docs() {
    RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -D warnings" cargo doc --workspace --no-deps
}

workspace_tests() {
    cargo test --workspace --no-fail-fast
    # The kernel build's layout (4 MiB segments), on the host.
    cargo test -p apex-core --features small-segments --no-fail-fast
}

# The default preset runs in `workspace_tests`; the strictest one must keep
# real programs and the whole C API working too.
full_hardening_tests() {
    APEX_HARDEN=full cargo test -p apex-system-tests --test real_programs --test c_api
}

qemu_tests() {
    cd qemu
    cargo test
}

# The libFuzzer targets (a crate of their own, built with coverage
# instrumentation on stable): their own checks; every committed seed (which
# include every input that once crashed) replayed, which must pass; then
# 20000 fresh inputs of each, whose executions are reported and whose new
# findings are shown and kept under fuzz/artifacts/ without failing the
# stage: what fuzzing explores varies from run to run, and a test command
# must not fail by chance.
fuzz_tests() {
    (cd fuzz && cargo fmt --check && cargo clippy --all-targets -- -D warnings && cargo test)
    FUZZ_RUNS=20000 FUZZ_CRASH_FAILS=0 fuzz/run.sh
}

# The kernel-heap benchmark shapes (talc's random actions and heap
# efficiency) check every shape on every allocator in their tests.
kernel_shapes_tests() {
    cd tests/bench/kernel-shapes
    cargo fmt --check
    cargo clippy --release --all-targets -- -D warnings
    cargo test --release
}

# The `apex` command is a package of its own (see the root Cargo.toml).
apex_command_tests() {
    cd hosted/cli
    cargo fmt --check
    cargo clippy --all-targets -- -D warnings
    cargo test
}

bench_smoke() {
    python3 tests/bench/run.py --smoke --require-apex --out target/bench-smoke
}

# Called as plain commands, never in a condition: bash ignores `set -e`
# inside anything run from a tested context, even in a subshell.
run_stage "install what is missing" install_deps
if [ "${stage_results[0]}" = FAIL ]; then
    summary "not run: every later stage (they need what the install stage provides)"
fi
run_stage "build libapexalloc.so" build_library
run_stage "format (cargo fmt --check)" check_format
run_stage "lint (cargo clippy -D warnings)" lint
run_stage "documentation (cargo doc)" build_docs
run_stage "workspace tests (core, hosted, bare-metal, system)" workspace_tests
run_stage "real programs and C API under APEX_HARDEN=full" full_hardening_tests
run_stage "test kernels under QEMU" qemu_tests
run_stage "kernel heap benchmark shapes (host)" kernel_shapes_tests
run_stage "the apex command (run, heap pictures)" apex_command_tests
run_stage "fuzz targets: checks, seed replay, 20000 inputs each" fuzz_tests
run_stage "benchmark suite smoke pass" bench_smoke
summary
