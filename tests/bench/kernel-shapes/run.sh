#!/bin/sh
# The kernel-heap benchmark in one command: builds the benchmark (release,
# its own target directory) and writes
#   tests/bench/published/<date>-kernel-shapes.{md,csv,svg}
# Arguments go to the benchmark (see src/main.rs), e.g.
#   sh tests/bench/kernel-shapes/run.sh --trials 3 --threads 1
# Takes about two minutes on two cores with the defaults.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
target=${CARGO_TARGET_DIR:-$here/target}
out=${KERNEL_SHAPES_OUT:-$here/../published/$(date -u +%F)-kernel-shapes}
cd "$here"
CARGO_TARGET_DIR=$target cargo build --release --quiet
"$target/release/kernel-shapes" --out "$out" "$@"
echo "written: $out.md $out.csv $out.svg" >&2
