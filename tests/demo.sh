#!/usr/bin/env bash
# Builds libapexalloc.so and runs a real program under it: python3 building,
# sorting and indexing a few million objects, with the allocator's configuration at
# start and its statistics at exit, timed against the same run on glibc.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/install-deps.sh
cargo build --release -p apexalloc-preload
lib="$PWD/target/release/libapexalloc.so"
script='
import random
random.seed(7)
rows = [{"id": i, "name": "user%d" % i, "tags": [str(j) for j in range(i % 7)]} for i in range(300000)]
rows.sort(key=lambda r: (len(r["tags"]), r["name"]))
index = {r["name"]: r for r in rows}
words = " ".join(r["name"] for r in rows[:100000]).split()
print("rows", len(rows), "index", len(index), "words", len(words), "first", rows[0]["name"])
'
py=$(command -v python3)
# A pyenv shim is a shell script; run the real interpreter.
py=$("$py" -c 'import sys; print(sys.executable)')
# PYTHONMALLOC=malloc sends every Python object through malloc/free
# instead of Python's own small-object arenas.
export PYTHONMALLOC=malloc
echo "== glibc malloc =="
/usr/bin/time -f "time %e s, peak RSS %M KiB" "$py" -c "$script"
echo "== ApexAlloc (LD_PRELOAD=$lib) =="
/usr/bin/time -f "time %e s, peak RSS %M KiB" \
    env APEX_VERBOSE=1 APEX_SHOW_STATS=1 LD_PRELOAD="$lib" "$py" -c "$script"
