#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation (stable
# Rust: the sanitizer-coverage pass through -C flags, no cargo-fuzz) and
# runs each for SECONDS (default 20) from the seeds in seeds/<target>/.
# Prints the executions of each target; exits non-zero if a target found a
# crash (the input is saved under artifacts/<target>/).
#
# usage: fuzz/run.sh [SECONDS]
# Every committed seed is replayed first (a crash there always fails).
# env:   CARGO_TARGET_DIR (default fuzz/target), FUZZ_RUNS (a fixed number
#        of inputs instead of SECONDS), FUZZ_SEED (default 1),
#        FUZZ_CRASH_FAILS=0 (a new crash while fuzzing is reported, not a
#        failure), FUZZ_ARGS (extra libFuzzer
#        flags, e.g. FUZZ_ARGS=-jobs=2)
set -uo pipefail

seconds=${1:-20}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

host=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target}
# --target keeps these flags off build scripts (they would not link
# without libFuzzer).
export RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing"

start=$(date +%s)
if ! cargo build --release --target "$host" --bins; then
    echo "fuzz: build failed" >&2
    exit 2
fi
echo "fuzz: build took $(( $(date +%s) - start )) s"

bin=$CARGO_TARGET_DIR/$host/release
# FUZZ_RUNS=N: a fixed number of inputs instead of a time limit; with the
# fixed seed (FUZZ_SEED, default 1) the run is then the same on every
# machine, so a test command that fuzzes cannot fail by chance.
if [ -n "${FUZZ_RUNS:-}" ]; then
    limit="-runs=$FUZZ_RUNS"
else
    limit="-max_total_time=$seconds"
fi
status=0
# Every committed seed first, once each: the regression check, the same on
# every run and every machine.
for t in ops corrupt; do
    if ! "$bin/$t" -runs=0 "seeds/$t" >"$CARGO_TARGET_DIR/replay-$t.log" 2>&1; then
        status=1
        echo "fuzz: $t: a committed seed crashed; the end of its log:" >&2
        tail -30 "$CARGO_TARGET_DIR/replay-$t.log" >&2
    else
        echo "fuzz: $t: $(ls "seeds/$t" | wc -l) seeds replayed"
    fi
done
for t in ops corrupt; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log=$(mktemp)
    t0=$(date +%s)
    # The first directory collects new inputs; the seeds are only read.
    # shellcheck disable=SC2086
    "$bin/$t" "corpus/$t" "seeds/$t" \
        $limit -seed="${FUZZ_SEED:-1}" -print_final_stats=1 -max_len=4096 \
        -timeout=10 -rss_limit_mb=3072 -artifact_prefix="artifacts/$t/" \
        ${FUZZ_ARGS:-} >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    echo "fuzz: $t: ${execs:-?} executions in $(( $(date +%s) - t0 )) s (${cov:-cov: ?}), exit $rc"
    if [ "$rc" -ne 0 ]; then
        # FUZZ_CRASH_FAILS=0: a new finding is reported (and its input kept
        # under artifacts/) but does not fail the run. Fuzzing explores
        # differently from run to run (stack addresses and timing reach
        # its comparison tracing), so only the seed replay above is a
        # repeatable check.
        if [ "${FUZZ_CRASH_FAILS:-1}" != 0 ]; then
            status=1
        fi
        echo "fuzz: $t FOUND A CRASH; the end of its log:" >&2
        tail -40 "$log" >&2
        ls -1 "artifacts/$t" >&2
    fi
    rm -f "$log"
done
echo "fuzz: total $(( $(date +%s) - start )) s"
exit $status
