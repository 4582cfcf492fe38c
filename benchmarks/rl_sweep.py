"""Run many `harness run` configurations in parallel (one thread each) and tabulate their gains.

Used to choose the embedded tasks' shared RL settings (docs/RL_SETTINGS.md). Not a test.

    python benchmarks/rl_sweep.py --task arith --workers 14 --out sweep/ \
        --grid '{"method": ["maskgrpo"], "lr": [1e-5, 3e-5], "beta": [0.01, 0.1]}' --steps 150
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--task", default="arith")
    p.add_argument("--grid", required=True, help="JSON dict of lists; `method` and `seed` are run flags, "
                                                 "every other key a --set override")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="sweep")
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("--eval-split", default="validation", help="choose settings on validation, never on test")
    p.add_argument("--device", default="cpu")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--set", action="append", default=[], help="shared KEY=VALUE for every run")
    p.add_argument("--compare-layout", action="store_true",
                   help="name folders as `harness compare` does (<task>__tiny__<method>__seed<S>)")
    args = p.parse_args()
    grid = json.loads(args.grid)
    keys = list(grid)
    combos = [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}

    def one(combo: dict) -> dict:
        if args.compare_layout:
            from harness.run_spec import run_dir_name

            name = run_dir_name(args.task, "tiny", combo.get("method", "maskgrpo"), combo.get("seed", 0), args.steps)
        else:
            name = "__".join(f"{k}={v}" for k, v in combo.items())
        cmd = [sys.executable, "-m", "harness.cli", "run", "--task", args.task, "--no-progress",
               "--method", str(combo.get("method", "maskgrpo")), "--seed", str(combo.get("seed", 0)),
               "--out", str(out / name), "--overwrite", "--eval-split", args.eval_split, "--device", args.device]
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        for kv in args.set:
            cmd += ["--set", kv]
        if args.steps is not None:
            cmd += ["--steps", str(args.steps)]
        for k, v in combo.items():
            if k not in ("method", "seed"):
                cmd += ["--set", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
            last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
            res = json.loads(last) if proc.returncode == 0 else {"error": proc.stderr.strip()[-400:]}
        except subprocess.TimeoutExpired:
            res = {"error": "timeout"}
        row = {**combo, **{k: res.get(k) for k in ("gain", "gain_ci95", "wall_time_s", "error")}}
        if "base" in res:
            row["base"], row["final"] = res["base"], res["final"]
        print(json.dumps(row), flush=True)
        return row

    with ThreadPoolExecutor(args.workers) as pool:
        rows = list(pool.map(one, combos))
    (out / "sweep.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
