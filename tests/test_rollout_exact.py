"""Exact-value tests of trainers/rollout.py (group selection, per-token log-probs): expected values worked by hand."""

import math
from types import SimpleNamespace

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


# ------------------------------------------------------------------------------------------------------
# collect_rollouts: what the decoder is given (prompts, attention, seeds, the image codebook range), which
# positions count as the completion, the rewards and their terms, row identities, and when dynamic
# sampling stops - with a scripted model, decoder and reward, so every expected value is read off the script


class _ScriptModel:
    """Prompts are strings of digits, left-padded with id 1; attention masks come back as 0/1 longs, as a
    tokenizer gives them. EOS is id 2, the mask id 0, the image codebook ids 5..8."""

    device, mask_id, eos_id, image_token_range = torch.device("cpu"), 0, 2, (5, 9)

    def encode_prompts(self, prompts):
        rows = [[int(c) for c in p] for p in prompts]
        P = max(map(len, rows))
        return (torch.tensor([[1] * (P - len(r)) + r for r in rows]),
                torch.tensor([[0] * (P - len(r)) + [1] * len(r) for r in rows]))

    def decode_completion(self, row):
        return "".join(str(t) for t in row.tolist())


class _ScriptDecoder:
    """The k-th row decoded (over all calls) gets completions[k]; every call is recorded; nfe 4 a call."""

    def __init__(self, completions):
        self.completions, self.calls, self.used = completions, [], 0

    def __call__(self, model, ids, attn, decode, *, seeds, token_range):
        self.calls.append({"ids": ids.tolist(), "attn": attn, "seeds": list(seeds), "token_range": token_range})
        n = ids.shape[0]
        out = torch.tensor(self.completions[self.used:self.used + n])
        self.used += n
        return SimpleNamespace(completion_ids=out, commit_step=torch.zeros_like(out), nfe=4)


def _first_digit_task(kind="text"):
    from fakes import ToyTask

    from tasks.rewards import per_item

    class FirstDigit(ToyTask):
        """Reward = the completion's first digit / 10."""
        name = "first-digit"
        default_rewards = {"first": 1.0}

        def reward_functions(self):
            return {"first": per_item("first", lambda ex, c, k: int(c[0]) / 10, "first digit / 10")}

    task = FirstDigit()
    task.kind = kind
    return task


def _examples(*prompts):
    from tasks.base import Example

    return [Example(id=i, prompt=p, reference="3") for i, p in enumerate(prompts)]


def test_collect_rollouts_hands_the_decoder_bool_attention_and_per_row_seeds_and_reads_back_valid_tokens():
    from harness.sampling import DecodeConfig
    from harness.seeds import derive_seed
    from trainers.rollout import collect_rollouts

    dec = _ScriptDecoder([[3, 2, 4, 4], [4, 3, 2, 6], [6, 6, 6, 6], [2, 3, 3, 3]])
    decode = DecodeConfig("low_confidence", gen_length=4, block_length=2, steps=2)
    ro = collect_rollouts(_ScriptModel(), _first_digit_task(), _examples("34", "5", "7"), [0, 1], 2, decode,
                          seed=9, step=4, generate_fn=dec, batch_seed=77, first_position=3)
    (call,) = dec.calls
    assert call["ids"] == [[3, 4], [3, 4], [1, 5], [1, 5]]  # prompt-major, G = 2 copies, left padding id 1
    assert call["attn"].dtype == torch.bool and call["attn"].tolist() == [[True, True]] * 2 + [[False, True]] * 2
    assert call["seeds"] == [derive_seed(9, "rollout", 4, i, g) for i in (0, 1) for g in (0, 1)]
    assert call["token_range"] is None  # a text task samples from the whole vocabulary
    b = ro.batch
    # up to and including the first EOS (id 2): [3 2 | 4 4], [4 3 2 | 6], [6 6 6 6], [2 | 3 3 3]
    assert b.valid.tolist() == [[True, True, False, False], [True, True, True, False], [True] * 4,
                                [True, False, False, False]]
    assert ro.rewards.flatten().tolist() == pytest.approx([0.3, 0.4, 0.6, 0.2])
    assert ro.terms["first"].flatten().tolist() == pytest.approx([0.3, 0.4, 0.6, 0.2])
    assert ro.completions == ["3244", "4326", "6666", "2333"] and ro.nfe == 4
    # row identities: (first_position + k) * G + g = 6..9; the batch's decoder facts
    assert b.row_ids.tolist() == [6, 7, 8, 9]
    assert (b.kind, b.block_length, b.seed, b.mask_id) == ("text", 2, 77, 0)
    again = collect_rollouts(_ScriptModel(), _first_digit_task(), _examples("34"), [0], 2, decode, seed=9, step=4,
                             generate_fn=_ScriptDecoder([[3, 3, 3, 3]] * 2), batch_seed=77)
    assert again.batch.row_ids.tolist() == [0, 1]  # first_position defaults to 0


def test_collect_rollouts_of_an_image_task_samples_the_codebook_and_scores_every_cell():
    from harness.sampling import DecodeConfig
    from trainers.rollout import collect_rollouts

    dec = _ScriptDecoder([[5, 2, 6, 7], [8, 8, 2, 5]])  # an id equal to EOS ends nothing in an image
    decode = DecodeConfig("emerge", gen_length=4, block_length=4, steps=2)
    ro = collect_rollouts(_ScriptModel(), _first_digit_task("image"), _examples("34"), [0], 2, decode,
                          seed=0, step=1, generate_fn=dec, batch_seed=1)
    assert dec.calls[0]["token_range"] == (5, 9)
    assert ro.batch.valid.dtype == torch.bool and ro.batch.valid.all()
    assert (ro.batch.kind, ro.batch.block_length) == ("image", 0)  # no blocks outside low_confidence decoding


def test_collect_rollouts_dynamic_sampling_counts_mixed_groups_over_all_rounds():
    from harness.sampling import DecodeConfig
    from trainers.rollout import collect_rollouts

    # rounds of 1 prompt (G = 2) until 2 mixed groups: prompt 0 mixed (3 vs 4), 1 equal (5, 5), 2 mixed (6 vs 7)
    # -> stops after round 3 with 2 mixed; prompt 3 is never decoded. Counting only the last round's mixed
    # groups would go on to round 4; starting the count at 1 would stop after round 1
    dec = _ScriptDecoder([[3, 3], [4, 4], [5, 5], [5, 5], [6, 6], [7, 7], [8, 8], [9, 9]])
    decode = DecodeConfig("low_confidence", gen_length=2, block_length=2, steps=2)
    ro = collect_rollouts(_ScriptModel(), _first_digit_task(), _examples("1", "2", "3", "4"), [0, 1, 2, 3], 2,
                          decode, seed=0, step=1, generate_fn=dec, batch_seed=1, round_size=1, enough=2)
    assert len(dec.calls) == 3 and ro.batch.B == 6 and ro.nfe == 3 * 4
    assert ro.rewards.flatten().tolist() == pytest.approx([0.3, 0.4, 0.5, 0.5, 0.6, 0.7])


def test_collect_rollouts_in_chunks_decodes_every_row_once_and_counts_one_round_of_nfe():
    from harness.sampling import DecodeConfig
    from trainers.rollout import collect_rollouts

    dec = _ScriptDecoder([[3, 3], [4, 4], [5, 5], [6, 6]])
    decode = DecodeConfig("low_confidence", gen_length=2, block_length=2, steps=2)
    ro = collect_rollouts(_ScriptModel(), _first_digit_task(), _examples("1", "2"), [0, 1], 2, decode, seed=0,
                          step=1, generate_fn=dec, batch_seed=1, chunk=3)
    assert [len(c["seeds"]) for c in dec.calls] == [3, 1] and ro.nfe == 4  # chunks share the round's steps
    assert ro.completions == ["33", "44", "55", "66"]


def test_prompt_indices_needs_one_example_and_one_is_enough():
    from trainers.rollout import prompt_indices

    assert prompt_indices(1, 3, step=2, seed=0) == [0, 0, 0]
    with pytest.raises(ValueError, match="^RL training needs at least one training example$"):
        prompt_indices(0, 3, step=1, seed=0)


def test_prompt_indices_visit_every_example_once_an_epoch_in_a_new_order_each_epoch():
    from trainers.rollout import prompt_indices

    first, second = prompt_indices(8, 8, step=1, seed=0), prompt_indices(8, 8, step=2, seed=0)
    assert sorted(first) == sorted(second) == list(range(8))
    assert first != second  # one fixed order for every epoch would repeat with probability 1 / 8!
    # steps of 3 run across the epoch boundary: steps 1-3 draw epoch 0's order, then epoch 1's
    assert prompt_indices(8, 3, step=1, seed=0) + prompt_indices(8, 3, step=2, seed=0) + \
        prompt_indices(8, 3, step=3, seed=0)[:2] == first
    assert prompt_indices(8, 3, step=3, seed=0)[2:] == second[:1]
