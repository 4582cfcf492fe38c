"""`harness run` and `harness compare`: base evaluation, RL training, final evaluation, one result.

A run folder holds `summary.json`, `curve.csv`, `samples.jsonl` (final), `base_samples.jsonl` and
`checkpoints/`. The base evaluation is saved before training starts, so `--resume` after a crash
does not redo it. The gain of the primary metric gets a paired-bootstrap 95% CI over the test
problems (the same problems, decoded with the same per-problem seeds, before and after).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import shutil
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

from harness.distributed import (
    evaluate_sharded,
    launch_mismatch,
    make_accelerator,
    process_device,
    process_info,
)
from harness.evaluation import EvalOutput
from harness.export import save_policy
from harness.models import weights_sha256
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
from harness.run_spec import RunSpec
from tasks.metrics import paired_bootstrap_ci


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


def run_experiment(spec: RunSpec, base: EvalOutput | None = None) -> tuple[dict, Path]:
    """One `harness run`: every setting comes from `spec` (checked here too, before any work)."""
    from harness.pretrain import load_model_for
    from harness.sampling import DecodeConfig
    from tasks import get_task

    t0 = time.perf_counter()
    spec.check()
    task = get_task(spec.task)
    out_dir = spec.run_dir()
    # processes first (each loads its models onto its own device), then the rewards and the policy
    acc, main, scale = _processes(spec, out_dir)
    rewards = task.use_rewards(spec.rewards, spec.reward_models,  # tasks/rewards.py
                               device=process_device(acc, spec.device) if acc.num_processes > 1 else spec.device)
    method = spec.method
    overrides = dict(spec.overrides)
    if task.embedded:
        test = task.load(spec.data, split=spec.eval_split or "test", limit=spec.limit)
        train_examples = task.load(spec.train_data, split="train")
    else:
        test = task.load(spec.data, limit=spec.limit)
        if method != "none" and not spec.train_data and not task.hub_id:
            raise ValueError(f"task {task.name!r} needs --train-data FILE for RL training")
        train_examples = task.load(spec.train_data, split="train") if method != "none" else []
    model = load_model_for(task, spec.model, process_device(acc, spec.device), spec.dtype)
    scale.update(prepare_policy(model, spec))
    decode = DecodeConfig.from_task(task, **spec.decode) if model.decodes else None
    # tqdm bars only on a terminal; the trainer's plain progress lines also go to a redirected log (every
    # 10th step there, unless --set log_every says otherwise), so a long run in a log file shows its state
    progress = spec.progress and sys.stderr.isatty() and main
    train_progress = spec.progress
    evaluate = functools.partial(evaluate_sharded, acc=acc)  # each problem decoded on one process

    # ---- base evaluation (saved first so that --resume skips it) ----------------------------------
    if not spec.resume and main:  # a fresh start (--overwrite): nothing of the run it replaces may outlive it
        for name in ("summary.json", "curve.csv", "samples.jsonl", "base_eval.json", "checkpoints/last.pt"):
            (out_dir / name).unlink(missing_ok=True)
        shutil.rmtree(out_dir / "policy", ignore_errors=True)
    base_file = out_dir / "base_eval.json"
    # what the saved base evaluation must have been computed for to be reused (else it is recomputed)
    base_key = {"model": spec.model, "seed": spec.seed, "decode": asdict(decode) if decode is not None else None,
                "ids": [str(e.id) for e in test]}
    if scale.get("autocast"):  # a base evaluation in another precision is not this run's
        base_key["autocast"] = scale["autocast"]
    if base is None and spec.resume and base_file.exists():
        base = _load_eval(base_file, out_dir / "base_samples.jsonl", key=base_key)
    if base is None:
        base = evaluate(task, model, test, decode, seed=spec.seed, progress=progress, tag="eval")
    if main:
        _save_eval(base, base_file, out_dir / "base_samples.jsonl", key=base_key)

    # ---- training ------------------------------------------------------------------------------
    train_info: dict = {"steps": 0, "rollout_budget": 0, "train_nfe": 0, "train_wall_time_s": 0.0}
    curve: list[dict] = []
    method_config: dict = {}
    if method != "none":
        from trainers.loop import TrainConfig, train

        if spec.checkpoint_every is not None:
            overrides.setdefault("checkpoint_every", spec.checkpoint_every)
        cfg = TrainConfig.for_task(task, method, steps=spec.steps, recipe=spec.recipe, **overrides)
        if not progress and "log_every" not in overrides:
            cfg = replace(cfg, log_every=10)
        curve_test = test[:cfg.eval_limit] if cfg.eval_limit else test  # the learning curve may use a subset
        evaluate_fn = lambda m: evaluate(task, m, curve_test, decode, seed=spec.seed, tag="eval").metrics  # noqa: E731
        # the curve's first and last points are on curve_test, a prefix of the problems that the base and
        # final evaluations score anyway (a problem's completion depends only on its own seed), so they are
        # taken from those evaluations rather than decoding the same problems twice
        if acc.log_with:  # --report-to: the trackers start here (main process), the loop logs every row
            acc.init_trackers(_safe_name(out_dir.name), config=_tracker_config(spec))
        result = train(model, task, method, train_examples, test, cfg, seed=spec.seed, out_dir=out_dir,
                       evaluate_fn=evaluate_fn, progress=train_progress, resume=spec.resume,
                       checkpoint_every=spec.checkpoint_every, eval_at_end=False,
                       base_metrics=_prefix_metrics(task, base, test, len(curve_test)), accelerator=acc)
        curve = result.curve
        method_config = result.config
        train_info = {"steps": result.steps, "rollout_budget": result.rollout_budget,
                      "rollouts_generated": result.rollouts_generated,
                      "prompts_per_step": cfg.prompts_per_step, "oversample": cfg.oversample,
                      "num_generations": cfg.num_generations,
                      "train_nfe": result.train_nfe, "train_wall_time_s": round(result.wall_time_s, 3),
                      "prompts_per_process": cfg.prompts_per_step // acc.num_processes,
                      "completions_per_process": cfg.prompts_per_step // acc.num_processes * cfg.num_generations}
        final = evaluate(task, model, test, decode, seed=spec.seed, progress=progress, tag="eval")
        if acc.trackers:
            acc.log({f"final_{k}": v for k, v in final.metrics.items() if isinstance(v, (int, float))},
                    step=result.steps)
            acc.end_training()
        # FSDP shards the weights: every process takes part in gathering them, the main one writes them
        gathered = acc.get_state_dict(model.module) if "FSDP" in str(acc.distributed_type) else None
        if main:  # the trained policy as a folder transformers/peft load: `harness eval --model hf:<run>/policy`
            policy = save_policy(model, out_dir / "policy", state_dict=gathered, info={
                "task": task.name, "method": method, "seed": spec.seed, "steps": result.steps,
                "decode": asdict(decode) if decode is not None else None, "limit": spec.limit, "data": spec.data})
            scale["policy"] = {"path": "policy", "kind": policy["kind"], "base": policy["base"]}
        if cfg.eval_every > 0 and curve and curve[-1]["step"] == cfg.steps > 0:
            last = _prefix_metrics(task, final, test, len(curve_test))
            curve[-1].update({f"eval_{k}": v for k, v in last.items()})
    else:
        final = base

    # ---- result --------------------------------------------------------------------------------
    b, f = _problem_scores(base), _problem_scores(final)
    ids = sorted(b)
    gain, gain_ci = paired_bootstrap_ci([b[i] for i in ids], [f.get(i, 0.0) for i in ids], seed=spec.seed)
    pm = task.primary_metric
    summary = {
        "schema_version": SCHEMA_VERSION, "kind": "run", "task": task.name, "model": spec.model,
        "model_sha256": weights_sha256(spec.model, task.name), "method": method, "seed": spec.seed,
        "recipe": spec.recipe, "n": final.n, "n_samples": 1, "primary_metric": pm,
        "metrics": final.metrics, "ci95": final.ci95,
        "base": base.metrics, "final": final.metrics, "base_ci95": base.ci95, "final_ci95": final.ci95,
        "gain": final.metrics.get(pm, float("nan")) - base.metrics.get(pm, float("nan")),
        "gain_paired_mean": gain, "gain_ci95": gain_ci,
        "decode": asdict(decode) if decode is not None else None,
        "nfe": base.nfe + final.nfe + train_info["train_nfe"], "eval_nfe": final.nfe,
        "tokens_per_second": final.tokens_per_second, "wall_time_s": round(time.perf_counter() - t0, 3),
        "device": str(getattr(model, "device", "cpu")),  # where the model ran (`hardware`: what the machine has)
        "train": train_info,
        "config": {"task": task.name, "model": spec.model, "method": method, "seed": spec.seed,
                   "steps": spec.steps, "limit": spec.limit, "eval_split": spec.eval_split or "test",
                   "data": spec.data, "overrides": dict(spec.overrides), "recipe": spec.recipe,
                   "method_config": method_config},
        "run_spec": spec.record(),  # `harness run --config summary.json --out NEW` replays the run
        # the training reward: weights, model paths, and each weighted term's mean per RL step (curve.csv's
        # reward_<name> columns); the metrics above are the verifier's, never a reward
        "rewards": {**rewards.record(), "terms_per_step": {
            name: [row.get(f"reward_{name}") for row in curve if row.get("step")] for name in rewards.weights}},
        "processes": {**process_info(acc), "eval_sharded": acc.num_processes > 1,
                      "prompts_per_process": train_info.get("prompts_per_process"),
                      "completions_per_process": train_info.get("completions_per_process"),
                      **({"launch_warning": scale.pop("launch_warning")} if "launch_warning" in scale else {})},
        "scale": scale,
    }
    summary.update(provenance())
    if not main:  # only the main process writes and prints
        acc.wait_for_everyone()
        return summary, out_dir
    atomic_write_jsonl(out_dir / "samples.jsonl", (s.to_json() for s in final.scored))
    if task.kind == "image":  # an image task draws its completions (Task.to_image)  # prompts with images before and after RL
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
    acc.wait_for_everyone()
    return summary, out_dir


def _processes(spec: RunSpec, out_dir: Path):
    """(accelerator, is this the main process, scale record): made before the model is loaded."""
    acc = make_accelerator(spec.device, report_to=spec.report_to, project_dir=out_dir / "trackers")
    main = acc.is_main_process
    scale: dict = {"report_to": spec.report_to}
    warning = launch_mismatch()
    if warning:
        scale["launch_warning"] = warning
        if main:
            print(f"warning: {warning}", file=sys.stderr)
    return acc, main, scale


def prepare_policy(model, spec: RunSpec) -> dict:
    """LoRA adapters, gradient checkpointing and bf16 autocast as the spec asks (harness/lora.py)."""
    from harness.lora import apply_lora, autocast_dtype, enable_gradient_checkpointing, use_autocast

    if not model.decodes:
        return {}
    out: dict = {"lora": None, "gradient_checkpointing": bool(spec.gradient_checkpointing), "autocast": None}
    if spec.lora_r is not None and spec.method != "none":
        out["lora"] = apply_lora(model, r=spec.lora_r, alpha=spec.lora_alpha, dropout=spec.lora_dropout,
                                 targets=spec.lora_targets, seed=spec.seed)
    if spec.gradient_checkpointing:
        out["checkpointed_blocks"] = enable_gradient_checkpointing(model.module)
    amp = autocast_dtype(spec.mixed_precision, model.device)
    use_autocast(model, amp)
    out["autocast"] = None if amp is None else str(amp).removeprefix("torch.")
    return out


def _tracker_config(spec: RunSpec) -> dict:
    """The run's settings as flat scalars (tensorboard's hparams take no nested values)."""
    flat = {}
    for k, v in {**spec.record(), **{f"set.{a}": b for a, b in spec.overrides.items()},
                 **{f"decode.{a}": b for a, b in spec.decode.items()}}.items():
        if isinstance(v, (bool, int, float, str)):
            flat[k] = v
        elif v is None:
            flat[k] = "none"
    return flat


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:120]


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


def compare(template: RunSpec, methods: list[str], seeds: list[int]) -> dict:
    """Every method x seed at the same budget from the same base model; finished runs are skipped.
    `template` holds the settings every run shares; each run is `template` with its method and seed."""
    if not methods or not seeds:
        raise ValueError("--methods and --seeds must each name at least one value")
    for m in methods:
        template.with_(method=m).check()  # an unknown method (or task, model) fails before any run
    done, ran, runs = [], [], []
    base_cache: dict[int, EvalOutput] = {}
    for seed in seeds:
        for m in methods:
            spec = template.with_(method=m, seed=seed, resume=True)
            out_dir = spec.run_dir()
            try:
                s = read_summary(out_dir / "summary.json")
                done.append(str(out_dir))
            except ResultError:
                s, _ = run_experiment(spec, base=base_cache.get(seed))
                ran.append(str(out_dir))
                base_file = out_dir / "base_eval.json"
                if seed not in base_cache and base_file.exists():
                    base_cache[seed] = _load_eval(base_file, out_dir / "base_samples.jsonl")
            print(f"{m} seed {seed}: {s['primary_metric']} {s['base'].get(s['primary_metric'])} -> "
                  f"{s['final'].get(s['primary_metric'])}", file=sys.stderr)
            runs.append({"method": m, "seed": seed, "gain": s.get("gain"), "gain_ci95": s.get("gain_ci95"),
                         "dir": str(out_dir)})
    return to_jsonable({"task": template.task, "model": template.model, "recipe": template.recipe, "runs": runs, "skipped_existing": done,
                        "ran": ran})
