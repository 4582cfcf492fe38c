"""Scoring throughput of the sandbox vs a plain subprocess without isolation (issue 20).

    python benchmarks/bench_sandbox.py --limit 200 --workers 4

The programs are minicode's gold solutions for its first `--limit` test problems (every one passes), run
against the problem's asserts: once through `harness.sandbox.run_many` (what scoring uses: namespaces,
seccomp, cgroup, separate program/test processes) and once as one plain `python -c` subprocess per
program (program then asserts in the same interpreter, no isolation at all), once with the venv's
default start-up (site-packages and .pth files processed) and once with `-I -S` as the sandbox child
starts, all with `--workers` threads at a time. The two are interleaved in chunks of `--chunk` programs so load changes hit both alike.
Prints a table and one JSON object (programs per second; the ratio sandbox / plain).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.sandbox import run_many  # noqa: E402
from tasks.base import get_task  # noqa: E402
from tasks.extract import extract_code  # noqa: E402


def plain(job: dict, flags: tuple[str, ...] = ()) -> bool:
    src = "\n".join([job["setup"], job["program"], job["test_setup"], *job["tests"]])
    r = subprocess.run([sys.executable, *flags, "-c", src], capture_output=True, timeout=job["timeout"])
    return r.returncode == 0


RUNNERS = {"plain": (), "plain -I -S": ("-I", "-S")}  # -I -S: the interpreter start-up the sandbox child uses


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--chunk", type=int, default=20)
    args = p.parse_args(argv)
    task = get_task("minicode")
    exs = task.load(split="test", limit=args.limit)
    jobs = [dict(program=extract_code(ex.solution), tests=list(ex.reference["tests"]),
                 setup=ex.reference.get("setup", ""), test_setup=ex.reference.get("test_setup", ""),
                 names=ex.reference.get("names"), timeout=10.0) for ex in exs]
    secs = {"sandbox": 0.0, **{k: 0.0 for k in RUNNERS}}
    ok = {k: 0 for k in secs}
    load0 = os.getloadavg()[0]
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        for i in range(0, len(jobs), args.chunk):
            part = jobs[i:i + args.chunk]
            t0 = time.perf_counter()
            res = run_many(part, workers=args.workers)
            secs["sandbox"] += time.perf_counter() - t0
            ok["sandbox"] += sum(r.status == "ok" and all(r.passed) for r in res)
            for name, flags in RUNNERS.items():
                t0 = time.perf_counter()
                ok[name] += sum(pool.map(lambda j, f=flags: plain(j, f), part))
                secs[name] += time.perf_counter() - t0
    n = len(jobs)
    rows = {k: {"programs_per_s": round(n / secs[k], 2), "seconds": round(secs[k], 2), "passed": ok[k]}
            for k in secs}
    ratio = {k: round(rows["sandbox"]["programs_per_s"] / rows[k]["programs_per_s"], 3) for k in RUNNERS}
    print(f"minicode gold programs: {n}, {args.workers} workers, load {load0:.2f}->{os.getloadavg()[0]:.2f}")
    print("| runner | programs/s | seconds | passed |\n|---|---|---|---|")
    for k, r in rows.items():
        print(f"| {k} | {r['programs_per_s']:.1f} | {r['seconds']:.1f} | {r['passed']}/{n} |")
    print("sandbox / plain throughput: " + ", ".join(f"{v} (vs {k})" for k, v in ratio.items()))
    doc = {"benchmark": "sandbox", "programs": n, "workers": args.workers, "rows": rows,
           "sandbox_over_plain": ratio, "loadavg_before": round(load0, 2),
           "loadavg_after": round(os.getloadavg()[0], 2)}
    print(json.dumps(doc))
    return doc


if __name__ == "__main__":
    main()
