"""Exact-value tests of trainers/rollout.py (group selection, per-token log-probs): expected values worked by hand."""

import math

import pytest
import torch

from trainers.estimators import MaskedView, RolloutBatch
from trainers.rollout import Rollouts, select_groups, token_logprobs

# ------------------------------------------------------------------------------------------------------
# select_groups: the first `keep` mixed groups in drawn order, topped up with all-equal ones; every per-row
# field of the batch follows the kept rows, every batch-wide field is carried over


def _image_rollouts(rewards, row_ids):
    """N groups of G = 2 (row 2i+g = group i, sample g) from an image task with block_length 4; every per-row
    tensor holds its row number so the kept rows can be read off."""
    r = torch.tensor(rewards, dtype=torch.float32)  # (N, G)
    N, G = r.shape
    B = N * G
    rows = torch.arange(B)[:, None]  # (B, 1)
    batch = RolloutBatch(prompt_ids=rows.repeat(1, 2), prompt_mask=torch.ones(B, 2, dtype=torch.bool),
                         completion_ids=rows.repeat(1, 3), valid=torch.ones(B, 3, dtype=torch.bool),
                         commit_step=10 * rows + torch.arange(3), mask_id=99, kind="image", block_length=4,
                         seed=5, row_ids=row_ids)
    return Rollouts(batch, r, {"correct": r.clone()}, [bool(x) for x in r.flatten()], [str(b) for b in range(B)],
                    nfe=7)


def test_select_groups_keep_one_takes_the_first_mixed_group_with_all_its_row_fields():
    # groups: 0 all 1, 1 mixed (0 vs 1), 2 mixed (1 vs 0); keep=1 -> group 1 = rows 2, 3
    # row_ids are 20..25 (this process's rows start at global row 20) -> 22, 23
    ro = _image_rollouts([[1, 1], [0, 1], [1, 0]], row_ids=torch.arange(20, 26))
    one = select_groups(ro, 1)
    b = one.batch
    assert b.completion_ids[:, 0].tolist() == [2, 3]
    assert b.commit_step.tolist() == [[20, 21, 22], [30, 31, 32]]  # 10 * row + position
    assert b.row_ids.tolist() == [22, 23]
    assert b.kind == "image" and b.block_length == 4 and b.mask_id == 99 and b.seed == 5
    assert one.rewards.tolist() == [[0.0, 1.0]] and one.completions == ["2", "3"]


def test_select_groups_topping_up_keeps_drawn_order_and_a_missing_row_ids_stays_missing():
    # groups: 0 all 0, 1 all 1, 2 mixed; keep=2 -> mixed group 2 first, topped up with group 0; drawn order: 0, 2
    ro = _image_rollouts([[0, 0], [1, 1], [0, 1]], row_ids=None)
    two = select_groups(ro, 2)
    assert two.batch.completion_ids[:, 0].tolist() == [0, 1, 4, 5]
    assert two.batch.commit_step[:, 0].tolist() == [0, 10, 40, 50]
    assert two.batch.row_ids is None
    assert two.rewards.tolist() == [[0.0, 0.0], [0.0, 1.0]]
    with pytest.raises(ValueError, match="between 1 and the 3 groups"):
        select_groups(ro, 0)


# ------------------------------------------------------------------------------------------------------
# token_logprobs: log_softmax(logits)[target] at every completion position of the view


class CountModel:
    """Logits (B, S, 4) the same at every position of a row: token 0 gets log(n), the others 0, n = the number
    of attended positions of the row (all S without an attention mask). So p(0) = n/(n+3), p(other) = 1/(n+3)."""

    def logits(self, ids, attention_mask=None):
        B, S = ids.shape
        n = torch.full((B,), float(S)) if attention_mask is None else attention_mask.float().sum(1)  # (B,)
        out = torch.zeros(B, S, 4)
        out[:, :, 0] = n.log()[:, None]
        return out


def _view(ids, attn):
    B, S = ids.shape
    return MaskedView(ids, attn, torch.ones(B, 2, dtype=torch.bool), torch.ones(B, 2))


def test_token_logprobs_use_the_views_attention_mask():
    # P=2, L=2. Row 0: one prompt pad -> n = 3 attended -> p(0) = 3/6, p(1) = 1/6.
    # Row 1: no pad -> n = 4 -> p(2) = 1/7, p(0) = 4/7.
    ids = torch.tensor([[0, 3, 0, 1], [3, 3, 2, 0]])
    attn = torch.tensor([[False, True, True, True], [True, True, True, True]])
    got = token_logprobs(CountModel(), _view(ids, attn), ids[:, 2:])
    want = torch.tensor([[math.log(3 / 6), math.log(1 / 6)], [math.log(1 / 7), math.log(4 / 7)]])
    assert got.dtype == torch.float32
    assert torch.allclose(got, want, atol=1e-6)


class RangeModel:
    """Logits (B, S, 6) the same everywhere: ids 0, 1, 5 (outside the range [2, 5)) get 9, ids 2, 3, 4 get
    log 1, log 2, log 5. Softmax over [2, 5) only: p(2) = 1/8, p(3) = 2/8, p(4) = 5/8."""

    def logits(self, ids, attention_mask=None):
        row = torch.tensor([9.0, 9.0, 0.0, math.log(2), math.log(5), 9.0])
        return row.expand(*ids.shape, 6).clone()


def test_token_logprobs_with_a_token_range_normalise_over_the_range_only():
    # completion ids 2, 3, 4 = the first, a middle and the last id of [2, 5)
    comp = torch.tensor([[2, 3, 4]])
    ids = torch.cat([torch.tensor([[0, 1]]), comp], dim=1)  # (1, P+L = 5)
    view = MaskedView(ids, torch.ones(1, 5, dtype=torch.bool), torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 3))
    got = token_logprobs(RangeModel(), view, comp, token_range=(2, 5))
    want = torch.tensor([[math.log(1 / 8), math.log(2 / 8), math.log(5 / 8)]])
    assert torch.allclose(got, want, atol=1e-6)


def test_token_logprobs_score_an_id_outside_the_range_as_the_nearest_range_id():
    # ids 1 (< lo = 2) and 5 (>= hi = 5) are clamped to the range's ends: scored as id 2 (p = 1/8) and
    # id 4 (p = 5/8), instead of an out-of-bounds index; id 3 in between is scored as itself (2/8)
    comp = torch.tensor([[1, 3, 5]])
    ids = torch.cat([torch.tensor([[0, 1]]), comp], dim=1)
    view = MaskedView(ids, torch.ones(1, 5, dtype=torch.bool), torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 3))
    got = token_logprobs(RangeModel(), view, comp, token_range=(2, 5))
    want = torch.tensor([[math.log(1 / 8), math.log(2 / 8), math.log(5 / 8)]])
    assert torch.allclose(got, want, atol=1e-6)
