"""UniGRPO (MMaDA: Multimodal Large Diffusion Language Models, Yang et al. 2025, section 2.3.1 and
Algorithm 1): structured noising with uniformly masked completions.

Each completion draws a start ratio u ~ U(0, 1) once per rollout batch; inner iteration j of mu hides each
completion token independently at rate t_j = u + j(1 - u)/(mu - 1), so the mu updates sweep from u up
to fully masked. The prompt is never hidden; the hidden tokens are scored (the sequence log-likelihood
is their mean, MMaDA eq. 4). Advantages (r - mean)/std; the shared clipped surrogate + beta * k3 KL.

Departures from the published method:
* Hyperparameters: MMaDA does not list UniGRPO's mu, epsilon or beta in the paper we read; we use the
  values MaskGRPO's code runs its UniGRPO baseline with (`remasking: random` in configs/rl.yaml).
* MMaDA's Algorithm 1 draws one start per prompt; the design asks for one per completion, which we use.
* t is clamped to at least `min_ratio`, as LLaDA's ELBO sampling does, so a row is rarely left with
  nothing hidden; such a row simply contributes no tokens.
* The loss is MaskGRPO's code's (its UniGRPO baseline runs in the same trainer): a token-level mean
  over the micro-batch of 6 completions and a reference refreshed every 64 optimizer updates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.seeds import derive_seed
from trainers.estimators import RolloutBatch, RowStreams, bernoulli, make_view
from trainers.grpo import MethodConfig, std_normalized_advantages
from trainers.methods import Method, register


@dataclass
class UniGRPOConfig(MethodConfig):
    mu: int = 12  # MaskGRPO's configs/rl.yaml for its UniGRPO baseline
    epsilon: float = 0.2  # same source
    beta: float = 0.01  # same source
    min_ratio: float = 1e-3  # LLaDA's eps: t in [eps, 1]
    norm_rows: int = 6  # MaskGRPO's t2t_grpo_train.sh PER_DEVICE_BS=6
    ref_sync_every: int = 64  # MaskGRPO's configs/rl.yaml ref_model_sync_steps: 64


def advantages(rewards: torch.Tensor, cfg: UniGRPOConfig) -> torch.Tensor:
    return std_normalized_advantages(rewards)


def views(j: int, batch: RolloutBatch, cfg: UniGRPOConfig, gen: torch.Generator):
    # (B,) the same for every j: each row's start from its own stream of the batch's seed
    start = RowStreams(batch, derive_seed(batch.seed, "unigrpo-start")).rand(1)[:, 0]
    rates = structured_rates(start, j, cfg.mu).clamp(min=cfg.min_ratio)  # (B,)
    hide = uniform_mask(rates, batch.L, RowStreams.draw(batch, gen))  # (B, L)
    return [make_view(batch, hide_completion=hide, score=hide)]


def uniform_mask(rates: torch.Tensor, L: int, rows: RowStreams) -> torch.Tensor:
    """(B, L) bool: each position hidden independently with its row's rate; rates (B,)."""
    return bernoulli(rates.float().cpu()[:, None].expand(-1, L), rows)


def structured_rates(start: torch.Tensor, j: int, mu: int) -> torch.Tensor:
    """UniGRPO's structured noising (MMaDA Algorithm 1): a random start ratio u, then the other mu-1
    ratios evenly spaced from u to 1: t_j = u + j (1 - u) / (mu - 1); start (B,) in [0, 1)."""
    if mu == 1:
        return start
    return start + j * (1.0 - start) / (mu - 1)


register(Method("unigrpo", UniGRPOConfig, advantages, views,
                summary="MMaDA: per-completion start ratio, structured uniform masking over mu updates"))
