"""wd1 (Weighted Policy Optimization for Reasoning in Diffusion Language Models, Tang et al. 2025;
code github.com/xiaohangt/wd1): a weighted-likelihood objective with no ratio and no old policy.

Log-probs come from d1's one-step estimate (completion hidden, prompt hidden at 0.15). With A = r - mean
over the group, each completion's summed log-likelihood is pushed up with weight w+ = softmax(psi A) and
down with weight w- = softmax(-psi A) (softmax over the G completions of its prompt):

    loss = sum_i (w-_i - w+_i) * sum_t log pi(o_i,t | masked view)

as in `RevDiffuGRPOTrainer.compute_loss` (trainer type `wll_d1_neg`). The loop's "advantage" for wd1
is the net weight w+ - w-; a group with equal rewards has w+ = w- and so gives no gradient.

Normalisation (`loss_norm`): "group_sum" (the reference's, `paper` recipe): the sum over the micro-batch
of 6 completions (one group: `per_device_train_batch_size: 6` in wd1/train.yaml), the mean over
micro-batches; "sequence" (the `equal` recipe's): the mean over completions, 1/G of that.

Departures from the published method:
* beta defaults to 0: that trainer has no KL term (its yaml's beta 0.04 is unused by it). A beta > 0
  adds the shared k3 KL to the frozen initial model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainers.estimators import RolloutBatch, combine_views, one_step_view
from trainers.grpo import (
    LossInputs,
    LossOutput,
    MethodConfig,
    batch_rows,
    centered_advantages,
    kl_term,
    masked_row_mean,
)
from trainers.methods import Method, register


@dataclass
class WD1Config(MethodConfig):
    mu: int = 12  # NUM_ITER=12 in wd1's run/wll_NP_*.sh
    epsilon: float = 0.5  # unused: wd1 has no ratio to clip (kept for a uniform config record)
    beta: float = 0.0  # the wll_d1_neg trainer has no KL term
    psi: float = 1.0  # softmax temperature on A; its code uses torch.softmax(advantages), i.e. psi = 1
    p_mask_prompt: float = 0.15  # d1's estimator, p_mask_prompt in wd1/train.yaml
    loss_norm: str = "group_sum"  # group_sum: the reference's | sequence: the equal recipe's
    norm_rows: int = 6  # wd1/train.yaml per_device_train_batch_size: 6 (= num_generations)
    LOSS_NORMS = ("group_sum", "sequence")


def advantages(rewards: torch.Tensor, cfg: WD1Config) -> torch.Tensor:
    """The net weight w+ - w- of each completion (N, G); sums to 0 over each group."""
    a = centered_advantages(rewards)  # (N, G)
    return torch.softmax(cfg.psi * a, dim=1) - torch.softmax(-cfg.psi * a, dim=1)


def views(j: int, batch: RolloutBatch, cfg: WD1Config, gen: torch.Generator):
    return [one_step_view(batch, cfg.p_mask_prompt, gen)]


def loss(inp: LossInputs, cfg: WD1Config) -> LossOutput:
    est, scored = combine_views(inp.logp, inp.views)  # (B, L)
    seq_logp = torch.where(scored, est, torch.zeros_like(est)).sum(dim=1)  # (B,) summed over tokens, as wd1
    per_seq = -inp.advantages * seq_logp
    if cfg.loss_norm == "group_sum":  # the loop divides by B_all: x rows per unit = sum within units
        B_all, _ = batch_rows(inp, per_seq.shape[0])
        per_seq = per_seq * min(cfg.norm_rows or inp.group_size or B_all, B_all)
    kl = kl_term(inp, est, cfg.beta)
    if kl is not None:
        per_seq = per_seq + cfg.beta * masked_row_mean(kl, scored)
    return LossOutput(per_seq, scored, kl=None if kl is None else kl.detach())


register(Method("wd1", WD1Config, advantages, views, loss=loss, uses_old_policy=False,
                summary="weighted likelihood: softmax(A) lifts good, softmax(-A) lowers bad; no ratio"))
