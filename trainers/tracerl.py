"""TraceRL (Revolutionizing RL Framework for Diffusion LLMs, Wang et al. 2025, arXiv 2509.06949; code
github.com/Gen-Verse/dLLM-RL): train on the rollout's own decoding trajectory.

The decoder records the step at which it committed each token (`commit_step`). Consecutive steps are
merged into groups of `shrink` ("trajectory shrinkage"); the view of group g shows exactly what the decoder
saw when it began that group - every token committed at or after step g*shrink is hidden - and scores the
tokens committed within the group. Every group is trained once per rollout batch: the groups are spread
round-robin over the mu inner updates (iteration j takes groups j, j+mu, j+2mu, ...; when there are
fewer groups than updates an iteration re-uses group j mod n). Advantages (r - mean)/std; the shared
clipped surrogate + beta * k3 KL.

Departures from the published method:
* No diffusion value model: TraceRL's optional token-wise value baseline is not implemented, so the
  advantage is the sequence-level group-normalised reward (its value-free variant).
* TraceRL makes one pass over all groups with gradient accumulation; we fix the number of optimizer
  steps per rollout batch to mu for an equal-budget comparison.
* The reference policy is the frozen initial model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainers.estimators import RolloutBatch, make_view
from trainers.grpo import MethodConfig, std_normalized_advantages
from trainers.methods import Method, register


@dataclass
class TraceRLConfig(MethodConfig):
    mu: int = 4  # our choice (see departures): each rollout batch's groups split over 4 optimizer steps
    epsilon: float = 0.2  # `eps: 0.20` in dLLM-RL configs/rl_llada.yaml
    beta: float = 0.01  # `beta: 0.01` with `use_kl_estimator_k3: True`, same config
    shrink: int = 8  # `shrink: 8` (decoder steps merged per group), same config

    def __post_init__(self):
        super().__post_init__()
        if int(self.shrink) < 1:
            raise ValueError(f"shrink={self.shrink} must be >= 1 (decoder steps per group)")


def advantages(rewards: torch.Tensor, cfg: TraceRLConfig) -> torch.Tensor:
    return std_normalized_advantages(rewards)


def groups_for_iteration(j: int, n_groups: int, mu: int) -> list[int]:
    """Round-robin: iteration j trains groups j, j+mu, ...; with fewer groups than updates, group j mod n."""
    if n_groups == 0:
        return []
    return list(range(j, n_groups, mu)) or [j % n_groups]


def views(j: int, batch: RolloutBatch, cfg: TraceRLConfig, gen: torch.Generator):
    n = trace_num_groups(batch.commit_step, cfg.shrink)
    out = []
    for g in groups_for_iteration(j, n, cfg.mu):
        hide, score = trace_group_masks(batch.commit_step, g, cfg.shrink)  # (B, L), (B, L)
        out.append(make_view(batch, hide_completion=hide, score=score))
    return out


def trace_group_masks(commit_step: torch.Tensor, group: int, shrink: int) -> tuple[torch.Tensor, torch.Tensor]:
    """TraceRL's view of merged step `group` (decoder steps [group*shrink, (group+1)*shrink)).

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


register(Method("tracerl", TraceRLConfig, advantages, views,
                summary="replays the decoder's commit order: view of step group s hides tokens committed >= s"))
