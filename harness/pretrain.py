"""Pretrain the embedded `tiny` model for a task: a small RoFormer trained with the masked diffusion loss.

    harness pretrain --task arith        # 2,400 steps, ~4 minutes on 2 idle CPU cores -> $HARNESS_HOME/models/tiny-arith/
    python -c "from harness.pretrain import pretrain; pretrain('arith', steps=50)"

What it builds: a word-level tokenizer over the task's train and test text (`harness.tokenizer`; the
vocabulary holds no answers, only words, digits and symbols) and a `RoFormerForMaskedLM` (BERT with
rotary position embeddings) from a config (no download), hidden 128, 4 layers, ~0.85M parameters.
Why RoFormer: the masked-LM classes of transformers train at about the same speed on CPU at this size
(benchmarks/bench_model_classes.py), but what the model must learn differs. With rotary positions
attention depends only on offsets, so the digits of a worked line sit at fixed offsets from each other
whatever the prompt length, and left padding changes nothing. On arith (1500 steps, batch 32) RoFormer
copied the operands into the worked solution 100% of the time against BertForMaskedLM's 8-12% (learned
absolute positions), and its loss was a third. Both are saved as an ordinary Hugging Face folder, so
`load_model("tiny", task)` goes through the same `hf` code path as LLaDA.

Objective (LLaDA's SFT loss, Nie et al. 2025, eq. 5): each sequence is the left-padded prompt followed by
the gold completion padded with [EOS] to the task's `gen_length`. Per sequence a ratio t ~ U(eps, 1)
(stratified over the batch, a variance reduction from MDLM) masks each completion token with
probability t; the loss is the cross-entropy on masked tokens weighted 1/t, summed and divided by
B * gen_length. The prompt is never masked. AdamW with linear warmup then cosine decay.

Deliberate departures: no dropout (a few minutes of training never overfits 20k problems).

Reproducible: the run is a fixed number of optimizer steps (the task's `pretrain_steps`), never a
wall-clock budget, so a busy machine makes it slower, not shorter (a 280 s cap once stopped arith at
1,557 of 2,400 steps on a shared machine: 1.3% accuracy instead of ~22%). torch's thread count is fixed
from the cores this process may use (`pretrain_threads`), never from timings, because a different thread
count gives different float sums: the same machine gives bitwise the same weights on every rerun, loaded
or idle. pretrain.json records `steps` and `torch_threads`.
The model's forward goes through `DiffusionModel.logits`, so training sees exactly the attention mask
(and, for a class that takes them, position ids) that decoding will.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F


@dataclass
class PretrainConfig:
    arch: str = "roformer"  # roformer | bert | modernbert (transformers masked-LM classes); see the docstring
    hidden: int = 128  # model width; small, so that a few minutes of CPU buy thousands of updates
    layers: int = 4
    heads: int = 4
    ffn: int = 512  # 4 x hidden, BERT's ratio
    batch_size: int = 32  # sequences per step; in a fixed time, more (smaller) updates
    lr: float = 2e-3  # peak; a tiny model with warmup and clipping takes a high rate
    min_lr_ratio: float = 0.1  # cosine decays to lr * this
    warmup_steps: int = 100
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-3  # smallest mask ratio t (LLaDA's eps): keeps 1/t bounded
    grad_clip: float = 1.0
    bf16: bool = True  # bf16 autocast: 1.4x the fp32 training speed on CPU (bench_model_classes.py)
    max_position: int = 512  # position embeddings: prompt + gen_length must fit
    cond_dropout: float | None = None  # share of sequences trained with the prompt hidden (for CFG);
    # None = 0.1 on image tasks (MMaDA/MaskGIT-style unconditional training), 0 on text tasks
    mask_schedule: str | None = None  # "linear": t ~ U(eps, 1), loss weighted 1/t (LLaDA's ELBO);
    # "cosine": t = cos(pi/2 u), plain mean over masked tokens (MaskGIT's image training, which dwells on
    # the high mask ratios where the prompt decides the picture); None = cosine on image tasks, else linear
    grid: int = 0  # > 0 (image tasks): the last grid**2 positions are a grid x grid canvas with row/column
    # embeddings and a 3x3 depthwise convolution before each layer (harness/grid_model.py); 0 = plain model
    grid_positions: str = "rotary"  # grid model only: rotary | learned (harness/grid_model.py TinyGridConfig)
    grid_position_input: str = "residual"  # grid model only: residual | embedding (TinyGridConfig)
    grid_block: str = "post_ln"  # grid model only: post_ln (RoFormer's layers) | pre_ln (TinyGridConfig)


def pretrain(task_name: str, *, steps: int | None = None, seed: int = 0,
             progress: bool = True, out: str | os.PathLike | None = None,
             config: PretrainConfig | None = None, threads: int | None = None,
             seconds: None = None) -> Path:
    """Train the tiny model for `task_name`; write it atomically to the cache (or `out`); return the folder.

    Budget: `steps` optimizer steps (default: the task's `pretrain_steps`); the result depends only on
    the seed, the steps, the config and the thread count (default `pretrain_threads()`). `config`
    defaults to PretrainConfig with the task's `pretrain_config` fields. `seconds` is no longer
    accepted (a time cap made the model depend on the machine's load); it must stay None.
    """
    from harness.models import DiffusionModel, tiny_model_path
    from harness.tokenizer import build_tokenizer
    from tasks import get_task

    task = get_task(task_name)
    # a task may set some fields of its own (`pretrain_config`, e.g. shapes' lower learning rate)
    cfg = config or PretrainConfig(**task.pretrain_config)
    if seconds is not None:
        raise ValueError("pretrain takes a number of steps, not a time budget (seconds): a time cap makes "
                         "the model depend on how busy the machine is")
    if steps is None:
        steps = task.pretrain_steps
    if not steps or steps < 1:
        raise ValueError(f"pretrain needs steps >= 1 (task {task_name!r} sets no pretrain_steps)")
    n_threads = pretrain_threads() if threads is None else int(threads)
    gen_length = int(task.gen_defaults["gen_length"])
    t_start = time.perf_counter()

    train = task.load(split="train")
    test = task.load(split="test")
    prompts = [task.format_prompt(e) for e in train]
    completions = [e.solution for e in train]
    tokenizer = build_tokenizer(prompts + completions + [task.format_prompt(e) for e in test]
                                + [e.solution for e in test], multi=task.tiny_tokens)
    eos_id, pad_id, mask_id = tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.mask_token_id
    image = task.kind == "image"
    image_range = _codebook_range(tokenizer, task) if image else None
    cond_dropout = cfg.cond_dropout if cfg.cond_dropout is not None else (0.1 if image else 0.0)
    schedule = cfg.mask_schedule or ("cosine" if image else "linear")
    prompt_ids = tokenizer(prompts)["input_ids"]
    comp_ids = tokenizer(completions)["input_ids"]
    if image:  # an image is exactly gen_length codebook tokens, no EOS
        bad = sum(len(c) != gen_length or not all(image_range[0] <= t < image_range[1] for t in c) for c in comp_ids)
        if bad:
            raise ValueError(f"{bad} reference images of {task_name!r} are not {gen_length} codebook tokens")
    too_long = 0 if image else sum(len(c) >= gen_length for c in comp_ids)  # need room for at least one EOS
    if too_long:
        raise ValueError(f"{too_long} gold completions of {task_name!r} do not fit gen_length={gen_length} "
                         "(plus one EOS); raise the task's gen_defaults['gen_length']")
    if max(map(len, prompt_ids)) + gen_length > cfg.max_position:
        raise ValueError(f"prompt + gen_length exceeds max_position={cfg.max_position}")
    # completions padded with EOS to the fixed length, as LLaDA's SFT does
    comp = torch.full((len(comp_ids), gen_length), eos_id, dtype=torch.long)  # (N, L)
    for i, c in enumerate(comp_ids):
        comp[i, :len(c)] = torch.tensor(c)

    module = _build_module(cfg, vocab_size=len(tokenizer), pad_id=pad_id, seed=seed)
    if image_range is not None:  # saved in config.json; harness.models reads it back
        module.config.image_token_range = list(image_range)
    model = DiffusionModel(module, tokenizer, name=f"tiny-{task_name}", mask_id=mask_id, pad_id=pad_id,
                           eos_id=eos_id, image_token_range=image_range)
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    batches = _batches([len(p) for p in prompt_ids], cfg.batch_size, gen)
    autocast = _autocast(cfg.bf16)
    bar = _bar(progress, steps, task_name)
    losses: list[float] = []
    t_train = time.perf_counter()
    module.train()
    before = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        for step in range(steps):
            frac = step / steps  # progress through the cosine schedule
            idx = next(batches)
            ids, attn, loss_mask = _collate([prompt_ids[i] for i in idx.tolist()], comp[idx], pad_id)
            lr = _lr(step, frac, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            loss = diffusion_loss(model, ids, attn, loss_mask, mask_id, cfg.eps, gen, autocast, cond_dropout, schedule)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
            opt.step()
            losses.append(loss.item())
            if bar is not None:
                bar.update(1)
                if (step + 1) % 10 == 0:
                    bar.set_postfix(step=step, loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}", lr=f"{lr:.1e}")
    finally:
        torch.set_num_threads(before)
        if bar is not None:
            bar.close()
    train_s = time.perf_counter() - t_train

    module.eval()
    info = {
        "task": task_name, "seed": seed, "steps": len(losses), "train_seconds": round(train_s, 1),
        "total_seconds": round(time.perf_counter() - t_start, 1), "params": sum(p.numel() for p in module.parameters()),
        "first_loss": _mean(losses[:10]), "final_loss": _mean(losses[-10:]),  # means of 10 steps
        "train_examples": len(train), "vocab_size": len(tokenizer), "gen_defaults": dict(task.gen_defaults),
        "tokens_per_step": int(cfg.batch_size * (sum(map(len, prompt_ids)) / len(prompt_ids) + gen_length)),
        "config": asdict(cfg), "torch_threads": n_threads, "cores_available": available_cores(), "cond_dropout": cond_dropout,
        "mask_schedule": schedule,
        "image_token_range": list(image_range) if image_range else None,
    }
    target = Path(out) if out is not None else tiny_model_path(task_name)
    _save_atomic(module, tokenizer, info, target)
    return target


def diffusion_loss(model, ids: torch.Tensor, attn: torch.Tensor, loss_mask: torch.Tensor, mask_id: int,
                   eps: float, gen: torch.Generator, autocast=contextlib.nullcontext,
                   cond_dropout: float = 0.0, schedule: str = "linear") -> torch.Tensor:
    """LLaDA's masked diffusion loss on one batch.

    ids (B, S) clean sequences; attn (B, S) bool, False on left padding; loss_mask (B, S) bool, True on
    the completion (the only positions that may be masked). With cond_dropout > 0 that share of rows has
    every prompt token replaced by the mask id - the unconditional input classifier-free guidance feeds
    the model at sampling time (harness.sampling). schedule "cosine" draws t = cos(pi/2 u) instead and
    averages the cross-entropy over masked tokens without 1/t (MaskGIT). Returns a scalar.
    """
    if schedule not in ("linear", "cosine"):
        raise ValueError(f"unknown mask schedule {schedule!r}; choose linear or cosine")
    B, S = ids.shape
    # stratified u: one uniform offset, B evenly spaced values, so every batch spans the whole schedule
    u = (torch.rand(1, generator=gen) + torch.arange(B) / B) % 1.0  # (B,)
    if schedule == "cosine":  # E[t] = 2/pi ~ 0.64: most rows have most of their tokens hidden
        t = torch.cos(0.5 * math.pi * u).clamp(min=eps)[:, None]  # (B, 1)
    else:
        t = (eps + (1 - eps) * u)[:, None]  # (B, 1)
    masked = (torch.rand(B, S, generator=gen) < t) & loss_mask  # (B, S)
    if cond_dropout > 0:
        drop = torch.rand(B, 1, generator=gen) < cond_dropout  # (B, 1)
        masked_in = masked | (drop & attn & ~loss_mask)  # hide the prompt of dropped rows (not scored)
    else:
        masked_in = masked
    noisy = torch.where(masked_in, torch.full_like(ids, mask_id), ids)  # (B, S)
    with autocast():
        logits = model.logits(noisy, attn)  # (B, S, V)
    ce = F.cross_entropy(logits.float().transpose(1, 2), ids, reduction="none")  # (B, S)
    if schedule == "cosine":
        return (ce * masked).sum() / masked.sum().clamp(min=1)
    n_completion = loss_mask.sum()  # B * gen_length
    return (ce * masked / t).sum() / n_completion


def _codebook_range(tokenizer, task) -> tuple[int, int]:
    """[lo, hi) ids of an image task's codebook tokens (`task.codebook_tokens()`, which must also be among
    its `tiny_tokens`: added tokens get consecutive ids in order)."""
    toks = list(task.codebook_tokens())
    ids = tokenizer.convert_tokens_to_ids(toks)
    if ids != list(range(ids[0], ids[0] + len(ids))):
        raise ValueError(f"codebook tokens of {task.name!r} did not get contiguous ids: {ids}")
    return ids[0], ids[0] + len(ids)


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def _autocast(bf16: bool):
    """A factory of autocast contexts (bf16 on CPU) or of no-op contexts."""
    if bf16:
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext


def _collate(prompts: list[list[int]], completions: torch.Tensor, pad_id: int):
    """Left-pad prompts to the batch's longest and append the completions.

    -> ids (B, P+L), attention mask (B, P+L) bool, loss mask (B, P+L) bool (True on the completion)."""
    B, L = completions.shape
    P = max(len(p) for p in prompts)
    ids = torch.full((B, P + L), pad_id, dtype=torch.long)
    attn = torch.zeros((B, P + L), dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):P] = torch.tensor(p)
        attn[i, P - len(p):] = True
    ids[:, P:] = completions
    loss_mask = torch.zeros_like(attn)
    loss_mask[:, P:] = True
    return ids, attn, loss_mask


def _batches(lengths: list[int], batch_size: int, gen: torch.Generator, pool: int = 16):
    """Endless minibatches of indices: each epoch a fresh permutation, cut into pools of `pool` batches;
    within a pool the examples are sorted by prompt length before being cut into batches, and the batches
    are yielded in random order. Every example is seen once per epoch (the last partial batch dropped), as
    with plain shuffling, but a batch's prompts have similar lengths, so left padding wastes little
    compute (a third of minicode's tokens were padding with plain shuffling)."""
    n = len(lengths)
    while True:
        perm = torch.randperm(n, generator=gen).tolist()
        for start in range(0, n, batch_size * pool):
            chunk = sorted(perm[start:start + batch_size * pool], key=lengths.__getitem__)
            cut = [chunk[i:i + batch_size] for i in range(0, len(chunk) - batch_size + 1, batch_size)]
            for j in torch.randperm(len(cut), generator=gen).tolist():
                yield torch.tensor(cut[j])


def _lr(step: int, frac: float, cfg: PretrainConfig) -> float:
    """Linear warmup over the first `warmup_steps`, then cosine from lr to lr * min_lr_ratio as the
    schedule's fraction `frac` (of the steps or of the time budget) goes from 0 to 1."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def available_cores() -> int:
    """CPU cores this process may run on: its affinity mask, capped by a cgroup v2 CPU quota (cpu.max)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def pretrain_threads(cores: int | None = None) -> int:
    """torch threads for pretraining: half the available cores, at least one.

    Fixed by the machine, never by timing (the thread count changes float sums, so a timing-based choice
    made reruns differ). Half, because OpenMP threads that wait at a barrier for a descheduled sibling
    make a busy machine far slower: on 2 cores with other processes running (load ~5), one thread took
    272 ms a step and two threads 1,353 ms; on an idle machine two threads are ~1.9x faster than one.
    One thread on 2 cores trades that idle speed for a run that a busy machine only slows down in
    proportion to its share of the CPU."""
    return max(1, (cores or available_cores()) // 2)


def _build_module(cfg: PretrainConfig, vocab_size: int, pad_id: int, seed: int) -> torch.nn.Module:
    import transformers

    common = dict(vocab_size=vocab_size, hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
                  num_attention_heads=cfg.heads, intermediate_size=cfg.ffn, max_position_embeddings=cfg.max_position,
                  pad_token_id=pad_id)
    if cfg.grid and cfg.arch != "roformer":
        raise ValueError(f"grid={cfg.grid} needs arch='roformer' (harness/grid_model.py extends RoFormer)")
    if cfg.arch == "roformer" and cfg.grid:
        from harness.grid_model import TinyGridConfig, TinyGridForMaskedLM

        config = TinyGridConfig(grid_size=cfg.grid, positions=cfg.grid_positions, position_input=cfg.grid_position_input,
                                block=cfg.grid_block, embedding_size=cfg.hidden, type_vocab_size=1,
                                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **common)
        cls = TinyGridForMaskedLM
    elif cfg.arch == "roformer":
        config = transformers.RoFormerConfig(embedding_size=cfg.hidden, type_vocab_size=1, hidden_dropout_prob=0.0,
                                             attention_probs_dropout_prob=0.0, **common)
        cls = transformers.RoFormerForMaskedLM
    elif cfg.arch == "modernbert":
        # every layer global (the sequences are far shorter than the local window anyway); ModernBERT's
        # bos/eos/cls/sep defaults point past a small vocabulary, so they are set to our [EOS]
        config = transformers.ModernBertConfig(global_attn_every_n_layers=1, bos_token_id=pad_id, eos_token_id=pad_id,
                                               cls_token_id=pad_id, sep_token_id=pad_id, **common)
        cls = transformers.ModernBertForMaskedLM
    elif cfg.arch == "bert":
        config = transformers.BertConfig(type_vocab_size=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                         **common)
        cls = transformers.BertForMaskedLM
    else:
        raise ValueError(f"unknown arch {cfg.arch!r}; choose roformer, modernbert or bert")
    # seed the initialisation without touching the caller's global RNG state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(config)


def _save_atomic(module, tokenizer, info: dict, target: Path) -> None:
    """Write into a temporary sibling folder, then rename it into place (replacing an older model)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        module.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "pretrain.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _bar(enabled: bool, steps: int, task_name: str):
    """A tqdm bar over the steps."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=steps, desc=f"pretrain tiny-{task_name}", unit="step")


def stale_reason(task) -> str | None:
    """Why the cached tiny model of `task` is not what `pretrain(task)` builds now, or None.

    Compares the cached folder's pretrain.json with the task's current step count and PretrainConfig
    (a field that a cached file lacks did not exist when it was made, and its default is the behaviour
    that model has). None when nothing is cached or the folder has no pretrain.json (not ours to judge).
    The seed is not compared: `harness pretrain --seed` is the user's choice."""
    from harness.models import tiny_model_path

    info_file = tiny_model_path(task.name) / "pretrain.json"
    if not info_file.is_file():
        return None
    info = json.loads(info_file.read_text())
    have, defaults = info.get("config", {}), asdict(PretrainConfig())
    want = asdict(PretrainConfig(**task.pretrain_config))

    def same(a, b) -> bool:  # tuples and lists alike
        return json.loads(json.dumps(a)) == json.loads(json.dumps(b))

    diffs = [f"{k} {have.get(k, defaults[k])!r} -> {v!r}" for k, v in want.items() if not same(have.get(k, defaults[k]), v)]
    if info.get("steps") != task.pretrain_steps:
        diffs.insert(0, f"steps {info.get('steps')} -> {task.pretrain_steps}")
    n = task.pretrain_examples()
    if n is not None and info.get("train_examples") not in (None, n):
        diffs.append(f"train examples {info['train_examples']} -> {n}")
    return "; ".join(diffs) or None


def load_model_for(task, spec: str, device: str = "auto", dtype: str = "auto"):
    """`load_model`, pretraining the embedded model first when `tiny` is asked and nothing is cached, or
    when the cached model was built with other settings than the task's current ones (`stale_reason`)."""
    import sys

    from harness import models

    if spec == "tiny" and not models.is_pretrained(task.name):
        if not task.embedded:
            raise ValueError(f"the embedded `tiny` model exists only for embedded tasks; for {task.name!r} "
                             "pass --model hf:<local folder> or --model gold")
        print(f"no cached tiny model for {task.name!r}; pretraining it first (harness pretrain --task "
              f"{task.name}) ...", file=sys.stderr)
        pretrain(task.name)
    elif spec == "tiny" and task.embedded and (why := stale_reason(task)):
        print(f"the cached tiny model for {task.name!r} was pretrained with other settings ({why}); "
              f"pretraining it anew (harness pretrain --task {task.name}) ...", file=sys.stderr)
        pretrain(task.name)
    return models.load_model(spec, task=task.name, device=resolve_device(device), dtype=dtype)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"
