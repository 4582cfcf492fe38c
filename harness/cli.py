"""The `harness` command line: list, pretrain, eval, score, run, compare, leaderboard.

Every command that produces numbers prints its summary as one JSON object on the last line of stdout.
Bad input (an unknown task, model or method, a missing or malformed data file, invalid decoder settings,
an output folder that cannot be written or already holds another run's results) is one line on stderr
and exit code 2, no traceback (set HARNESS_DEBUG=1 to see one). Every check that can fail runs before
the expensive work (data, model, generation), and nothing already written is removed or replaced.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import sys
from pathlib import Path

DECODE_FLAGS = ("sampler", "gen_length", "block_length", "steps", "temperature", "remasking", "cfg_scale")
# files whose presence in --out means another run's results live there (`run` also counts an unfinished one)
EVAL_FILES = ("summary.json", "samples.jsonl")
RUN_FILES = ("summary.json", "base_eval.json", "curve.csv", "checkpoints")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the message and where to find help), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _add_decode_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("decoding (defaults come from the task)")
    g.add_argument("--sampler", choices=["low_confidence", "emerge", "maskgit"], help="decoder")
    g.add_argument("--gen-length", type=int, help="completion length in tokens")
    g.add_argument("--block-length", type=int, help="semi-autoregressive block length (low_confidence)")
    g.add_argument("--diffusion-steps", dest="diffusion_steps", type=int, help="denoising steps in total")
    g.add_argument("--temperature", type=float, help="sampling temperature (0 = greedy)")
    g.add_argument("--remasking", choices=["low_confidence", "random"], help="which tokens a step commits")
    g.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale (0 = off)")


def _add_model_args(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument("--model", default=default, required=default is None,
                   help="gold | tiny | hf:<hub-id-or-local-folder> | a preset (see `harness list models`)")
    p.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="harness", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("list", help="list tasks, methods or models")
    s.add_argument("what", nargs="?", default="all", choices=["all", "tasks", "methods", "models"])

    s = sub.add_parser("pretrain", help="pretrain the embedded `tiny` model for a task (cached)")
    s.add_argument("--task", required=True)
    s.add_argument("--seconds", type=float, default=None, help="training time budget (default: the task's)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--force", action="store_true", help="retrain even if a cached model exists")

    s = sub.add_parser("eval", help="generate, verify and score a model on a task")
    s.add_argument("--task", required=True)
    _add_model_args(s, default=None)
    s.add_argument("--data", help="local jsonl/json file or hub id (hf://owner/name[:config])")
    s.add_argument("--split", default="test", help="split of an embedded task (test | train)")
    s.add_argument("--limit", type=int, help="evaluate only the first N problems")
    s.add_argument("--n-samples", type=int, default=1, help="completions per problem (pass@k)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--out", help="output folder (default results/eval__<task>__<model>__<time>)")
    s.add_argument("--overwrite", action="store_true", help="replace the results of another run in --out")
    _add_detector_args(s)
    _add_decode_args(s)

    s = sub.add_parser("score", help="score completions generated elsewhere")
    s.add_argument("--task", required=True)
    s.add_argument("--predictions", required=True,
                   help='jsonl of {"id": ..., "completion": "..."} (a folder of images for geneval)')
    s.add_argument("--data", help="the problems the ids refer to (local file or hub id)")
    s.add_argument("--out", help="output folder (default results/score__<task>__<time>)")
    s.add_argument("--overwrite", action="store_true", help="replace the results of another run in --out")
    _add_detector_args(s)

    s = sub.add_parser("run", help="evaluate the base model, train with an RL method, evaluate again")
    s.add_argument("--task", required=True)
    s.add_argument("--method", required=True, help="an RL method, or `none` to evaluate only")
    _add_model_args(s, default="tiny")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--steps", type=int, help="RL steps (default: the task's)")
    s.add_argument("--data", help="test problems (real tasks); embedded tasks generate their own")
    s.add_argument("--train-data", help="training problems (real tasks)")
    s.add_argument("--limit", type=int, help="evaluate on the first N test problems")
    s.add_argument("--eval-split", default="test",
                   help="split an embedded task is evaluated on: test, or validation when choosing settings")
    s.add_argument("--checkpoint-every", type=int, default=50, help="save a checkpoint every N steps")
    s.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training config field (repeatable), e.g. --set lr=1e-5")
    s.add_argument("--out", help="output folder (default results/<task>__<model>__<method>__seed<S>)")
    s.add_argument("--overwrite", action="store_true",
                   help="start over in an --out that holds another (finished or unfinished) run")
    s.add_argument("--no-progress", action="store_true")

    s = sub.add_parser("compare", help="run several methods x seeds at the same rollout budget")
    s.add_argument("--task", required=True)
    s.add_argument("--methods", required=True, help="comma-separated, e.g. maskgrpo,diffu-grpo,unigrpo")
    s.add_argument("--seeds", default="0,1,2")
    _add_model_args(s, default="tiny")
    s.add_argument("--steps", type=int)
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--limit", type=int, help="evaluate on the first N test problems")
    s.add_argument("--results", default="results", help="where run folders go")

    s = sub.add_parser("leaderboard", help="collate results/ into leaderboards/ (CSV, markdown, plots)")
    s.add_argument("--results", default="results")
    s.add_argument("--out", default="leaderboards")
    return p


def _add_detector_args(s) -> None:
    g = s.add_argument_group("GenEval on real images (task geneval)")
    g.add_argument("--detector-path", help="local Mask2Former COCO instance-segmentation folder "
                   "(e.g. a download of facebook/mask2former-swin-small-coco-instance)")
    g.add_argument("--clip-path", help="local open_clip weights for colour classification (ViT-L-14, OpenAI)")


def _task_for(args):
    """The task named by --task, with GenEval's detector weights when they are given."""
    from tasks import get_task

    paths = {k: getattr(args, k, None) for k in ("detector_path", "clip_path")}
    given = {k: v for k, v in paths.items() if v}
    if given and args.task != "geneval":
        flags = " and ".join("--" + k.replace("_", "-") for k in given)
        raise ValueError(f"{flags} apply to --task geneval (real images) only, not {args.task!r}")
    return get_task(args.task, **given)


def _usage_errors() -> tuple[type[BaseException], ...]:
    from harness.registry import UnknownNameError
    from harness.results import ResultError
    from tasks.base import DataError

    errs: list[type[BaseException]] = [UnknownNameError, DataError, ResultError, ValueError, FileNotFoundError,
                                       PermissionError, NotADirectoryError, IsADirectoryError]
    try:
        from harness.models import ModelError

        errs.append(ModelError)
    except ImportError:
        pass
    return tuple(errs)


def _training_errors() -> tuple[type[BaseException], ...]:
    try:
        from trainers.loop import TrainingDiverged
    except ImportError:
        return ()
    return (TrainingDiverged,)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = globals()[f"cmd_{args.command}"]
    try:
        return handler(args) or 0
    except KeyboardInterrupt:
        print("interrupted; results already written are kept", file=sys.stderr)
        return 130
    except _training_errors() as e:
        if os.environ.get("HARNESS_DEBUG"):
            raise
        print(f"harness {args.command}: training stopped: {e}", file=sys.stderr)
        return 1
    except _usage_errors() as e:
        if os.environ.get("HARNESS_DEBUG"):
            raise
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args and not str(e).startswith("unknown") else str(e)
        msg = " ".join(msg.split()) or type(e).__name__  # one line, whatever the message
        print(f"harness {args.command}: error: {msg}", file=sys.stderr)
        return 2


# ---- commands ------------------------------------------------------------------------------------
def cmd_list(args) -> int:
    import tasks

    what = args.what
    if what in ("all", "tasks"):
        print("tasks:")
        for name in tasks.TASKS.names():
            t = tasks.TASKS.get(name)
            src = "embedded" if t.embedded else (t.default_data_hint or t.hub_id or "")
            print(f"  {name:12s} {t.kind:6s} metric={t.primary_metric:9s} data: {src}")
    if what in ("all", "methods"):
        print("methods:")
        for name in _method_names():
            print(f"  {name}")
        print("  none        (evaluate only)")
    if what in ("all", "models"):
        print("models:")
        for line in _model_lines():
            print(f"  {line}")
    return 0


def _method_names() -> list[str]:
    try:
        from trainers import METHODS
    except ImportError:
        return []
    return METHODS.names()


def _model_lines() -> list[str]:
    lines = ["gold                the reference solution of every example (verifier sanity check)",
             "tiny                the embedded model pretrained for the task (`harness pretrain`)",
             "hf:<id|path>        any transformers masked diffusion model (hub id or local folder)"]
    try:
        from harness.models import PRESETS
    except ImportError:
        PRESETS = {}
    lines += [f"{name:19s} {target}" for name, target in sorted(PRESETS.items())]
    return lines


def _timestamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def decode_config(task, args):
    """Task defaults, overridden by the flags the user gave."""
    from harness.sampling import DecodeConfig

    values = dict(task.gen_defaults)
    flags = {"sampler": args.sampler, "gen_length": args.gen_length, "block_length": args.block_length,
             "steps": args.diffusion_steps, "temperature": args.temperature, "remasking": args.remasking,
             "cfg_scale": args.cfg_scale}
    values.update({k: v for k, v in flags.items() if v is not None})
    for k in ("temperature", "cfg_scale"):
        if k in values and not math.isfinite(values[k]):
            raise ValueError(f"--{k.replace('_', '-')} {values[k]} must be a finite number")
    return DecodeConfig(**values)  # DecodeConfig checks itself: a ValueError that says which values work


def check_model_name(spec: str) -> None:
    """An unknown model name fails here, before data or weights are loaded (`load_model` would say the same)."""
    from harness import models
    from harness.registry import UnknownNameError

    if spec in ("gold", "tiny") or spec in models.PRESETS or spec.startswith("hf:"):
        return
    raise UnknownNameError("model", spec, models.model_names())


def check_positive(**values) -> None:
    bad = [k for k, v in values.items() if v is not None and v < 1]
    if bad:
        raise ValueError(", ".join(f"--{k.replace('_', '-')} {values[k]}" for k in bad) + " must be >= 1")


def load_model_for(task, spec: str, device: str = "auto", dtype: str = "auto"):
    """`load_model`, pretraining the embedded model first when `tiny` is asked and nothing is cached."""
    from harness import models

    if spec == "tiny" and not models.is_pretrained(task.name):
        if not task.embedded:
            raise ValueError(f"the embedded `tiny` model exists only for embedded tasks; for {task.name!r} "
                             "pass --model hf:<local folder> or --model gold")
        print(f"no cached tiny model for {task.name!r}; pretraining it first (harness pretrain --task "
              f"{task.name}) ...", file=sys.stderr)
        from harness.pretrain import pretrain

        pretrain(task.name)
    return models.load_model(spec, task=task.name, device=_device(device), dtype=dtype)


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cmd_pretrain(args) -> int:
    from harness import models
    from harness.pretrain import pretrain
    from tasks import get_task

    task = get_task(args.task)
    if not task.embedded:
        raise ValueError(f"pretrain builds the embedded model for embedded tasks only "
                         f"({', '.join(n for n in _embedded_names())}), not {args.task!r}")
    if models.is_pretrained(args.task) and not args.force:
        print(f"tiny model for {args.task!r} already cached at {models.tiny_model_path(args.task)} "
              "(--force to retrain)", file=sys.stderr)
        path = models.tiny_model_path(args.task)
        info = {}
    else:
        kw = {"seed": args.seed}
        if args.seconds is not None:
            kw["seconds"] = args.seconds
        path = pretrain(args.task, **kw)
        info_file = Path(path) / "pretrain.json"
        info = json.loads(info_file.read_text()) if info_file.exists() else {}
    print(json.dumps({"task": args.task, "model": "tiny", "path": str(path), **info}, sort_keys=True))
    return 0


def _embedded_names() -> list[str]:
    import tasks

    return [n for n in tasks.TASKS.names() if tasks.TASKS.get(n).embedded]


def cmd_eval(args) -> int:
    from harness.results import check_out_dir
    from harness.runner import eval_summary, evaluate, write_eval

    task = _task_for(args)
    check_model_name(args.model)
    check_positive(n_samples=args.n_samples, limit=args.limit, batch_size=args.batch_size)
    decode = decode_config(task, args)  # invalid decoder settings fail here, before any work
    out_dir = check_out_dir(args.out or f"results/eval__{_safe(task.name)}__{_safe(args.model)}__{_timestamp()}",
                            protect=EVAL_FILES, overwrite=args.overwrite)
    examples = task.load(args.data, split=args.split, limit=args.limit)
    model = load_model_for(task, args.model, args.device, args.dtype)
    if getattr(model, "is_gold", False):
        decode = None
    out = evaluate(task, model, examples, decode, n_samples=args.n_samples, seed=args.seed,
                   batch_size=args.batch_size, progress=sys.stderr.isatty())
    config = {"task": task.name, "model": args.model, "data": args.data, "split": args.split, "limit": args.limit,
              "n_samples": args.n_samples, "seed": args.seed, "batch_size": args.batch_size}
    summary = eval_summary("eval", task, args.model, out, decode=decode, config=config, seed=args.seed)
    write_eval(out_dir, summary, out.scored)
    _print_summary(summary, out_dir)
    return 0


def cmd_score(args) -> int:
    from harness.results import check_out_dir
    from harness.runner import eval_summary, read_predictions, score_predictions, write_eval
    from tasks.base import DataError

    task = _task_for(args)
    pred = Path(args.predictions)
    if not pred.exists():
        raise FileNotFoundError(f"predictions not found: {pred}")
    if pred.is_dir() and not hasattr(task, "predictions_from_folder"):
        raise ValueError(f"--predictions {pred} is a folder; task {task.name!r} takes a jsonl file")
    out_dir = check_out_dir(args.out or f"results/score__{_safe(task.name)}__{_timestamp()}",
                            protect=EVAL_FILES, overwrite=args.overwrite)
    rows = task.predictions_from_folder(pred) if pred.is_dir() else read_predictions(pred)
    examples = task.load(args.data)
    out = score_predictions(task, rows, examples, source=str(pred))
    config = {"task": task.name, "predictions": str(pred), "data": args.data}
    summary = eval_summary("score", task, "external", out, config=config)
    write_eval(out_dir, summary, out.scored)
    rep = out.report
    why = "; ".join(f"{n} {k} ({rep['unscorable_first_error'].get(k, '')})"
                    for k, n in rep.get("unscorable_by_status", {}).items())
    if out.scored and rep.get("unscorable") == len(out.scored):  # e.g. the data's tests do not compile
        raise DataError(f"no prediction could be scored (results written to {out_dir}): {why}")
    if rep["malformed_rows"] or rep["unknown_id_rows"]:
        print(f"skipped {rep['malformed_rows']} malformed row(s) ({pred} lines {rep['malformed_lines']}) and "
              f"{rep['unknown_id_rows']} row(s) with unknown ids {rep['unknown_ids']}", file=sys.stderr)
    if rep.get("unscorable"):
        print(f"{rep['unscorable']} row(s) could not be scored: {why}", file=sys.stderr)
    _print_summary(summary, out_dir)
    return 0


def cmd_run(args) -> int:
    from harness.experiment import run_dir_name, run_experiment
    from harness.results import ResultError, check_out_dir
    from tasks import get_task

    task = get_task(args.task)
    if args.method != "none":
        from trainers import METHODS

        METHODS.get(args.method)
    check_model_name(args.model)
    check_positive(limit=args.limit, checkpoint_every=args.checkpoint_every)
    out = Path(args.out or Path("results") / run_dir_name(task.name, args.model, args.method, args.seed, args.steps))
    if not (args.resume or args.overwrite) and out.is_dir():  # --resume continues the run in its own folder
        if (out / "summary.json").exists():
            raise ResultError(f"--out {out} already holds summary.json from another run; pass another --out, "
                              "--overwrite to replace it, or --resume to continue it")
        if any((out / f).exists() for f in RUN_FILES):
            raise ResultError(f"--out {out} holds an unfinished run; pass --resume to continue it, --overwrite "
                              "to start over, or another --out")
    check_out_dir(out, protect=())
    args.out = str(out)
    summary, out_dir = run_experiment(args)
    _print_summary(summary, out_dir)
    return 0


def cmd_compare(args) -> int:
    from harness.experiment import compare
    from harness.results import check_out_dir

    check_model_name(args.model)
    check_out_dir(args.results, protect=(), flag="--results")  # finished runs in it are reused, never replaced
    summary = compare(args)
    print(json.dumps(summary, sort_keys=True))
    return 0


def cmd_leaderboard(args) -> int:
    from harness.results import check_out_dir
    from leaderboards.collate import build_leaderboards

    results = Path(args.results)
    if not results.is_dir():
        what = "is a file, not a folder" if results.exists() else "does not exist"
        raise FileNotFoundError(f"--results {results} {what}; pass the folder that holds the run folders "
                                "(default results/)")
    check_out_dir(args.out, protect=())  # the leaderboards are regenerated in place, by design
    report = build_leaderboards(results, args.out)
    for problem in report.get("skipped", []):
        print(f"skipped {problem}", file=sys.stderr)
    print(json.dumps(report, sort_keys=True, default=str))
    return 0


def _print_summary(summary: dict, out_dir: Path) -> None:
    """A human line on stderr, then the machine-readable summary as the last line of stdout."""
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in summary.get("metrics", {}).items() if isinstance(v, float))
    print(f"{summary['task']}: n={summary['n']} {metrics} -> {out_dir}", file=sys.stderr)
    keep = ("task", "model", "method", "n", "n_samples", "metrics", "ci95", "nfe", "base", "final", "gain",
            "gain_ci95", "report", "seed", "wall_time_s")
    line = {k: summary[k] for k in keep if k in summary}
    line["out"] = str(out_dir)
    from harness.results import to_jsonable

    print(json.dumps(to_jsonable(line), sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
