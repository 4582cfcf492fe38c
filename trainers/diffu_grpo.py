"""diffu-GRPO (d1: Scaling Reasoning in Diffusion LLMs via RL, Zhao et al. 2025; code
github.com/dllm-reasoning/d1): the one-step log-prob estimate.

Every inner iteration hides the whole completion and each real prompt token with probability 0.15
(a fresh draw per iteration), and scores every completion token in a single forward pass - a mean-field
estimate of log pi(o_k | q). Advantages r - mean; the shared clipped surrogate + beta * k3 KL, a
token-level mean over the micro-batch of 6 completions (diffu_grpo_trainer.py `compute_loss`:
`(per_token_loss * completion_mask).sum() / completion_mask.sum()`, completion_mask up to the first EOS).
The reference is refreshed every 64 optimizer updates (train.yaml `sync_ref_model: True`,
`ref_model_sync_steps: 64`; TR-DPO mix with TRL's default alpha 0.6).

Departures from the published method:
* Only real prompt tokens can be hidden; d1 draws the prompt mask over padding too (a hidden pad
  changes nothing the model attends to).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainers.estimators import RolloutBatch, one_step_view
from trainers.grpo import MethodConfig, centered_advantages
from trainers.methods import Method, register


@dataclass
class DiffuGRPOConfig(MethodConfig):
    mu: int = 12  # num_iterations in d1's diffu-grpo/slurm_scripts/train.yaml
    epsilon: float = 0.5  # d1 train.yaml
    beta: float = 0.04  # d1 train.yaml
    p_mask_prompt: float = 0.15  # d1 train.yaml: prompt tokens hidden per iteration (a regulariser)
    norm_rows: int = 6  # d1 train.yaml per_device_train_batch_size: 6 (the token mean's micro-batch)
    ref_sync_every: int = 64  # d1 train.yaml ref_model_sync_steps: 64

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.p_mask_prompt <= 1.0:
            raise ValueError(f"p_mask_prompt={self.p_mask_prompt} must be a probability")


def advantages(rewards: torch.Tensor, cfg: DiffuGRPOConfig) -> torch.Tensor:
    return centered_advantages(rewards)


def views(j: int, batch: RolloutBatch, cfg: DiffuGRPOConfig, gen: torch.Generator):
    return [one_step_view(batch, cfg.p_mask_prompt, gen)]


register(Method("diffu-grpo", DiffuGRPOConfig, advantages, views,
                summary="d1: completion fully masked, prompt masked at 0.15, one-step log-prob"))
