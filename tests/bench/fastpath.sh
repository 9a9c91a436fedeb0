#!/usr/bin/env bash
# Instructions per malloc+free pair, counted with callgrind (deterministic:
# the same binary and inputs give the same count on any machine, busy or
# not). The loop allocates 64 blocks and frees them in reverse order; the
# count per pair is (I(2N) - I(N)) / (N * 64), so start-up cancels out and
# the loop's own instructions are included. Also a redis-like loop:
# malloc(40), two malloc_usable_size calls, free.
#
# usage: tests/bench/fastpath.sh [ALLOCATOR...]
#   ALLOCATOR: glibc, jemalloc, tcmalloc, mimalloc (Debian's 2.0.9),
#   mimalloc3, snmalloc (tests/bench/anchors/build.sh builds them),
#   apexalloc, apexalloc-off, apexalloc-full (the same library under
#   another APEX_HARDEN preset). Default: all that are present.
# env: APEX_LIB (default target/release/libapexalloc.so), SIZES (default
#   "16 32 128 1024 8192").
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
apex=${APEX_LIB:-$repo/target/release/libapexalloc.so}
anchors=$repo/target/anchors
sizes=${SIZES:-16 32 128 1024 8192}
command -v valgrind >/dev/null || { echo "fastpath.sh: valgrind is needed" >&2; exit 1; }

lib_of() {
    case $1 in
        glibc) echo "" ;;
        jemalloc) echo /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 ;;
        tcmalloc) echo /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 ;;
        mimalloc) echo /usr/lib/x86_64-linux-gnu/libmimalloc.so.2 ;;
        mimalloc3) echo "$anchors/libmimalloc3.so" ;;
        snmalloc) echo "$anchors/libsnmalloc.so" ;;
        apexalloc | apexalloc-off | apexalloc-full) echo "$apex" ;;
        *) echo "fastpath.sh: unknown allocator $1" >&2; exit 2 ;;
    esac
}

preset_of() {
    case $1 in
        apexalloc-off) echo off ;;
        apexalloc-full) echo full ;;
        *) echo default ;;
    esac
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/pair.c" <<'EOF'
#include <stdlib.h>
int main(int argc, char **argv) {
    long reps = atol(argv[1]);
    size_t size = (size_t)atol(argv[2]);
    void *p[64];
    for (long r = 0; r < reps; r++) {
        for (int i = 0; i < 64; i++) p[i] = malloc(size);
        for (int i = 63; i >= 0; i--) free(p[i]);
    }
    return 0;
}
EOF
cat >"$work/usable.c" <<'EOF'
#include <malloc.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    long reps = atol(argv[1]);
    size_t sum = 0;
    for (long r = 0; r < reps; r++) {
        void *p = malloc(40);
        sum += malloc_usable_size(p);
        sum += malloc_usable_size(p);
        free(p);
    }
    return (int)(sum & 1);
}
EOF
# -fno-builtin: the calls must reach the allocator, not be folded away.
gcc -O2 -fno-builtin -o "$work/pair" "$work/pair.c"
gcc -O2 -fno-builtin -o "$work/usable" "$work/usable.c"

# instructions LIB PRESET PROGRAM ARGS...
# Prints nothing when the program did not run to its end under valgrind
# (snmalloc, for one, aborts there: it cannot reserve its address space).
instructions() {
    local lib=$1 preset=$2 out
    shift 2
    out=$(env ${lib:+LD_PRELOAD=$lib} APEX_HARDEN="$preset" \
        valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1)
    if grep -q "Process terminating" <<<"$out"; then
        return
    fi
    sed -n 's/.*Collected : *\([0-9]*\).*/\1/p' <<<"$out"
}

# per_op LIB PRESET OPS_PER_REP PROGRAM [ARG]: instructions per repetition
# unit, from N and 2N repetitions.
per_op() {
    local lib=$1 preset=$2 ops=$3 prog=$4 arg=${5:-}
    local n=10000 a b
    a=$(instructions "$lib" "$preset" "$prog" "$n" $arg)
    b=$(instructions "$lib" "$preset" "$prog" $((2 * n)) $arg)
    if [ -z "$a" ] || [ -z "$b" ]; then
        printf 'n/a'
        return
    fi
    awk -v a="$a" -v b="$b" -v d=$((n * ops)) 'BEGIN { printf "%.1f", (b - a) / d }'
}

wanted=("$@")
if [ ${#wanted[@]} -eq 0 ]; then
    wanted=(glibc jemalloc tcmalloc mimalloc mimalloc3 snmalloc apexalloc-off apexalloc apexalloc-full)
fi

printf '| allocator |'
for s in $sizes; do printf ' %s B |' "$s"; done
printf ' malloc(40) + 2 usable_size + free |\n|---|'
for _ in $sizes; do printf -- '---:|'; done
printf -- '---:|\n'
for a in "${wanted[@]}"; do
    lib=$(lib_of "$a")
    if [ -n "$lib" ] && [ ! -e "$lib" ]; then
        echo "fastpath.sh: $a: $lib not found, skipped" >&2
        continue
    fi
    preset=$(preset_of "$a")
    printf '| %s |' "$a"
    for s in $sizes; do
        printf ' %s |' "$(per_op "$lib" "$preset" 64 "$work/pair" "$s")"
    done
    printf ' %s |\n' "$(per_op "$lib" "$preset" 1 "$work/usable")"
done
