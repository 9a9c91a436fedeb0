#!/usr/bin/env python3
"""Compare the allocation strategies of libapexalloc.so (APEX_STRATEGY):
the default engine and the classic ones, with glibc as reference.

For every workload (C stress tests of this suite and real programs) and
every strategy it records the wall time, the peak RSS and, for the classic
engines, the figures of their exit report (APEX_SHOW_STATS=1): peak live
bytes, and near the heap's peak the free bytes in blocks too small for the
request being served (external fragmentation). Two fragmentation figures
come out:

- peak RSS / peak live bytes: the memory a program needed against what it
  asked for. Peak live bytes are taken from the first-fit run (its usable
  sizes are the requests rounded up to 16 bytes), so every strategy of a
  workload is divided by the same number;
- external fragmentation: free bytes in blocks too small for the next
  request, over the bytes the engine held, near its peak.

Usage:
    python3 tests/bench/strategies.py                 # scale 0.3, 1 run
    python3 tests/bench/strategies.py --smoke         # tiny, for CI
    python3 tests/bench/strategies.py --scale 1 --runs 3 --out docs

Writes strategies-results.md, .csv and a chart (.svg) to --out
(default tests/bench/results). Only the standard library is needed.
"""

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
import run as suite  # noqa: E402  (the suite's generators and paths)

STRATEGIES = ["glibc", "apex", "first-fit", "next-fit", "best-fit", "worst-fit",
              "seglist", "buddy"]
C_WORKLOADS = ["cfrac", "alloc-test", "sh6bench", "rptest", "mstress", "larson"]
REAL = ["python", "sqlite", "gcc"]
LIVE_FROM = ["first-fit", "best-fit", "seglist", "next-fit", "worst-fit"]
COLOURS = {"glibc": "#7f7f7f", "apex": "#d62728", "first-fit": "#1f77b4",
           "next-fit": "#aec7e8", "best-fit": "#2ca02c", "worst-fit": "#98df8a",
           "seglist": "#ff7f0e", "buddy": "#9467bd"}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def measure(helper, work, argv, env, stdin_path, timeout):
    """Run argv through the suite's `measure` helper (a process forked
    from this large interpreter would inherit its RSS high-water mark);
    (status, seconds, peak RSS KiB, stderr text)."""
    result = work / "result"
    if result.exists():
        result.unlink()
    env = dict(env)
    preload = env.pop("LD_PRELOAD", "")
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    err = tempfile.TemporaryFile()
    p = subprocess.Popen([str(helper), str(result), preload, "--"] + argv, env=env,
                         stdin=stdin, stdout=subprocess.DEVNULL, stderr=err,
                         start_new_session=True)
    try:
        p.wait(timeout)
        kind, code, rss, secs = result.read_text().split()[:4]
        status = "ok" if kind == "exit" and code == "0" else "%s %s" % (kind, code)
        secs, rss = float(secs), int(rss)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        p.wait()
        status, secs, rss = "timeout", timeout, 0
    except (OSError, ValueError):
        status, secs, rss = "fail", 0.0, 0
    if stdin_path:
        stdin.close()
    err.seek(0)
    text = err.read().decode(errors="replace")
    err.close()
    return status, secs, rss, text


REPORT = re.compile(r"strategy (\S+) peak_live=(\d+) peak_held=(\d+) at_peak_live=(\d+) "
                    r"at_peak_held=(\d+) at_peak_free=(\d+) at_peak_unusable=(\d+)")


def engine_report(stderr):
    """The exit report of the process with the largest heap (gcc runs
    several processes; the compiler proper dominates)."""
    best = None
    for m in REPORT.finditer(stderr):
        v = [int(x) for x in m.groups()[1:]]
        if best is None or v[1] > best[1]:
            best = v
    return best


def prepare(work, scale, threads):
    """Build the C workloads and generate the real programs' inputs;
    returns {name: (argv, stdin path, extra env)}."""
    cmds = {}
    helper = work / "measure"
    r = subprocess.run(["gcc", "-O2", "-o", str(helper), str(suite.WORKLOAD_SRC / "measure.c")],
                       capture_output=True)
    if r.returncode != 0:
        sys.exit("cannot build the measure helper:\n" + r.stderr.decode(errors="replace"))
    for name in C_WORKLOADS:
        src, flags, _ = suite.C_WORKLOADS[name]
        exe = work / name
        r = subprocess.run(["gcc", "-O2", "-pthread"] + flags + ["-o", str(exe),
                                                                 str(suite.WORKLOAD_SRC / src)],
                           capture_output=True)
        if r.returncode != 0:
            log("skipping %s: build failed" % name)
            continue
        cmds[name] = ([str(exe), str(threads), "%g" % scale], None, {})
    py = suite.system_python()
    if py:
        cmds["python"] = ([py, str(suite.REAL_DIR / "py_alloc.py"), "%g" % scale], None,
                          {"PYTHONMALLOC": "malloc", "PYTHONHASHSEED": "0"})
    if shutil.which("sqlite3"):
        script = work / "sqlite.sql"
        suite.sqlite_generate(script, max(1000, int(150000 * scale)))
        cmds["sqlite"] = (["sqlite3", "-batch", "-bail", ":memory:"], script, {})
    if shutil.which("gcc"):
        src = work / "generated.c"
        suite.gcc_generate(src, max(20, int(250 * scale)))
        cmds["gcc"] = (["gcc", "-O2", "-c", "-o", str(work / "generated.o"), str(src)], None, {})
    return cmds


def env_for(strategy, lib, extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("APEX_")
           and k != "LD_PRELOAD"}
    env.update(extra)
    if strategy != "glibc":
        env["LD_PRELOAD"] = str(lib)
        env["APEX_STRATEGY"] = strategy
        env["APEX_SHOW_STATS"] = "1"
    return env


def svg_chart(rows, path):
    """Two panels of grouped bars: time relative to glibc, and peak RSS over
    peak live bytes, per workload."""
    workloads = sorted({r["workload"] for r in rows}, key=lambda w: (w in REAL, w))
    cell = {(r["workload"], r["strategy"]): r for r in rows}
    bw, gap, h, top = 9, 14, 220, 30
    width = 80 + len(workloads) * (len(STRATEGIES) * bw + gap)
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'font-family="sans-serif" font-size="11">' % (width, 2 * (h + 70) + 40)]
    for panel, (key, title, cap) in enumerate([
            ("time_rel", "time relative to glibc (lower is better, capped at 8x)", 8.0),
            ("rss_over_live", "peak RSS / peak live bytes (lower is better, capped at 8)", 8.0)]):
        y0 = top + panel * (h + 70)
        out.append('<text x="10" y="%d" font-weight="bold">%s</text>' % (y0 - 10, title))
        for t in range(0, 9, 2):
            y = y0 + h - h * t / cap
            out.append('<line x1="60" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>' % (width, y, y))
            out.append('<text x="50" y="%.1f" text-anchor="end">%d</text>' % (y + 4, t))
        for i, w in enumerate(workloads):
            x0 = 70 + i * (len(STRATEGIES) * bw + gap)
            for j, s in enumerate(STRATEGIES):
                r = cell.get((w, s))
                v = r.get(key) if r else None
                if v is None:
                    continue
                bh = h * min(v, cap) / cap
                out.append('<rect x="%d" y="%.1f" width="%d" height="%.1f" fill="%s">'
                           '<title>%s %s: %.2f</title></rect>'
                           % (x0 + j * bw, y0 + h - bh, bw - 1, bh, COLOURS[s], w, s, v))
            out.append('<text x="%d" y="%d" text-anchor="middle">%s</text>'
                       % (x0 + len(STRATEGIES) * bw / 2, y0 + h + 14, w))
    ly = 2 * (h + 70) + 20
    for j, s in enumerate(STRATEGIES):
        out.append('<rect x="%d" y="%d" width="10" height="10" fill="%s"/>'
                   '<text x="%d" y="%d">%s</text>' % (70 + j * 90, ly, COLOURS[s],
                                                     84 + j * 90, ly + 9, s))
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lib", default=str(ROOT / "target/release/libapexalloc.so"))
    ap.add_argument("--scale", type=float, default=0.3)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--smoke", action="store_true", help="scale 0.02, short timeout")
    ap.add_argument("--workloads", default=",".join(C_WORKLOADS + REAL))
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--from-csv", help="only render the table and chart of this results CSV")
    a = ap.parse_args()
    if a.from_csv:
        render(load_csv(a.from_csv), Path(a.out), "from %s" % a.from_csv)
        return
    if a.smoke:
        a.scale, a.timeout = 0.02, 20
    lib = Path(a.lib)
    if not lib.is_file():
        sys.exit("no %s: cargo build --release -p apexalloc-preload" % lib)
    strategies = [s for s in a.strategies.split(",") if s]
    wanted = [w for w in a.workloads.split(",") if w]
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, failed = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        cmds = prepare(Path(tmp), a.scale, a.threads)
        for w in [w for w in wanted if w in cmds]:
            argv, stdin, extra = cmds[w]
            for s in strategies:
                best = None
                for _ in range(a.runs):
                    st, secs, rss, err = measure(Path(tmp) / "measure", Path(tmp), argv,
                                                 env_for(s, lib, extra), stdin, a.timeout)
                    rep = engine_report(err) if s not in ("glibc", "apex") else None
                    if best is None or (st == "ok" and secs < best[1]):
                        best = (st, secs, rss, rep)
                st, secs, rss, rep = best
                # A timeout is a result (a strategy can be that slow), not
                # a failure; a crash or a wrong exit status is.
                if st not in ("ok", "timeout"):
                    failed += 1
                log("%-10s %-10s %-8s %7.2f s %8d KiB" % (w, s, st, secs, rss))
                row = {"workload": w, "strategy": s, "status": st, "seconds": secs,
                       "rss_kib": rss}
                if rep:
                    peak_live, peak_held, live, held, free, unusable = rep
                    row.update(peak_live=peak_live, peak_held=peak_held,
                               ext_frag=unusable / held if held else 0.0,
                               free_at_peak=free / held if held else 0.0)
                rows.append(row)
    render(rows, out_dir, "scale %g, %d run(s) (best time kept), %d threads"
           % (a.scale, a.runs, a.threads))
    sys.exit(1 if failed else 0)


NUMERIC = {"seconds": float, "rss_kib": int, "peak_live": int, "peak_held": int,
           "ext_frag": float, "free_at_peak": float}


def load_csv(path):
    """Rows of a results CSV written by this script, to render again."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row = {k: v for k, v in r.items() if v != ""}
            for k, conv in NUMERIC.items():
                if k in row:
                    row[k] = conv(row[k])
            rows.append(row)
    return rows


def render(rows, out_dir, header):
    """The relative figures, then the CSV, the markdown table and the chart."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # Shared denominators: glibc's time, first-fit's peak live bytes.
    for w in {r["workload"] for r in rows}:
        base = next((r for r in rows if r["workload"] == w and r["strategy"] == "glibc"
                     and r["status"] == "ok"), None)
        # The free-list engines share their usable sizes (requests rounded
        # up to 16 bytes): first-fit's figure, or another's if it timed out.
        live = next((r.get("peak_live") for s in LIVE_FROM for r in rows
                     if r["workload"] == w and r["strategy"] == s and r.get("peak_live")),
                    None)
        for r in rows:
            if r["workload"] != w or r["status"] != "ok":
                continue
            if base:
                r["time_rel"] = r["seconds"] / base["seconds"]
            if live:
                r["rss_over_live"] = r["rss_kib"] * 1024 / live
    cols = ["workload", "strategy", "status", "seconds", "time_rel", "rss_kib",
            "peak_live", "rss_over_live", "ext_frag", "free_at_peak"]
    with open(out_dir / "strategies-results.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, cols, extrasaction="ignore")
        wr.writeheader()
        wr.writerows(rows)
    fmt = lambda v, p: "" if v is None else p % v  # noqa: E731
    fmt_pct = lambda v: "" if v is None else "%.1f%%" % (100 * v)  # noqa: E731
    md = ["| workload | strategy | time (s) | vs glibc | peak RSS (MiB) | RSS / live "
          "| external fragmentation at peak | free at peak |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append("| %s | %s | %s | %s | %.1f | %s | %s | %s |" % (
            r["workload"], r["strategy"],
            fmt(r["seconds"], "%.2f") if r["status"] == "ok" else r["status"],
            fmt(r.get("time_rel"), "%.2f×"), r["rss_kib"] / 1024,
            fmt(r.get("rss_over_live"), "%.2f"), fmt_pct(r.get("ext_frag")),
            fmt_pct(r.get("free_at_peak"))))
    (out_dir / "strategies-results.md").write_text(header + "\n\n" + "\n".join(md) + "\n")
    svg_chart(rows, out_dir / "strategies-chart.svg")
    log("wrote %s/strategies-results.{md,csv} and strategies-chart.svg" % out_dir)


if __name__ == "__main__":
    main()
