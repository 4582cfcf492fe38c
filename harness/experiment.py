"""`harness run` and `harness compare`: base evaluation, RL training, final evaluation, one result.

A run folder holds `summary.json`, `curve.csv`, `samples.jsonl` (final), `base_samples.jsonl` and
`checkpoints/`. The base evaluation is saved before training starts, so `--resume` after a crash
does not redo it. The gain of the primary metric gets a paired-bootstrap 95% CI over the test
problems (the same problems, decoded with the same per-problem seeds, before and after).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

from harness.results import (
    SCHEMA_VERSION,
    ResultError,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    provenance,
    read_summary,
    to_jsonable,
)
from harness.runner import EvalOutput, evaluate
from tasks.metrics import paired_bootstrap_ci


def parse_overrides(pairs: list[str]) -> dict:
    """`--set key=value` pairs; values parsed as JSON when they parse (numbers, true/false), else strings."""
    out = {}
    for item in pairs:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def run_dir_name(task: str, model: str, method: str, seed: int, steps: int | None) -> str:
    safe = lambda s: "".join(c if c.isalnum() or c in "-_." else "-" for c in str(s))  # noqa: E731
    return f"{safe(task)}__{safe(model)}__{safe(method)}__seed{seed}" + (f"__steps{steps}" if steps else "")


def _problem_scores(out: EvalOutput) -> dict[str, float]:
    """Per-problem score of the first sample (verdict as 0/1; unscorable as 0) for the paired bootstrap."""
    scores: dict[str, float] = {}
    for s in out.scored:
        scores.setdefault(str(s.id), float(bool(s.verdict)))
    return scores


def _prefix_metrics(task, ev: EvalOutput, examples, k: int) -> dict:
    """Metrics of the first k problems of an evaluation with one sample per problem, in problem order."""
    if k >= len(examples):
        return dict(ev.metrics)
    return task.metrics(ev.scored[:k], examples[:k])[0]


def run_experiment(args: argparse.Namespace, base: EvalOutput | None = None) -> tuple[dict, Path]:
    from harness.cli import decode_config, load_model_for
    from tasks import get_task

    t0 = time.perf_counter()
    task = get_task(args.task)
    method = args.method
    if method != "none":
        from trainers import METHODS

        METHODS.get(method)  # unknown method -> the list of valid ones, before any work
    if args.steps is not None and args.steps < 0:
        raise ValueError("--steps must be >= 0")
    overrides = parse_overrides(getattr(args, "set", []))
    if task.embedded:
        test = task.load(args.data, split=getattr(args, "eval_split", None) or "test", limit=args.limit)
        train_examples = task.load(getattr(args, "train_data", None), split="train")
    else:
        test = task.load(args.data, limit=args.limit)
        train_src = getattr(args, "train_data", None)
        if method != "none" and not train_src and not task.hub_id:
            raise ValueError(f"task {task.name!r} needs --train-data FILE for RL training")
        train_examples = task.load(train_src, split="train") if method != "none" else []
    out_dir = Path(args.out or Path(getattr(args, "results", "results")) /
                   run_dir_name(task.name, args.model, method, args.seed, args.steps))
    model = load_model_for(task, args.model, getattr(args, "device", "auto"), getattr(args, "dtype", "auto"))
    decode = decode_config(task, _no_decode_flags()) if not getattr(model, "is_gold", False) else None
    # tqdm bars only on a terminal; the trainer's plain progress lines also go to a redirected log (every
    # 10th step there, unless --set log_every says otherwise), so a long run in a log file shows its state
    progress = not getattr(args, "no_progress", False) and sys.stderr.isatty()
    train_progress = not getattr(args, "no_progress", False)

    # ---- base evaluation (saved first so that --resume skips it) ----------------------------------
    if not args.resume:  # a fresh start (--overwrite): nothing of the run it replaces may outlive it
        for name in ("summary.json", "curve.csv", "samples.jsonl", "base_eval.json", "checkpoints/last.pt"):
            (out_dir / name).unlink(missing_ok=True)
    base_file = out_dir / "base_eval.json"
    # what the saved base evaluation must have been computed for to be reused (else it is recomputed)
    base_key = {"model": args.model, "seed": args.seed, "decode": asdict(decode) if decode is not None else None,
                "ids": [str(e.id) for e in test]}
    if base is None and args.resume and base_file.exists():
        base = _load_eval(base_file, out_dir / "base_samples.jsonl", key=base_key)
    if base is None:
        base = evaluate(task, model, test, decode, seed=args.seed, progress=progress, tag="eval")
    _save_eval(base, base_file, out_dir / "base_samples.jsonl", key=base_key)

    # ---- training ------------------------------------------------------------------------------
    train_info: dict = {"steps": 0, "rollout_budget": 0, "train_nfe": 0, "train_wall_time_s": 0.0}
    curve: list[dict] = []
    method_config: dict = {}
    if method != "none":
        from trainers.loop import TrainConfig, train

        cfg = TrainConfig.for_task(task, method, steps=args.steps, **overrides)
        if not progress and "log_every" not in overrides:
            cfg = replace(cfg, log_every=10)
        curve_test = test[:cfg.eval_limit] if cfg.eval_limit else test  # the learning curve may use a subset
        evaluate_fn = lambda m: evaluate(task, m, curve_test, decode, seed=args.seed, tag="eval").metrics  # noqa: E731
        # the curve's first and last points are on curve_test, a prefix of the problems that the base and
        # final evaluations score anyway (a problem's completion depends only on its own seed), so they are
        # taken from those evaluations rather than decoding the same problems twice
        result = train(model, task, method, train_examples, test, cfg, seed=args.seed, out_dir=out_dir,
                       evaluate_fn=evaluate_fn, progress=train_progress, resume=args.resume,
                       checkpoint_every=args.checkpoint_every, eval_at_end=False,
                       base_metrics=_prefix_metrics(task, base, test, len(curve_test)))
        curve = result.curve
        method_config = result.config
        train_info = {"steps": result.steps, "rollout_budget": result.rollout_budget,
                      "rollouts_generated": result.rollouts_generated,
                      "prompts_per_step": cfg.prompts_per_step, "oversample": cfg.oversample,
                      "num_generations": cfg.num_generations,
                      "train_nfe": result.train_nfe, "train_wall_time_s": round(result.wall_time_s, 3)}
        final = evaluate(task, model, test, decode, seed=args.seed, progress=progress, tag="eval")
        if cfg.eval_every > 0 and curve and curve[-1]["step"] == cfg.steps > 0:
            last = _prefix_metrics(task, final, test, len(curve_test))
            curve[-1].update({f"eval_{k}": v for k, v in last.items()})
    else:
        final = base

    # ---- result --------------------------------------------------------------------------------
    b, f = _problem_scores(base), _problem_scores(final)
    ids = sorted(b)
    gain, gain_ci = paired_bootstrap_ci([b[i] for i in ids], [f.get(i, 0.0) for i in ids], seed=args.seed)
    pm = task.primary_metric
    summary = {
        "schema_version": SCHEMA_VERSION, "kind": "run", "task": task.name, "model": args.model, "method": method,
        "seed": args.seed, "n": final.n, "n_samples": 1, "primary_metric": pm,
        "metrics": final.metrics, "ci95": final.ci95,
        "base": base.metrics, "final": final.metrics, "base_ci95": base.ci95, "final_ci95": final.ci95,
        "gain": final.metrics.get(pm, float("nan")) - base.metrics.get(pm, float("nan")),
        "gain_paired_mean": gain, "gain_ci95": gain_ci,
        "decode": asdict(decode) if decode is not None else None,
        "nfe": base.nfe + final.nfe + train_info["train_nfe"], "eval_nfe": final.nfe,
        "tokens_per_second": final.tokens_per_second, "wall_time_s": round(time.perf_counter() - t0, 3),
        "train": train_info,
        "config": {"task": task.name, "model": args.model, "method": method, "seed": args.seed,
                   "steps": args.steps, "limit": args.limit, "eval_split": getattr(args, "eval_split", None) or "test", "data": args.data, "overrides": overrides,
                   "method_config": method_config},
    }
    summary.update(provenance())
    atomic_write_jsonl(out_dir / "samples.jsonl", (s.to_json() for s in final.scored))
    if task.kind == "image" and hasattr(task, "to_image"):  # prompts with images before and after RL
        from harness.pictures import image_sheet

        cols = {"base model": base.scored} if method == "none" else \
            {"before RL": base.scored, f"after {method}": final.scored}
        try:  # a picture must never cost the run its results
            summary["images"] = image_sheet(task, test, cols, out_dir / "images.png").name
        except (OSError, ValueError) as e:
            print(f"warning: could not draw {out_dir / 'images.png'}: {e}", file=sys.stderr)
    if curve:
        atomic_write_text(out_dir / "curve.csv", curve_to_csv(curve))
    atomic_write_json(out_dir / "summary.json", summary)
    return summary, out_dir


def curve_to_csv(rows: list[dict]) -> str:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(v) for k, v in r.items()})
    return buf.getvalue()


def _fmt(v):
    return f"{v:.6g}" if isinstance(v, float) else v


def _no_decode_flags() -> argparse.Namespace:
    return argparse.Namespace(sampler=None, gen_length=None, block_length=None, diffusion_steps=None,
                              temperature=None, remasking=None, cfg_scale=None)


def _save_eval(out: EvalOutput, path: Path, samples_path: Path, key: dict | None = None) -> None:
    atomic_write_jsonl(samples_path, (s.to_json() for s in out.scored))
    d = {k.name: getattr(out, k.name) for k in fields(out) if k.name != "scored"}
    atomic_write_json(path, {**d, "cache_key": key})  # written last: its presence means both files are whole


def _load_eval(path: Path, samples_path: Path, key: dict | None = None) -> EvalOutput | None:
    """The saved evaluation, or None when it is damaged or (given `key`) was computed for something else."""
    from tasks.base import Scored

    try:
        d = json.loads(path.read_text())
        saved_key = d.pop("cache_key", None)
        if key is not None and saved_key != to_jsonable(key):
            return None
        scored = [Scored(**json.loads(line)) for line in samples_path.read_text().splitlines() if line.strip()]
        out = EvalOutput(scored=scored, **d)
        return out if len(scored) == out.n * out.n_samples else None
    except (OSError, ValueError, TypeError):
        return None  # a damaged cache is recomputed, never trusted


def compare(args: argparse.Namespace) -> dict:
    """Every method x seed at the same budget from the same base model; finished runs are skipped."""
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds expects comma-separated integers, got {args.seeds!r}") from None
    if not methods or not seeds:
        raise ValueError("--methods and --seeds must each name at least one value")
    from trainers import METHODS

    for m in methods:
        if m != "none":
            METHODS.get(m)
    done, ran, runs = [], [], []
    base_cache: dict[int, EvalOutput] = {}
    for seed in seeds:
        for m in methods:
            run_args = argparse.Namespace(
                task=args.task, method=m, model=args.model, device=args.device, dtype=args.dtype, seed=seed,
                steps=args.steps, data=None, train_data=None, limit=getattr(args, "limit", None), checkpoint_every=50, resume=True,
                set=args.set, out=None, results=args.results, no_progress=False)
            out_dir = Path(args.results) / run_dir_name(args.task, args.model, m, seed, args.steps)
            try:
                s = read_summary(out_dir / "summary.json")
                done.append(str(out_dir))
            except ResultError:
                s, _ = run_experiment(run_args, base=base_cache.get(seed))
                ran.append(str(out_dir))
                base_file = out_dir / "base_eval.json"
                if seed not in base_cache and base_file.exists():
                    base_cache[seed] = _load_eval(base_file, out_dir / "base_samples.jsonl")
            print(f"{m} seed {seed}: {s['primary_metric']} {s['base'].get(s['primary_metric'])} -> "
                  f"{s['final'].get(s['primary_metric'])}", file=sys.stderr)
            runs.append({"method": m, "seed": seed, "gain": s.get("gain"), "gain_ci95": s.get("gain_ci95"),
                         "dir": str(out_dir)})
    return to_jsonable({"task": args.task, "model": args.model, "runs": runs, "skipped_existing": done,
                        "ran": ran})
