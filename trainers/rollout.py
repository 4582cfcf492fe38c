"""Rollouts and token log-probabilities: the two places the RL loop touches the model.

`collect_rollouts` samples G completions for each prompt with the rollout decoder and scores them with
the rewards the run chose (`task.score_many`: the verifier's check, then the weighted reward functions of
tasks/rewards.py; code tasks run tests in parallel). Each term's mean goes to curve.csv as `reward_<name>`. Every row's
decoder seed comes from (seed, step, prompt index, sample index), so a rollout does not depend on the
batch it was decoded in. `token_logprobs` is log_softmax(logits)[target] at every completion position,
computed in float32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from harness.seeds import derive_seed
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
                     reward_workers: int = 0, round_size: int | None = None, enough: int | None = None,
                     first_position: int = 0) -> Rollouts:
    """G completions for each of examples[indices], scored by the task; `indices` are global positions.

    `first_position` is the position of indices[0] among the step's drawn prompts (over all processes):
    row g of the k-th prompt gets the identity (first_position + k) * G + g in `batch.row_ids`, the key of
    its random masks (estimators.RowStreams).

    With `round_size` and `enough` (dynamic sampling), prompts are decoded and scored `round_size` at a time,
    in order, and decoding stops after the round in which `enough` groups with mixed rewards have been
    found: the prompts left over are not decoded. Which groups are mixed does not depend on the rounds
    (every row has its own seed), so this gives the same first `enough` mixed groups as decoding all.
    """
    exs = [examples[i] for i in indices]
    device = torch.device(getattr(model, "device", "cpu"))
    ids, attn = model.encode_prompts([task.format_prompt(ex) for ex in exs])  # (N, P), (N, P)
    ids = ids.to(device).repeat_interleave(G, dim=0)  # (N*G, P), prompt-major
    attn = attn.to(device=device, dtype=torch.bool).repeat_interleave(G, dim=0)
    seeds = [derive_seed(seed, "rollout", step, i, g) for i in indices for g in range(G)]
    token_range = model.image_token_range if task.kind == "image" else None
    per_round = round_size or len(exs)
    comps, commits, texts, scored, nfe, mixed = [], [], [], [], 0, 0
    for r0 in range(0, len(exs), per_round):
        lo, hi = r0 * G, min(len(exs), r0 + per_round) * G  # this round's rows
        width = chunk or hi - lo
        round_ids, round_nfe = [], 0
        for s in range(lo, hi, width):
            e = min(hi, s + width)
            out = generate_fn(model, ids[s:e], attn[s:e], decode, seeds=seeds[s:e], token_range=token_range)
            round_ids.append(out.completion_ids)
            commits.append(out.commit_step)
            round_nfe = max(round_nfe, int(out.nfe))  # the chunks of a round share its denoising steps
        comps += round_ids
        nfe += round_nfe
        round_texts = [model.decode_completion(row) for row in torch.cat(round_ids)]
        new = task.score_many(round_texts, [ex for ex in exs[r0:r0 + per_round] for _ in range(G)],
                              workers=reward_workers)
        texts += round_texts
        scored += new
        rew = torch.tensor([float(x.reward) for x in new]).view(-1, G)  # (round prompts, G)
        mixed += int(mixed_groups(rew).sum())
        if enough is not None and mixed >= enough:
            break
    B = len(scored)
    N = B // G
    completion_ids = torch.cat(comps).to(device)  # (B, L)
    commit_step = torch.cat(commits).to(device)  # (B, L)
    if task.kind == "image":
        valid = torch.ones_like(completion_ids, dtype=torch.bool)
    else:
        valid = completion_validity(completion_ids, getattr(model, "eos_id", None), int(model.mask_id))
    rewards = torch.tensor([float(s.reward) for s in scored], dtype=torch.float32).view(N, G)
    names = sorted({k for s in scored for k in s.terms})
    terms = {k: torch.tensor([float(s.terms.get(k, 0.0)) for s in scored]).view(N, G) for k in names}
    batch = RolloutBatch(prompt_ids=ids[:B], prompt_mask=attn[:B], completion_ids=completion_ids, valid=valid,
                         commit_step=commit_step, mask_id=int(model.mask_id), kind=task.kind,
                         block_length=decode.block_length if decode.sampler == "low_confidence" else 0,
                         seed=batch_seed, row_ids=torch.arange(first_position * G, first_position * G + B))
    return Rollouts(batch, rewards, terms, [s.verdict for s in scored], texts, nfe)


def mixed_groups(rewards: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the groups of (N, G) rewards that are not all equal (non-zero advantages)."""
    return rewards.max(1).values > rewards.min(1).values


def select_groups(ro: Rollouts, keep: int) -> Rollouts:
    """The first `keep` groups of `ro` with mixed rewards, in drawn order, topped up with all-equal groups
    (also in drawn order) when fewer are mixed: DAPO's dynamic sampling with a cap on rollouts per step."""
    N, G = ro.rewards.shape
    if not 1 <= keep <= N:
        raise ValueError(f"keep={keep} groups must be between 1 and the {N} groups drawn")
    mixed = mixed_groups(ro.rewards).tolist()
    groups = sorted(sorted(range(N), key=lambda i: not mixed[i])[:keep])  # stable: drawn order within each kind
    rows = torch.tensor([i * G + g for i in groups for g in range(G)])
    b = ro.batch
    on = rows.to(b.device)
    batch = RolloutBatch(prompt_ids=b.prompt_ids[on], prompt_mask=b.prompt_mask[on],
                         completion_ids=b.completion_ids[on], valid=b.valid[on], commit_step=b.commit_step[on],
                         mask_id=b.mask_id, kind=b.kind, block_length=b.block_length, seed=b.seed,
                         row_ids=None if b.row_ids is None else b.row_ids[rows])
    g = torch.tensor(groups)
    return Rollouts(batch, ro.rewards[g], {k: v[g] for k, v in ro.terms.items()},
                    [ro.verdicts[r] for r in rows.tolist()], [ro.completions[r] for r in rows.tolist()], ro.nfe)


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
