"""The one RL loop every method trains with (DESIGN.md section 5).

Per step: take `prompts_per_step` training prompts, sample G completions each with the rollout decoder
(per-row seeds from (seed, step, prompt, sample)), score them with `task.reward`, turn rewards into the
method's advantages, then make mu gradient updates. Update j uses the masked views the method builds for
iteration j; the views of all mu iterations are fixed before the first update and the old (pre-update)
and reference log-probs are computed on exactly those views ("managed randomness"), so the ratio of the
first update is exactly 1. Loss per method (grpo.py, wd1.py, spg.py), AdamW, gradient clipping, a
learning-rate schedule, periodic evaluation of the test split, atomic checkpoints.

Data-parallel ready through accelerate (`accelerate launch -m harness run ...`): each process takes an
equal share of the step's prompts (every group stays on one process, so advantages need no
communication), gradients are averaged by DDP, and logged numbers are reduced over processes.
Rank-count invariant (without dynamic sampling): N processes x 1/N of the prompts train the weights of one
process x all of them, up to float summation order - every random mask of a row is keyed by the row's
place in the step's global batch, never by the process, and loss normalisers that span rows (a unit's
token count, tracerl's example count) are computed over every process's views (`global_views`).

Run: `harness run --task arith --method maskgrpo` (the CLI calls `train`). Not here: LoRA set-up (the
model adapter's job) and the per-problem evaluation (the caller's `evaluate_fn`).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from harness.lora import lora_dropout_active, reference_policy
from harness.seeds import derive_seed
from tasks.base import Example, Task
from trainers import checkpoint as ckpt
from trainers.estimators import MaskedView, RolloutBatch
from trainers.grpo import LossInputs, LossOutput, MethodConfig
from trainers.methods import Method, get_method
from trainers.rollout import collect_rollouts, mixed_groups, prompt_indices, select_groups, token_logprobs

CURVE_COLUMNS = ("step", "reward", "accuracy", "kl", "clip_frac", "loss", "grad_norm", "step_time_s", "nfe")


@dataclass
class TrainConfig:
    """Settings shared by every method. A comparison sets them once, so it is equal-budget by construction:
    steps x prompts_per_step x num_generations rollouts for every method. What a method may set itself
    (mu, epsilon, beta, masking parameters) lives in its own config; `method_overrides` changes those."""

    # ---- budget
    steps: int = 100  # RL steps (rollout batches); MaskGRPO's rl.yaml runs 8000: pass --steps for real runs
    prompts_per_step: int = 16  # over all processes; d1/MaskGRPO: 6 per GPU x 8 GPUs x 2 accumulation / G
    num_generations: int = 6  # G completions per prompt (d1, MaskGRPO, wd1, SPG)
    # DAPO's dynamic sampling, capped: draw `oversample` x prompts_per_step prompts, decode them prompts_per_step
    # at a time until prompts_per_step groups have mixed rewards (a group whose rewards are all equal has
    # zero advantage and only dilutes the step), and train on those, topped up with all-equal groups if the
    # draw runs out. 1 = off (d1, MaskGRPO). The rollout budget counts the cap; the curve's `rollouts` and
    # the result's `rollouts_generated` what was decoded.
    oversample: int = 1
    # ---- optimizer: the values d1, MaskGRPO, wd1 and SPG all use for LLaDA-8B with LoRA
    lr: float = 3e-6  # learning_rate
    weight_decay: float = 0.1
    adam_betas: tuple[float, float] = (0.9, 0.99)
    adam_eps: float = 1e-8  # torch/transformers AdamW default
    max_grad_norm: float | None = 0.2  # None or 0 = no clipping
    lr_schedule: str = "constant"  # constant | cosine | linear; theirs is constant_with_warmup at ratio 1e-4
    warmup_steps: int = 0  # optimizer steps of linear warm-up; a 1e-4 ratio is under one step at their scale
    min_lr_ratio: float = 0.1  # floor of cosine/linear decay (DiffuCoder's cosine_with_min_lr uses 0.1)
    # ---- rollout decoder; None = the task's evaluation default (sampler: the method's choice first)
    sampler: str | None = None  # maskgrpo asks for `emerge` on image tasks
    gen_length: int | None = None
    block_length: int | None = None
    diffusion_steps: int | None = None
    temperature: float = 0.9  # rollouts must sample; TRL's GRPOConfig default that d1/MaskGRPO inherit
    remasking: str | None = None
    cfg_scale: float | None = None
    # fast rollouts (harness.sampling "Fast decoding"; low_confidence only): None / "none" = off, as before
    rollout_threshold: float | None = None  # commit every block position with probability >= this (e.g. 0.9)
    rollout_factor: float | None = None  # Fast-dLLM's factor rule instead of a threshold (they use 1)
    rollout_cache: str = "none"  # none | prefix | dual: approximate KV cache (the embedded tiny model only)
    # ---- compute layout: changes speed and memory, not the result (up to float rounding)
    micro_batch_size: int | None = None  # completions per forward/backward in updates; None = all at once
    rollout_batch_size: int | None = None  # completions per decoder call; None = all at once
    reward_workers: int | None = None  # parallel scorers; None = the task's `scoring_workers` (4 for code)
    # ---- bookkeeping
    eval_every: int = 25  # evaluate the test split at step 0, every N steps and at the end; 0 = never
    eval_limit: int | None = None  # first N test problems, for the built-in evaluator only
    checkpoint_every: int = 50  # steps between checkpoints (and at the end) when out_dir is given
    log_every: int = 1  # steps between progress lines
    recipe: str = "equal"  # equal | paper (trainers/recipes.py): recorded with the run; set by for_task
    method_overrides: dict = field(default_factory=dict)  # fields of the method's config, e.g. {"mu": 4}

    def __post_init__(self):
        self.adam_betas = tuple(self.adam_betas)
        if self.steps < 0 or self.prompts_per_step < 1:
            raise ValueError(f"need steps >= 0 and prompts_per_step >= 1, got {self.steps} and "
                             f"{self.prompts_per_step}")
        if self.oversample < 1:
            raise ValueError(f"oversample={self.oversample} must be >= 1 (1 = no dynamic sampling)")
        if self.num_generations < 2:
            raise ValueError(f"num_generations={self.num_generations}: group advantages need G >= 2")
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr} must be > 0")
        from trainers.recipes import check_recipe

        check_recipe(self.recipe)
        if self.lr_schedule not in ("constant", "cosine", "linear"):
            raise ValueError(f"lr_schedule={self.lr_schedule!r}; choose constant, cosine or linear")
        for name in ("micro_batch_size", "rollout_batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None (all at once)")

    @classmethod
    def for_task(cls, task: Task, method: str, steps: int | None = None, recipe: str = "equal",
                 **overrides: Any) -> TrainConfig:
        """Defaults for `task` (CPU scale for embedded tasks), then the recipe's settings for `method`
        (trainers/recipes.py), then `--set KEY=VALUE` overrides; a key that is not a TrainConfig field but a
        field of the method's config goes to `method_overrides`."""
        from trainers.recipes import recipe_settings

        values: dict[str, Any] = dict(EMBEDDED_DEFAULTS) if task.embedded else {}
        values.update(task.rl_defaults)  # a task's own budget (same for every method)
        own = {f.name for f in fields(cls)}
        method_fields = {f.name for f in fields(get_method(method).config_cls)}
        recipe_train, mo = recipe_settings(recipe, method, task.embedded)
        values.update(recipe_train)
        values["recipe"] = recipe
        mo.update(overrides.pop("method_overrides", None) or {})
        for k, v in overrides.items():
            if k in own:
                values[k] = v
            elif k in method_fields:
                mo[k] = v
            else:
                raise ValueError(f"unknown training setting {k!r}; TrainConfig fields: {', '.join(sorted(own))}"
                                 f"; {method} fields: {', '.join(sorted(method_fields))}")
        if steps is not None:
            values["steps"] = steps
        return cls(**values, method_overrides=mo)


# the embedded tasks train a small model on a laptop CPU: fewer, smaller steps and a larger learning rate
# Chosen once for every method alike (docs/RL_SETTINGS.md): 8 prompts x 6 samples at temperature 1
# (the prototype found 48% of groups mixed at this setting), 16 rollout denoising steps (arith's eval
# decoder's; accuracy did not depend on 8-32), a learning curve on 500 test problems, and a shared
# mu = 4 with a k3 KL anchor beta = 0.1 (without it, all-correct templates drifted down in the prototype).
# Decoding 96 completions per call is ~10% faster on 2 CPU cores than 192 at once (cache-sized batches).
EMBEDDED_DEFAULTS = {"steps": 100, "prompts_per_step": 8, "num_generations": 6, "lr": 3e-5, "eval_every": 50,
                     "eval_limit": 500, "temperature": 1.0, "diffusion_steps": 16, "rollout_batch_size": 96}
# mu and beta: the `equal` recipe's shared values (trainers/recipes.py EQUAL_EMBEDDED_METHOD)


@dataclass
class TrainResult:
    curve: list[dict]  # one row per step (curve.csv): CURVE_COLUMNS, reward_<term>, ratio stats, eval_<metric>
    steps: int  # steps trained (including any before a resume)
    rollout_budget: int  # completions allowed = steps x prompts_per_step x oversample x num_generations
    rollouts_generated: int  # completions decoded (below the budget when dynamic sampling stops early)
    train_nfe: int  # rollout decoder model calls, all processes
    train_forwards: int  # forward passes over the rollout batch in updates (current + old + reference)
    wall_time_s: float
    config: dict  # flat: method, seed, every TrainConfig field (decoder resolved) and every method field
    checkpoint: str | None = None


class TrainingDiverged(RuntimeError):
    """The loss or gradient went non-finite; the last good checkpoint (if any) is left untouched."""


def train(model, task: Task, method_name: str, train_examples: Sequence[Example],
          test_examples: Sequence[Example] = (), cfg: TrainConfig | None = None, *, seed: int,
          out_dir: str | Path | None = None, evaluate_fn: Callable[[Any], dict] | None = None,
          progress: bool = True, resume: bool = False, checkpoint_every: int | None = None,
          base_metrics: dict | None = None, method_config: MethodConfig | None = None,
          generate_fn: Callable | None = None, accelerator=None, eval_at_end: bool = True) -> TrainResult:
    """Train `model` (a DiffusionModel adapter; `model.module` is updated in place) with `method_name`.

    evaluate_fn(model) -> {metric: value} runs at step 0 (or `base_metrics` is used), every
    cfg.eval_every steps and at the end; without it the test examples are evaluated with the task's
    default decoder. generate_fn defaults to harness.sampling.generate. Raises TrainingDiverged on a
    non-finite loss or gradient. eval_at_end=False leaves the last step's evaluation to the caller (`harness
    run` scores the whole test split there anyway and fills that curve point from it).
    """
    cfg = cfg or TrainConfig()
    method = get_method(method_name)
    mcfg = (method_config or method.make_config(**cfg.method_overrides)).for_kind(task.kind)
    if not train_examples:
        raise ValueError(f"method {method_name!r} needs training examples; got none")
    run = _Run.build(model, task, method, mcfg, cfg, list(train_examples), seed, generate_fn, accelerator)
    if evaluate_fn is None and test_examples and cfg.eval_every > 0:
        evaluate_fn = default_evaluator(task, test_examples, seed, cfg.eval_limit)
    path = ckpt.checkpoint_path(out_dir) if out_dir is not None else None
    every = checkpoint_every or cfg.checkpoint_every
    config = run.flat_config(method_name, seed)
    state: dict[str, Any] = {"curve": [], "train_nfe": 0, "train_forwards": 0, "rollouts": 0, "wall_time_s": 0.0}
    start, saved = 0, None  # saved: the step of the checkpoint this run loaded or wrote last
    if resume and path is not None and path.exists():
        start, state = ckpt.load(path, module=run.module, optimizer=run.optimizer, scheduler=run.scheduler,
                                 config=config)
        state.setdefault("rollouts", start * cfg.prompts_per_step * cfg.num_generations)  # saved before oversample
        run.load_reference(state.pop("reference", None))
        saved = start
    t0, wall0 = time.perf_counter(), state["wall_time_s"]
    try:
        if start == 0 and cfg.eval_every > 0 and (evaluate_fn or base_metrics):
            metrics = base_metrics if base_metrics is not None else run.evaluate(evaluate_fn)
            state["curve"].append({**dict.fromkeys(CURVE_COLUMNS), "step": 0, **_prefixed(metrics)})
            log_to_trackers(run.acc, state["curve"][-1])
        for step in range(start + 1, cfg.steps + 1):
            row = run.step(step, state)
            due = cfg.eval_every > 0 and (step % cfg.eval_every == 0 or step == cfg.steps)
            if evaluate_fn and due and (eval_at_end or step < cfg.steps):
                row.update(_prefixed(run.evaluate(evaluate_fn)))
            state["curve"].append(row)
            log_to_trackers(run.acc, row)
            state["wall_time_s"] = wall0 + time.perf_counter() - t0
            if path is not None and (step % every == 0 or step == cfg.steps):
                if run.acc.is_main_process:
                    ckpt.save(path, module=run.acc.unwrap_model(run.wrapped), optimizer=run.optimizer,
                              scheduler=run.scheduler, step=step, state={**state, **run.reference_state()},
                              config=config)
                saved = step
                run.acc.wait_for_everyone()
            if progress and run.acc.is_main_process and (step % max(cfg.log_every, 1) == 0 or step == cfg.steps):
                print(_progress_line(row, cfg.steps), file=sys.stderr, flush=True)
    except TrainingDiverged as e:
        where = f"last good checkpoint: {path} (step {saved}), left untouched" if saved is not None else \
            "no checkpoint was written" + ("" if path is not None else " (pass out_dir to keep one)")
        raise TrainingDiverged(f"{e}; {where}; the run is deterministic, so resuming with the same settings "
                               "diverges again: lower lr or max_grad_norm and start over") from None
    finally:
        run.module.train(run.was_training)
    done = state["curve"][-1]["step"] if state["curve"] else 0
    return TrainResult(curve=state["curve"], steps=done,
                       rollout_budget=done * cfg.prompts_per_step * cfg.oversample * cfg.num_generations,
                       rollouts_generated=int(state["rollouts"]),
                       train_nfe=state["train_nfe"], train_forwards=state["train_forwards"],
                       wall_time_s=round(state["wall_time_s"], 3), config=config,
                       checkpoint=str(path) if path is not None and path.exists() else None)


def default_evaluator(task: Task, test_examples: Sequence[Example], seed: int, limit: int | None):
    """The harness's own `evaluate` on the test split with the task's default (greedy) decoder."""
    from harness.evaluation import evaluate
    from harness.sampling import DecodeConfig

    decode = DecodeConfig.from_task(task)
    exs = list(test_examples)[:limit] if limit else list(test_examples)
    return lambda m: evaluate(task, m, exs, decode, seed=seed, tag="eval").metrics


def rollout_decode_config(cfg: TrainConfig, task: Task, method: Method):
    """The shared rollout decoder: TrainConfig values over the task's defaults (sampler: the method's pick)."""
    from harness.sampling import DecodeConfig

    return DecodeConfig.from_task(
        task, sampler=cfg.sampler or method.rollout_sampler(task.kind), gen_length=cfg.gen_length,
        block_length=cfg.block_length, steps=cfg.diffusion_steps, temperature=cfg.temperature,
        remasking=cfg.remasking, cfg_scale=cfg.cfg_scale, threshold=cfg.rollout_threshold,
        factor=cfg.rollout_factor, cache=None if cfg.rollout_cache == "none" else cfg.rollout_cache)


def lr_factor(cfg: TrainConfig, total_updates: int) -> Callable[[int], float]:
    """Multiplier of the base lr after `u` optimizer steps: linear warm-up, then the chosen schedule."""
    w, floor = cfg.warmup_steps, cfg.min_lr_ratio

    def f(u: int) -> float:
        if u < w:
            return (u + 1) / (w + 1)
        if cfg.lr_schedule == "constant":
            return 1.0
        p = min(1.0, (u - w) / max(1, total_updates - w))
        decay = 0.5 * (1 + math.cos(math.pi * p)) if cfg.lr_schedule == "cosine" else 1.0 - p
        return floor + (1.0 - floor) * decay

    return f


@contextlib.contextmanager
def _using(model, module):
    """Run the adapter's `logits` through `module` (the DDP-wrapped policy or the frozen reference)."""
    original = model.module
    model.module = module
    try:
        yield
    finally:
        model.module = original


def log_to_trackers(acc, row: dict) -> None:
    """A curve row's numbers to the accelerator's trackers (`--report-to`; none: nothing happens)."""
    if acc is None or not getattr(acc, "trackers", None):
        return
    values = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
              and math.isfinite(v)}
    acc.log(values, step=int(row["step"]))


def _prefixed(metrics: dict) -> dict:
    return {f"eval_{k}": v for k, v in metrics.items()}


def _progress_line(row: dict, total: int) -> str:
    def f(key, fmt):
        v = row.get(key)
        return "-" if v is None else format(v, fmt)

    evals = " ".join(f"{k}={v:.4g}" for k, v in row.items() if k.startswith("eval_") and isinstance(v, float))
    return (f"step {row['step']}/{total} reward {f('reward', '.3f')} acc {f('accuracy', '.3f')} "
            f"kl {f('kl', '.4f')} clip {f('clip_frac', '.3f')} loss {f('loss', '.4f')} "
            f"|g| {f('grad_norm', '.3f')} {f('step_time_s', '.1f')}s {evals}").rstrip()


class _Stats:
    """Sums over the updates of one step; reduced over processes when the row is made."""

    def __init__(self):
        self.sums = dict.fromkeys(("tokens", "ratio", "ratio_n", "kl", "kl_n", "clip", "clip_n", "loss",
                                   "grad_norm", "updates"), 0.0)
        self.ratio_min, self.ratio_max = math.inf, -math.inf

    def add_tokens(self, out: LossOutput) -> None:
        m = out.scored
        n = float(m.sum())
        self.sums["tokens"] += n
        if out.ratio is not None and n:
            r = out.ratio[m]
            self.sums["ratio"] += float(r.sum())
            self.sums["ratio_n"] += n
            self.ratio_min = min(self.ratio_min, float(r.min()))
            self.ratio_max = max(self.ratio_max, float(r.max()))
        if out.kl is not None:
            self.sums["kl"] += float(out.kl[m].sum())
            self.sums["kl_n"] += n
        if out.clipped is not None:
            self.sums["clip"] += float(out.clipped[m].sum())
            self.sums["clip_n"] += n


def _gather_rows(acc, t: torch.Tensor) -> torch.Tensor:
    """All processes' rows of `t` (float), whose first dimension may differ between processes: each pads
    with NaN rows to the longest, and rows that are all NaN are dropped after the gather (so a verdict of
    None, coded NaN, is dropped too; callers skip those anyway)."""
    if acc.num_processes == 1:
        return t
    t = acc.pad_across_processes(t.float().to(acc.device), dim=0, pad_index=math.nan)
    g = acc.gather(t).cpu()
    return g[~torch.isnan(g.reshape(g.shape[0], -1)).all(1)]


def _div(a: float, b: float) -> float | None:
    return a / b if b else None


@dataclass
class _Run:
    """Everything a training run holds; `step` is one RL step."""

    model: Any
    task: Task
    method: Method
    mcfg: MethodConfig
    cfg: TrainConfig
    examples: list[Example]
    seed: int
    generate_fn: Callable
    acc: Any
    decode: Any
    module: torch.nn.Module
    wrapped: torch.nn.Module
    ref: torch.nn.Module | None
    params: list[torch.nn.Parameter]
    optimizer: Any
    scheduler: Any
    was_training: bool
    token_range: tuple[int, int] | None

    @classmethod
    def build(cls, model, task, method, mcfg, cfg, examples, seed, generate_fn, accelerator) -> _Run:
        from accelerate import Accelerator

        if generate_fn is None:
            from harness.sampling import generate as generate_fn
        device = torch.device(getattr(model, "device", "cpu"))
        acc = accelerator or Accelerator(cpu=device.type == "cpu")
        if cfg.prompts_per_step % acc.num_processes:
            raise ValueError(f"prompts_per_step={cfg.prompts_per_step} must be a multiple of the number of "
                             f"processes ({acc.num_processes}) so that every process gets whole groups")
        module = model.module
        was_training = module.training
        ref = None
        if mcfg.beta > 0:  # the frozen initial policy, before any update or checkpoint load: for a LoRA
            ref = reference_policy(module)  # model the base with the adapter disabled, else a frozen copy
        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters (all requires_grad=False)")
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps,
                                      weight_decay=cfg.weight_decay)
        # not prepared by accelerate: its scheduler wrapper steps once per process, distorting the schedule
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, cfg.steps * mcfg.mu))
        wrapped, optimizer = acc.prepare(module, optimizer)
        module.eval()  # dropout off: old, reference and current log-probs must agree exactly (TRL does too)
        token_range = model.image_token_range if task.kind == "image" else None
        return cls(model, task, method, mcfg, cfg, examples, seed, generate_fn, acc,
                   rollout_decode_config(cfg, task, method), module, wrapped, ref, params, optimizer, scheduler,
                   was_training, token_range)

    def flat_config(self, method_name: str, seed: int) -> dict:
        train = {k: v for k, v in asdict(self.cfg).items() if k != "method_overrides"}
        d = self.decode
        train.update(sampler=d.sampler, gen_length=d.gen_length, block_length=d.block_length,
                     diffusion_steps=d.steps, temperature=d.temperature, remasking=d.remasking,
                     cfg_scale=d.cfg_scale, adam_betas=list(self.cfg.adam_betas),
                     reward_workers=self.reward_workers)
        return {"method": method_name, "seed": seed, **train, **asdict(self.mcfg)}

    @property
    def reward_workers(self) -> int:
        w = self.cfg.reward_workers
        return self.task.scoring_workers if w is None else w

    def slices(self, B: int) -> list[slice]:
        mb = self.cfg.micro_batch_size or B
        return [slice(i, min(i + mb, B)) for i in range(0, B, mb)]

    def evaluate(self, evaluate_fn) -> dict:
        with torch.no_grad():
            return dict(evaluate_fn(self.model))

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        if self.acc.num_processes == 1:
            return t
        return self.acc.gather(t.to(self.acc.device)).cpu()

    # ---- one RL step ---------------------------------------------------------------------------------
    def step(self, step: int, state: dict) -> dict:
        t0 = time.perf_counter()
        cfg, mcfg, acc, G = self.cfg, self.mcfg, self.acc, self.cfg.num_generations
        drawn = cfg.prompts_per_step * cfg.oversample
        idx = prompt_indices(len(self.examples), drawn, step, self.seed)
        per = drawn // acc.num_processes
        first = acc.process_index * per  # this process's prompts are positions first..first+per-1 of the step
        mine = idx[first:first + per]
        keep = cfg.prompts_per_step // acc.num_processes  # the same on every process: DDP's collectives match
        dynamic = dict(round_size=keep, enough=keep) if cfg.oversample > 1 else {}
        with torch.no_grad():  # with dynamic sampling, rounds of `keep` prompts until `keep` groups are mixed
            generated = collect_rollouts(self.model, self.task, self.examples, mine, G, self.decode,
                                         seed=self.seed, step=step, generate_fn=self.generate_fn,
                                         chunk=cfg.rollout_batch_size, reward_workers=self.reward_workers,
                                         batch_seed=derive_seed(self.seed, "batch", step),
                                         first_position=first, **dynamic)
        ro = select_groups(generated, keep) if cfg.oversample > 1 else generated
        batch = ro.batch
        if acc.num_processes > 1:
            batch.all_reduce_max = self.all_reduce_max
        adv = self.method.advantages(ro.rewards, mcfg)  # (N, G)
        A = adv.reshape(-1).to(batch.device)  # (B,) prompt-major like the batch
        # managed randomness: every iteration's views are fixed up front, one generator per (seed, step, j),
        # and the old and reference policies are evaluated on exactly those views before any update.
        # Rank-count invariance: no seed names the process; a row's masks come from its own stream, keyed by
        # its place in the step's global batch (estimators.RowStreams), and batch-level draws from the
        # generator, which is the same on every process
        views = [self.method.views(j, batch, mcfg, torch.Generator().manual_seed(
            derive_seed(self.seed, "views", step, j))) for j in range(mcfg.mu)]
        # the views of every process, for loss normalisers that span rows of other processes (token counts
        # of a unit of norm_rows rows, tracerl's number of examples, spg's lengths), and where ours start
        everyone = [self.global_views(v) for v in views]
        offset = acc.process_index * batch.B
        old = [None] * mcfg.mu
        if self.method.uses_old_policy:  # update 0 is on-policy: its old log-probs are the current ones
            old[1:] = [self.logprobs(self.module, v, batch) for v in views[1:]]
        ref = [self.logprobs(self.ref, v, batch) for v in views] if self.ref is not None else [None] * mcfg.mu
        stats = _Stats()
        for j in range(mcfg.mu):
            self.update(step, j, batch, views[j], old[j], ref[j], A, stats, everyone[j], offset)
        n_views = sum(len(v) for v in views)
        forwards = n_views + (sum(len(v) for v in views[1:]) if self.method.uses_old_policy else 0) + \
            (n_views if self.ref is not None else 0)
        return self.row(step, generated, ro, adv, stats, forwards, time.perf_counter() - t0, state)

    def logprobs(self, module, views: list[MaskedView], batch: RolloutBatch) -> list[torch.Tensor]:
        """Per view (B, L) log-probs under `module`, without gradient, in the update's micro-batches."""
        out = []
        with torch.no_grad(), _using(self.model, module):
            for v in views:
                out.append(torch.cat([token_logprobs(self.model, v.rows(sl), batch.completion_ids[sl],
                                                     self.token_range) for sl in self.slices(batch.B)]))
        return out

    def all_reduce_max(self, value: int) -> int:
        """The maximum of `value` over the processes (RolloutBatch.global_max on several processes)."""
        return int(self.gather(torch.tensor([int(value)])).max())

    def global_views(self, views: list[MaskedView]) -> list[MaskedView]:
        """Iteration j's views over the step's whole batch, every process's rows in process order (the
        rows of one process when there is one). Only what loss normalisers read (score, weight, region)
        is gathered; the inputs are left empty (B_all, 0)."""
        if self.acc.num_processes == 1:
            return views
        out = []
        for v in views:
            dev = v.score.device
            score = self.gather(v.score.to(torch.uint8).contiguous()).bool().to(dev)  # (B_all, L)
            region = None if v.region is None else \
                self.gather(v.region.to(torch.uint8).contiguous()).bool().to(dev)
            weight = self.gather(v.weight.contiguous()).to(dev)  # (B_all, L); often an expanded (B, 1)
            empty = torch.zeros(score.shape[0], 0, dtype=torch.long, device=dev)
            out.append(MaskedView(empty, empty.bool(), score, weight, region))
        return out

    def update(self, step: int, j: int, batch: RolloutBatch, views: list[MaskedView], old, ref,
               A: torch.Tensor, stats: _Stats, everyone: list[MaskedView] | None = None, offset: int = 0) -> None:
        """One optimizer step on iteration j's views, accumulated over micro-batches. `everyone`: the same
        views over every process's rows (global_views), whose rows offset.. are this process's."""
        if not views:
            return
        chunks = self.slices(batch.B)
        total = 0.0
        for i, sl in enumerate(chunks):
            sync = contextlib.nullcontext() if i == len(chunks) - 1 else self.acc.no_sync(self.wrapped)
            with sync:
                with _using(self.model, self.wrapped), lora_dropout_active(self.module):
                    cur = [token_logprobs(self.model, v.rows(sl), batch.completion_ids[sl], self.token_range)
                           for v in views]
                inp = LossInputs(logp=cur, old_logp=None if old is None else [o[sl] for o in old],
                                 ref_logp=None if ref is None else [r[sl] for r in ref],
                                 views=[v.rows(sl) for v in views], advantages=A[sl],
                                 all_views=views if everyone is None else everyone,
                                 rows=slice(offset + sl.start, offset + sl.stop),
                                 group_size=self.cfg.num_generations)
                out = self.method.loss(inp, self.mcfg)
                # shares are of the step's global mean (their sum over all processes / B_all); every process
                # holds B = B_all / processes rows and DDP averages the gradients, so / B here gives / B_all
                loss = out.per_sequence.sum() / batch.B
                if not torch.isfinite(loss):
                    raise TrainingDiverged(f"non-finite loss at step {step}, inner update {j} "
                                           f"({self.method.name})")
                self.acc.backward(loss)
            total += float(loss.detach())
            stats.add_tokens(out)
        raw = self.acc.clip_grad_norm_(self.params, self.cfg.max_grad_norm or math.inf)
        norm = math.nan if raw is None else float(raw)  # None: DeepSpeed clips inside backward, norm not yet known
        if raw is not None and not math.isfinite(norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingDiverged(f"non-finite gradient norm at step {step}, inner update {j} "
                                   f"({self.method.name})")
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.maybe_sync_reference()
        stats.sums["loss"] += total
        stats.sums["grad_norm"] += norm
        stats.sums["updates"] += 1

    def reference_state(self) -> dict:
        """{"reference": weights} when the reference is refreshed during training (so a resume restores it)."""
        if self.ref is None or not int(getattr(self.mcfg, "ref_sync_every", 0) or 0):
            return {}
        return {"reference": {k: v.detach().clone() for k, v in self.ref.state_dict().items()}}

    def load_reference(self, weights: dict | None) -> None:
        if weights is not None and self.ref is not None:
            self.ref.load_state_dict(weights)

    def maybe_sync_reference(self) -> None:
        """TR-DPO's reference refresh (TRL SyncRefModelCallback): every `ref_sync_every` optimizer updates,
        ref <- alpha * policy + (1 - alpha) * ref, parameter by parameter."""
        every = int(getattr(self.mcfg, "ref_sync_every", 0) or 0)
        if self.ref is None or every <= 0 or self.scheduler.last_epoch % every:
            return
        alpha = float(self.mcfg.ref_sync_alpha)
        with torch.no_grad():
            for r, p in zip(self.ref.parameters(), self.module.parameters()):
                r.mul_(1.0 - alpha).add_(p.detach().to(r.dtype), alpha=alpha)

    def row(self, step: int, ro, kept, adv: torch.Tensor, stats: _Stats, forwards: int, seconds: float,
            state: dict) -> dict:
        """Reward, accuracy and group statistics describe every generated rollout (`ro`); the loss terms and
        `kept_mixed_frac` the groups trained on (`kept`, the same as `ro` without dynamic sampling)."""
        acc = self.acc
        # with dynamic sampling each process may have decoded a different number of rounds
        rewards = _gather_rows(acc, ro.rewards)  # (N_all, G)
        verdicts = _gather_rows(acc, torch.tensor([math.nan if v is None else float(v) for v in ro.verdicts]))
        terms = {k: float(_gather_rows(acc, v).mean()) for k, v in ro.terms.items()}
        kept_rewards = self.gather(kept.rewards)  # (N_kept_all, G): the same count on every process
        keys = list(stats.sums)
        vals = torch.tensor([stats.sums[k] for k in keys] + [float(ro.nfe), float(kept.batch.valid.sum())],
                            dtype=torch.float64)
        if acc.num_processes > 1:
            vals = acc.reduce(vals.to(acc.device), reduction="sum").cpu()
            mm = self.gather(torch.tensor([stats.ratio_min, -stats.ratio_max], dtype=torch.float64))
            stats.ratio_min, stats.ratio_max = float(mm[0::2].min()), -float(mm[1::2].min())
        s = dict(zip(keys + ["nfe", "valid_tokens"], vals.tolist()))
        world = acc.num_processes
        nfe = int(s["nfe"])
        state["train_nfe"] += nfe
        state["train_forwards"] += forwards
        state["rollouts"] += rewards.numel()
        ok = verdicts[~torch.isnan(verdicts)]
        updates = s["updates"]  # summed over processes, like loss and grad_norm
        row = {
            "step": step, "reward": float(rewards.mean()),
            "accuracy": float(ok.mean()) if ok.numel() else None,
            "kl": _div(s["kl"], s["kl_n"]), "clip_frac": _div(s["clip"], s["clip_n"]),
            "loss": _div(s["loss"], updates), "grad_norm": _div(s["grad_norm"], updates),
            "step_time_s": round(seconds, 4), "nfe": nfe, "rollouts": rewards.numel(),
            **{f"reward_{k}": v for k, v in terms.items()},
            "reward_std": float(rewards.std(dim=1).mean()),
            "zero_std_frac": float((~mixed_groups(rewards)).float().mean()),
            "kept_mixed_frac": float(mixed_groups(kept_rewards).float().mean()),
            "adv_abs_mean": float(self.gather(adv).abs().mean()),
            "ratio_mean": _div(s["ratio"], s["ratio_n"]),
            "ratio_min": stats.ratio_min if s["ratio_n"] else None,
            "ratio_max": stats.ratio_max if s["ratio_n"] else None,
            "scored_tokens": _div(s["tokens"] * world, updates),  # per update, all processes
            "completion_tokens": s["valid_tokens"] / kept_rewards.numel(),
            "lr": self.scheduler.get_last_lr()[0], "train_forwards": forwards,
        }
        return row
