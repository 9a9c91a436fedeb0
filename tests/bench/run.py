#!/usr/bin/env python3
"""ApexAlloc benchmark suite runner.

Builds the workloads, runs every selected workload under every selected
allocator (interleaved, several repetitions), and writes raw results as CSV,
a markdown summary and an SVG chart.  Python 3 standard library only.

    python3 tests/bench/run.py                 # full suite, 5 runs each
    python3 tests/bench/run.py --smoke         # quick check (CI)
    python3 tests/bench/run.py --workloads larson,redis --allocators glibc,apexalloc

See tests/bench/README.md for what each workload models and how to read the
results.  Exit status: 0 when every apexalloc run succeeded (failures of
other allocators are only reported), 1 when an apexalloc run crashed, timed
out or produced a wrong result, 2 for a usage error or when the suite's own
C workloads fail to build.
"""

import argparse
import csv
import datetime
import html
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
WORKLOAD_SRC = HERE / "workloads"
RUST_DIR = HERE / "rust-workload"
REAL_DIR = HERE / "real"

PRELOAD_ALLOCATORS = ["glibc", "jemalloc", "tcmalloc", "mimalloc", "apexalloc"]
# ApexAlloc under other options (the same library, with these variables
# set): another hardening preset, or transparent huge pages on.  Not run by
# default; name them in --allocators to measure what an option costs (e.g.
# --allocators apexalloc-off,apexalloc,apexalloc-full or apexalloc,apexalloc-thp).
APEX_VARIANTS = {
    "apexalloc-off": {"APEX_HARDEN": "off"},
    "apexalloc-full": {"APEX_HARDEN": "full"},
    "apexalloc-thp": {"APEX_THP": "1"},
}
# Allocators Debian does not package, built from the crate registry's sources
# by anchors/build.sh into --anchors-dir: opt-in, since building them takes
# a minute and needs g++ with C++20 (name them in --allocators).  The -secure
# and -checks builds are their hardened modes, to set against apexalloc-full.
ANCHOR_ALLOCATORS = {
    "mimalloc3": "libmimalloc3.so",
    "snmalloc": "libsnmalloc.so",
    "mimalloc3-secure": "libmimalloc3-secure.so",
    "snmalloc-checks": "libsnmalloc-checks.so",
}
ANCHORS_BUILD = HERE / "anchors" / "build.sh"
_APEX_AT = PRELOAD_ALLOCATORS.index("apexalloc")
PRELOAD_ALLOCATORS_ALL = (PRELOAD_ALLOCATORS[:_APEX_AT] + list(ANCHOR_ALLOCATORS)
                          + PRELOAD_ALLOCATORS[_APEX_AT:] + list(APEX_VARIANTS))
RUST_ALLOCATORS = ["system", "mimalloc", "apexalloc"]

# Debian package and file name of each preloadable allocator.
ALLOCATOR_PACKAGES = {
    "jemalloc": ("libjemalloc2", "libjemalloc.so.2"),
    "tcmalloc": ("libtcmalloc-minimal4", "libtcmalloc_minimal.so.4"),
    "mimalloc": ("libmimalloc2.0", "libmimalloc.so.2"),
}

# Colours used in the chart, one per allocator.
COLOURS = {
    "glibc": "#7f7f7f",
    "system": "#7f7f7f",
    "jemalloc": "#1f77b4",
    "tcmalloc": "#2ca02c",
    "mimalloc": "#ff7f0e",
    "mimalloc3": "#e6b800",
    "mimalloc3-secure": "#8c6d00",
    "snmalloc": "#9467bd",
    "snmalloc-checks": "#4b2a6b",
    "apexalloc": "#d62728",
    "apexalloc-off": "#ff9896",
    "apexalloc-full": "#8c1d1d",
    "apexalloc-thp": "#e377c2",
}

# name -> (source file, extra compiler flags, description)
C_WORKLOADS = {
    "larson": ("larson.c", [], "server simulation, objects freed by other threads"),
    "xmalloc": ("xmalloc.c", [], "producers malloc, consumers free via a queue"),
    "cache-scratch": ("cache_false_sharing.c", ["-DSCRATCH"], "passive false sharing"),
    "cache-thrash": ("cache_false_sharing.c", [], "active false sharing"),
    "mstress": ("mstress.c", [], "mixed sizes, threads created and joined repeatedly"),
    "rptest": ("rptest.c", [], "power-law sizes and lifetimes, some remote frees"),
    "alloc-test": ("alloc-test.c", [], "malloc/realloc/free mix"),
    "glibc-simple": ("glibc-simple.c", [], "tight single-thread malloc/free loop"),
    "glibc-thread": ("glibc-thread.c", [], "tight malloc/free loop in N threads"),
    "sh6bench": ("sh6bench.c", [], "batches freed in varied orders"),
    "sh8bench": ("sh8bench.c", [], "batches freed in varied orders by another thread"),
    "malloc-large": ("malloc-large.c", [], "1-32 MiB objects"),
    "cfrac": ("cfrac.c", [], "big-integer arithmetic, many tiny short-lived objects"),
}
REAL_WORKLOADS = {
    "python": "CPython (PYTHONMALLOC=malloc) on dicts, lists and strings",
    "sqlite": "sqlite3 in-memory: inserts, indexes, updates, queries",
    "redis": "redis-server driven by redis-benchmark over loopback",
    "gcc": "gcc -O2 compiling a large generated C file",
}
RUST_WORKLOAD = "rust-alloc"
ALL_WORKLOADS = list(C_WORKLOADS) + list(REAL_WORKLOADS) + [RUST_WORKLOAD]

SMOKE_SCALE = 0.05


def log(msg):
    print(msg, flush=True)


def warn(msg):
    print("warning: " + msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Process control
# --------------------------------------------------------------------------

def _exit_code(status):
    """Decode a wait status: >= 0 exit code, < 0 terminating signal."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return -1


def wait_child(proc, timeout):
    """Wait for `proc` (started with start_new_session=True) for at most
    `timeout` seconds; on timeout its whole process group is killed.

    Returns (exit code, rusage, timed_out).  os.wait4 gives the child's own
    resource usage, including its reaped descendants (e.g. gcc's cc1)."""
    state = {"reaped": False, "timed_out": False}
    lock = threading.Lock()

    def on_timeout():
        with lock:
            if state["reaped"]:
                return
            state["timed_out"] = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    timer = threading.Timer(timeout, on_timeout)
    timer.daemon = True
    timer.start()
    try:
        while True:
            try:
                _, status, rusage = os.wait4(proc.pid, 0)
                break
            except InterruptedError:
                continue
    finally:
        with lock:
            state["reaped"] = True
        timer.cancel()
    code = _exit_code(status)
    proc.returncode = code  # keep Popen from trying to reap it again
    if state["timed_out"] or code < 0:
        # Take down anything the child left behind in its group.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return code, rusage, state["timed_out"]


class RunResult:
    def __init__(self, status, seconds=None, rss_kib=None, code=None, detail=""):
        self.status = status  # ok | fail | crash | timeout
        self.seconds = seconds
        self.rss_kib = rss_kib
        self.code = code
        self.detail = detail

    @property
    def ok(self):
        return self.status == "ok"


def signal_name(sig):
    try:
        return signal.Signals(sig).name
    except ValueError:
        return "signal %d" % sig


def tail(path, limit=300):
    try:
        data = Path(path).read_bytes()[-limit:]
    except OSError:
        return ""
    return data.decode("utf-8", "replace").strip().replace("\n", " | ")


def spawn(ctx, argv, allocator, name, stdout, stderr, stdin=subprocess.DEVNULL,
          extra_env=None, cwd=None):
    """Start `argv` under `allocator` in a new process group.

    With the `measure` helper (the normal case) the preload is set by the
    helper for the program only and the helper records time, status and
    peak RSS in `<name>.measure`.  Returns (Popen, result file or None)."""
    env = ctx.env_for(allocator, extra_env, preload=not ctx.measure)
    result_file = None
    if ctx.measure:
        result_file = ctx.runs_dir / (name + ".measure")
        argv = [str(ctx.measure), str(result_file), ctx.libs.get(allocator) or "", "--"] + argv
    proc = subprocess.Popen(argv, env=env, stdin=stdin, stdout=stdout, stderr=stderr,
                            cwd=cwd, start_new_session=True)
    return proc, result_file


# --cpu-time: report the measured program's CPU time (user + system, its
# waited-for children included) instead of its wall time.
CPU_TIME = False


def finish(proc, result_file, timeout, t0):
    """Wait for a process from spawn(); returns (exit code or -signal,
    peak RSS in KiB, seconds, timed_out)."""
    code, rusage, timed_out = wait_child(proc, timeout)
    seconds = time.perf_counter() - t0
    rss = rusage.ru_maxrss  # KiB on Linux
    if result_file is not None and not timed_out:
        try:
            fields = result_file.read_text().split()
            kind, c, r, secs = fields[:4]
            if CPU_TIME and len(fields) > 4:
                secs = fields[4]
            code = -int(c) if kind == "signal" else int(c)
            rss, seconds = int(r), float(secs)
        except (OSError, ValueError):
            pass  # the helper itself died: keep what wait4 said
    return code, rss, seconds, timed_out


def run_cmd(ctx, argv, allocator, name, timeout, stdin_path=None, extra_env=None, cwd=None):
    """Run one measured command.  stdout/stderr go to files in the runs
    directory named after `name`; returns (RunResult, stdout path)."""
    out_path = ctx.runs_dir / (name + ".out")
    err_path = ctx.runs_dir / (name + ".err")
    stdin_f = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    try:
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            t0 = time.perf_counter()
            try:
                proc, result_file = spawn(ctx, argv, allocator, name, out, err, stdin_f,
                                          extra_env, cwd)
            except OSError as e:
                return RunResult("fail", detail="cannot start: %s" % e), out_path
            code, rss, seconds, timed_out = finish(proc, result_file, timeout, t0)
    finally:
        if stdin_path:
            stdin_f.close()
    if timed_out:
        return RunResult("timeout", seconds, rss, code, "killed after %g s" % timeout), out_path
    if code < 0:
        return RunResult("crash", seconds, rss, code,
                         "%s: %s" % (signal_name(-code), tail(err_path))), out_path
    if code != 0:
        return RunResult("fail", seconds, rss, code,
                         "exit %d: %s" % (code, tail(err_path))), out_path
    if b"cannot be preloaded" in err_path.read_bytes():
        return RunResult("fail", seconds, rss, code, "preload failed: " + tail(err_path)), out_path
    return RunResult("ok", seconds, rss, code), out_path


def quiet_run(argv, timeout, **kw):
    """Run a helper command (build, install); returns CompletedProcess or
    None when it could not run or timed out."""
    try:
        return subprocess.run(argv, timeout=timeout, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, **kw)
    except (OSError, subprocess.TimeoutExpired) as e:
        warn("%s: %s" % (" ".join(map(str, argv[:3])), e))
        return None


# --------------------------------------------------------------------------
# Environment: packages, allocator libraries
# --------------------------------------------------------------------------

def dpkg_installed(pkg):
    r = quiet_run(["dpkg-query", "-W", "-f=${Status}", pkg], 30)
    return r is not None and r.returncode == 0 and b"install ok installed" in r.stdout


def ensure_packages(packages, allow_install):
    """Install missing Debian packages when running as root."""
    if not shutil.which("dpkg-query"):
        return
    missing = [p for p in packages if not dpkg_installed(p)]
    if not missing:
        return
    if not allow_install:
        warn("missing packages (not installing): " + " ".join(missing))
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        warn("missing packages and not root, skipping what needs them: " + " ".join(missing))
        return
    log("installing: " + " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = quiet_run(["apt-get", "update"], 600, env=env)
    if r is None or r.returncode != 0:
        warn("apt-get update failed")
    r = quiet_run(["apt-get", "install", "-y", "--no-install-recommends"] + missing, 1200, env=env)
    if r is None or r.returncode != 0:
        warn("apt-get install failed:\n" + (r.stdout.decode(errors="replace")[-2000:] if r else ""))


def find_library(pkg, filename):
    """Locate an allocator's shared object, via dpkg first, then the usual
    library directories."""
    if shutil.which("dpkg-query"):
        r = quiet_run(["dpkg-query", "-L", pkg], 30)
        if r is not None and r.returncode == 0:
            for line in r.stdout.decode(errors="replace").splitlines():
                if line.endswith("/" + filename) and os.path.exists(line):
                    return line
    machine = platform.machine()
    for d in ["/usr/lib/%s-linux-gnu" % machine, "/lib/%s-linux-gnu" % machine,
              "/usr/lib64", "/usr/lib", "/usr/local/lib"]:
        p = os.path.join(d, filename)
        if os.path.exists(p):
            return p
    return None


# --------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------

class Context:
    """Everything a workload needs to prepare and run."""

    def __init__(self, args, tmp):
        self.args = args
        self.tmp = tmp
        self.bin_dir = tmp / "bin"
        self.bin_dir.mkdir()
        self.runs_dir = tmp / "runs"
        self.runs_dir.mkdir()
        self.threads = args.threads
        self.scale = args.scale
        self.libs = {}  # allocator -> preload path, None for glibc
        self.measure = None  # path of the measure helper once built
        self.selected_allocators = args.allocators
        self.base_env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}

    def env_for(self, allocator, extra=None, preload=True):
        """The environment for a run under `allocator`: its preload (unless
        the measure helper sets it) and a variant's APEX_* options."""
        env = dict(self.base_env)
        lib = self.libs.get(allocator) if preload else None
        if lib:
            env["LD_PRELOAD"] = lib
        if allocator in APEX_VARIANTS:
            env.update(APEX_VARIANTS[allocator])
        if extra:
            env.update(extra)
        return env


class Workload:
    """Base class: a command run once per (allocator, repetition)."""
    packages = []  # Debian packages it needs

    def __init__(self, name, description):
        self.name = name
        self.description = description
        self.unavailable = None  # reason, when it cannot run here

    def allocators(self, selected):
        return [a for a in selected if a in PRELOAD_ALLOCATORS_ALL]

    def prepare(self, ctx):
        """Build or generate inputs; set self.unavailable on failure."""

    def command(self, ctx, allocator):
        raise NotImplementedError

    def verify(self, ctx, stdout_text):
        """Return an error message if the output is wrong."""
        return None

    def preload_for(self, allocator):
        """Which preload allocator the command runs under."""
        return allocator

    def run(self, ctx, allocator, run_id):
        argv, stdin_path, extra_env = self.command(ctx, allocator)
        res, out_path = run_cmd(ctx, argv, self.preload_for(allocator), run_id, ctx.args.timeout,
                                stdin_path=stdin_path, extra_env=extra_env, cwd=ctx.tmp)
        if res.ok:
            err = self.verify(ctx, out_path.read_text(errors="replace"))
            if err:
                res.status, res.detail = "fail", err
        return res


class CWorkload(Workload):
    packages = ["gcc", "libc6-dev"]

    def __init__(self, name):
        src, flags, desc = C_WORKLOADS[name]
        super().__init__(name, desc)
        self.src = WORKLOAD_SRC / src
        self.flags = flags

    def prepare(self, ctx):
        exe = ctx.bin_dir / self.name
        r = quiet_run(["gcc", "-O2", "-pthread", "-Wall"] + self.flags +
                      ["-o", str(exe), str(self.src)], 300)
        if r is None or r.returncode != 0:
            self.unavailable = "build failed"
            if r is not None:
                warn("building %s failed:\n%s" % (self.name, r.stdout.decode(errors="replace")))
        self.exe = exe

    def command(self, ctx, allocator):
        return [str(self.exe), str(ctx.threads), "%g" % ctx.scale], None, None


def system_python():
    """The real interpreter binary (not a shell shim such as pyenv's)."""
    for cand in ["/usr/bin/python3", os.path.realpath(sys.executable)]:
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            with open(cand, "rb") as f:
                if f.read(4) == b"\x7fELF":
                    return cand
    return None


class PythonWorkload(Workload):
    packages = ["python3"]

    def prepare(self, ctx):
        self.python = system_python()
        if not self.python:
            self.unavailable = "no python3 binary found"

    def command(self, ctx, allocator):
        # Route every object through malloc instead of pymalloc's arenas.
        return ([self.python, str(REAL_DIR / "py_alloc.py"), "%g" % ctx.scale], None,
                {"PYTHONMALLOC": "malloc", "PYTHONHASHSEED": "0"})

    def verify(self, ctx, out):
        return None if " ok" in out else "unexpected output: " + out[-200:]


class SqliteWorkload(Workload):
    packages = ["sqlite3"]

    def prepare(self, ctx):
        if not shutil.which("sqlite3"):
            self.unavailable = "sqlite3 not installed"
            return
        n = max(1000, int(150000 * ctx.scale))
        self.script = ctx.tmp / "sqlite.sql"
        self.expected = sqlite_generate(self.script, n)

    def command(self, ctx, allocator):
        return ["sqlite3", "-batch", "-bail", ":memory:"], self.script, None

    def verify(self, ctx, out):
        got = [l.strip() for l in out.strip().splitlines()]
        if got != self.expected:
            return "wrong query result: %r != %r" % (got[:6], self.expected)
        return None


def sqlite_generate(path, n):
    """Write an insert/update/query script for n rows; return the expected
    output lines, computed independently in Python."""
    rows = {}
    with open(path, "w") as f:
        f.write("CREATE TABLE users(id INTEGER PRIMARY KEY, grp INTEGER, "
                "name TEXT, score INTEGER);\nBEGIN;\n")
        for i in range(1, n + 1):
            name = "user-%08x-%d" % ((i * 2654435761) % (1 << 32), i)
            score = (i * 7919) % 10007
            rows[i] = [i % 97, name, score]
            f.write("INSERT INTO users VALUES(%d,%d,'%s',%d);\n" % (i, i % 97, name, score))
        f.write("COMMIT;\n"
                "CREATE INDEX users_grp ON users(grp, score);\n"
                "CREATE INDEX users_name ON users(name);\n"
                "UPDATE users SET name = name || '-updated' WHERE id % 3 = 0;\n"
                "DELETE FROM users WHERE id % 5 = 0;\n"
                "CREATE TABLE stats AS SELECT grp, count(*) AS n, sum(score) AS s "
                "FROM users GROUP BY grp;\n"
                "SELECT count(*), sum(id), sum(score), sum(length(name)) FROM users;\n"
                "SELECT count(*) FROM users u JOIN stats s ON u.grp = s.grp "
                "WHERE u.score > s.s / s.n;\n"
                "SELECT length(group_concat(name, ',')) FROM users WHERE grp < 10;\n"
                "SELECT name FROM users ORDER BY name DESC LIMIT 1;\n")
    for i, r in rows.items():
        if i % 3 == 0:
            r[1] += "-updated"
    live = {i: r for i, r in rows.items() if i % 5 != 0}
    groups = {}
    for r in live.values():
        g = groups.setdefault(r[0], [0, 0])
        g[0] += 1
        g[1] += r[2]
    above = sum(1 for r in live.values() if r[2] > groups[r[0]][1] // groups[r[0]][0])
    low = [r[1] for r in live.values() if r[0] < 10]
    return [
        "%d|%d|%d|%d" % (len(live), sum(live), sum(r[2] for r in live.values()),
                         sum(len(r[1]) for r in live.values())),
        str(above),
        str(sum(map(len, low)) + len(low) - 1),
        max(r[1] for r in live.values()),
    ]


class GccWorkload(Workload):
    packages = ["gcc", "libc6-dev"]

    def prepare(self, ctx):
        if not shutil.which("gcc"):
            self.unavailable = "gcc not installed"
            return
        self.src = ctx.tmp / "generated.c"
        self.expected = gcc_generate(self.src, max(20, int(250 * ctx.scale)))

    def command(self, ctx, allocator):
        self.exe = ctx.tmp / "generated"
        if self.exe.exists():
            self.exe.unlink()  # so verify() can only see this run's output
        return ["gcc", "-O2", "-o", str(self.exe), str(self.src)], None, None

    def verify(self, ctx, out):
        # Run the compiled program (without the preload) to check the code.
        r = quiet_run([str(self.exe)], 60)
        if r is None or r.returncode != 0:
            return "generated program failed"
        got = r.stdout.decode().strip()
        return None if got == str(self.expected) else "checksum %s != %d" % (got, self.expected)


def gcc_generate(path, nfuncs):
    """Write a C file with `nfuncs` functions (tables, loops, switches) and
    return the checksum its main() prints."""
    mask = (1 << 64) - 1
    state = 12345

    def rnd():
        nonlocal state
        state = (state * 6364136223846793005 + 1442695040888963407) & mask
        return state >> 11

    lines = ["#include <stdio.h>", "#include <stdint.h>", "typedef uint64_t u64;", ""]
    funcs = []
    for i in range(nfuncs):
        table = [rnd() & 0xFFFFFFFF for _ in range(16)]
        c0, c1 = rnd() | 1, rnd() | 1
        cases = [(rnd(), rnd() % 13 + 1) for _ in range(8)]
        funcs.append((table, c0, c1, cases))
        lines.append("static const u64 table_%d[16] = {%s};" %
                     (i, ", ".join("%dULL" % t for t in table)))
        lines.append("struct rec_%d { u64 a, b; u64 v[4]; };" % i)
        lines.append("static u64 __attribute__((noinline)) f_%d(u64 x) {" % i)
        lines.append("    struct rec_%d r = { x ^ %dULL, x + %dULL, {x, x >> 1, x >> 2, x >> 3} };"
                     % (i, c0, c1))
        lines.append("    u64 acc = r.a + r.b;")
        lines.append("    for (int k = 0; k < 4; k++) acc = (acc * %dULL) + (r.v[k] ^ table_%d[(x + k) & 15]);"
                     % (c1, i))
        lines.append("    switch (acc & 7) {")
        for j, (d, s) in enumerate(cases):
            lines.append("    case %d: acc ^= %dULL; acc += acc >> %d; break;" % (j, d, s))
        lines.append("    }")
        lines.append("    return acc;")
        lines.append("}")
        lines.append("")
    lines.append("int main(void) {")
    lines.append("    u64 x = 1, sum = 0;")
    for i in range(nfuncs):
        lines.append("    x = f_%d(x + %d); sum ^= x;" % (i, i))
    lines.append('    printf("%llu\\n", (unsigned long long)sum);')
    lines.append("    return 0;")
    lines.append("}")
    Path(path).write_text("\n".join(lines) + "\n")

    # The same computation in Python, with 64-bit wrap-around.
    x, total = 1, 0
    for i, (table, c0, c1, cases) in enumerate(funcs):
        x = (x + i) & mask
        v = [x, x >> 1, x >> 2, x >> 3]
        acc = ((x ^ c0) + ((x + c1) & mask)) & mask
        for k in range(4):
            acc = ((acc * c1) + (v[k] ^ table[(x + k) & 15])) & mask
        d, s = cases[acc & 7]
        acc ^= d
        acc = (acc + (acc >> s)) & mask
        x = acc
        total ^= x
    return total


class RedisWorkload(Workload):
    """redis-server under the allocator, redis-benchmark (not preloaded) as
    the client.  Time is the benchmark's wall time; RSS is the server's."""
    packages = ["redis-server", "redis-tools"]
    TESTS = "set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,lrange_100"

    def prepare(self, ctx):
        self.server = shutil.which("redis-server")
        self.bench = shutil.which("redis-benchmark")
        if not self.server or not self.bench:
            self.unavailable = "redis-server/redis-benchmark not installed"
        self.requests = max(1000, int(12000 * ctx.scale))

    def run(self, ctx, allocator, run_id):
        rdir = ctx.runs_dir / (run_id + ".redis")
        rdir.mkdir()
        port = free_port()
        argv = [self.server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--dir", str(rdir),
                "--logfile", str(rdir / "server.log")]
        err_path = rdir / "server.err"
        server = None
        res = None
        try:
            with open(err_path, "wb") as err:
                server, result_file = spawn(ctx, argv, allocator, run_id + ".server", err, err)
                t0 = time.perf_counter()
            if not redis_wait_ready(port, server.pid, 20):
                res = RunResult("fail", detail="server not ready: " + tail(err_path) +
                                tail(rdir / "server.log"))
            else:
                # The client runs without the allocator under test.
                res, out_path = run_cmd(
                    ctx, [self.bench, "-h", "127.0.0.1", "-p", str(port), "-q", "-c", "16",
                          "-d", "128", "-r", "100000", "-n", str(self.requests),
                          "-t", self.TESTS], "glibc", run_id, ctx.args.timeout)
                if res.ok:
                    out = out_path.read_text(errors="replace")
                    if out.count("requests per second") < len(self.TESTS.split(",")):
                        res.status, res.detail = "fail", "benchmark incomplete: " + out[-200:]
                    else:
                        err = redis_check(port)
                        if err:
                            res.status, res.detail = "fail", err
        finally:
            # Always stop the server, whatever happened above.
            if server is not None:
                res = self._stop(server, result_file, t0, port, res, err_path)
        return res

    def _stop(self, server, result_file, t0, port, res, err_path):
        """Shut the server down (SHUTDOWN NOSAVE, SIGKILL after a grace
        period) and fold its fate into the result."""
        if alive(server.pid):
            try:
                redis_command(port, ["SHUTDOWN", "NOSAVE"], timeout=5)
            except OSError:
                pass  # the connection drops when the server exits
        code, rss, _, timed_out = finish(server, result_file, 15, t0)
        if res is None:
            res = RunResult("fail", detail="runner error")
        res.rss_kib = rss
        if code < 0 and not timed_out and res.status in ("ok", "fail"):
            res.status = "crash"
            res.detail = "redis-server %s: %s" % (signal_name(-code), tail(err_path))
        elif timed_out and res.ok:
            res.status, res.detail = "timeout", "redis-server did not shut down"
        return res


def alive(pid):
    """True while child `pid` has not exited (does not reap it, so wait4
    can still collect its resource usage)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:
        return False


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_command(port, args, timeout=5):
    """Send one command with a minimal RESP client; return the decoded reply
    (bytes for strings, int, list, or an Exception for -ERR)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        payload = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            payload += b"$%d\r\n%s\r\n" % (len(a), a)
        s.sendall(payload)
        f = s.makefile("rb")
        try:
            return _resp_read(f)
        finally:
            f.close()


def _resp_read(f):
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise OSError("connection closed")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body
    if kind == b"-":
        return RuntimeError(body.decode(errors="replace"))
    if kind == b":":
        return int(body)
    if kind == b"$":
        n = int(body)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if kind == b"*":
        return [_resp_read(f) for _ in range(int(body))]
    raise OSError("bad reply %r" % line)


def redis_wait_ready(port, pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return False
        try:
            if redis_command(port, ["PING"], timeout=1) == b"PONG":
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def redis_check(port):
    """Functional check after the benchmark: large value round trip."""
    try:
        value = bytes((i * 7) % 251 for i in range(100000))
        if redis_command(port, ["SET", "bench:check", value]) != b"OK":
            return "SET failed"
        if redis_command(port, ["GET", "bench:check"]) != value:
            return "GET returned a different value"
        size = redis_command(port, ["DBSIZE"])
        if not isinstance(size, int) or size < 2:
            return "unexpected DBSIZE %r" % (size,)
    except OSError as e:
        return "check failed: %s" % e
    return None


class RustWorkload(Workload):
    """The Rust binary built once per #[global_allocator] choice."""

    def allocators(self, selected):
        out = []
        for a in RUST_ALLOCATORS:
            if a in selected or (a == "system" and "glibc" in selected):
                out.append(a)
        return out

    def prepare(self, ctx):
        self.exes = {}
        cargo = shutil.which("cargo")
        if not cargo:
            self.unavailable = "cargo not found"
            return
        src = RUST_DIR
        target = RUST_DIR / "target"
        apex_crate = (REPO / "hosted" / "Cargo.toml").exists()
        if not apex_crate:
            # Cargo needs every path dependency's manifest, even optional
            # ones: build a copy whose manifest leaves apexalloc out.
            src = stage_rust_without_apexalloc(target)
        wanted = self.allocators(ctx.selected_allocators)
        for alloc in wanted:
            if alloc == "apexalloc" and not apex_crate:
                warn("rust-alloc: %s/hosted has no Cargo.toml yet, skipping apexalloc" % REPO)
                continue
            features = [] if alloc == "system" else ["--features", "global-" + alloc]
            log("building rust-alloc (%s)" % alloc)
            r = quiet_run([cargo, "build", "--release", "--bin", "rust-alloc"] + features, 1800,
                          cwd=src, env=dict(ctx.base_env, CARGO_TARGET_DIR=str(target)))
            if r is None or r.returncode != 0:
                warn("rust-alloc (%s) failed to build, skipping:\n%s" % (
                    alloc, r.stdout.decode(errors="replace")[-3000:] if r else ""))
                continue
            exe = ctx.bin_dir / ("rust-alloc-" + alloc)
            shutil.copy2(target / "release" / "rust-alloc", exe)
            self.exes[alloc] = exe
        if not self.exes:
            self.unavailable = "no variant built"

    def preload_for(self, allocator):
        return "glibc"  # the allocator is compiled in; never preload one

    def command(self, ctx, allocator):
        return [str(self.exes[allocator]), str(ctx.threads), "%g" % ctx.scale], None, None

    def verify(self, ctx, out):
        return None if "rust-alloc (" in out else "unexpected output"


def stage_rust_without_apexalloc(target):
    staged = target / "staged-src"
    if staged.exists():
        shutil.rmtree(staged)
    staged.mkdir(parents=True)
    for d in ("src", "benches"):
        shutil.copytree(RUST_DIR / d, staged / d)
    lines = []
    for line in (RUST_DIR / "Cargo.toml").read_text().splitlines():
        if re.match(r"\s*apexalloc\s*=\s*\{", line):
            continue  # the path dependency itself
        if re.match(r"\s*apexalloc\s*=\s*\[", line):
            line = "apexalloc = []"  # keep the feature name, without the crate
        lines.append(line)
    (staged / "Cargo.toml").write_text("\n".join(lines) + "\n")
    if (RUST_DIR / "Cargo.lock").exists():
        shutil.copy2(RUST_DIR / "Cargo.lock", staged / "Cargo.lock")
    return staged


def make_workload(name):
    if name in C_WORKLOADS:
        return CWorkload(name)
    if name == RUST_WORKLOAD:
        return RustWorkload(name, "Rust BTreeMap/Vec<String>/HashMap churn, per #[global_allocator]")
    cls = {"python": PythonWorkload, "sqlite": SqliteWorkload,
           "redis": RedisWorkload, "gcc": GccWorkload}[name]
    return cls(name, REAL_WORKLOADS[name])


# --------------------------------------------------------------------------
# Allocator discovery
# --------------------------------------------------------------------------

def build_helper(ctx, name, libs=()):
    """Compile a helper program from workloads/<name>.c; None on failure."""
    if not shutil.which("gcc"):
        return None
    exe = ctx.bin_dir / name
    r = quiet_run(["gcc", "-O2", "-o", str(exe), str(WORKLOAD_SRC / (name + ".c"))] + list(libs),
                  120)
    return exe if r is not None and r.returncode == 0 else None


def build_probe(ctx):
    return build_helper(ctx, "malloc_probe", ["-ldl"])


def check_interposes(probe, lib):
    """True when preloading `lib` really replaces malloc."""
    if probe is None:
        return True  # cannot tell; trust it
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env["LD_PRELOAD"] = lib
    r = quiet_run([str(probe)], 30, env=env)
    if r is None or r.returncode != 0:
        return False
    got = r.stdout.decode(errors="replace").strip().splitlines()
    return bool(got) and os.path.realpath(got[-1]) == os.path.realpath(lib)


def resolve_allocators(ctx, wanted, probe):
    """Fill ctx.libs for the preload allocators that can be used here and
    return their names (in the canonical order)."""
    usable = []
    for a in PRELOAD_ALLOCATORS_ALL:
        if a not in wanted:
            continue
        if a == "glibc":
            ctx.libs[a] = None
            usable.append(a)
            continue
        if a == "apexalloc" or a in APEX_VARIANTS:
            lib = str(Path(ctx.args.apex_lib).resolve())
            if not os.path.exists(lib):
                log("apexalloc: %s not found, skipping apexalloc "
                    "(build it with: cargo build --release -p apexalloc-preload)" % lib)
                continue
        elif a in ANCHOR_ALLOCATORS:
            lib = str(Path(ctx.args.anchors_dir).resolve() / ANCHOR_ALLOCATORS[a])
            if not os.path.exists(lib):
                warn("%s: %s not found, skipping (build it with %s or --build-anchors)"
                     % (a, lib, ANCHORS_BUILD.relative_to(REPO)))
                continue
        else:
            pkg, filename = ALLOCATOR_PACKAGES[a]
            lib = find_library(pkg, filename)
            if not lib:
                warn("%s: %s not found, skipping" % (a, filename))
                continue
        if not check_interposes(probe, lib):
            warn("%s: preloading %s does not replace malloc, skipping" % (a, lib))
            continue
        ctx.libs[a] = lib
        usable.append(a)
    return usable


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------

def median(xs):
    return statistics.median(xs) if xs else None


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def summarise(results, plan):
    """results: list of (workload, allocator, run, RunResult).
    Returns {workload: {allocator: summary dict}} in plan order."""
    summary = {}
    for wl, allocs in plan:
        per = {}
        for a in allocs:
            rs = [r for (w, al, _, r) in results if w == wl and al == a]
            ok = [r for r in rs if r.ok]
            statuses = {}
            for r in rs:
                statuses[r.status] = statuses.get(r.status, 0) + 1
            per[a] = {
                "runs": len(rs),
                "ok": len(ok),
                "statuses": statuses,
                "time": median([r.seconds for r in ok]),
                "rss": median([r.rss_kib / 1024.0 for r in ok if r.rss_kib is not None]),
            }
        times = [s["time"] for s in per.values() if s["time"]]
        rsss = [s["rss"] for s in per.values() if s["rss"]]
        best_t, best_r = (min(times) if times else None), (min(rsss) if rsss else None)
        mi = per.get("mimalloc")
        for s in per.values():
            s["t_best"] = s["time"] / best_t if s["time"] and best_t else None
            s["r_best"] = s["rss"] / best_r if s["rss"] and best_r else None
            s["t_mi"] = (s["time"] / mi["time"]) if s["time"] and mi and mi["time"] else None
            s["r_mi"] = (s["rss"] / mi["rss"]) if s["rss"] and mi and mi["rss"] else None
        summary[wl] = per
    return summary


def fmt(x, spec="%.2f", none="-"):
    return none if x is None else spec % x


def status_text(s):
    if s["runs"] == 0:
        return "not run"
    if s["ok"] == s["runs"]:
        return "ok"
    bad = ", ".join("%s %d" % (k, v) for k, v in sorted(s["statuses"].items()) if k != "ok")
    return "%d/%d ok (%s)" % (s["ok"], s["runs"], bad)


def write_markdown(path, summary, descriptions, meta, criterion_rows, skipped):
    out = ["# Allocator benchmark results", ""]
    out.append("- date: %s" % meta["date"])
    out.append("- machine: %s, %d cores" % (meta["machine"], meta["cores"]))
    out.append("- threads: %d, scale: %g, runs: %d, timeout: %g s" %
               (meta["threads"], meta["scale"], meta["runs"], meta["timeout"]))
    out.append("- allocators: %s" % ", ".join("%s (%s)" % (a, l or "libc")
                                              for a, l in meta["libs"].items()))
    for what, why in skipped:
        out.append("- skipped %s: %s" % (what, why))
    out.append("")
    if CPU_TIME:
        out.append("Times are CPU times (user + system, --cpu-time), not wall times.")
    out.append("Times and peak RSS are medians over successful runs.  Ratios are "
               "relative to the best allocator for that workload (1.00 = best) and "
               "to mimalloc.")
    out.append("")
    for wl, per in summary.items():
        out.append("## %s" % wl)
        out.append("")
        out.append(descriptions.get(wl, ""))
        out.append("")
        out.append("| allocator | status | time (s) | peak RSS (MiB) | time / best | "
                   "time / mimalloc | RSS / best | RSS / mimalloc |")
        out.append("|---|---|---:|---:|---:|---:|---:|---:|")
        for a, s in per.items():
            out.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                a, status_text(s), fmt(s["time"], "%.3f"), fmt(s["rss"], "%.1f"),
                fmt(s["t_best"]), fmt(s["t_mi"]), fmt(s["r_best"]), fmt(s["r_mi"])))
        out.append("")
    out.append("## Geometric means")
    out.append("")
    out.append("Over the workloads where the allocator succeeded (each ratio is taken "
               "against the best allocator of that workload; lower is better).")
    out.append("")
    out.append("| allocator | workloads | time / best | RSS / best | time / mimalloc | "
               "RSS / mimalloc |")
    out.append("|---|---:|---:|---:|---:|---:|")
    allocs = []
    for per in summary.values():
        for a in per:
            if a not in allocs:
                allocs.append(a)
    for a in allocs:
        rows = [per[a] for per in summary.values() if a in per and per[a]["time"]]
        out.append("| %s | %d | %s | %s | %s | %s |" % (
            a, len(rows), fmt(geomean([r["t_best"] for r in rows])),
            fmt(geomean([r["r_best"] for r in rows])),
            fmt(geomean([r["t_mi"] for r in rows])),
            fmt(geomean([r["r_mi"] for r in rows]))))
    out.append("")
    if criterion_rows:
        out.append("## Criterion micro-benchmarks (GlobalAlloc fast paths)")
        out.append("")
        calloc_names = []
        table = {}
        for bench, alloc, t in criterion_rows:
            if alloc not in calloc_names:
                calloc_names.append(alloc)
            table.setdefault(bench, {})[alloc] = t
        out.append("Median estimate per iteration (lower is better).")
        out.append("")
        out.append("| benchmark | " + " | ".join(calloc_names) + " |")
        out.append("|---|" + "---:|" * len(calloc_names))
        for bench, per in table.items():
            out.append("| %s | %s |" % (bench, " | ".join(per.get(a, "-") for a in calloc_names)))
        out.append("")
    Path(path).write_text("\n".join(out))


def write_csv(path, results):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["workload", "allocator", "run", "status", "time_s", "peak_rss_mib",
                    "exit_code", "detail"])
        for wl, a, run, r in results:
            w.writerow([wl, a, run, r.status, fmt(r.seconds, "%.4f", ""),
                        fmt(None if r.rss_kib is None else r.rss_kib / 1024.0, "%.2f", ""),
                        "" if r.code is None else r.code, r.detail])


def write_svg(path, summary, title):
    """Grouped bar chart, hand-written SVG: one panel for time / best and
    one for peak RSS / best; one group of bars per workload."""
    workloads = list(summary)
    # Every allocator keeps the same position inside each group (system,
    # the Rust default, shares glibc's position and colour).
    slot_of = {a: i for i, a in enumerate(PRELOAD_ALLOCATORS_ALL)}
    slot_of["system"] = slot_of["glibc"]
    used = []
    for per in summary.values():
        for a in per:
            if a not in used:
                used.append(a)
    slots = sorted({slot_of.get(a, len(PRELOAD_ALLOCATORS_ALL)) for a in used})
    pos = {a: slots.index(slot_of.get(a, len(PRELOAD_ALLOCATORS_ALL))) for a in used}
    legend = []
    for a in used:
        if a == "system" and "glibc" in used:
            continue
        legend.append((a, "glibc / system" if a == "glibc" and "system" in used else a))
    bar_w, gap = 9, 14
    group_w = max(1, len(slots)) * bar_w + gap
    left, right, top = 60, 20, 70
    panel_h, label_h = 220, 95
    width = left + right + max(1, len(workloads)) * group_w
    height = top + 2 * (panel_h + label_h) + 10
    cap = 3.0  # ratios above this are drawn clipped, with their value printed

    e = []
    e.append('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
             'viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">'
             % (width, height, width, height))
    e.append('<rect width="100%" height="100%" fill="white"/>')
    e.append('<text x="%d" y="20" font-size="15" font-weight="bold">%s</text>'
             % (left, html.escape(title)))
    # Legend.
    x = left
    for a, label in legend:
        e.append('<rect x="%d" y="32" width="12" height="12" fill="%s"/>'
                 % (x, COLOURS.get(a, "#333")))
        e.append('<text x="%d" y="42">%s</text>' % (x + 16, html.escape(label)))
        x += 26 + 7 * len(label)
    e.append('<text x="%d" y="58" fill="#555">lower is better; 1.0 = best allocator; '
             '&#x2715; = failed; bars above %.1f are clipped</text>' % (left, cap))

    for pi, (key, label) in enumerate([("t_best", "time / best"),
                                       ("r_best", "peak RSS / best")]):
        y0 = top + pi * (panel_h + label_h)
        base = y0 + panel_h

        def ypos(v):
            return base - min(v, cap) / cap * panel_h

        # Axis, grid lines and labels.
        e.append('<text x="12" y="%d" transform="rotate(-90 12 %d)" text-anchor="middle">%s</text>'
                 % (y0 + panel_h / 2, y0 + panel_h / 2, label))
        tick = 0.0
        while tick <= cap + 1e-9:
            y = ypos(tick)
            colour, dash = ("#999", "") if abs(tick - 1.0) > 1e-9 else ("#000", ' stroke-dasharray="4 3"')
            e.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s" stroke-width="0.6"%s/>'
                     % (left, y, width - right, y, colour, dash))
            e.append('<text x="%d" y="%.1f" text-anchor="end">%.1f</text>' % (left - 4, y + 4, tick))
            tick += 0.5
        for wi, wl in enumerate(workloads):
            gx = left + wi * group_w + gap / 2
            for a in summary[wl]:
                s = summary[wl][a]
                bx = gx + pos[a] * bar_w
                v = s.get(key)
                colour = COLOURS.get(a, "#333")
                if v is None:
                    e.append('<text x="%.1f" y="%.1f" fill="%s" text-anchor="middle" '
                             'font-size="10">&#x2715;</text>' % (bx + bar_w / 2, base - 3, colour))
                    continue
                y = ypos(v)
                e.append('<rect x="%.1f" y="%.1f" width="%d" height="%.1f" fill="%s">'
                         '<title>%s %s: %.2f</title></rect>'
                         % (bx, y, bar_w - 1, base - y, colour, wl, a, v))
                if v > cap:
                    # Clipped bar: print the real value inside it, downwards.
                    tx, ty = bx + bar_w - 2.5, y + 3
                    e.append('<text x="%.1f" y="%.1f" font-size="8" fill="white" text-anchor="end" '
                             'transform="rotate(-90 %.1f %.1f)">%.1f</text>' % (tx, ty, tx, ty, v))
            lx, ly = gx + len(slots) * bar_w / 2, base + 12
            e.append('<text x="%.1f" y="%.1f" text-anchor="end" transform="rotate(-40 %.1f %.1f)">'
                     '%s</text>' % (lx, ly, lx, ly, html.escape(wl)))
        e.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#000"/>'
                 % (left, base, width - right, base))
        e.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#000"/>' % (left, y0, left, base))
    e.append("</svg>")
    Path(path).write_text("\n".join(e) + "\n")


# --------------------------------------------------------------------------
# Criterion micro-benchmarks
# --------------------------------------------------------------------------

def run_criterion(ctx, out_dir):
    cargo = shutil.which("cargo")
    if not cargo:
        warn("--criterion: cargo not found")
        return []
    target = RUST_DIR / "target"
    env = dict(ctx.base_env, CARGO_TARGET_DIR=str(target))
    log_path = out_dir / "criterion.txt"
    src = RUST_DIR
    if (REPO / "hosted" / "Cargo.toml").exists():
        feature_sets = [["mimalloc", "apexalloc"], ["mimalloc"]]
    else:
        warn("--criterion: apexalloc crate missing, benchmarking system and mimalloc only")
        src = stage_rust_without_apexalloc(target)
        feature_sets = [["mimalloc"]]
    # Compile first, so that a broken apexalloc crate only drops its rows.
    features = None
    for fs in feature_sets:
        log("building criterion benchmarks (features: %s)" % ",".join(fs))
        r = quiet_run([cargo, "bench", "--no-run", "--bench", "fastpath", "--features",
                       ",".join(fs)], 1800, cwd=src, env=env)
        if r is not None and r.returncode == 0:
            features = fs
            break
        warn("criterion build with %s failed:\n%s" % (
            ",".join(fs), r.stdout.decode(errors="replace")[-2000:] if r else ""))
    if features is None:
        return []
    log("running criterion benchmarks")
    with open(log_path, "wb") as f:
        proc = subprocess.Popen([cargo, "bench", "--bench", "fastpath", "--features",
                                 ",".join(features)], cwd=src, stdout=f, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        code, _, timed_out = wait_child(proc, 3600)
    text = log_path.read_text(errors="replace")
    if code != 0 or timed_out:
        warn("criterion run failed (see %s)" % log_path)
    rows = []
    # Criterion prints "<id>\n   time:   [lo est hi]" or "<id>  time: [...]".
    for m in re.finditer(r"^(\S+/\S+)\s*\n?\s+time:\s+\[\S+ \S+ (\S+ \S+) \S+ \S+\]", text, re.M):
        parts = m.group(1).split("/")
        bench = "/".join([parts[0]] + parts[2:])
        rows.append((bench, parts[1], m.group(2)))
    log("criterion: %d results, log in %s" % (len(rows), log_path))
    return rows


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def parse_args(argv):
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    p = argparse.ArgumentParser(description="Run the ApexAlloc benchmark suite.")
    p.add_argument("--workloads", default=",".join(ALL_WORKLOADS),
                   help="comma-separated workloads (default: all): " + ",".join(ALL_WORKLOADS))
    p.add_argument("--allocators", default=",".join(PRELOAD_ALLOCATORS),
                   help="comma-separated allocators (default: %s; also: %s); rust-alloc uses "
                        "system/mimalloc/apexalloc, where glibc selects system"
                   % (",".join(PRELOAD_ALLOCATORS),
                      ",".join(a for a in PRELOAD_ALLOCATORS_ALL if a not in PRELOAD_ALLOCATORS)))
    p.add_argument("--runs", type=int, default=None, help="repetitions (default 5, smoke 1)")
    p.add_argument("--threads", type=int, default=cores, help="threads (default: cores = %d)" % cores)
    p.add_argument("--scale", type=float, default=None,
                   help="work multiplier (default 1.0, smoke %g)" % SMOKE_SCALE)
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds per run before it is killed (default 120, smoke 30)")
    p.add_argument("--smoke", action="store_true",
                   help="one run at a tiny scale: a quick check that everything works")
    p.add_argument("--out", default=str(HERE / "results"), help="output directory")
    p.add_argument("--apex-lib", default=str(REPO / "target" / "release" / "libapexalloc.so"),
                   help="path of the apexalloc LD_PRELOAD library")
    p.add_argument("--build-apex", action="store_true",
                   help="first run: cargo build --release -p apexalloc-preload")
    p.add_argument("--require-apex", action="store_true",
                   help="fail (exit 1) if apexalloc is unavailable instead of skipping it")
    p.add_argument("--anchors-dir", default=str(REPO / "target" / "anchors"),
                   help="where anchors/build.sh puts the mimalloc3/snmalloc libraries")
    p.add_argument("--build-anchors", action="store_true",
                   help="first run anchors/build.sh (builds mimalloc3/snmalloc and their hardened "
                        "modes if one is selected and they are missing)")
    p.add_argument("--criterion", action="store_true",
                   help="also run the criterion GlobalAlloc micro-benchmarks")
    p.add_argument("--no-install", action="store_true",
                   help="never apt-get install missing packages")
    p.add_argument("--keep-temp", action="store_true", help="keep the temporary directory")
    p.add_argument("--cpu-time", action="store_true",
                   help="time = CPU time (user + system) instead of wall time, steadier on a "
                        "loaded machine (not for redis, whose time is the client's)")
    args = p.parse_args(argv)
    args.runs = args.runs if args.runs is not None else (1 if args.smoke else 5)
    args.scale = args.scale if args.scale is not None else (SMOKE_SCALE if args.smoke else 1.0)
    args.timeout = args.timeout if args.timeout is not None else (30.0 if args.smoke else 120.0)
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    args.allocators = [a.strip() for a in args.allocators.split(",") if a.strip()]
    bad = [w for w in args.workloads if w not in ALL_WORKLOADS]
    bad += [a for a in args.allocators if a not in PRELOAD_ALLOCATORS_ALL + RUST_ALLOCATORS]
    if bad:
        p.error("unknown workload/allocator: %s" % ", ".join(bad))
    if args.runs < 1 or args.threads < 1 or args.scale <= 0:
        p.error("--runs, --threads and --scale must be positive")
    return args


def main(argv=None):
    global CPU_TIME
    args = parse_args(sys.argv[1:] if argv is None else argv)
    CPU_TIME = args.cpu_time
    started = time.monotonic()
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="apexalloc-bench-"))
    try:
        return run_suite(args, out_dir, tmp, started)
    finally:
        if args.keep_temp:
            log("temporary files kept in %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run_suite(args, out_dir, tmp, started):
    ctx = Context(args, tmp)
    workloads = [make_workload(w) for w in args.workloads]

    # Install what the selection needs (root only), once.
    packages = ["gcc", "libc6-dev"]
    for wl in workloads:
        packages += wl.packages
    for a in args.allocators:
        if a in ALLOCATOR_PACKAGES:
            packages.append(ALLOCATOR_PACKAGES[a][0])
    ensure_packages(sorted(set(packages)), not args.no_install)

    if args.build_apex and "apexalloc" in args.allocators:
        log("building apexalloc-preload")
        r = quiet_run(["cargo", "build", "--release", "-p", "apexalloc-preload"], 1800, cwd=REPO)
        if r is None or r.returncode != 0:
            warn("apexalloc-preload failed to build:\n" +
                 (r.stdout.decode(errors="replace")[-3000:] if r else ""))

    if args.build_anchors and any(a in ANCHOR_ALLOCATORS for a in args.allocators):
        log("building the anchor allocators (%s)" % ", ".join(ANCHOR_ALLOCATORS))
        r = quiet_run(["bash", str(ANCHORS_BUILD), str(Path(args.anchors_dir).resolve())], 1800)
        if r is None or r.returncode != 0:
            warn("anchors/build.sh failed:\n" +
                 (r.stdout.decode(errors="replace")[-3000:] if r else ""))
        else:
            log(r.stdout.decode(errors="replace").strip())

    probe = build_probe(ctx)
    ctx.measure = build_helper(ctx, "measure")
    if not ctx.measure:
        warn("measure helper unavailable: peak RSS includes the runner's own footprint")
    preload_allocs = resolve_allocators(ctx, args.allocators, probe)
    apex_missing = "apexalloc" in args.allocators and "apexalloc" not in preload_allocs

    # Build / generate inputs.
    skipped = []
    build_failed = False
    plan = []
    for wl in workloads:
        wl.prepare(ctx)
        if wl.unavailable:
            warn("skipping %s: %s" % (wl.name, wl.unavailable))
            skipped.append((wl.name, wl.unavailable))
            build_failed |= isinstance(wl, CWorkload)
            continue
        if isinstance(wl, RustWorkload):
            allocs = [a for a in wl.allocators(args.allocators) if a in wl.exes]
            if "apexalloc" in args.allocators and "apexalloc" not in allocs:
                skipped.append(("rust-alloc apexalloc", "crate not available or not built"))
        else:
            allocs = [a for a in wl.allocators(args.allocators) if a in preload_allocs]
        if allocs:
            plan.append((wl, allocs))
    if apex_missing:
        skipped.append(("apexalloc", "library %s unavailable" % args.apex_lib))

    total = sum(len(allocs) for _, allocs in plan) * args.runs
    log("running %d workloads x allocators x %d runs = %d runs (threads %d, scale %g)"
        % (len(plan), args.runs, total, args.threads, args.scale))
    results = []
    n = 0
    for rep in range(1, args.runs + 1):
        for wl, allocs in plan:
            # Rotate the starting allocator each repetition so that no
            # allocator always runs right after the same neighbour.
            k = (rep - 1) % len(allocs)
            for a in allocs[k:] + allocs[:k]:
                n += 1
                run_id = "%s-%s-%d" % (wl.name, a, rep)
                try:
                    res = wl.run(ctx, a, run_id)
                except Exception as e:  # keep going whatever happens
                    res = RunResult("fail", detail="runner error: %r" % e)
                results.append((wl.name, a, rep, res))
                if res.ok:
                    msg = "%.2f s %.0f MiB" % (res.seconds, res.rss_kib / 1024.0)
                else:
                    msg = "%s (%s)" % (res.status.upper(), res.detail[:160])
                log("[%d/%d] %s %s run %d/%d: %s" % (n, total, wl.name, a, rep, args.runs, msg))

    criterion_rows = run_criterion(ctx, out_dir) if args.criterion else []

    plan_names = [(wl.name, allocs) for wl, allocs in plan]
    summary = summarise(results, plan_names)
    descriptions = {wl.name: wl.description for wl, _ in plan}
    libs = dict(ctx.libs)
    meta = {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": platform.platform(),
        "cores": os.cpu_count() or 1,
        "threads": args.threads, "scale": args.scale, "runs": args.runs,
        "timeout": args.timeout, "libs": libs,
    }
    write_csv(out_dir / "results.csv", results)
    write_markdown(out_dir / "results.md", summary, descriptions, meta, criterion_rows, skipped)
    write_svg(out_dir / "chart.svg", summary,
              "Allocator benchmarks: %d threads, scale %g, median of %d runs"
              % (args.threads, args.scale, args.runs))

    # Console summary: one line per workload.
    log("")
    allocs_all = []
    for _, allocs in plan:
        allocs_all += [a for a in allocs if a not in allocs_all]
    # Columns at least 12 wide, wider for long names (e.g. mimalloc3-secure).
    width = {a: max(11, len(a)) + 1 for a in allocs_all}
    log("%-14s" % "time (s)" + "".join("%*s" % (width[a], a) for a in allocs_all))
    for wl, per in summary.items():
        cells = []
        for a in allocs_all:
            s = per.get(a)
            if s is None:
                cells.append("%*s" % (width[a], ""))
            elif s["time"] is None:
                bad = [k for k in s["statuses"] if k != "ok"]
                cells.append("%*s" % (width[a], bad[0].upper() if bad else "-"))
            else:
                mark = "" if s["ok"] == s["runs"] else "*"  # some runs failed
                cells.append("%*s" % (width[a], fmt(s["time"], "%.3f") + mark))
        log("%-14s" % wl + "".join(cells))
    log("(median seconds; * = some runs failed)")
    log("results: %s, %s, %s" % (out_dir / "results.csv", out_dir / "results.md",
                                 out_dir / "chart.svg"))

    apex_bad = [(w, r) for (w, a, _, r) in results if a == "apexalloc" and not r.ok]
    other_bad = [(w, a, r) for (w, a, _, r) in results if a != "apexalloc" and not r.ok]
    for w, a, r in other_bad:
        warn("%s under %s: %s (%s)" % (w, a, r.status, r.detail[:200]))
    log("total time: %.1f s" % (time.monotonic() - started))
    if apex_bad:
        for w, r in apex_bad:
            print("APEXALLOC FAILURE: %s: %s (%s)" % (w, r.status, r.detail[:300]), file=sys.stderr)
        return 1
    if apex_missing and args.require_apex:
        print("apexalloc unavailable and --require-apex given", file=sys.stderr)
        return 1
    if build_failed:
        print("some C workloads failed to build", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
