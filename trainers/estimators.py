"""Masking schemes: which tokens are hidden when the log-probability of a completion token is estimated.

A masked diffusion model has no tractable log pi(o|q); every method estimates it from one or more
*views* of the rollout: a copy of (prompt, completion) with some positions replaced by the mask id, on
which the model predicts the hidden completion tokens. A view says which completion tokens it scores
and with what weight. `combine_views` turns the per-view log-probs into one estimate per token.

The loop calls a method's `views(j, batch, cfg, generator)` once per inner iteration j, with one
generator per (seed, step, j): the current, old and reference policies all see the *same* views
("managed randomness", MaskGRPO section 3.2).

Rank-count invariance: that generator is the same on every process, and it only draws what belongs to
the whole step (coupled-grpo's t) and the base of the per-row streams (`RowStreams`). Every random draw
that belongs to a row comes from that row's own stream, seeded by (base, the row's identity in the step's
global batch: `RolloutBatch.row_ids`), so a row gets the same masks whether the step's prompts are split
over 1 or N processes and wherever it sits in its process's batch.

Every function here is pure: tensors and a `torch.Generator` in, tensors out; random draws happen on
the CPU generator and are then moved to the batch's device, so a seed gives the same masks on any device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from harness.seeds import derive_seed


@dataclass
class RolloutBatch:
    """The B = N*G completions of one rollout batch (this process's share), row b = prompt b // G."""

    prompt_ids: torch.Tensor  # (B, P) long, left-padded
    prompt_mask: torch.Tensor  # (B, P) bool, False on padding
    completion_ids: torch.Tensor  # (B, L) long
    valid: torch.Tensor  # (B, L) bool: tokens up to and including the first EOS (all of them for images)
    commit_step: torch.Tensor  # (B, L) long: decoder step that committed each token (TraceRL)
    mask_id: int
    kind: str = "text"  # the task's kind: text | code | image
    block_length: int = 0  # semi-autoregressive block of the rollout decoder; 0 = the whole completion
    seed: int = 0  # randomness shared by all inner iterations of this batch (unigrpo's start ratios)
    # (B,) long: each row's identity in the step's global batch (drawn-prompt position x G + sample), the
    # key of its random streams; None = 0..B-1 (the batch is the whole step, one process)
    row_ids: torch.Tensor | None = None
    # max of an int over every process's batch of this step (for batch-level statistics of views, e.g.
    # tracerl's number of step groups); None = this batch is the whole step
    all_reduce_max: Callable[[int], int] | None = None

    @property
    def B(self) -> int:
        return self.completion_ids.shape[0]

    @property
    def P(self) -> int:
        return self.prompt_ids.shape[1]

    @property
    def L(self) -> int:
        return self.completion_ids.shape[1]

    @property
    def device(self) -> torch.device:
        return self.completion_ids.device

    def generator(self, *tag: object) -> torch.Generator:
        """A CPU generator for randomness that must be the same in every inner iteration."""
        return torch.Generator().manual_seed(derive_seed(self.seed, *tag))

    def global_rows(self) -> list[int]:
        """Each row's identity in the step's global batch (`row_ids`, or 0..B-1)."""
        return list(range(self.B)) if self.row_ids is None else [int(r) for r in self.row_ids.tolist()]

    def global_max(self, value: int) -> int:
        """`value`'s maximum over every process's batch of this step (the value itself on one process)."""
        return int(value) if self.all_reduce_max is None else int(self.all_reduce_max(int(value)))


class RowStreams:
    """One CPU random stream per row, seeded by (base, the row's global identity `batch.global_rows()`).

    A row's draws depend on the base and on that row alone - not on the process that holds it, its position
    in its batch, or the batch's size or prompt padding - so masks built from them are the same for any
    split of the step's prompts over processes. Every row makes the same sequence of calls (a row's draws
    never depend on other rows), so stream position k of a row always means the same draw.
    """

    def __init__(self, batch: RolloutBatch, base: int):
        self.gens = [torch.Generator().manual_seed(derive_seed(base, "row", r)) for r in batch.global_rows()]

    @classmethod
    def draw(cls, batch: RolloutBatch, gen: torch.Generator) -> RowStreams:
        """Streams whose base is drawn from `gen` (the iteration's generator, the same on every process)."""
        base = int(torch.randint(0, 2 ** 62, (), generator=gen))
        return cls(batch, base)

    def rand(self, *shape: int) -> torch.Tensor:
        """(B, *shape) uniforms on [0, 1): row b's from row b's stream."""
        if not self.gens:
            return torch.empty(0, *shape)
        return torch.stack([torch.rand(shape, generator=g) for g in self.gens])

    def randperm(self, n: int) -> torch.Tensor:
        """(B, n) long: a random permutation of 0..n-1 per row."""
        if not self.gens:
            return torch.empty(0, n, dtype=torch.long)
        return torch.stack([torch.randperm(n, generator=g) for g in self.gens])

    def rand_prompt(self, prompt_mask: torch.Tensor) -> torch.Tensor:
        """(B, P) uniforms for the prompt: a row's k-th real token (prompt_mask True, left to right) gets the
        k-th draw of its stream, so the draw does not depend on the padded width P (each process pads to its
        own longest prompt); padding gets 1.0 (never below a probability)."""
        mask = prompt_mask.cpu()  # (B, P) bool
        out = torch.ones(mask.shape)
        for b, g in enumerate(self.gens):
            out[b, mask[b]] = torch.rand(int(mask[b].sum()), generator=g)
        return out


@dataclass
class MaskedView:
    """One masked copy of the rollout batch and the completion tokens it scores."""

    input_ids: torch.Tensor  # (B, P+L) long: hidden positions hold the mask id
    attention_mask: torch.Tensor  # (B, P+L) bool
    score: torch.Tensor  # (B, L) bool: completion tokens whose log-prob this view estimates
    weight: torch.Tensor  # (B, L) float: weight of each scored log-prob (1, or 1/t for ELBO-style terms)
    region: torch.Tensor | None = None  # (B, L) bool: tokens the view covers, scored or not (spg's block)

    def rows(self, sl: slice) -> MaskedView:
        return MaskedView(self.input_ids[sl], self.attention_mask[sl], self.score[sl], self.weight[sl],
                          None if self.region is None else self.region[sl])


def make_view(batch: RolloutBatch, hide_completion: torch.Tensor, score: torch.Tensor,
              hide_prompt: torch.Tensor | None = None, weight: torch.Tensor | float | None = None,
              region: torch.Tensor | None = None, score_padding: bool = False) -> MaskedView:
    """Build a view. Only real prompt tokens can be hidden; only valid completion tokens are scored, or,
    with score_padding, every token the decoder filled (the EOS padding after the first EOS included)."""
    dev = batch.device
    hide_completion = hide_completion.to(dev)  # (B, L) bool
    hp = torch.zeros_like(batch.prompt_mask) if hide_prompt is None else hide_prompt.to(dev) & batch.prompt_mask
    ids = torch.cat([batch.prompt_ids, batch.completion_ids], dim=1).clone()  # (B, P+L)
    ids[torch.cat([hp, hide_completion], dim=1)] = batch.mask_id
    attn = torch.cat([batch.prompt_mask, torch.ones_like(batch.valid)], dim=1)  # (B, P+L)
    score = score.to(dev) & (batch.completion_ids != batch.mask_id if score_padding else batch.valid)
    if weight is None:
        weight = 1.0
    if torch.is_tensor(weight):
        w = weight.to(dev, torch.float32).expand(score.shape)
    else:
        w = torch.full(score.shape, float(weight), device=dev)
    reg = None if region is None else region.to(dev) & batch.valid
    return MaskedView(ids, attn, score, w, reg)


def combine_views(logps: list[torch.Tensor], views: list[MaskedView]) -> tuple[torch.Tensor, torch.Tensor]:
    """One log-prob estimate per token: the weighted mean over the views that score it.

    logps[v] (B, L) is the model's log-prob of each completion token in view v. Returns the estimate
    (B, L) (0 where no view scores the token) and the scored mask (B, L) bool. With a single view of
    weight 1 this is that view's log-prob; coupled-grpo's three views give (lp_full + lp_partial/t)/2.
    """
    num = sum(torch.where(v.score, v.weight * lp, torch.zeros_like(lp)) for lp, v in zip(logps, views))
    den = sum(v.score.float() for v in views)  # (B, L)
    return num / den.clamp(min=1.0), den > 0


def completion_validity(completion_ids: torch.Tensor, eos_id: int | None, mask_id: int) -> torch.Tensor:
    """(B, L) bool: positions up to and including the first EOS that the decoder filled (d1's mask)."""
    valid = completion_ids != mask_id  # (B, L)
    if eos_id is None:
        return valid
    is_eos = completion_ids == eos_id
    after = (is_eos.long().cumsum(1) - is_eos.long()) > 0  # strictly after the first EOS
    return valid & ~after


# ---- schedules and masks ---------------------------------------------------------------------------------
def bernoulli(probs: torch.Tensor, rows: RowStreams) -> torch.Tensor:
    """(B, L) independent draws, True with probability probs (B, L); row b's from row b's stream."""
    return rows.rand(probs.shape[1]) < probs.cpu()


def one_step_view(batch: RolloutBatch, p_mask_prompt: float, gen: torch.Generator):
    """d1's estimator: completion fully hidden, prompt tokens hidden at rate p_mask_prompt (diffu-grpo and wd1).

    d1 draws the prompt mask per token of every row (`forward_process`: `torch.rand((b, l)) < p_mask_prompt`);
    here each row's draws come from its own stream (`RowStreams`)."""
    hide_prompt = RowStreams.draw(batch, gen).rand_prompt(batch.prompt_mask) < p_mask_prompt  # (B, P)
    everything = torch.ones_like(batch.valid)  # (B, L)
    return make_view(batch, hide_completion=everything, score=everything, hide_prompt=hide_prompt)
