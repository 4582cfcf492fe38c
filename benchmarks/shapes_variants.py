"""Pretrain variants of the shapes model and score them on the validation prompts (never the test prompts).

    HARNESS_HOME=... python benchmarks/shapes_variants.py --variant pre_learned='{"grid_block": "pre_ln", "grid_positions": "learned"}' \
        --variant pre_rotary='{"grid_block": "pre_ln", "grid_positions": "rotary"}' --cfg-scales 0,1

Each variant is `PretrainConfig(**task.pretrain_config, **overrides)` trained for the task's fixed step
count (or --steps) on one thread into --out/<name>, then sampled on the 192 validation prompts with the
task's decoder for each sampling seed (--seeds) and each guidance weight (--cfg-scales), via the real
`harness eval --split validation`. Prints a table and writes JSON (--json). How docs/RL_SETTINGS.md's shapes
tables were made; wall-clock time is reported, never used as a stopping rule.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> list[dict]:
    from harness.pretrain import PretrainConfig, pretrain
    from tasks import get_task

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", action="append", required=True, metavar="NAME=JSON",
                   help="a name and the PretrainConfig fields it overrides, as a JSON object")
    p.add_argument("--steps", type=int, help="pretraining steps (default: the task's)")
    p.add_argument("--seeds", default="0,1", help="sampling seeds")
    p.add_argument("--cfg-scales", default="0,1", help="classifier-free guidance weights to sample with")
    p.add_argument("--limit", type=int, help="score only the first N validation prompts (a smoke run)")
    p.add_argument("--out", default="shapes_variants", help="folder for the models and evaluations")
    p.add_argument("--json", help="where to write the JSON (default <out>/results.json)")
    args = p.parse_args(argv)
    task = get_task("shapes")
    out = Path(args.out)
    rows = []
    for spec in args.variant:
        name, _, raw = spec.partition("=")
        try:
            over = json.loads(raw or "{}")
        except json.JSONDecodeError as e:
            raise SystemExit(f"--variant {spec!r}: the part after '=' must be a JSON object ({e})") from None
        cfg = PretrainConfig(**{**task.pretrain_config, **over})
        folder = out / name
        t0 = time.perf_counter()
        if not (folder / "pretrain.json").exists():
            pretrain("shapes", config=cfg, out=folder, threads=1, progress=False, steps=args.steps)
        info = json.loads((folder / "pretrain.json").read_text())
        for w in [float(x) for x in args.cfg_scales.split(",")]:
            metrics = []
            for seed in [int(x) for x in args.seeds.split(",")]:
                d = out / "evals" / f"{name}_cfg{w:g}_s{seed}"
                cmd = [sys.executable, "-m", "harness", "eval", "--task", "shapes", "--model", f"hf:{folder}",
                       "--split", "validation", "--seed", str(seed), "--cfg-scale", str(w), "--out", str(d), "--overwrite"]
                if args.limit:
                    cmd += ["--limit", str(args.limit)]
                proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"})
                if proc.returncode:
                    raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip().splitlines()[-1:]}")
                metrics.append(json.loads((d / "summary.json").read_text())["metrics"])
            mean = {k: round(sum(m[k] for m in metrics) / len(metrics), 4) for k in metrics[0]}
            rows.append({"variant": name, "overrides": over, "cfg_scale": w, "final_loss": info["final_loss"],
                         "train_seconds": info["train_seconds"], "steps": info["steps"], "validation": mean,
                         "wall_s": round(time.perf_counter() - t0, 1)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    path = Path(args.json) if args.json else out / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2) + "\n")
    print("| variant | cfg | final loss | validation overall | single | two | counting | colors | position | color_attr |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        v = r["validation"]
        print(f"| {r['variant']} | {r['cfg_scale']:g} | {r['final_loss']} | {v['overall']:.3f} | {v['single_object']:.2f} | "
              f"{v['two_object']:.2f} | {v['counting']:.2f} | {v['colors']:.2f} | {v['position']:.2f} | {v['color_attr']:.2f} |")
    return rows


if __name__ == "__main__":
    main()
