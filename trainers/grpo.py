"""GRPO's pure pieces: group advantages, the clipped surrogate, the k3 KL estimate, and the token-level
loss shared by maskgrpo, diffu-grpo, unigrpo, coupled-grpo and tracerl. Tensors in, tensors out.

The shared loss (DESIGN.md section 5), per scored token i of completion o with advantage A:

    -min(rho_i A, clip(rho_i, 1-eps, 1+eps) A) + beta * (exp(ref_i - logp_i) - (ref_i - logp_i) - 1)
    rho_i = exp(logp_i - old_i)

averaged over the tokens that the method's views score. How the average is taken is the method's
`loss_norm` (`reduce_tokens`):
* "token": the sum over every scored token of a normalisation unit (`norm_rows` consecutive completions,
  the reference's per-device micro-batch; default one group of G), divided by that unit's number of
  scored tokens, then the mean over units - `(per_token_loss * mask).sum() / mask.sum()` per micro-batch
  in d1 (diffu_grpo_trainer.py), MaskGRPO (grpo/mask_grpo_trainer.py) and DiffuCoder (coupled_grpo.py);
  longer completions weigh more;
* "sequence": the mean over each completion's tokens, then over completions (the harness's loss before
  the `paper` recipe; kept by the `equal` recipe so that its results stay reproducible).
logp, old and ref are estimated on the *same* masked views.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from trainers.estimators import MaskedView, combine_views


@dataclass
class MethodConfig:
    """Fields every method has; each method file subclasses it with its paper's defaults and reasons."""

    mu: int = 12  # inner gradient updates per rollout batch (GRPO's mu), each on a fresh masked view
    epsilon: float = 0.2  # clip range of the importance ratio (PPO/GRPO default)
    beta: float = 0.04  # weight of the k3 KL to the reference policy; 0 = no reference model
    loss_norm: str = "token"  # token | sequence: how the per-token loss is averaged (module docstring)
    norm_rows: int = 0  # completions per "token" normalisation unit (the reference's micro-batch); 0 = G
    # TR-DPO reference refresh (TRL's SyncRefModelCallback, `sync_ref_model: True`, `ref_model_sync_steps`):
    # every `ref_sync_every` optimizer updates, ref <- alpha * policy + (1 - alpha) * ref; 0 = frozen reference
    ref_sync_every: int = 0
    ref_sync_alpha: float = 0.6  # TRL GRPOConfig's ref_model_mixup_alpha default (no config above sets it)
    LOSS_NORMS: ClassVar[tuple[str, ...]] = ("token", "sequence")  # a method with its own loss lists its own

    def __post_init__(self):
        if self.loss_norm not in self.LOSS_NORMS:
            raise ValueError(f"loss_norm={self.loss_norm!r}; choose {' or '.join(self.LOSS_NORMS)}")
        if int(self.norm_rows) < 0 or int(self.ref_sync_every) < 0:
            raise ValueError("norm_rows and ref_sync_every must be >= 0")
        if not 0.0 < self.ref_sync_alpha <= 1.0:
            raise ValueError(f"ref_sync_alpha={self.ref_sync_alpha} must be in (0, 1]")
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
    # the whole rollout batch, for losses whose normaliser spans more rows than a micro-batch holds:
    # all_views are this iteration's views over all B_all rows of the step - every process's, in process
    # order (the loop gathers their score, weight and region; their inputs may be empty) - and rows the
    # micro-batch's slice of them
    all_views: list[MaskedView] | None = None  # None: the micro-batch is the whole batch
    rows: slice | None = None
    group_size: int = 0  # G (0: unknown, then one unit is the whole batch)


@dataclass
class LossOutput:
    per_sequence: torch.Tensor  # (B,) loss share of each completion; the loop sums them and divides by B_all
    scored: torch.Tensor  # (B, L) bool: tokens the loss is taken over
    ratio: torch.Tensor | None = None  # (B, L) detached importance ratio (None for ratio-free losses)
    kl: torch.Tensor | None = None  # (B, L) detached k3 KL (None when beta == 0)
    clipped: torch.Tensor | None = None  # (B, L) bool: clip active


def batch_rows(inp: LossInputs, b: int) -> tuple[int, int]:
    """(B_all, offset): rows of the whole rollout batch and where this micro-batch's b rows start."""
    if inp.all_views is None:
        return b, 0
    return inp.all_views[0].score.shape[0], (inp.rows.start or 0) if inp.rows is not None else 0


def unit_sizes(scored_all: torch.Tensor, rows_per_unit: int) -> tuple[torch.Tensor, int]:
    """Scored tokens of each row's normalisation unit (B_all,) and the number of units.

    scored_all (B_all, L) bool; units are consecutive blocks of rows_per_unit rows (the last may be short)."""
    B = scored_all.shape[0]
    k = max(1, min(rows_per_unit, B))
    unit = torch.arange(B, device=scored_all.device) // k  # (B_all,)
    n_units = int(unit[-1]) + 1 if B else 0
    per_unit = torch.zeros(n_units, device=scored_all.device).index_add_(0, unit, scored_all.sum(1).float())
    return per_unit[unit], n_units


def reduce_tokens(per_token: torch.Tensor, scored: torch.Tensor, inp: LossInputs, cfg: MethodConfig) -> torch.Tensor:
    """(b, L) per-token loss -> (b,) per-completion shares whose sum / B_all is the method's average.

    "sequence": each completion's mean over its scored tokens. "token": each unit's token sum over its
    token count, averaged over units, i.e. share_b = (B_all / units) * sum_t loss_bt / n_unit(b)."""
    if cfg.loss_norm == "sequence":
        return masked_row_mean(per_token, scored)
    b = per_token.shape[0]
    B_all, off = batch_rows(inp, b)
    if inp.all_views is None:
        scored_all = scored
    else:
        scored_all = torch.stack([v.score for v in inp.all_views]).any(0)  # (B_all, L) union of the views
    k = cfg.norm_rows or inp.group_size or B_all
    n_unit, n_units = unit_sizes(scored_all.to(per_token.device), k)
    tok_sum = torch.where(scored, per_token, torch.zeros_like(per_token)).sum(1)  # (b,)
    return tok_sum / n_unit[off:off + b].clamp(min=1.0) * (B_all / n_units)


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
    return LossOutput(reduce_tokens(per_token, scored, inp, cfg), scored, ratio.detach(),
                      None if kl is None else kl.detach(), clipped)
