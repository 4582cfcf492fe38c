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
import os
import sys
from pathlib import Path

# DecodeConfig field -> the argparse dest of its flag (`--diffusion-steps` sets `steps`)
from harness.run_spec import DECODE_FLAGS  # noqa: E402 - shared with `harness run`'s spec

# files whose presence in --out means another run's results live there (`run` also counts an unfinished one)
EVAL_FILES = ("summary.json", "samples.jsonl", "disagreements.jsonl")
PROTOCOL_HELP = ("scoring rules, comma-separated; the first is the result's: harness (default), d1 (the d1 "
                 "paper's parser), lm-eval (lm-eval's filters and MATH equivalence); gsm8k and math have all three")
RUN_FILES = ("summary.json", "base_eval.json", "curve.csv", "checkpoints")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the message and where to find help), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _add_decode_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("decoding (defaults come from the task)")
    g.add_argument("--sampler", choices=["low_confidence", "emerge", "maskgit", "dream"], help="decoder")
    g.add_argument("--gen-length", type=int, help="completion length in tokens")
    g.add_argument("--block-length", type=int, help="semi-autoregressive block length (low_confidence)")
    g.add_argument("--diffusion-steps", dest="diffusion_steps", type=int, help="denoising steps in total")
    g.add_argument("--temperature", type=float, help="sampling temperature (0 = greedy)")
    g.add_argument("--remasking", choices=["low_confidence", "random"], help="which tokens a step commits")
    g.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale (0 = off)")
    g.add_argument("--alg", choices=["entropy", "maskgit_plus", "topk_margin", "origin"],
                   help="dream sampler: Dream's decoding order (default entropy)")
    g.add_argument("--alg-temp", type=float, help="dream sampler: 0 = most confident first; >0 samples positions")
    # fast decoding (issue 20; harness/sampling.py "Fast decoding"): low_confidence only, off by default
    g.add_argument("--threshold", type=float, help="parallel decoding: commit every masked block position whose "
                   "probability is >= T, at least one a step (Fast-dLLM uses 0.9; then --diffusion-steps is unused)")
    g.add_argument("--factor", type=float, help="parallel decoding by Fast-dLLM's factor rule instead (they use 1)")
    g.add_argument("--cache", choices=["none", "prefix", "dual"], help="approximate KV cache, refreshed each block "
                   "(default none; prefix/dual need the tiny model: a model whose code the harness controls)")


def _add_model_args(p: argparse.ArgumentParser, default: str | None, spec: bool = False) -> None:
    """spec=True: no argparse defaults (the RunSpec's apply, under a --config file's values)."""
    p.add_argument("--model", default=None if spec else default, required=default is None,
                   help="gold | tiny | hf:<hub-id-or-local-folder> | a preset (see `harness list models`)"
                   + (f" (default {default})" if spec else ""))
    p.add_argument("--device", default=None if spec else "auto", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--dtype", default=None if spec else "auto", help="auto | float32 | bfloat16 | float16")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="harness", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("list", help="list tasks, methods or models")
    s.add_argument("what", nargs="?", default="all", choices=["all", "tasks", "methods", "models"])

    s = sub.add_parser("pretrain", help="pretrain the embedded `tiny` model for a task (cached)")
    s.add_argument("--task", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--force", action="store_true", help="retrain even if a cached model exists")

    s = sub.add_parser("eval", help="generate, verify and score a model on one or more tasks")
    s.add_argument("--task", required=True, help="a task, or several comma-separated (gsm8k,math)")
    _add_model_args(s, default=None)
    s.add_argument("--data", action="append", default=[], metavar="[TASK=]PATH",
                   help="local jsonl/json file or hub id (hf://owner/name[:config]); with several tasks, "
                   "one TASK=PATH per task (repeatable)")
    s.add_argument("--chat-template", choices=["auto", "on", "off"], default="auto",
                   help="wrap each prompt in the tokenizer's chat template (auto: when it has one; "
                   "off for base models)")
    s.add_argument("--num-fewshot", type=int, default=0,
                   help="solved problems in front of each prompt (gsm8k; the LLaDA paper's base models: 4)")
    s.add_argument("--fewshot-data", help="where the few-shot problems come from (gsm8k: the train split, "
                   "e.g. ../shared/data/gsm8k_train.jsonl; default: the hub's train split)")
    s.add_argument("--split", default="test", help="split of an embedded task (test | train)")
    s.add_argument("--limit", type=int, help="evaluate only the first N problems")
    s.add_argument("--n-samples", type=int, default=1, help="completions per problem (pass@k)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--out", help="output folder (default results/eval__<task>__<model>__<time>)")
    s.add_argument("--overwrite", action="store_true", help="replace the results of another run in --out")
    s.add_argument("--protocol", default="harness", help=PROTOCOL_HELP)
    _add_detector_args(s)
    _add_reward_args(s)
    _add_decode_args(s)

    s = sub.add_parser("score", help="score completions generated elsewhere")
    s.add_argument("--task", required=True)
    s.add_argument("--predictions", required=True,
                   help='jsonl of {"id": ..., "completion": "..."}; d1\'s published JSON (a file or a folder of '
                        'them, rows matched by question); a folder of images for geneval')
    s.add_argument("--data", help="the problems the ids refer to (local file or hub id)")
    s.add_argument("--out", help="output folder (default results/score__<task>__<time>)")
    s.add_argument("--overwrite", action="store_true", help="replace the results of another run in --out")
    s.add_argument("--protocol", default="harness", help=PROTOCOL_HELP)
    _add_detector_args(s)
    _add_reward_args(s)

    s = sub.add_parser("run", help="evaluate the base model, train with an RL method, evaluate again")
    # defaults live in harness.run_spec.RunSpec: a flag left out keeps the --config file's value or the default
    s.add_argument("--config", metavar="FILE", help="a run spec (JSON or TOML of RunSpec fields) or an earlier "
                   "run's summary.json to replay; flags given as well override it")
    s.add_argument("--task", help="required unless --config names it")
    s.add_argument("--method", help="an RL method, or `none` to evaluate only")
    _add_model_args(s, default="tiny", spec=True)
    s.add_argument("--seed", type=int, help="default 0")
    s.add_argument("--steps", type=int, help="RL steps (default: the task's)")
    s.add_argument("--data", help="test problems (real tasks); embedded tasks generate their own")
    s.add_argument("--train-data", help="training problems (real tasks)")
    s.add_argument("--limit", type=int, help="evaluate on the first N test problems")
    s.add_argument("--eval-split",
                   help="split an embedded task is evaluated on: test (default), or validation when choosing settings")
    s.add_argument("--checkpoint-every", type=int, help="save a checkpoint every N steps (default 50)")
    s.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training config field (repeatable), e.g. --set lr=1e-5")
    s.add_argument("--recipe", choices=["equal", "paper"],
                   help="equal (default): one shared setting for every method; paper: each method's authors' "
                        "settings (docs/RECIPES.md)")
    s.add_argument("--out", help="output folder (default results/<task>__<model>__<method>__seed<S>)")
    _add_reward_args(s)
    s.add_argument("--overwrite", action="store_true",
                   help="start over in an --out that holds another (finished or unfinished) run")
    s.add_argument("--no-progress", action="store_true")
    _add_scale_args(s)
    _add_decode_args(s)

    s = sub.add_parser("compare", help="run several methods x seeds at the same rollout budget")
    s.add_argument("--task", required=True)
    s.add_argument("--methods", required=True, help="comma-separated, e.g. maskgrpo,diffu-grpo,unigrpo")
    s.add_argument("--seeds", default="0,1,2")
    _add_model_args(s, default="tiny")
    s.add_argument("--steps", type=int)
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--recipe", choices=["equal", "paper"], default="equal",
                   help="equal: one shared setting for every method; paper: each method's authors' (docs/RECIPES.md)")
    s.add_argument("--limit", type=int, help="evaluate on the first N test problems")
    s.add_argument("--results", default="results", help="where run folders go")

    sub.add_parser("lm-eval", help="lm-evaluation-harness with `--model harness` registered; every other "
                   "argument is lm-eval's own (harness lm-eval --help)", add_help=False)

    s = sub.add_parser("leaderboard", help="collate results/ into leaderboards/ (CSV, markdown, plots)")
    s.add_argument("--results", default="results")
    s.add_argument("--out", default="leaderboards")
    return p


def _add_scale_args(s) -> None:
    """Issue 19's `harness run` flags (defaults live in harness.run_spec.RunSpec)."""
    g = s.add_argument_group("scale: LoRA, memory, precision, trackers (multi-process: see README)")
    g.add_argument("--lora-r", type=int, help="train LoRA adapters of rank R (peft) instead of every weight")
    g.add_argument("--lora-alpha", type=float, help="LoRA alpha (default: R)")
    g.add_argument("--lora-dropout", type=float, help="dropout on the adapters' input in training (default 0)")
    g.add_argument("--lora-targets", help="comma-separated module names, or all-linear (default: the model "
                   "family's attention and MLP projections)")
    g.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute block activations in the backward pass (less memory, ~1/3 more compute)")
    g.add_argument("--mixed-precision", choices=["auto", "bf16", "no"],
                   help="bf16 autocast; auto (default): on a CUDA device that supports bf16")
    g.add_argument("--report-to", choices=["none", "tensorboard", "wandb", "trackio"],
                   help="per-step metrics to a tracker (local files; wandb offline unless WANDB_MODE says)")


def _add_detector_args(s) -> None:
    g = s.add_argument_group("GenEval on real images (task geneval)")
    g.add_argument("--detector-path", help="local Mask2Former COCO instance-segmentation folder "
                   "(e.g. a download of facebook/mask2former-swin-small-coco-instance)")
    g.add_argument("--clip-path", help="local open_clip weights for colour classification (ViT-L-14, OpenAI)")


def _add_reward_args(s) -> None:
    g = s.add_argument_group("rewards (tasks/rewards.py; the metrics stay the verifier's)")
    g.add_argument("--reward", metavar="NAME=W[,NAME=W...]",
                   help="reward functions and weights, e.g. correct=1.0,format=0.1 or geneval=1.0,clip=0.2 "
                   "(default: the task's; unknown names list the task's rewards)")
    g.add_argument("--reward-model", action="append", default=[], metavar="NAME=PATH",
                   help="local weights of a model-backed reward, e.g. clip=/models/clip-vit-large-patch14 "
                   "(a transformers CLIP folder) or imagereward=/models/ImageReward.pt (repeatable)")


DETECTOR_TASKS = ("geneval", "image-prompts")  # tasks that take --detector-path/--clip-path


def _task_for(args):
    """The task named by --task, with GenEval's detector weights and the chosen rewards when given."""
    from tasks import get_task

    paths = {k: getattr(args, k, None) for k in ("detector_path", "clip_path")}
    given = {k: v for k, v in paths.items() if v}
    if given and args.task not in DETECTOR_TASKS:
        flags = " and ".join("--" + k.replace("_", "-") for k in given)
        raise ValueError(f"{flags} apply to --task {' or '.join(DETECTOR_TASKS)} (real images) only, not {args.task!r}")
    task = get_task(args.task, **given)
    if getattr(args, "reward", None) or getattr(args, "reward_model", None):
        task.check_rewards(args.reward, args.reward_model)  # names and paths first: one-line errors, no loading
        task.use_rewards(args.reward, args.reward_model, device=getattr(args, "device", None) or "auto")
    return task


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
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["lm-eval"]:
        return cmd_lm_eval(argv[1:])
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
    """Task defaults, overridden by the decoding flags the user gave (`DecodeConfig.from_task`)."""
    from harness.sampling import DecodeConfig

    return DecodeConfig.from_task(task, **{k: getattr(args, a, None) for k, a in DECODE_FLAGS.items()})


def cmd_pretrain(args) -> int:
    from harness import models
    from harness.pretrain import pretrain
    from tasks import get_task

    task = get_task(args.task)
    if not task.embedded:
        raise ValueError(f"pretrain builds the embedded model for embedded tasks only "
                         f"({', '.join(n for n in _embedded_names())}), not {args.task!r}")
    from harness.pretrain import stale_reason

    stale = models.is_pretrained(args.task) and stale_reason(task)
    if stale and not args.force:
        print(f"the cached tiny model for {args.task!r} was pretrained with other settings ({stale}); "
              "pretraining it anew", file=sys.stderr)
    if models.is_pretrained(args.task) and not stale and not args.force:
        print(f"tiny model for {args.task!r} already cached at {models.tiny_model_path(args.task)} "
              "(--force to retrain)", file=sys.stderr)
        path = models.tiny_model_path(args.task)
        info = {}
    else:
        path = pretrain(args.task, seed=args.seed)  # the task's fixed step count: reproducible
        info_file = Path(path) / "pretrain.json"
        info = json.loads(info_file.read_text()) if info_file.exists() else {}
    print(json.dumps({"task": args.task, "model": "tiny", "path": str(path), **info}, sort_keys=True))
    return 0


def _embedded_names() -> list[str]:
    import tasks

    return [n for n in tasks.TASKS.names() if tasks.TASKS.get(n).embedded]


def cmd_eval(args) -> int:
    from harness.evaluation import eval_summary, evaluate, write_eval
    from harness.models import check_cache_model, check_model_name
    from harness.pretrain import load_model_for
    from harness.results import check_out_dir, write_lm_eval_results
    from harness.run_spec import check_positive
    from tasks import get_task

    names = [n.strip() for n in args.task.split(",") if n.strip()]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"--task {args.task!r}: name each task once, comma-separated (e.g. gsm8k,math)")
    if len(names) > 1 and (args.detector_path or args.clip_path or args.reward or args.reward_model):
        raise ValueError("--detector-path/--clip-path/--reward/--reward-model apply to one --task at a time")
    task_list = [_task_for(argparse.Namespace(**{**vars(args), "task": n})) if len(names) == 1 else get_task(n)
                 for n in names]
    data = _data_per_task(args.data, names)
    check_model_name(args.model)
    check_positive(n_samples=args.n_samples, limit=args.limit, batch_size=args.batch_size)
    if args.num_fewshot < 0:
        raise ValueError(f"--num-fewshot {args.num_fewshot} must be >= 0")
    if args.num_fewshot and any(not t.supports_fewshot for t in task_list):
        bad = [t.name for t in task_list if not t.supports_fewshot]
        raise ValueError(f"few-shot prompts exist for gsm8k only, not {', '.join(bad)}; drop --num-fewshot")
    if args.fewshot_data and not args.num_fewshot:
        raise ValueError("--fewshot-data needs --num-fewshot K (K > 0)")
    protocols = {t.name: _protocols_for(args, t) for t in task_list}
    decodes = {t.name: decode_config(t, args) for t in task_list}  # invalid settings fail before any work
    for d in decodes.values():  # a KV cache the model cannot run: before the data or the model is loaded
        check_cache_model(args.model, d.cache)
    root = args.out or f"results/eval__{_safe('+'.join(names))}__{_safe(args.model)}__{_timestamp()}"
    dirs = {n: Path(root) if len(names) == 1 else Path(root) / _safe(n) for n in names}
    for n in names:
        check_out_dir(dirs[n], protect=EVAL_FILES, overwrite=args.overwrite)
    examples = {t.name: t.load(data.get(t.name), split=args.split, limit=args.limit) for t in task_list}
    for t in task_list:
        if args.num_fewshot:
            shots = t.load(args.fewshot_data, split="train", limit=args.num_fewshot) if args.fewshot_data else \
                t.examples_from(_hub_train_rows(t), limit=args.num_fewshot)
            t.set_fewshot(shots)
    chat = {"auto": None, "on": True, "off": False}[args.chat_template]
    model, summaries = None, {}
    for t in task_list:
        if model is None or args.model == "tiny":  # the tiny model is pretrained per task
            model = load_model_for(t, args.model, args.device, args.dtype)
        if model.decodes:
            model.chat = chat
            model.encode_prompts(["probe"])  # --chat-template on without a template fails here, not midway
        decode = decodes[t.name] if model.decodes else None
        out = evaluate(t, model, examples[t.name], decode, n_samples=args.n_samples, seed=args.seed,
                       batch_size=args.batch_size, progress=sys.stderr.isatty(), protocols=protocols[t.name])
        config = {"task": t.name, "model": args.model, "data": data.get(t.name), "split": args.split,
                  "limit": args.limit, "n_samples": args.n_samples, "seed": args.seed, "batch_size": args.batch_size,
                  "chat_template": args.chat_template, "num_fewshot": args.num_fewshot,
                  "fewshot_data": args.fewshot_data}
        if protocols[t.name]:
            config["protocol"] = ",".join(protocols[t.name])
        summary = eval_summary("eval", t, args.model, out, decode=decode, config=config, seed=args.seed)
        write_eval(dirs[t.name], summary, out.scored, out.protocols.get("disagreements"))
        _print_protocols(summary, out, dirs[t.name])
        summaries[t.name] = summary
        if len(names) > 1:
            _print_summary(summary, dirs[t.name], last_line=False)
    if len(names) == 1:
        _print_summary(summaries[names[0]], dirs[names[0]])
        return 0
    write_lm_eval_results(Path(root) / "lm_eval_results.json", list(summaries.values()))
    line = {"tasks": names, "model": args.model, "out": root,
            "metrics": {n: summaries[n]["metrics"] for n in names}, "n": {n: summaries[n]["n"] for n in names}}
    from harness.results import to_jsonable

    print(json.dumps(to_jsonable(line), sort_keys=True))
    return 0


def _data_per_task(values: list[str], names: list[str]) -> dict[str, str]:
    """--data PATH (one task) or --data TASK=PATH per task -> {task: PATH}."""
    out: dict[str, str] = {}
    for v in values:
        task, sep, path = v.partition("=")
        if sep and task in names:
            if task in out:
                raise ValueError(f"--data names {task} twice")
            out[task] = path
        elif len(names) == 1 and not (sep and task.isidentifier() and not Path(v).exists()):
            if names[0] in out:
                raise ValueError("--data given twice for one task")
            out[names[0]] = v
        else:
            raise ValueError(f"--data {v!r}: with --task {','.join(names)} write --data TASK=PATH for each task "
                             f"(e.g. --data {names[0]}=PATH)")
    return out


def _hub_train_rows(task):
    from tasks.base import load_records

    if not task.hub_id:
        raise ValueError(f"--num-fewshot: task {task.name!r} has no hub train split; pass --fewshot-data PATH")
    return load_records(None, default_hub=task.hub_id, split="train", hint="--fewshot-data PATH (the train split)",
                        task=task.name)


def cmd_lm_eval(argv: list[str]) -> int:
    """lm-eval's own command line, with `--model harness` registered (lm-eval 0.4 cannot discover it)."""
    try:
        import lm_eval.__main__ as lm_eval_main
    except ImportError:
        print("harness lm-eval: error: lm-eval is not installed: pip install 'lm-eval>=0.4'", file=sys.stderr)
        return 2
    import harness.lm_eval_model  # noqa: F401 - registers the model named "harness"

    saved = sys.argv
    sys.argv = ["lm-eval", *argv]
    try:
        lm_eval_main.cli_evaluate()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except _usage_errors() as e:  # our model's own bad input (a model folder, model_args): one line
        if os.environ.get("HARNESS_DEBUG"):
            raise
        print(f"harness lm-eval: error: {' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)
        return 2
    finally:
        sys.argv = saved
    return 0


def cmd_score(args) -> int:
    from harness.evaluation import eval_summary, read_predictions, score_predictions, write_eval
    from harness.results import check_out_dir
    from tasks.base import DataError

    task = _task_for(args)
    protocols = _protocols_for(args, task)
    pred = Path(args.predictions)
    if not pred.exists():
        raise FileNotFoundError(f"predictions not found: {pred}")
    foreign = None
    if pred.is_dir() and not task.reads_prediction_folders:
        foreign = _d1_predictions(pred, task, args.data)
        if foreign is None:
            raise ValueError(f"--predictions {pred} is a folder; task {task.name!r} takes a jsonl file "
                             "(or d1's published JSON files)")
    elif pred.suffix == ".json" and not pred.is_dir():
        foreign = _d1_predictions(pred, task, args.data)
    out_dir = check_out_dir(args.out or f"results/score__{_safe(task.name)}__{_timestamp()}",
                            protect=EVAL_FILES, overwrite=args.overwrite)
    if foreign is not None:
        rows, examples = foreign[0], foreign[2]
    else:
        rows = task.predictions_from_folder(pred) if pred.is_dir() else read_predictions(pred)
        examples = task.load(args.data)
    out = score_predictions(task, rows, examples, source=str(pred), protocols=protocols)
    config = {"task": task.name, "predictions": str(pred), "data": args.data}
    if protocols:
        config["protocol"] = ",".join(protocols)
    if foreign is not None:
        out.report["predictions_format"] = foreign[1]
    summary = eval_summary("score", task, "external", out, config=config)
    write_eval(out_dir, summary, out.scored, out.protocols.get("disagreements"))
    _print_protocols(summary, out, out_dir)
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


def _protocols_for(args, task) -> list[str] | None:
    """--protocol as a list (None for a task with only the harness's rules and no --protocol given)."""
    from tasks.protocols import available, parse_protocols

    protocols = parse_protocols(args.protocol, task.name)
    return protocols if len(available(task.name)) > 1 or protocols != ["harness"] else None


def _d1_predictions(pred: Path, task, data: str | None):
    """(rows, report, examples) when `pred` is d1's published JSON layout, else None."""
    from tasks.protocols import d1_predictions

    examples = task.load(data)
    got = d1_predictions(pred, examples)
    return None if got is None else (got[0], got[1], examples)


def _print_protocols(summary: dict, out, out_dir: Path) -> None:
    """One stderr line per requested protocol, and where the rows the protocols disagree on went."""
    by = summary.get("metrics_by_protocol") or {}
    if len(by) > 1 or summary.get("protocol") != "harness":
        for name, m in by.items():
            shown = ", ".join(f"{k}={v:.4f}" for k, v in m["metrics"].items() if isinstance(v, float))
            print(f"protocol {name}: {shown}", file=sys.stderr)
    if out.protocols:
        print(f"{len(out.protocols['disagreements'])} row(s) where the scoring protocols disagree -> "
              f"{Path(out_dir) / 'disagreements.jsonl'}", file=sys.stderr)


def cmd_run(args) -> int:
    from harness.experiment import run_experiment
    from harness.results import ResultError, check_out_dir
    from harness.run_spec import RunSpec

    spec = RunSpec.from_args(args)
    spec.check()
    out = spec.run_dir()
    if not (spec.resume or args.overwrite) and out.is_dir():  # --resume continues the run in its own folder
        if (out / "summary.json").exists():
            raise ResultError(f"--out {out} already holds summary.json from another run; pass another --out, "
                              "--overwrite to replace it, or --resume to continue it")
        if any((out / f).exists() for f in RUN_FILES):
            raise ResultError(f"--out {out} holds an unfinished run; pass --resume to continue it, --overwrite "
                              "to start over, or another --out")
    check_out_dir(out, protect=())
    summary, out_dir = run_experiment(spec.with_(out=str(out)))
    from accelerate import PartialState

    if PartialState().is_main_process:  # several processes (accelerate launch, torchrun): one summary
        _print_summary(summary, out_dir)
    return 0


def cmd_compare(args) -> int:
    from harness.experiment import compare
    from harness.models import check_model_name
    from harness.results import check_out_dir
    from harness.run_spec import RunSpec, parse_overrides

    check_model_name(args.model)
    check_out_dir(args.results, protect=(), flag="--results")  # finished runs in it are reused, never replaced
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds expects comma-separated integers, got {args.seeds!r}") from None
    template = RunSpec(task=args.task, model=args.model, device=args.device, dtype=args.dtype, steps=args.steps,
                       limit=args.limit, overrides=parse_overrides(args.set), results=args.results,
                       recipe=args.recipe)
    summary = compare(template, methods, seeds)
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


def _print_summary(summary: dict, out_dir: Path, last_line: bool = True) -> None:
    """A human line on stderr, then the machine-readable summary as the last line of stdout."""
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in summary.get("metrics", {}).items() if isinstance(v, float))
    print(f"{summary['task']}: n={summary['n']} {metrics} -> {out_dir}", file=sys.stderr)
    if not last_line:
        return
    keep = ("task", "model", "method", "n", "n_samples", "metrics", "ci95", "nfe", "base", "final", "gain",
            "gain_ci95", "report", "seed", "wall_time_s", "protocol", "metrics_by_protocol")
    line = {k: summary[k] for k in keep if k in summary}
    line["out"] = str(out_dir)
    from harness.results import to_jsonable

    print(json.dumps(to_jsonable(line), sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
