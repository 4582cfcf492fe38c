"""Coupled-GRPO (DiffuCoder: Understanding and Improving Masked Diffusion Models for Code Generation,
Gong et al. 2025; code github.com/apple/ml-diffucoder): complementary masks so every token is scored.

Each inner iteration draws t ~ U(0.2, 0.8) and a mask M (each completion token in M with probability t),
and runs three forwards: the completion fully hidden; M hidden (its tokens weighted 1/t); the complement
not-M hidden (weighted 1/(1-t)). M and not-M partition the completion, so each token is scored exactly
once by the coupled pair; its estimate is the mean of the full-mask log-prob and the weighted coupled one:
(lp_full + lp_pair * w) / 2 - as DiffuCoder's `selective_log_softmax` combines them. Leave-one-out
advantages; the shared clipped surrogate + beta * k3 KL on that estimate. The prompt is never hidden
(p_mask_prompt = 0.0 in its config).

The loss is a token-level mean over the micro-batch of 5 completions (coupled_grpo.py `compute_loss`:
`(per_token_loss * completion_mask).sum() / completion_mask.sum().clamp(min=1.0)`;
config_coupled_code.yaml `per_device_train_batch_size: 5`) and the reference is refreshed every 64
optimizer updates (`sync_ref_model: True`, `ref_model_sync_steps: 64`).

Departures from the published method:
* One t per inner iteration for the whole step, on every process (the code draws one per process's
  batch); M is drawn per row from the row's own stream (estimators.RowStreams), so the masks do
  not depend on how the step's prompts are split over processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainers.estimators import RolloutBatch, RowStreams, make_view
from trainers.grpo import MethodConfig, leave_one_out_advantages
from trainers.methods import Method, register


@dataclass
class CoupledGRPOConfig(MethodConfig):
    mu: int = 2  # num_iterations in recipes/config_coupled_code.yaml
    epsilon: float = 0.5  # same config
    beta: float = 0.01  # same config
    t_low: float = 0.2  # t ~ U(0.2, 0.8): `random.uniform(0.2, 0.8)` in its forward_process
    t_high: float = 0.8
    norm_rows: int = 5  # config_coupled_code.yaml per_device_train_batch_size: 5 (half a group of 10)
    ref_sync_every: int = 64  # config_coupled_code.yaml ref_model_sync_steps: 64

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.t_low <= self.t_high < 1.0:
            raise ValueError(f"need 0 < t_low <= t_high < 1, got t_low={self.t_low}, t_high={self.t_high}")


def advantages(rewards: torch.Tensor, cfg: CoupledGRPOConfig) -> torch.Tensor:
    return leave_one_out_advantages(rewards)


def views(j: int, batch: RolloutBatch, cfg: CoupledGRPOConfig, gen: torch.Generator):
    # one t for the whole step (the iteration's generator is the same on every process), M per row
    t = cfg.t_low + (cfg.t_high - cfg.t_low) * float(torch.rand((), generator=gen))
    M = RowStreams.draw(batch, gen).rand(batch.L) < t  # (B, L)
    everything = torch.ones_like(batch.valid)
    return [
        make_view(batch, hide_completion=everything, score=everything),
        make_view(batch, hide_completion=M, score=M, weight=1.0 / t),
        make_view(batch, hide_completion=~M, score=~M, weight=1.0 / (1.0 - t)),
    ]


register(Method("coupled-grpo", CoupledGRPOConfig, advantages, views,
                summary="DiffuCoder: complementary masks weighted 1/t, 1/(1-t) + a full-mask pass, RLOO"))
