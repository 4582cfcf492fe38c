"""MaskGRPO (Consolidating RL for Multimodal Discrete Diffusion Models, arXiv 2510.02880; code
github.com/martian422/MaskGRPO): truncated mask ratios and modality-specific masking.

Inner iteration j of mu uses the ratio t_j = min(gamma + (1 - gamma)(j+1)/mu, 0.999) for every row:
* text (and code): "fading-out" AR-like masking - position n of the L-token completion is hidden with
  probability 1 - 2(1-t)(1 - n/(L-1)), clamped to [0, 1], so later tokens are hidden more often;
* image: each image token hidden uniformly with probability t (gamma = 0.8); rollouts use the emerge
  sampler unless the shared config names another.
The prompt is never hidden; every hidden completion token is scored, the EOS padding after the first
EOS included (`score_padding`: the reference's `completion_mask` is its `perturb_mask` in version `uni`,
grpo/mask_grpo_trainer.py `_generate_and_score_completions`; on arith ~27 scored tokens a row instead of
~15); advantages (r - mean)/(std + 1e-5); the loss is the shared clipped surrogate + beta * k3 KL,
a token-level mean over the micro-batch of 6 completions (`loss = (per_token_loss * completion_mask).sum()
/ completion_mask.sum()`, `compute_loss`); the reference is refreshed every 64 optimizer updates
(configs/rl.yaml `sync_ref_model: True`, `ref_model_sync_steps: 64`).

The `equal` recipe (trainers/recipes.py) keeps the harness's earlier choices instead: tokens up to the
first EOS, per-completion mean, frozen reference.

Masks are drawn per position independently (Bernoulli with the probability above); the code does the
same, so the *number* of hidden tokens varies around t*L. Each row draws from its own stream, keyed by its
place in the step's global batch (estimators.RowStreams), so the masks do not depend on the process count.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from trainers.estimators import RolloutBatch, RowStreams, bernoulli, make_view
from trainers.grpo import MethodConfig, std_normalized_advantages
from trainers.methods import Method, register


@dataclass
class MaskGRPOConfig(MethodConfig):
    mu: int = 12  # NUM_ITER=12 in scripts/train/t2t_grpo_train.sh and num_iterations in configs/rl.yaml
    epsilon: float = 0.2  # configs/rl.yaml (text); replaced by image_epsilon on image tasks
    beta: float = 0.01  # configs/rl.yaml
    gamma: float = 0.6  # lowest mask ratio for text, MIN_MASK=0.6 in t2t_grpo_train.sh (paper: gamma = 0.6)
    image_gamma: float = 0.8  # truncation for images (paper's T2I setting)
    image_epsilon: float = 0.001  # clip range of its image scripts
    t_max: float = 0.999  # the ratio never reaches 1 (a fully hidden completion gives no fading signal)
    adv_eps: float = 1e-5  # advantage = (r - mean) / (std + adv_eps)
    score_padding: bool = True  # score hidden EOS padding too (the reference's perturb_mask)
    norm_rows: int = 6  # token-level mean per micro-batch: PER_DEVICE_BS=6 in t2t_grpo_train.sh
    ref_sync_every: int = 64  # configs/rl.yaml: sync_ref_model True, ref_model_sync_steps 64

    def __post_init__(self):
        super().__post_init__()
        for name in ("gamma", "image_gamma"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1)")

    def for_kind(self, kind: str) -> MaskGRPOConfig:
        return replace(self, gamma=self.image_gamma, epsilon=self.image_epsilon) if kind == "image" else self


def advantages(rewards: torch.Tensor, cfg: MaskGRPOConfig) -> torch.Tensor:
    return std_normalized_advantages(rewards, eps=cfg.adv_eps)


def views(j: int, batch: RolloutBatch, cfg: MaskGRPOConfig, gen: torch.Generator):
    t = maskgrpo_schedule(cfg.mu, cfg.gamma, cfg.t_max)[j]
    if batch.kind == "image":
        probs = torch.full((batch.B, batch.L), t)  # (B, L) uniform over image tokens
    else:
        probs = fading_out_probs(t, batch.L)[None, :].expand(batch.B, -1)  # (B, L) rises along the text
    hide = bernoulli(probs, RowStreams.draw(batch, gen))  # (B, L), each row from its own stream
    return [make_view(batch, hide_completion=hide, score=hide, score_padding=cfg.score_padding)]


def rollout_sampler(kind: str) -> str | None:
    return "emerge" if kind == "image" else None


def maskgrpo_schedule(mu: int, gamma: float, t_max: float = 0.999) -> list[float]:
    """MaskGRPO's truncated ratios: t_j = min(gamma + (1 - gamma) (j+1)/mu, t_max), rising to t_max."""
    return [min(gamma + (1.0 - gamma) * (j + 1) / mu, t_max) for j in range(mu)]


def fading_out_probs(t: float, L: int) -> torch.Tensor:
    """(L,) probability that position n is hidden: 1 - 2(1-t)(1 - n/(L-1)), clamped to [0, 1].

    Later tokens are hidden more often (AR-like). Before clamping the mean over n is exactly t, so the
    expected hidden fraction is t whenever nothing clamps at 0, i.e. for t >= 0.5.
    """
    if L == 1:
        return torch.tensor([float(t)])
    n = torch.arange(L, dtype=torch.float64) / (L - 1)  # n/(L-1) in [0, 1]
    return (1.0 - 2.0 * (1.0 - t) * (1.0 - n)).clamp(0.0, 1.0).float()


register(Method("maskgrpo", MaskGRPOConfig, advantages, views, rollout_sampler=rollout_sampler,
                summary="truncated ratios; fading-out masking (text); uniform masking, emerge sampler (image)"))
