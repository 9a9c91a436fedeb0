#!/usr/bin/env bash
# Builds the comparison ("anchor") allocators that Debian does not package,
# mimalloc 3 and snmalloc, as LD_PRELOAD-able shared libraries:
#
#   OUTDIR/libmimalloc3.so          mimalloc 3.x (from the libmimalloc-sys crate)
#   OUTDIR/libmimalloc3-secure.so   the same in secure mode (MI_SECURE=4, as the
#                                   crate's `secure` feature)
#   OUTDIR/libsnmalloc.so           snmalloc (from the snmalloc-sys crate)
#   OUTDIR/libsnmalloc-checks.so    the same with SNMALLOC_CHECK_CLIENT (upstream's
#                                   hardened `snmallocshim-checks`)
#
# The C/C++ sources come from the crate registry: Cargo.toml next to this
# script pins the two sys crates, `cargo fetch` downloads them (or finds them
# already in ~/.cargo/registry) and `cargo metadata` tells where they are.
# They are then compiled directly with gcc/g++ using the flags of the
# libraries' own CMake builds for their shared override libraries (no cmake
# needed).  Each library is only rebuilt when it is missing or older than this
# script or Cargo.lock.
#
# Usage: build.sh [OUTDIR]        (default: <repo>/target/anchors)
# Environment: CC (default gcc), CXX (default g++), FORCE=1 rebuilds.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
out="${1:-$repo/target/anchors}"
CC="${CC:-gcc}"
CXX="${CXX:-g++}"

die() {
    echo "anchors: error: $*" >&2
    exit 1
}

for tool in cargo python3 "$CC" "$CXX"; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "'$tool' not found (needed: cargo, python3, gcc, g++; on Debian: apt-get install gcc g++ python3, cargo from rustup)"
done
# snmalloc needs C++20 (concepts, std::bit_cast); probe it up front so a too
# old compiler gives one clear line instead of pages of template errors.
printf '#include <bit>\n#include <concepts>\nint main(){return std::bit_cast<int>(0.0f);}\n' |
    "$CXX" -std=c++20 -x c++ - -o /dev/null 2>/dev/null ||
    die "'$CXX' cannot compile C++20 (snmalloc needs g++ >= 10 or clang++ >= 10)"
printf '#include <stdatomic.h>\nint main(void){return 0;}\n' |
    "$CC" -x c - -o /dev/null 2>/dev/null ||
    die "'$CC' cannot build a C program (is libc6-dev installed?)"

mkdir -p "$out"

# Locate the fetched crate sources.  --locked keeps the versions in Cargo.lock;
# without network, sources already in ~/.cargo/registry are enough.
cargo fetch --locked --manifest-path "$here/Cargo.toml" >/dev/null 2>&1 ||
    cargo fetch --locked --offline --manifest-path "$here/Cargo.toml" ||
    die "cargo fetch failed (no access to the crate registry and the sources are not cached?)"
eval "$(cargo metadata --locked --offline --format-version 1 --manifest-path "$here/Cargo.toml" 2>/dev/null |
    python3 -c '
import json, os, shlex, sys
meta = json.load(sys.stdin)
for p in meta["packages"]:
    key = {"libmimalloc-sys": "MI", "snmalloc-sys": "SN"}.get(p["name"])
    if key:
        src = shlex.quote(os.path.dirname(p["manifest_path"]))
        print(key + "_DIR=" + src + "; " + key + "_CRATE=" + shlex.quote(p["version"]))
')"
[ -n "${MI_DIR:-}" ] && [ -n "${SN_DIR:-}" ] || die "cargo metadata did not list libmimalloc-sys and snmalloc-sys"

mi_src="$MI_DIR/c_src/mimalloc/v3"
sn_src="$SN_DIR/upstream"
[ -f "$mi_src/src/static.c" ] || die "mimalloc v3 sources not found in $MI_DIR"
[ -f "$sn_src/src/snmalloc/override/malloc.cc" ] || die "snmalloc sources not found in $SN_DIR"

# mimalloc's version is a number such as 30302 (major + 2 digits minor + 2 patch).
mi_num="$(sed -n 's/^#define MI_MALLOC_VERSION \([0-9]*\).*/\1/p' "$mi_src/include/mimalloc.h")"
mi_version="$((mi_num / 10000)).$((mi_num / 100 % 100)).$((mi_num % 100))"

needs_build() { # target
    [ "${FORCE:-0}" = 1 ] || [ ! -f "$1" ] || [ "$1" -ot "${BASH_SOURCE[0]}" ] ||
        [ "$1" -ot "$here/Cargo.lock" ]
}

# Builds into a temporary name and renames, so an interrupted build never
# leaves a truncated library that a later run would take as built.
build_mimalloc() { # library file name, extra compiler flags...
    local lib="$out/$1"
    shift
    if ! needs_build "$lib"; then
        echo "anchors: up to date: $lib (mimalloc $mi_version)"
        return
    fi
    local t0=$SECONDS
    # Flags of mimalloc's CMake shared library with MI_OVERRIDE=ON in Release:
    # static.c includes every source file (alloc-override.c provides
    # malloc/free/..., posix_memalign, memalign, valloc, pvalloc,
    # malloc_usable_size and the C++ operators new/delete as C symbols).
    "$CC" -O3 -DNDEBUG -DMI_BUILD_RELEASE -DMI_DEBUG=0 \
        -DMI_MALLOC_OVERRIDE -DMI_SHARED_LIB -DMI_SHARED_LIB_EXPORT \
        -fPIC -shared -fvisibility=hidden -ftls-model=initial-exec \
        -fno-builtin-malloc -Wno-error=date-time "$@" \
        -I"$mi_src/include" -I"$mi_src/src" \
        "$mi_src/src/static.c" -o "$lib.tmp" -pthread -lrt -latomic
    mv -f "$lib.tmp" "$lib"
    echo "anchors: built $lib (mimalloc $mi_version${*:+ $*} from libmimalloc-sys $MI_CRATE) in $((SECONDS - t0)) s"
}

build_snmalloc() { # library file name, extra compiler flags...
    local lib="$out/$1"
    shift
    if ! needs_build "$lib"; then
        echo "anchors: up to date: $lib (snmalloc-sys $SN_CRATE)"
        return
    fi
    local t0=$SECONDS
    # Flags of snmalloc's CMake target `snmallocshim` (malloc.cc + new.cc) in
    # Release on Linux: C++20, thread cleanup through __cxa_thread_atexit,
    # futex-based waiting, static TLS, cmpxchg16b, libstdc++ linked
    # statically so the shim does not pull the C++ runtime into C programs.
    "$CXX" -std=c++20 -O3 -DNDEBUG \
        -DSNMALLOC_USE_CXX11_THREAD_ATEXIT_DIRECT \
        -DSNMALLOC_USE_WAIT_ON_ADDRESS=1 \
        -DSNMALLOC_PLATFORM_HAS_GETENTROPY -DSNMALLOC_PTHREAD_ATFORK_WORKS \
        -DSNMALLOC_HAS_LINUX_RANDOM_H -DSNMALLOC_HAS_LINUX_FUTEX_H \
        -DSNMALLOC_CHECK_LOADS=false -DSNMALLOC_PAGEID=false \
        -DMALLOC_USABLE_SIZE_QUALIFIER=const \
        '-DSNMALLOC_EXPORT=__attribute__((visibility("default")))' \
        -fPIC -shared -fvisibility=hidden -fomit-frame-pointer \
        -ftls-model=initial-exec -ffunction-sections -mcx16 -mprfchw "$@" \
        -I"$sn_src/src" \
        "$sn_src/src/snmalloc/override/malloc.cc" "$sn_src/src/snmalloc/override/new.cc" \
        -o "$lib.tmp" -static-libstdc++ -pthread -latomic
    mv -f "$lib.tmp" "$lib"
    echo "anchors: built $lib (snmalloc${*:+ $*} from snmalloc-sys $SN_CRATE) in $((SECONDS - t0)) s"
}

build_mimalloc libmimalloc3.so
build_mimalloc libmimalloc3-secure.so -DMI_SECURE=4
build_snmalloc libsnmalloc.so
build_snmalloc libsnmalloc-checks.so -DSNMALLOC_CHECK_CLIENT
echo "anchors: versions: mimalloc3=$mi_version (libmimalloc-sys $MI_CRATE), snmalloc=snmalloc-sys $SN_CRATE"
