"""Rollouts and token log-probabilities: the two places the RL loop touches the model.

`collect_rollouts` samples G completions for each prompt with the rollout decoder and scores them with
the task's own `reward` (through `score_many`, so code tasks can run tests in parallel). Every row's
decoder seed comes from (seed, step, prompt index, sample index), so a rollout does not depend on the
batch it was decoded in. `token_logprobs` is log_softmax(logits)[target] at every completion position,
computed in float32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from harness.config import derive_seed
from tasks.base import Example, Task
from trainers.estimators import MaskedView, RolloutBatch, completion_validity


@dataclass
class Rollouts:
    batch: RolloutBatch  # B = N*G rows, prompt-major
    rewards: torch.Tensor  # (N, G) float
    terms: dict[str, torch.Tensor]  # reward term -> (N, G)
    verdicts: list[bool | None]  # B verifier verdicts
    completions: list[str]  # B texts
    nfe: int  # decoder model calls


def prompt_indices(n_examples: int, per_step: int, step: int, seed: int) -> list[int]:
    """The training examples used at `step` (1-based): shuffled epochs, consumed `per_step` at a time.

    Position q = (step-1)*per_step + k reads epoch q // n of a permutation seeded by (seed, epoch), so
    every example is used once per epoch and a resumed run picks the same prompts.
    """
    if n_examples < 1:
        raise ValueError("RL training needs at least one training example")
    out, perms = [], {}
    for q in range((step - 1) * per_step, step * per_step):
        epoch = q // n_examples
        if epoch not in perms:
            g = torch.Generator().manual_seed(derive_seed(seed, "prompts", epoch))
            perms[epoch] = torch.randperm(n_examples, generator=g).tolist()
        out.append(perms[epoch][q % n_examples])
    return out


def collect_rollouts(model, task: Task, examples: Sequence[Example], indices: Sequence[int], G: int, decode, *,
                     seed: int, step: int, generate_fn: Callable, batch_seed: int, chunk: int | None = None,
                     reward_workers: int = 0) -> Rollouts:
    """G completions for each of examples[indices], scored by the task; `indices` are global positions."""
    exs = [examples[i] for i in indices]
    device = torch.device(getattr(model, "device", "cpu"))
    ids, attn = model.encode_prompts([task.format_prompt(ex) for ex in exs])  # (N, P), (N, P)
    ids = ids.to(device).repeat_interleave(G, dim=0)  # (B, P), prompt-major
    attn = attn.to(device=device, dtype=torch.bool).repeat_interleave(G, dim=0)
    seeds = [derive_seed(seed, "rollout", step, i, g) for i in indices for g in range(G)]
    token_range = model.image_token_range if task.kind == "image" else None
    B = ids.shape[0]
    chunk = chunk or B
    comps, commits, nfe = [], [], 0
    for s in range(0, B, chunk):
        out = generate_fn(model, ids[s:s + chunk], attn[s:s + chunk], decode, seeds=seeds[s:s + chunk],
                          token_range=token_range)
        comps.append(out.completion_ids)
        commits.append(out.commit_step)
        nfe += int(out.nfe)
    completion_ids = torch.cat(comps).to(device)  # (B, L)
    commit_step = torch.cat(commits).to(device)  # (B, L)
    texts = [model.decode_completion(row) for row in completion_ids]
    if task.kind == "image":
        valid = torch.ones_like(completion_ids, dtype=torch.bool)
    else:
        valid = completion_validity(completion_ids, getattr(model, "eos_id", None), int(model.mask_id))
    scored = task.score_many(texts, [ex for ex in exs for _ in range(G)], workers=reward_workers)
    N = len(exs)
    rewards = torch.tensor([float(s.reward) for s in scored], dtype=torch.float32).view(N, G)
    names = sorted({k for s in scored for k in s.terms})
    terms = {k: torch.tensor([float(s.terms.get(k, 0.0)) for s in scored]).view(N, G) for k in names}
    batch = RolloutBatch(prompt_ids=ids, prompt_mask=attn, completion_ids=completion_ids, valid=valid,
                         commit_step=commit_step, mask_id=int(model.mask_id), kind=task.kind,
                         block_length=decode.block_length if decode.sampler == "low_confidence" else 0,
                         seed=batch_seed)
    return Rollouts(batch, rewards, terms, [s.verdict for s in scored], texts, nfe)


def token_logprobs(model, view: MaskedView, completion_ids: torch.Tensor,
                   token_range: tuple[int, int] | None = None) -> torch.Tensor:
    """(B, L) float32 log-prob of each completion token under `view`, at every completion position.

    With token_range=(lo, hi) (image tokens) the softmax is over [lo, hi) only, as the image sampler draws.
    """
    L = completion_ids.shape[1]
    logits = model.logits(view.input_ids, view.attention_mask)[:, -L:]  # (B, L, V)
    target = completion_ids
    if token_range is not None:
        lo, hi = token_range
        logits = logits[..., lo:hi]
        target = (completion_ids - lo).clamp(0, hi - lo - 1)
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, L, V)
    return logp.gather(-1, target[..., None]).squeeze(-1)
