"""The run spec: every setting of one `harness run`, as one dataclass.

Built from the command line (`RunSpec.from_args`), from a file (`harness run --config FILE`: a JSON or
TOML object of these fields, or the `summary.json` of an earlier run, which records its spec, so a run can
be replayed), or in code (`harness compare` builds one per method x seed). `harness/experiment.py` reads
nothing else. A new run flag is a field here (with its default, in this one place), one line in
`harness/cli.py`'s `run` parser, and its use in `experiment.py`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

# fields that say where and how this process runs, not what the run is: not recorded for replay
OPERATIONAL = ("out", "resume", "progress", "results", "device", "report_to")
# DecodeConfig field -> the argparse dest of its flag (`--diffusion-steps` sets `steps`); `harness run` and
# `harness eval` share the flags (cli.py's decoder argument group)
DECODE_FLAGS = {"sampler": "sampler", "gen_length": "gen_length", "block_length": "block_length",
                "steps": "diffusion_steps", "temperature": "temperature", "remasking": "remasking",
                "cfg_scale": "cfg_scale", "alg": "alg", "alg_temp": "alg_temp",
                "threshold": "threshold", "factor": "factor", "cache": "cache"}
# issue 19's flags whose value is copied as given (None = not given)
SCALE_FLAGS = ("lora_r", "lora_alpha", "lora_dropout", "lora_targets", "mixed_precision", "report_to")
MIXED_PRECISION = ("auto", "bf16", "no")


@dataclass(frozen=True)
class RunSpec:
    task: str
    method: str = "none"  # an RL method, or `none` to evaluate only
    model: str = "tiny"
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    steps: int | None = None  # RL steps; None = the task's default (TrainConfig)
    data: str | None = None  # test problems (real tasks)
    train_data: str | None = None  # training problems (real tasks)
    limit: int | None = None  # evaluate on the first N test problems
    eval_split: str = "test"  # embedded tasks: test, or validation when choosing settings
    checkpoint_every: int | None = None  # None = TrainConfig.checkpoint_every (its default lives there)
    overrides: dict = field(default_factory=dict)  # `--set KEY=VALUE`: TrainConfig or method-config fields
    # `--reward NAME=W,...`: the reward functions and weights of training (tasks/rewards.py); {} = the task's
    # `default_rewards`. `--reward-model NAME=PATH`: local weights of model-backed rewards (clip, imagereward)
    rewards: dict = field(default_factory=dict)
    reward_models: dict = field(default_factory=dict)
    recipe: str = "equal"  # equal: the shared setting | paper: each method's authors' (trainers/recipes.py)
    out: str | None = None  # run folder; None = <results>/<run_dir_name(...)>
    results: str = "results"  # where the default run folder goes
    resume: bool = False
    progress: bool = True
    # ---- scale (issue 19): LoRA, memory, precision, trackers, decoder settings of the base/final evaluations
    lora_r: int | None = None  # LoRA rank; None = full fine-tune
    lora_alpha: float | None = None  # LoRA scaling numerator; None = lora_r (d1's LLaDA runs: r=128, alpha=64)
    lora_dropout: float = 0.0  # dropout on the adapters' input, active in the gradient forwards only
    lora_targets: str | None = None  # comma-separated module names or all-linear; None = the family's default
    gradient_checkpointing: bool = False  # recompute each block's activations in the backward pass
    mixed_precision: str = "auto"  # auto (bf16 autocast on a CUDA device that has it) | bf16 | no
    report_to: str = "none"  # none | tensorboard | wandb | trackio (accelerate's trackers; offline by default)
    decode: dict = field(default_factory=dict)  # DecodeConfig overrides for the base/final evaluations

    # ---- construction ------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict, source: str = "run spec") -> RunSpec:
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(f"{source}: unknown run setting(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
        if "task" not in values or not values["task"]:
            raise ValueError("no task; pass --task NAME (or --config FILE naming one)" if source == "harness run"
                             else f"{source}: no `task` in the run spec")
        if not isinstance(values.get("overrides", {}), dict):
            raise ValueError(f"{source}: `overrides` must be an object of KEY: VALUE")
        from tasks.rewards import parse_models, parse_weights

        values = {**values, "rewards": parse_weights(values.get("rewards")),  # also "a=1,b=0.5" in a file
                  "reward_models": parse_models(values.get("reward_models"))}
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> RunSpec:
        """A JSON or TOML file of RunSpec fields, or an earlier run's summary.json (its recorded spec)."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"--config {p}: no such file")
        text = p.read_text(encoding="utf-8-sig")
        try:
            if p.suffix == ".toml":
                import tomllib

                obj = tomllib.loads(text)
            else:
                obj = json.loads(text)
        except ValueError as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
            raise ValueError(f"--config {p}: not valid {'TOML' if p.suffix == '.toml' else 'JSON'} ({e})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"--config {p}: expected an object of run settings")
        if "schema_version" in obj:  # a result's summary.json
            if obj.get("kind") != "run":
                raise ValueError(f"--config {p}: a {obj.get('kind')!r} result; only `harness run` results replay")
            obj = obj.get("run_spec") or spec_from_summary_config(obj.get("config") or {})
        return cls.from_dict(obj, source=f"--config {p}")

    @classmethod
    def from_args(cls, args) -> RunSpec:
        """The `harness run` command line: --config FILE first (if given), then every flag given over it."""
        base = asdict(cls.from_file(args.config)) if getattr(args, "config", None) else {}
        given = {k: getattr(args, k, None) for k in ("task", "method", "model", "device", "dtype", "seed", "steps",
                                                       "data", "train_data", "limit", "eval_split",
                                                       "checkpoint_every", "out", "recipe")}
        values = {**base, **{k: v for k, v in given.items() if v is not None}}
        values.update({k: getattr(args, k) for k in SCALE_FLAGS if getattr(args, k, None) is not None})
        if getattr(args, "gradient_checkpointing", False):
            values["gradient_checkpointing"] = True
        flags = {k: getattr(args, a, None) for k, a in DECODE_FLAGS.items()}
        values["decode"] = {**base.get("decode", {}), **{k: v for k, v in flags.items() if v is not None}}
        if getattr(args, "resume", False):
            values["resume"] = True
        if getattr(args, "no_progress", False):
            values["progress"] = False
        if not values.get("method"):
            raise ValueError("--method is required (an RL method, or `none`), unless --config names one")
        values["overrides"] = {**base.get("overrides", {}), **parse_overrides(getattr(args, "set", None) or [])}
        if getattr(args, "reward", None):  # given on the command line: replaces the file's choice
            values["rewards"] = args.reward
        if getattr(args, "reward_model", None):
            from tasks.rewards import parse_models

            values["reward_models"] = {**base.get("reward_models", {}), **parse_models(args.reward_model)}
        return cls.from_dict(values, source="harness run")

    def with_(self, **changes: Any) -> RunSpec:
        return replace(self, **changes)

    # ---- checks and records ------------------------------------------------------------------------
    def check(self) -> None:
        """Every check that needs no data or model: unknown task, method or model, bad numbers (one-line
        errors, before any work)."""
        from harness.models import check_model_name
        from tasks import get_task

        get_task(self.task).check_rewards(self.rewards, self.reward_models)
        if self.method != "none":
            from trainers import METHODS

            METHODS.get(self.method)
        check_model_name(self.model)
        check_positive(limit=self.limit, checkpoint_every=self.checkpoint_every)
        from trainers.recipes import check_recipe

        check_recipe(self.recipe)
        if self.steps is not None and self.steps < 0:
            raise ValueError("--steps must be >= 0")
        self.check_scale()

    def check_scale(self) -> None:
        """LoRA, precision, tracker and decoder settings (issue 19)."""
        check_positive(lora_r=self.lora_r)
        if self.lora_r is None and (self.lora_alpha is not None or self.lora_targets is not None or self.lora_dropout):
            raise ValueError("--lora-alpha, --lora-dropout and --lora-targets need --lora-r R")
        if self.lora_r is not None and self.method == "none":
            raise ValueError("--lora-r applies to training; with --method none there is nothing to train")
        if self.lora_r is not None and self.model == "gold":
            raise ValueError("--lora-r needs a model with weights, not gold")
        if not 0.0 <= float(self.lora_dropout) < 1.0:
            raise ValueError(f"--lora-dropout {self.lora_dropout} must be in [0, 1)")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"--mixed-precision {self.mixed_precision!r}: choose {', '.join(MIXED_PRECISION)}")
        from harness.distributed import check_report_to

        check_report_to(self.report_to)
        if not isinstance(self.decode, dict):
            raise ValueError("`decode` must be an object of decoder settings")
        unknown = sorted(set(self.decode) - set(DECODE_FLAGS))
        if unknown:
            raise ValueError(f"unknown decoder setting(s) {', '.join(unknown)}; valid: {', '.join(DECODE_FLAGS)}")
        if self.model != "gold":
            from harness.models import check_cache_model
            from harness.sampling import DecodeConfig
            from tasks import get_task

            decode = DecodeConfig.from_task(get_task(self.task), **self.decode)  # invalid settings fail here
            check_cache_model(self.model, decode.cache, lora=self.lora_r is not None and self.method != "none")
        if self.method != "none":
            self.check_rollouts()

    def check_rollouts(self) -> None:
        """The training settings (recipe, `--set`) and the rollout decoder they make, including a KV cache the
        model cannot run (`--set rollout_cache=dual` with an hf: LLaDA): one line before the base evaluation,
        not at the first rollout."""
        from harness.models import check_cache_model
        from tasks import get_task
        from trainers import METHODS
        from trainers.loop import TrainConfig, rollout_decode_config

        task = get_task(self.task)
        try:
            cfg = TrainConfig.for_task(task, self.method, steps=self.steps, recipe=self.recipe, **self.overrides)
        except TypeError as e:  # a value of the wrong type (`--set lr=fast`) compared or used as a number
            raise ValueError(f"training settings (--set): {e}") from None
        try:
            rollout_decode_config(cfg, task, METHODS.get(self.method))
        except ValueError as e:
            raise ValueError(f"rollout decoder (training settings, --set): {e}") from None
        check_cache_model(self.model, cfg.rollout_cache, flag="--set rollout_cache=",
                          lora=self.lora_r is not None, instead="rollout_threshold/rollout_factor")

    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path(self.results) / run_dir_name(
            self.task, self.model, self.method, self.seed, self.steps, self.recipe)

    def record(self) -> dict:
        """What summary.json keeps to replay the run (`harness run --config summary.json --out NEW`)."""
        return {k: v for k, v in asdict(self).items() if k not in OPERATIONAL}


def spec_from_summary_config(config: dict) -> dict:
    """A spec from the `config` block of a run summary written before specs were recorded."""
    keys = ("task", "model", "method", "seed", "steps", "limit", "eval_split", "data", "overrides", "recipe")
    return {k: config[k] for k in keys if k in config}


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


def check_positive(**values) -> None:
    bad = [k for k, v in values.items() if v is not None and v < 1]
    if bad:
        raise ValueError(", ".join(f"--{k.replace('_', '-')} {values[k]}" for k in bad) + " must be >= 1")


def run_dir_name(task: str, model: str, method: str, seed: int, steps: int | None, recipe: str = "equal") -> str:
    """<task>__<model>__<method>__seed<N>[__steps<S>][__<recipe>]: the default `equal` recipe adds nothing,
    so the folders of runs made before recipes existed keep their names."""
    safe = lambda s: "".join(c if c.isalnum() or c in "-_." else "-" for c in str(s))  # noqa: E731
    return f"{safe(task)}__{safe(model)}__{safe(method)}__seed{seed}" + (f"__steps{steps}" if steps else "") + \
        ("" if recipe == "equal" else f"__{safe(recipe)}")
