#!/usr/bin/env bash
# Installs libapexalloc for C and C++ programs:
#
#   PREFIX/lib/libapexalloc.so.0            the library (its SONAME)
#   PREFIX/lib/libapexalloc.so              symlink to it, for -lapexalloc
#   PREFIX/include/apexalloc.h              the declarations
#   PREFIX/lib/pkgconfig/apexalloc.pc       for pkg-config --cflags --libs apexalloc
#
# Usage: ./install.sh [--prefix DIR] [--lib FILE | --no-build]
#
#   --prefix DIR  where to install (absolute; default $PREFIX, else /usr/local)
#   --lib FILE    install this already built libapexalloc.so (no build)
#   --no-build    install target/release/libapexalloc.so as it is
#
# Without --lib or --no-build it first runs
# `cargo build --release -p apexalloc-preload`. DESTDIR, if set, is put in
# front of every installed path (staged installs for packaging); the
# pkg-config file still names PREFIX.
set -euo pipefail

root=$(cd "$(dirname "$0")" && pwd)
prefix=${PREFIX:-/usr/local}
destdir=${DESTDIR:-}
build=1
lib=

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
die() {
    echo "install.sh: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case $1 in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
        --prefix=*) prefix=${1#*=}; shift ;;
        --lib) [ $# -ge 2 ] || die "--lib needs a file"; lib=$2; build=0; shift 2 ;;
        --lib=*) lib=${1#*=}; build=0; shift ;;
        --no-build) build=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
case $prefix in
    /*) ;;
    *) die "the prefix must be an absolute path: '$prefix'" ;;
esac
prefix=${prefix%/}

if [ -z "$lib" ]; then
    lib="${CARGO_TARGET_DIR:-$root/target}/release/libapexalloc.so"
fi
if [ "$build" -eq 1 ]; then
    (cd "$root" && cargo build --release -p apexalloc-preload)
fi
[ -f "$lib" ] || die "no library at $lib (build it with: cargo build --release -p apexalloc-preload)"

if command -v readelf >/dev/null 2>&1; then
    soname=$(readelf -d "$lib" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
    [ "$soname" = libapexalloc.so.0 ] \
        || die "$lib has SONAME '${soname:-none}', expected libapexalloc.so.0"
fi

version=$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\(.*\)".*/\1/p' "$root/Cargo.toml")
[ -n "$version" ] || die "no [workspace.package] version in $root/Cargo.toml"

libdir="$destdir$prefix/lib"
incdir="$destdir$prefix/include"
pcdir="$libdir/pkgconfig"

install -d "$libdir" "$incdir" "$pcdir"
install -m 755 "$lib" "$libdir/libapexalloc.so.0"
ln -sfn libapexalloc.so.0 "$libdir/libapexalloc.so"
install -m 644 "$root/hosted/apexalloc.h" "$incdir/apexalloc.h"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@VERSION@|$version|g" \
    "$root/apexalloc.pc.in" >"$pcdir/apexalloc.pc"
chmod 644 "$pcdir/apexalloc.pc"

echo "installed apexalloc $version:"
for f in "$libdir/libapexalloc.so.0" "$libdir/libapexalloc.so" \
    "$incdir/apexalloc.h" "$pcdir/apexalloc.pc"; do
    echo "  $f"
done

# Refresh the dynamic linker's cache for a system-wide install.
if [ -z "$destdir" ] && [ "$(id -u)" -eq 0 ] && command -v ldconfig >/dev/null 2>&1; then
    case $prefix in
        /usr | /usr/local) ldconfig ;;
    esac
fi
