#!/usr/bin/env bash
# Installs what the system tests need (Debian/Ubuntu, as root). Idempotent:
# when everything is present it exits at once without touching apt.
set -euo pipefail

# command -> Debian package providing it
declare -A needed=(
    [gcc]=gcc
    [g++]=g++
    [python3]=python3
    [git]=git
    [sqlite3]=sqlite3
    [bash]=bash
    [ls]=coreutils
    [pkg-config]=pkg-config
    [nm]=binutils
    [readelf]=binutils
    [valgrind]=valgrind
)

missing=()
for cmd in "${!needed[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${needed[$cmd]}")
done
# The C library headers (gcc only recommends them).
[ -e /usr/include/stdio.h ] || missing+=(libc6-dev)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: must run as root to install packages" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
