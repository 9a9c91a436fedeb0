#!/usr/bin/env bash
# Runs the heap-attack programs (tests/c/attack_*.c) under several
# allocators and prints the comparison table of docs/hardening.md
# (markdown, on stdout). Not part of CI: it fetches and builds other
# allocators.
#
# Usage: tests/hardening-compare.sh
#        RUNS=3 tests/hardening-compare.sh   # each cell 3 times; differing
#                                            # outcomes are listed "a or b"
#
# Allocators (a column whose library is missing reads "not measured"):
#   glibc            the system allocator (no preload)
#   jemalloc         /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 (Debian libjemalloc2)
#   mimalloc         /usr/lib/x86_64-linux-gnu/libmimalloc.so.2 (Debian libmimalloc2.0)
#   mimalloc secure  $MIMALLOC_SECURE_LIB, or built with MI_SECURE=4 from the C
#                    sources in the libmimalloc-sys crate found in ~/.cargo/registry
#                    (fetch it with `cargo fetch` in any crate depending on it)
#   scudo            $SCUDO_LIB, or libclang_rt.scudo_standalone-x86_64.so from
#                    `apt-get download libclang-rt-19-dev`
#   hardened_malloc  $HARDENED_MALLOC_LIB, or /tmp/hardened_malloc/out/libhardened_malloc.so
#                    (built with make if the source tree is there)
#   ApexAlloc        $APEX_LIB or target/release/libapexalloc.so, under
#                    APEX_HARDEN=off, default and full
#
# Each cell is how one run ended: "succeeded" (the program obtained what
# the attack is after), "defeated" (it observed the attack failing),
# "detected" (the allocator aborted; ApexAlloc's reason in brackets),
# "fault at write" (SIGSEGV at the attacker's own write: a guard page or
# unmapped memory), "crash" or "hang" (the allocator faulted or hung on the
# corrupted state, no detection). The layout row runs five times: it
# succeeds when blocks come at a fixed stride or the first block's offset in
# its 64 KiB window is the same in all runs. Each run's own explanation is
# written to details.txt in the work directory (printed on stderr).
set -u

root=$(cd "$(dirname "$0")/.." && pwd)
work=${WORK_DIR:-$(mktemp -d /tmp/apex-hardening-compare.XXXXXX)}
mkdir -p "$work"
details=$work/details.txt
: >"$details"

cases=(
    "attack_link_forgery aligned"
    "attack_link_forgery misaligned"
    "attack_link_forgery cross-slab"
    "attack_free_unallocated near"
    "attack_free_unallocated far"
    "attack_double_free small"
    "attack_double_free small-interleaved"
    "attack_double_free large-remote"
    "attack_double_free huge"
    "attack_double_free huge-stale"
    "attack_cross_class reuse"
    "attack_metadata_underflow backward"
    "attack_overflow small"
    "attack_overflow large"
    "attack_overflow huge"
    "attack_uaf read"
    "attack_uaf write-small"
    "attack_uaf write-large"
    "attack_foreign stack"
    "attack_foreign global"
    "attack_foreign interior"
    "attack_foreign forged"
    "attack_foreign realloc-stack"
    "attack_layout sequence"
)

# --- the programs -----------------------------------------------------------
for src in "$root"/tests/c/attack_*.c; do
    exe=$work/$(basename "$src" .c)
    gcc -O1 -g -pthread -Wall -fno-builtin -fno-allocation-dce -std=gnu11 \
        -o "$exe" "$src" -ldl || { echo "compiling $src failed" >&2; exit 1; }
done

# --- the allocators ---------------------------------------------------------
find_mimalloc_secure() {
    [ -n "${MIMALLOC_SECURE_LIB:-}" ] && { echo "$MIMALLOC_SECURE_LIB"; return; }
    local src
    src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/libmimalloc-sys-*/c_src/mimalloc/v2 \
        2>/dev/null | sort -V | tail -1)
    [ -n "$src" ] || return
    gcc -O2 -g -shared -fPIC -DMI_SECURE=4 -DMI_MALLOC_OVERRIDE -DNDEBUG -I"$src/include" \
        "$src/src/static.c" -o "$work/libmimalloc-secure.so" -lpthread >&2 &&
        echo "$work/libmimalloc-secure.so"
}

find_scudo() {
    [ -n "${SCUDO_LIB:-}" ] && { echo "$SCUDO_LIB"; return; }
    (cd "$work" && apt-get download libclang-rt-19-dev >/dev/null 2>&1 &&
        dpkg-deb -x libclang-rt-19-dev_*.deb scudo) || return
    find "$work/scudo" -name libclang_rt.scudo_standalone-x86_64.so | head -1
}

find_hardened_malloc() {
    [ -n "${HARDENED_MALLOC_LIB:-}" ] && { echo "$HARDENED_MALLOC_LIB"; return; }
    local dir=/tmp/hardened_malloc
    [ -d "$dir" ] || return
    [ -f "$dir/out/libhardened_malloc.so" ] || make -C "$dir" >&2 || return
    echo "$dir/out/libhardened_malloc.so"
}

apex=${APEX_LIB:-$root/target/release/libapexalloc.so}
runs=${RUNS:-1}
# column name | library ("" = none) | APEX_HARDEN value
columns=(
    "glibc||"
    "jemalloc|/usr/lib/x86_64-linux-gnu/libjemalloc.so.2|"
    "mimalloc 2.0|/usr/lib/x86_64-linux-gnu/libmimalloc.so.2|"
    "mimalloc secure|$(find_mimalloc_secure)|"
    "scudo|$(find_scudo)|"
    "hardened_malloc|$(find_hardened_malloc)|"
    "ApexAlloc off|$apex|off"
    "ApexAlloc default|$apex|default"
    "ApexAlloc full|$apex|full"
)

# --- running and classifying ------------------------------------------------
# run_one LIB HARDEN EXE VARIANT: prints the cell; appends details.
run_one() {
    local lib=$1 harden=$2 exe=$3 variant=$4 out err rc
    out=$work/out.txt err=$work/err.txt
    if [ -n "$lib" ]; then
        APEX_HARDEN=$harden LD_PRELOAD=$lib timeout 20 "$exe" "$variant" >"$out" 2>"$err"
    else
        env -u LD_PRELOAD timeout 20 "$exe" "$variant" >"$out" 2>"$err"
    fi
    rc=$?
    local verdict fatal
    verdict=$(grep -m1 '^ATTACK ' "$out")
    fatal=$(grep -m1 '^apexalloc: fatal: ' "$err" | sed 's/^apexalloc: fatal: //; s/ (.*//')
    echo "$(basename "$exe") $variant [${lib:-glibc} $harden] rc=$rc ${verdict:-$(tail -1 "$err")}" >>"$details"
    case "$rc:$verdict" in
    0:"ATTACK SUCCEEDED: the allocator crashed"*) echo "crash" ;;
    0:"ATTACK SUCCEEDED: the allocator hung"*) echo "hang" ;;
    0:"ATTACK SUCCEEDED"*) echo "**succeeded**" ;;
    0:"ATTACK DEFEATED"*) echo "defeated" ;;
    134:*) if [ -n "$fatal" ]; then echo "detected ($fatal)"; else echo "detected"; fi ;;
    139:* | 135:*)
        if grep -q '^about to write' "$out" && ! grep -qx 'write done' "$out"; then
            echo "fault at write"
        else
            echo "crash"
        fi
        ;;
    124:*) echo "hang" ;;
    *) echo "exit $rc" ;;
    esac
}

# The layout attack: five runs (see the header).
run_layout() {
    local lib=$1 harden=$2 exe=$3 variant=$4 cell offsets="" i
    for i in 1 2 3 4 5; do
        cell=$(run_one "$lib" "$harden" "$exe" "$variant")
        [ "$cell" = defeated ] || { echo "$cell"; return; }
        offsets="$offsets $(grep -o 'first_offset=[0-9a-fx]*' "$work/out.txt")"
    done
    if [ "$(echo $offsets | tr ' ' '\n' | sort -u | wc -l)" = 1 ]; then
        echo "**succeeded**"
    else
        echo "defeated"
    fi
}

header="| attack |"
rule="|---|"
for col in "${columns[@]}"; do
    header="$header ${col%%|*} |"
    rule="$rule---|"
done
echo "$header"
echo "$rule"
for c in "${cases[@]}"; do
    prog=${c%% *} variant=${c#* }
    row="| ${prog#attack_} $variant |"
    for col in "${columns[@]}"; do
        IFS='|' read -r _ lib harden <<<"$col"
        if [ -n "$lib" ] && [ ! -f "$lib" ]; then
            cell="not measured"
        elif [ "${col%%|*}" != glibc ] && [ -z "$lib" ]; then
            cell="not measured"
        else
            # RUNS runs; differing outcomes are all listed, most frequent first.
            cell=$(for ((r = 0; r < runs; r++)); do
                if [ "$prog" = attack_layout ]; then
                    run_layout "$lib" "$harden" "$work/$prog" "$variant"
                else
                    run_one "$lib" "$harden" "$work/$prog" "$variant"
                fi
            done 2>/dev/null | sort | uniq -c | sort -rn | sed 's/^ *[0-9]* //' |
                paste -sd '/' | sed 's|/| or |g')
        fi
        row="$row $cell |"
    done
    echo "$row"
done
echo "details of each run: $details" >&2
