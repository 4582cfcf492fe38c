"""GRPO's pure pieces: group advantages, the clipped surrogate, the k3 KL estimate, and the token-level
loss shared by maskgrpo, diffu-grpo, unigrpo, coupled-grpo and tracerl. Tensors in, tensors out.

The shared loss (DESIGN.md section 5), per scored token i of completion o with advantage A:

    -min(rho_i A, clip(rho_i, 1-eps, 1+eps) A) + beta * (exp(ref_i - logp_i) - (ref_i - logp_i) - 1)
    rho_i = exp(logp_i - old_i)

averaged over the tokens that the method's views score (per completion, then over completions, as d1
and TRL's GRPO do). logp, old and ref are estimated on the *same* masked views.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainers.estimators import MaskedView, combine_views


@dataclass
class MethodConfig:
    """Fields every method has; each method file subclasses it with its paper's defaults and reasons."""

    mu: int = 12  # inner gradient updates per rollout batch (GRPO's mu), each on a fresh masked view
    epsilon: float = 0.2  # clip range of the importance ratio (PPO/GRPO default)
    beta: float = 0.04  # weight of the k3 KL to the frozen initial policy; 0 = no reference model

    def __post_init__(self):
        if int(self.mu) < 1:
            raise ValueError(f"mu={self.mu} must be >= 1 (inner updates per rollout batch)")
        if self.epsilon <= 0:
            raise ValueError(f"epsilon={self.epsilon} must be > 0 (the ratio clip range)")
        if self.beta < 0:
            raise ValueError(f"beta={self.beta} must be >= 0 (0 disables the KL term)")

    def for_kind(self, kind: str) -> MethodConfig:
        """The config to use on a task of this kind (text | code | image); maskgrpo switches for images."""
        return self


# ---- advantages: rewards (N, G) -> advantages (N, G), N prompts x G completions ------------------------
def _zero_constant_groups(adv: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """A group whose rewards are all equal carries no signal: its advantages are exactly 0 (not 1e-9)."""
    const = (rewards.max(dim=1, keepdim=True).values == rewards.min(dim=1, keepdim=True).values)  # (N, 1)
    return torch.where(const, torch.zeros_like(adv), adv)


def centered_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """r - mean(r) over the group (d1, SPG)."""
    adv = rewards - rewards.mean(dim=1, keepdim=True)
    return _zero_constant_groups(adv, rewards)


def std_normalized_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """(r - mean) / (std + eps), std unbiased over the group (GRPO; TRL's eps is 1e-4)."""
    G = rewards.shape[1]
    std = rewards.std(dim=1, keepdim=True) if G > 1 else torch.zeros_like(rewards[:, :1])
    adv = (rewards - rewards.mean(dim=1, keepdim=True)) / (std + eps)
    return _zero_constant_groups(adv, rewards)


def leave_one_out_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """r_i - mean of the other G-1 rewards (RLOO; DiffuCoder's coupled-GRPO)."""
    G = rewards.shape[1]
    if G < 2:
        raise ValueError("leave-one-out advantages need num_generations >= 2 completions per prompt")
    others = (rewards.sum(dim=1, keepdim=True) - rewards) / (G - 1)
    return _zero_constant_groups(rewards - others, rewards)


# ---- token-level pieces ----------------------------------------------------------------------------------
def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, epsilon: float,
                      epsilon_high: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's per-token loss -min(rho A, clip(rho, 1-eps, 1+eps_high) A) and where the clip is active.

    ratio (B, L); advantages broadcastable to it, e.g. (B, 1). Returns (loss (B, L), clipped (B, L) bool).
    """
    hi = epsilon if epsilon_high is None else epsilon_high
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - epsilon, 1.0 + hi) * advantages
    active = ((ratio < 1.0 - epsilon) & (advantages < 0)) | ((ratio > 1.0 + hi) & (advantages > 0))
    return -torch.min(unclipped, clipped), active


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimate of KL(pi || ref) per token: exp(ref - logp) - (ref - logp) - 1 >= 0."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


def masked_row_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L), (B, L) bool -> (B,): mean of x over the masked tokens of each row (0 for an empty row)."""
    m = mask.to(x.dtype)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


# ---- the loss interface every method implements ----------------------------------------------------------
@dataclass
class LossInputs:
    logp: list[torch.Tensor]  # per view (B, L): current policy's token log-probs, with grad
    old_logp: list[torch.Tensor] | None  # per view (B, L); None = equal to the current policy (first update)
    ref_logp: list[torch.Tensor] | None  # per view (B, L); None when beta == 0
    views: list[MaskedView]
    advantages: torch.Tensor  # (B,)


@dataclass
class LossOutput:
    per_sequence: torch.Tensor  # (B,) loss of each completion; the loop averages over completions
    scored: torch.Tensor  # (B, L) bool: tokens the loss is taken over
    ratio: torch.Tensor | None = None  # (B, L) detached importance ratio (None for ratio-free losses)
    kl: torch.Tensor | None = None  # (B, L) detached k3 KL (None when beta == 0)
    clipped: torch.Tensor | None = None  # (B, L) bool: clip active


def kl_term(inp: LossInputs, est: torch.Tensor, beta: float) -> torch.Tensor | None:
    """(B, L) k3 KL of the combined estimate to the reference's, or None without a reference."""
    if beta <= 0 or inp.ref_logp is None:
        return None
    ref, _ = combine_views(inp.ref_logp, inp.views)
    return k3_kl(est, ref)


def grpo_loss(inp: LossInputs, cfg: MethodConfig) -> LossOutput:
    """The clipped token-level surrogate plus beta * k3 KL, averaged over the scored tokens."""
    est, scored = combine_views(inp.logp, inp.views)  # (B, L), (B, L)
    old = est.detach() if inp.old_logp is None else combine_views(inp.old_logp, inp.views)[0]
    ratio = torch.exp(est - old)  # (B, L); exactly 1 on the first update
    per_token, clipped = clipped_surrogate(ratio, inp.advantages[:, None], cfg.epsilon)
    kl = kl_term(inp, est, cfg.beta)
    if kl is not None:
        per_token = per_token + cfg.beta * kl
    return LossOutput(masked_row_mean(per_token, scored), scored, ratio.detach(),
                      None if kl is None else kl.detach(), clipped)
