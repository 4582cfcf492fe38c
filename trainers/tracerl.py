"""TraceRL (Revolutionizing RL Framework for Diffusion LLMs, Wang et al. 2025, arXiv 2509.06949; code
github.com/Gen-Verse/dLLM-RL): train on the rollout's own decoding trajectory.

The decoder records the step at which it committed each token (`commit_step`). In each row, the distinct
commit steps present are merged in runs of `shrink` ("trajectory shrinkage", `collapse_k_unique` in
train/rl_llada.py); the view of merged group g hides every token committed at or after the group's first
step - what the decoder saw when it began that group - and scores the tokens committed within it. Each
(row, group) is one training example (`prepare_inputs_and_labels_for_text`, method "TraceRL").

Reference settings (configs/rl_llada.yaml, train/rl_llada.py `forward_process`, reward/rl_reward.py):
* advantage: (r - mean) / std with the population std and no epsilon, 0 for a group of equal rewards
  (`z_score_normalize`); 8 responses per task;
* loss per example: the clipped surrogate averaged over the example's scored tokens, plus beta times the
  k3 KL *summed* over them; the KL is taken against the old policy (`logp_old_tok`, the policy that
  collected the rollout), not a frozen reference; the loss is the mean over examples;
* one pass over the examples (`num_train_epochs: 1`), gradient accumulation 128 x 2 = 256 examples per
  optimizer step.

The `equal` recipe keeps the harness's earlier reading (groups of `shrink` global decoder steps spread
round-robin over mu updates; the sample std + 1e-4; KL to the frozen initial model; per-completion mean).

Departure kept in both: no diffusion value model (its optional token-wise value baseline); the advantage
is the sequence-level group-normalised reward (its value-free variant).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainers.estimators import RolloutBatch, make_view
from trainers.grpo import (
    LossInputs,
    LossOutput,
    MethodConfig,
    _zero_constant_groups,
    batch_rows,
    clipped_surrogate,
    grpo_loss,
    k3_kl,
    std_normalized_advantages,
)
from trainers.methods import Method, register


@dataclass
class TraceRLConfig(MethodConfig):
    mu: int = 1  # one pass: all of a rollout batch's examples in one optimizer step (see the docstring)
    epsilon: float = 0.2  # `eps: 0.20` in dLLM-RL configs/rl_llada.yaml
    beta: float = 0.01  # `beta: 0.01` with `use_kl_estimator_k3: True`, same config
    shrink: int = 8  # `shrink: 8` (distinct commit steps merged per example), same config
    loss_norm: str = "example"  # example (the reference's) | sequence (the equal recipe's)
    kl_to: str = "old"  # old: KL to the rollout policy (the reference's) | reference: the frozen initial model
    adv_std: str = "population"  # population, no epsilon (z_score_normalize) | sample (+1e-4)
    groups: str = "row"  # row: distinct steps present in each row | global: decoder steps [g*shrink, (g+1)*shrink)
    LOSS_NORMS = ("example", "sequence")

    def __post_init__(self):
        super().__post_init__()
        if int(self.shrink) < 1:
            raise ValueError(f"shrink={self.shrink} must be >= 1 (decoder steps per group)")
        if self.kl_to not in ("old", "reference") or self.adv_std not in ("population", "sample") or \
                self.groups not in ("row", "global"):
            raise ValueError("kl_to: old|reference; adv_std: population|sample; groups: row|global")


def advantages(rewards: torch.Tensor, cfg: TraceRLConfig) -> torch.Tensor:
    if cfg.adv_std == "sample":
        return std_normalized_advantages(rewards)
    return population_z_scores(rewards)


def population_z_scores(rewards: torch.Tensor) -> torch.Tensor:
    """(r - mean) / std, std over the group with divisor G (not G-1) and no epsilon; 0 if the std is 0."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    std = centred.pow(2).mean(dim=1, keepdim=True).sqrt()
    return _zero_constant_groups(centred / torch.where(std > 0, std, torch.ones_like(std)), rewards)


def groups_for_iteration(j: int, n_groups: int, mu: int) -> list[int]:
    """Round-robin: iteration j trains groups j, j+mu, ...; with fewer groups than updates, group j mod n."""
    if n_groups == 0:
        return []
    return list(range(j, n_groups, mu)) or [j % n_groups]


def views(j: int, batch: RolloutBatch, cfg: TraceRLConfig, gen: torch.Generator):
    if cfg.groups == "row":
        rank = row_group_index(batch.commit_step, cfg.shrink)  # (B, L) example index of each token, -1 none
        # the step's number of groups, over every process: which groups iteration j trains (and how many
        # views, hence collectives, each process runs) must not depend on the split of the prompts
        n = batch.global_max(int(rank.max().item()) + 1 if rank.numel() else 0)
        out = []
        for g in groups_for_iteration(j, n, cfg.mu):
            out.append(make_view(batch, hide_completion=rank >= g, score=rank == g))
        return out
    n = batch.global_max(trace_num_groups(batch.commit_step, cfg.shrink))
    out = []
    for g in groups_for_iteration(j, n, cfg.mu):
        hide, score = trace_group_masks(batch.commit_step, g, cfg.shrink)  # (B, L), (B, L)
        out.append(make_view(batch, hide_completion=hide, score=score))
    return out


def row_group_index(commit_step: torch.Tensor, shrink: int) -> torch.Tensor:
    """(B, L) long: for each token, the index of its example within its row: the rank of its commit step
    among the row's distinct steps, integer-divided by shrink (-1 for tokens with no recorded step).

    Hiding tokens with index >= g is hiding every token committed at or after the first step of
    example g, as the reference's `order_full >= step_val` over collapsed steps does."""
    out = torch.full_like(commit_step, -1)
    for b in range(commit_step.shape[0]):
        row = commit_step[b]
        known = row >= 0
        if known.any():
            _, rank = torch.unique(row[known], sorted=True, return_inverse=True)
            out[b, known] = rank // shrink
    return out


def trace_group_masks(commit_step: torch.Tensor, group: int, shrink: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `equal` recipe's view of merged step `group` (decoder steps [group*shrink, (group+1)*shrink)).

    Returns (hide, score), both (B, L) bool: every token committed at or after the group's first step
    is hidden - the state the decoder was in when it began that group - and the tokens committed
    within the group are scored. Tokens with no recorded step (-1) stay visible and unscored.
    """
    first = group * shrink
    hide = commit_step >= first
    score = hide & (commit_step < first + shrink)
    return hide, score


def trace_num_groups(commit_step: torch.Tensor, shrink: int) -> int:
    return int(commit_step.max().item()) // shrink + 1 if commit_step.numel() and commit_step.max() >= 0 else 0


def loss(inp: LossInputs, cfg: TraceRLConfig) -> LossOutput:
    """The reference's loss when loss_norm == "example": per (row, view) example, the surrogate's mean over
    its scored tokens plus beta x its k3 KL summed over them; the mean over all examples of the batch."""
    if cfg.loss_norm == "sequence" and cfg.kl_to == "reference":
        return grpo_loss(inp, cfg)
    b = inp.advantages.shape[0]
    B_all, off = batch_rows(inp, b)
    all_views = inp.all_views if inp.all_views is not None else inp.views
    n_examples = sum(int((v.score.sum(1) > 0).sum()) for v in all_views)
    total = torch.zeros(b, device=inp.advantages.device)
    scored = torch.zeros_like(inp.views[0].score) if inp.views else None
    ratio_all, kl_all, clip_all = [], [], []
    for i, (lp, v) in enumerate(zip(inp.logp, inp.views)):
        old = lp.detach() if inp.old_logp is None else inp.old_logp[i]
        ratio = torch.exp(lp - old)
        surr, clipped = clipped_surrogate(ratio, inp.advantages[:, None], cfg.epsilon)
        n = v.score.sum(1)  # (b,)
        zero = torch.zeros_like(surr)
        policy = torch.where(v.score, surr, zero).sum(1) / n.clamp(min=1)
        if cfg.beta > 0:
            anchor = old if cfg.kl_to == "old" else (inp.ref_logp[i] if inp.ref_logp is not None else None)
            if anchor is not None:
                kl = k3_kl(lp, anchor)
                kl_all.append(torch.where(v.score, kl, zero).detach())
                policy = policy + cfg.beta * torch.where(v.score, kl, zero).sum(1) * (
                    1.0 if cfg.loss_norm == "example" else 1.0 / n.clamp(min=1))
        total = total + policy
        scored = scored | v.score
        ratio_all.append(torch.where(v.score, ratio, zero).detach())
        clip_all.append(clipped & v.score)
    if scored is None:
        return LossOutput(total, torch.zeros(b, 0, dtype=torch.bool))
    if cfg.loss_norm == "example":
        share = total * (B_all / max(n_examples, 1))
    else:  # sequence: the mean over a completion's examples
        n_views = torch.stack([v.score.any(1) for v in inp.views]).sum(0).clamp(min=1)
        share = total / n_views
    kl = sum(kl_all) if kl_all else None
    return LossOutput(share, scored, sum(ratio_all), kl, sum(c.long() for c in clip_all) > 0)


register(Method("tracerl", TraceRLConfig, advantages, views, loss=loss,
                summary="replays the decoder's commit order: view of step group s hides tokens committed >= s"))
