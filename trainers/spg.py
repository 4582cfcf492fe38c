"""SPG (Sandwiched Policy Gradient for Masked Diffusion Language Models, Wang et al. 2025,
arXiv 2510.09541; code github.com/facebookresearch/SPG): lower bound up for good, upper bound down for bad.

Each inner iteration draws m block-wise views per completion: a random block b of the rollout decoder's
block size (among the blocks that hold text) is the "current" block, hidden at a rate t ~ U(0, 1);
earlier blocks and the prompt stay visible except for a light perturbation (each token hidden with
probability 0.15); later blocks are fully hidden. Per token i of the current block, with
w = (block tokens)/(hidden block tokens):

    ELBO_i = mean over views covering i of  w * 1[i hidden] * log p(x_i | view)
    EUBO_i = (1/beta_u) * log( mean over views covering i of  w * 1[i hidden] * p(x_i | view)^beta_u )

each averaged over the covered tokens of the completion. With A = r - mean, the per-completion loss is
-A * ELBO when A >= 0 and -A * (omega * EUBO + (1 - omega) * ELBO) when A < 0 ("SPG w/ Mixture",
omega = 0.5, beta_u = 1.5). It is a plain policy gradient: no ratio, no old policy, no clip.

That is the `equal` recipe's estimator (`estimator = "block"`). The reference's (`estimator =
"hidden"`, the default and the `paper` recipe's; spg/spg_trainer.py `forward_process` with
`forward_type block_random` and `_get_per_seq_logps`, run scripts spg_mix/*.sbatch):
* per view a random block of the completion (a random permutation of the blocks, taken modulo the
  blocks that hold text, so the m views of a row get different blocks when it has enough of them);
  exactly k of its m text tokens hidden, k uniform on {1, ..., m} (`torch.randint(max(int(m*min_t), 1),
  min(int(m*max_t), m) + 1)` with min_t 0, max_t 1); later blocks and everything after the first EOS
  hidden; the prompt and the earlier blocks perturbed at 0.15 (`use_mask_prompt`, `p_mask_prompt`);
* every hidden valid token is scored, not only the current block's (`perturb_mask * completion_mask`);
* ELBO of a view: the mean log-prob over its scored tokens (= (1/(t L)) sum with t the hidden fraction of
  the whole completion); the bound is the mean over the m views;
* EUBO: per token, the mean over the m views of p^beta_u * 1[hidden] / t_view, t_view = hidden fraction of
  the whole completion; log; the mean over tokens hidden in some view; divided by beta_u;
* the positive bound for A > 0, the negative one for A <= 0 (`reward_mask = advantages > 0`);
* loss: sum over the micro-batch of -A * bound * length / sum of lengths (valid tokens), micro-batch = the
  6 completions of a group (`per_device_train_batch_size 6`); `--num_t 2` views, `NUM_ITER=4`.

Departures from the published method in the `equal` recipe's estimator (kept simple on purpose):
* The bound of a completion is the mean over its covered tokens (a per-token normalisation); SPG's code
  additionally weights completions by their length in the batch average.
* The hidden-block weight is the observed fraction hidden, t_emp = hidden/block (SPG divides by the
  empirical t too); a row whose block draws no hidden token contributes nothing in that view.
* EUBO's constant C(T) is dropped (it has no gradient); the log-mean-exp is over the m views only.
* beta (KL) defaults to 0 as in its scripts; a beta > 0 adds the shared k3 KL to the frozen initial model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from trainers.estimators import RolloutBatch, RowStreams, combine_views, make_view
from trainers.grpo import (
    LossInputs,
    LossOutput,
    MethodConfig,
    batch_rows,
    centered_advantages,
    kl_term,
    masked_row_mean,
    unit_sizes,
)
from trainers.methods import Method, register


@dataclass
class SPGConfig(MethodConfig):
    mu: int = 4  # NUM_ITER=4 in its spg_mix run scripts
    epsilon: float = 0.5  # unused: SPG has no ratio to clip (kept for a uniform config record)
    beta: float = 0.0  # `--beta 0.0`: its trainer raises on a KL term
    num_mc: int = 2  # m, Monte Carlo views per update (`--num_t 2` in spg_mix/*.sbatch)
    eubo_beta: float = 1.5  # beta_u >= 1 of the Renyi upper bound (`--eubo_beta 1.5`)
    mix_weight: float = 0.5  # omega of the mixture for negative advantages (`--mix_weight 0.5`)
    bound: str = "mix"  # negative-advantage bound: mix | eubo | elbo (`--logp_estimation mix`)
    p_mask_clean: float = 0.15  # perturbation of the prompt and the clean earlier blocks (paper 3.3)
    estimator: str = "hidden"  # hidden: the reference's (every hidden token) | block: the equal recipe's
    loss_norm: str = "length"  # length: the reference's length-weighted micro-batch mean | sequence
    norm_rows: int = 6  # per_device_train_batch_size 6 in its run scripts
    LOSS_NORMS = ("length", "sequence")

    def __post_init__(self):
        super().__post_init__()
        if self.estimator not in ("hidden", "block"):
            raise ValueError(f"estimator={self.estimator!r}; choose hidden or block")
        if self.bound not in ("mix", "eubo", "elbo"):
            raise ValueError(f"bound={self.bound!r}; choose mix, eubo or elbo")
        if int(self.num_mc) < 1 or self.eubo_beta < 1.0 or not 0.0 <= self.mix_weight <= 1.0:
            raise ValueError("need num_mc >= 1, eubo_beta >= 1 and 0 <= mix_weight <= 1")


def advantages(rewards: torch.Tensor, cfg: SPGConfig) -> torch.Tensor:
    return centered_advantages(rewards)


def block_view(batch: RolloutBatch, p_mask_clean: float, gen: torch.Generator):
    """One block-wise view: a random current block per row, hidden at a random rate t ~ U(0, 1)."""
    B, L = batch.B, batch.L
    blk = block_positions(L, batch.block_length)  # (L,)
    valid = batch.valid.cpu()  # (B, L)
    last = torch.where(valid, blk[None, :], 0).max(1).values  # (B,) last block holding text
    rows = RowStreams.draw(batch, gen)  # every draw below from each row's own stream
    current = (rows.rand(1)[:, 0] * (last + 1)).long()[:, None]  # (B, 1) uniform over those blocks
    t = rows.rand(1)  # (B, 1)
    u = rows.rand(L)  # (B, L)
    region = blk[None, :] == current  # (B, L) the current block
    hide = (blk[None, :] > current) | (region & (u < t)) | ((blk[None, :] < current) & (u < p_mask_clean))
    hide_prompt = rows.rand_prompt(batch.prompt_mask) < p_mask_clean  # (B, P)
    score = region & hide
    n_region = (region & valid).sum(1, keepdim=True).float()  # (B, 1)
    n_hidden = (score & valid).sum(1, keepdim=True).float()
    w = n_region / n_hidden.clamp(min=1.0)  # (B, 1): 1 / empirical t
    return make_view(batch, hide_completion=hide, score=score, hide_prompt=hide_prompt,
                     weight=w.expand(B, L), region=region)


def views(j: int, batch: RolloutBatch, cfg: SPGConfig, gen: torch.Generator):
    if cfg.estimator == "hidden":
        return hidden_views(batch, cfg.num_mc, cfg.p_mask_clean, gen)
    return [block_view(batch, cfg.p_mask_clean, gen) for _ in range(cfg.num_mc)]


def hidden_views(batch: RolloutBatch, m: int, p_mask_clean: float, gen: torch.Generator):
    """The reference's m block-wise views (module docstring); each scores every hidden valid token and
    carries weight 1 / t, t = hidden valid tokens / valid tokens of the row in that view."""
    B, L = batch.B, batch.L
    blk = block_positions(L, batch.block_length)  # (L,)
    size = int((blk == 0).sum())  # block length
    n_blocks = int(blk[-1]) + 1
    valid = batch.valid.cpu()  # (B, L)
    length = valid.sum(1)  # (B,)
    text_blocks = ((length - 1).clamp(min=0) // size + 1)  # (B,) blocks holding text
    rows = RowStreams.draw(batch, gen)  # every draw below from each row's own stream
    current = rows.randperm(n_blocks) % text_blocks[:, None]  # (B, n_blocks)
    out = []
    for v in range(m):
        cur = current[:, v % n_blocks][:, None]  # (B, 1)
        start = cur * size
        m_text = (length[:, None] - start).clamp(min=0, max=size)  # (B, 1) text tokens of the block
        k = (rows.rand(1) * m_text).long() + 1  # uniform on {1, ..., m_text}
        k = torch.minimum(k, m_text)
        # a random k of the block's first m_text positions: rank positions by a uniform key
        pos = torch.arange(L)[None, :] - start  # (B, L) offset inside the current block
        in_text = (pos >= 0) & (pos < m_text)
        key = torch.where(in_text, rows.rand(L), torch.full((B, L), 2.0))
        rank = key.argsort(1).argsort(1)  # (B, L) rank of each key within its row
        chosen = in_text & (rank < k)
        later = blk[None, :] > cur
        earlier = blk[None, :] < cur
        perturb = rows.rand(L) < p_mask_clean
        hide = chosen | later | (earlier & perturb) | ~valid
        hide_prompt = rows.rand_prompt(batch.prompt_mask) < p_mask_clean  # (B, P)
        score = hide & valid
        t = score.sum(1, keepdim=True).float() / length[:, None].clamp(min=1).float()  # (B, 1)
        w = 1.0 / t.clamp(min=1e-8)
        out.append(make_view(batch, hide_completion=hide, score=score, hide_prompt=hide_prompt,
                             weight=w.expand(B, L), region=valid))
    return out


def hidden_bounds(logps: list[torch.Tensor], views_: list, eubo_beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's per-completion (ELBO, EUBO), each (B,), from m views of `hidden_views`."""
    lp = torch.stack(logps)  # (m, B, L)
    s = torch.stack([v.score for v in views_])  # (m, B, L) bool
    inv_t = torch.stack([v.weight for v in views_])  # (m, B, L): 1 / t of the view's row
    zero = torch.zeros_like(lp)
    elbo_view = torch.where(s, lp, zero).sum(2) / s.sum(2).clamp(min=1)  # (m, B) mean over hidden tokens
    elbo = elbo_view.mean(0)  # (B,)
    # log of the mean over ALL m views of p^beta * 1[hidden] / t (views where the token is visible add 0)
    m = lp.shape[0]
    log_terms = torch.where(s, eubo_beta * lp + torch.log(inv_t), torch.full_like(lp, -math.inf))
    has = s.any(0)  # (B, L)
    first = torch.zeros_like(s)
    first[0] = True
    log_terms = torch.where(first & ~has[None], zero, log_terms)  # finite dummy where never hidden
    lme = torch.logsumexp(log_terms, dim=0) - math.log(m)  # (B, L)
    eubo = torch.where(has, lme, torch.zeros_like(lme)).sum(1) / has.sum(1).clamp(min=1) / eubo_beta
    return elbo, eubo


def bounds(logps: list[torch.Tensor], views_: list, eubo_beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-completion (ELBO, EUBO) estimates, each (B,), from m views (see the module docstring)."""
    lp = torch.stack(logps)  # (m, B, L)
    s = torch.stack([v.score for v in views_])  # (m, B, L) bool
    w = torch.stack([v.weight for v in views_])  # (m, B, L)
    region = torch.stack([v.region for v in views_])  # (m, B, L) bool
    cover = region.sum(0).float()  # (B, L): views in which the token's block was current
    covered = cover > 0
    elbo_tok = torch.where(s, w * lp, torch.zeros_like(lp)).sum(0) / cover.clamp(min=1.0)  # (B, L)
    has = s.any(0)  # (B, L): hidden in at least one covering view
    log_terms = torch.where(s, torch.log(w) + eubo_beta * lp, torch.full_like(lp, -math.inf))  # (m, B, L)
    # tokens never hidden get a finite dummy so that logsumexp (and its gradient) stays finite
    first = torch.zeros_like(s)
    first[0] = True
    log_terms = torch.where(first & ~has[None], torch.zeros_like(lp), log_terms)
    lme = torch.logsumexp(log_terms, dim=0) - torch.log(cover.clamp(min=1.0))  # (B, L) log-mean-exp
    eubo_tok = torch.where(has, lme / eubo_beta, torch.zeros_like(lme))
    return masked_row_mean(elbo_tok, covered), masked_row_mean(eubo_tok, has)


def loss(inp: LossInputs, cfg: SPGConfig) -> LossOutput:
    if cfg.estimator == "hidden":
        elbo, eubo = hidden_bounds(inp.logp, inp.views, cfg.eubo_beta)  # (B,), (B,)
    else:
        elbo, eubo = bounds(inp.logp, inp.views, cfg.eubo_beta)
    mix = cfg.mix_weight * eubo + (1.0 - cfg.mix_weight) * elbo
    negative = {"mix": mix, "eubo": eubo, "elbo": elbo}[cfg.bound]
    A = inp.advantages
    positive = A > 0 if cfg.estimator == "hidden" else A >= 0  # the reference's reward_mask: A > 0
    per_seq = -A * torch.where(positive, elbo, negative)
    if cfg.loss_norm == "length":  # sum_b -A_b bound_b len_b / sum of lengths per unit, mean over units
        valid = inp.views[0].region if inp.views and inp.views[0].region is not None else None
        lengths = valid.sum(1).float() if valid is not None else torch.ones_like(per_seq)
        per_seq = per_seq * lengths
        b = per_seq.shape[0]
        B_all, off = batch_rows(inp, b)
        all_len = torch.stack([v.region for v in inp.all_views]).any(0) if inp.all_views is not None and \
            inp.all_views[0].region is not None else (valid if valid is not None else torch.ones(b, 1, dtype=torch.bool))
        n_unit, n_units = unit_sizes(all_len, cfg.norm_rows or inp.group_size or B_all)
        per_seq = per_seq / n_unit[off:off + b].to(per_seq.device).clamp(min=1.0) * (B_all / n_units)
    est, scored = combine_views(inp.logp, inp.views)
    kl = kl_term(inp, est, cfg.beta)
    if kl is not None:
        per_seq = per_seq + cfg.beta * masked_row_mean(kl, scored)
    return LossOutput(per_seq, scored, kl=None if kl is None else kl.detach())


def block_positions(L: int, block_length: int) -> torch.Tensor:
    """(L,) long: the block index of each completion position (one block if block_length is 0 or L)."""
    b = block_length if 0 < block_length < L else L
    return torch.arange(L) // b


register(Method("spg", SPGConfig, advantages, views, loss=loss, uses_old_policy=False,
                summary="block-wise masking; ELBO for positive, EUBO/ELBO mixture for negative advantages"))
