"""Does RL with fast rollouts gain as much as with today's rollouts? (issue 20)

    HARNESS_HOME=... python benchmarks/rl_fast_gain.py --task arith --method maskgrpo --seeds 0,1,2 --limit 500

For each seed, runs the real command `harness run --task T --method M --seed S` twice, one after the
other: with today's rollouts (the task's fixed-step decoder) and with fast rollouts (`--set
rollout_threshold=0.9 --set rollout_cache=dual`, or `--fast k=v,...`). Everything else is the same
(model, steps, recipe, evaluation decoder and problems), so the two runs of a seed differ only in how
rollouts are decoded. Prints a table and writes JSON (default benchmarks/results/rl_fast_gain_<task>.json):
per run the seconds per RL step (`train_wall_time_s / steps`, evaluation excluded), base/final and the
paired gain with its 95% CI; over seeds the mean gain of each variant, their difference (fast - today)
with a Student-t 95% CI over the seed pairs, and the step-time ratio. Wall-clock time is reported, never
used as a stopping rule. The run folders go to --out (default a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def t_interval(xs: list[float]) -> tuple[float, float, float]:
    """Mean and Student-t 95% interval over `xs` (the interval is the mean itself for one value)."""
    n = len(xs)
    mean = sum(xs) / n
    if n < 2:
        return mean, mean, mean
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = T975.get(n - 1, 1.96) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def run_one(args, seed: int, variant: str, sets: list[str], out: Path) -> dict:
    cmd = [sys.executable, "-m", "harness", "run", "--task", args.task, "--method", args.method, "--seed", str(seed),
           "--out", str(out), "--no-progress", "--overwrite"]
    if args.steps:
        cmd += ["--steps", str(args.steps)]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    for s in sets:
        cmd += ["--set", s]
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    s = json.loads((out / "summary.json").read_text())
    primary = s["primary_metric"]
    steps = s["train"]["steps"]
    return {"seed": seed, "variant": variant, "set": sets, "steps": steps,
            "step_s": round(s["train"]["train_wall_time_s"] / steps, 3),
            "train_nfe": s["train"].get("train_nfe"), "rollouts_generated": s["train"].get("rollouts_generated"),
            "base": s["base"][primary], "final": s["final"][primary], "gain": round(s["gain"], 4),
            "gain_ci95": s["gain_ci95"], "n": s["n"], "wall_s": round(wall, 1),
            "torch_threads": s.get("hardware", {}).get("torch_threads"),
            "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2), "out": str(out)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="arith")
    p.add_argument("--method", default="maskgrpo")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, help="RL steps (default: the task's)")
    p.add_argument("--limit", type=int, help="evaluate on the first N test problems (default: all)")
    p.add_argument("--fast", default="rollout_threshold=0.9,rollout_cache=dual",
                   help="the fast variant's --set overrides, comma-separated")
    p.add_argument("--out", help="folder for the run folders (default: a temporary folder)")
    p.add_argument("--json", help="where to write the JSON (default benchmarks/results/rl_fast_gain_<task>.json)")
    p.add_argument("--resume", action="store_true",
                   help="keep the runs already in --json (same task, method and fast settings) and run only the "
                        "missing seed/variant pairs; the summary covers all of them")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    base_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="rl_fast_gain_"))
    variants = {"today": [], "fast": [kv for kv in args.fast.split(",") if kv]}
    path = Path(args.json) if args.json else ROOT / "benchmarks" / "results" / f"rl_fast_gain_{args.task}.json"
    runs = []
    if args.resume and path.exists():
        old = json.loads(path.read_text())
        same = old.get("summary", {})
        if (same.get("task"), same.get("method"), same.get("fast_set")) != (args.task, args.method, variants["fast"]):
            raise SystemExit(f"--resume: {path} holds another benchmark ({same.get('task')}, {same.get('method')}, "
                             f"{same.get('fast_set')}); pass another --json")
        runs = [r for r in old["runs"] if r["seed"] in seeds]
    done = {(r["seed"], r["variant"]) for r in runs}
    for seed in seeds:  # the two variants of a seed back to back, so a load change hits both alike
        for name, sets in variants.items():
            if (seed, name) in done:
                continue
            r = run_one(args, seed, name, sets, base_dir / f"{args.task}__{args.method}__{name}__seed{seed}")
            runs.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)

    def of(name, key):
        return [r[key] for r in runs if r["variant"] == name]

    runs.sort(key=lambda r: (seeds.index(r["seed"]), list(variants).index(r["variant"])))
    diffs = [f - t for f, t in zip(of("fast", "gain"), of("today", "gain"))]
    mean_d, lo_d, hi_d = t_interval(diffs)
    summary = {"task": args.task, "method": args.method, "seeds": seeds, "fast_set": variants["fast"],
               "mean_gain_today": t_interval(of("today", "gain")), "mean_gain_fast": t_interval(of("fast", "gain")),
               "gain_difference_fast_minus_today": [mean_d, lo_d, hi_d],
               "step_s_today": sum(of("today", "step_s")) / len(seeds),
               "step_s_fast": sum(of("fast", "step_s")) / len(seeds)}
    summary["speedup_per_step"] = round(summary["step_s_today"] / summary["step_s_fast"], 3)
    summary["speedup_per_step_by_seed"] = {s: round(t / f, 3) for s, t, f in zip(seeds, of("today", "step_s"),
                                                                                   of("fast", "step_s"))}
    out = {"summary": summary, "runs": runs, "cpu_count": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
    path.write_text(json.dumps(out, indent=2) + "\n")

    print("| seed | rollouts | s/step | base | final | gain [95% CI] |\n|---|---|---|---|---|---|")
    for r in runs:
        lo, hi = r["gain_ci95"]
        print(f"| {r['seed']} | {r['variant']} | {r['step_s']:.2f} | {100 * r['base']:.1f}% | {100 * r['final']:.1f}% "
              f"| {100 * r['gain']:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}] |")
    for name in variants:
        m, lo, hi = summary[f"mean_gain_{name}"]
        print(f"mean gain, {name}: {100 * m:+.2f} points [{100 * lo:+.2f}, {100 * hi:+.2f}] (Student t over seeds)")
    print(f"fast - today: {100 * mean_d:+.2f} points [{100 * lo_d:+.2f}, {100 * hi_d:+.2f}]; "
          f"per step {summary['speedup_per_step']:.2f}x faster with fast rollouts")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
