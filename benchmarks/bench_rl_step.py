"""RL step time per method, split into rollout / scoring / update, relative to diffu-GRPO (issue 20).

    HARNESS_HOME=... python benchmarks/bench_rl_step.py --task arith --steps 3
    HARNESS_HOME=... python benchmarks/bench_rl_step.py --task arith --steps 3 --methods maskgrpo \\
        --variant fast:rollout_threshold=0.9,rollout_cache=dual

Every method runs `trainers.loop.train` from the same tiny model, seed and task defaults (the same
rollout budget: steps x prompts_per_step x G, arith's dynamic sampling included), with no evaluation.
`rollout` is the decoder's time (harness.sampling.generate, wrapped), `scoring` the task's reward
(`task.score_many`, wrapped), `update` the rest of the step (views, old/reference log-probs, the mu
gradient updates). Reported as seconds per step (mean over steps; the first step is included) and as
ratios to diffu-grpo's step time. This counts seconds, not steps: every method runs the same number of
steps. `--variant NAME:k=v,...` adds runs with TrainConfig overrides (e.g. fast rollouts). Methods run
one after another, not interleaved, so a change of machine load between runs shows up in the ratios:
the JSON keeps the load average before and after each run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.models import load_model  # noqa: E402
from harness.sampling import generate  # noqa: E402
from tasks.base import get_task  # noqa: E402
from trainers.loop import TrainConfig, train  # noqa: E402

METHODS = ("diffu-grpo", "maskgrpo", "unigrpo", "coupled-grpo", "tracerl", "wd1", "spg")


def one_run(task_name: str, method: str, steps: int, overrides: dict, seed: int) -> dict:
    task = get_task(task_name)
    model = load_model("tiny", task=task_name)
    examples = task.load(split="train")
    clock = {"rollout": 0.0, "scoring": 0.0}

    def timed_generate(*a, **k):
        t0 = time.perf_counter()
        try:
            return generate(*a, **k)
        finally:
            clock["rollout"] += time.perf_counter() - t0

    real_score = task.score_many

    def timed_score(*a, **k):
        t0 = time.perf_counter()
        try:
            return real_score(*a, **k)
        finally:
            clock["scoring"] += time.perf_counter() - t0

    task.score_many = timed_score
    cfg = TrainConfig.for_task(task, method, steps=steps, eval_every=0, **overrides)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    res = train(model, task, method, examples, [], cfg, seed=seed, progress=False, generate_fn=timed_generate,
                eval_at_end=False)
    total = time.perf_counter() - t0
    n = max(1, len(res.curve))
    reward = sum(r["reward"] for r in res.curve) / n
    return {"method": method, "overrides": overrides, "steps": len(res.curve),
            "step_s": round(total / n, 3), "rollout_s": round(clock["rollout"] / n, 3),
            "scoring_s": round(clock["scoring"] / n, 3),
            "update_s": round((total - clock["rollout"] - clock["scoring"]) / n, 3),
            "nfe_per_step": round(sum(r["nfe"] for r in res.curve) / n, 1),
            "rollouts_per_step": round(sum(r["rollouts"] for r in res.curve) / n, 1),
            "mean_rollout_reward": round(reward, 4),
            "loadavg_before": round(load0, 2), "loadavg_after": round(os.getloadavg()[0], 2)}


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, body = text.partition(":")
    out = {}
    for item in filter(None, body.split(",")):
        k, _, v = item.partition("=")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return name, out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="arith")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--variant", action="append", default=[], help="NAME:key=value,... extra runs (every method)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = [("default", {})] + [parse_variant(v) for v in args.variant]
    rows = []
    for name, over in variants:
        for m in args.methods.split(","):
            r = one_run(args.task, m, args.steps, over, args.seed)
            r["variant"] = name
            rows.append(r)
            print(f"  {name} {m}: {r['step_s']} s/step", file=sys.stderr)
    base = next((r for r in rows if r["method"] == "diffu-grpo" and r["variant"] == "default"), None)
    print(f"{args.task}: {args.steps} steps per run, seconds per step (mean), {args.threads} torch thread(s)")
    print("| variant | method | step s | x diffu-grpo | rollout s | scoring s | update s | NFE/step | rollouts/step |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['step_s'] / base['step_s']:.2f}" if base else "-"
        r["step_ratio_vs_diffu_grpo"] = None if not base else round(r["step_s"] / base["step_s"], 3)
        print(f"| {r['variant']} | {r['method']} | {r['step_s']:.2f} | {ratio} | {r['rollout_s']:.2f} | "
              f"{r['scoring_s']:.2f} | {r['update_s']:.2f} | {r['nfe_per_step']:.0f} | {r['rollouts_per_step']:.0f} |")
    doc = {"benchmark": "rl_step", "task": args.task, "steps": args.steps, "seed": args.seed,
           "unit": "seconds per step", "rows": rows}
    print(json.dumps(doc))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
