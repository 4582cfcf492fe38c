"""The masking schemes of every method, with expected values worked by hand in the comments."""

import pytest
import torch
from fakes import split_rows, uneven_batch

from trainers import coupled_grpo, diffu_grpo, maskgrpo, spg, tracerl, unigrpo
from trainers.estimators import RolloutBatch, RowStreams, combine_views, completion_validity, make_view
from trainers.maskgrpo import fading_out_probs, maskgrpo_schedule
from trainers.tracerl import trace_group_masks
from trainers.unigrpo import structured_rates

MASK = 99


def batch(B=4, P=3, L=8, kind="text", block_length=0, commit_step=None, valid=None, seed=0):
    prompt = torch.arange(10, 10 + P).repeat(B, 1)  # (B, P)
    pmask = torch.ones(B, P, dtype=torch.bool)
    comp = torch.arange(20, 20 + L).repeat(B, 1)  # (B, L)
    return RolloutBatch(prompt_ids=prompt, prompt_mask=pmask, completion_ids=comp,
                        valid=torch.ones(B, L, dtype=torch.bool) if valid is None else valid,
                        commit_step=torch.zeros(B, L, dtype=torch.long) if commit_step is None else commit_step,
                        mask_id=MASK, kind=kind, block_length=block_length, seed=seed)


def hidden(view, b):
    """(B, L) bool: completion positions the view hides."""
    return view.input_ids[:, b.P:] == MASK


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---- maskgrpo ---------------------------------------------------------------------------------------------
def test_fading_out_probability_of_position_n_matches_the_formula_by_hand():
    # L = 5, n/(L-1) = 0, .25, .5, .75, 1
    # t = 0.6: 1 - 2(0.4)(1 - x) = 1 - 0.8(1, .75, .5, .25, 0) = 0.2, 0.4, 0.6, 0.8, 1.0
    assert torch.allclose(fading_out_probs(0.6, 5), torch.tensor([0.2, 0.4, 0.6, 0.8, 1.0]))
    # t = 0.3: 1 - 1.4(1, .75, .5, .25, 0) = -0.4, -0.05, 0.3, 0.65, 1.0 -> clamped at 0
    assert torch.allclose(fading_out_probs(0.3, 5), torch.tensor([0.0, 0.0, 0.3, 0.65, 1.0]))


@pytest.mark.parametrize("t", [0.5, 0.6, 0.75, 0.9, 0.999])
def test_fading_out_mean_mask_fraction_equals_t_for_t_at_least_one_half(t):
    # the mean of n/(L-1) over n is 1/2, so the mean probability is 1 - 2(1-t)/2 = t when nothing clamps
    assert fading_out_probs(t, 256).mean().item() == pytest.approx(t, abs=1e-6)


def test_fading_out_mean_mask_fraction_exceeds_t_below_one_half_because_of_clamping():
    assert fading_out_probs(0.3, 256).mean().item() > 0.3


def test_maskgrpo_schedule_rises_from_gamma_to_0999_over_mu():
    # t_j = min(0.6 + 0.4 (j+1)/12, 0.999): 0.6333, 0.6667, ..., 0.9667, then 1.0 -> 0.999
    ts = maskgrpo_schedule(12, 0.6)
    assert ts[0] == pytest.approx(0.6 + 0.4 / 12) and ts[-1] == 0.999 and ts[-2] == pytest.approx(0.6 + 0.4 * 11 / 12)
    assert all(a < b for a, b in zip(ts, ts[1:]))
    assert all(0.6 < t <= 0.999 for t in ts)


def test_maskgrpo_text_view_hides_later_positions_more_often_and_never_the_prompt():
    b = batch(B=4000, L=5)
    cfg = maskgrpo.MaskGRPOConfig(mu=4)  # t_j = 0.6 + 0.4 (j+1)/4: j = 0 -> 0.7
    (v,) = maskgrpo.views(0, b, cfg, gen())
    freq = hidden(v, b).float().mean(0)  # expected 1 - 0.6 (1, .75, .5, .25, 0) = 0.4, 0.55, 0.7, 0.85, 1.0
    assert torch.allclose(freq, torch.tensor([0.4, 0.55, 0.7, 0.85, 1.0]), atol=0.03)
    assert not (v.input_ids[:, :b.P] == MASK).any()
    assert torch.equal(v.score, hidden(v, b))  # the hidden tokens are the scored ones


def test_maskgrpo_image_view_is_uniform_at_the_truncated_ratio():
    b = batch(B=4000, L=6, kind="image")
    cfg = maskgrpo.MaskGRPOConfig(mu=4).for_kind("image")  # gamma 0.8: t_0 = 0.8 + 0.2/4 = 0.85
    (v,) = maskgrpo.views(0, b, cfg, gen())
    assert torch.allclose(hidden(v, b).float().mean(0), torch.full((6,), 0.85), atol=0.03)


# ---- diffu-grpo ------------------------------------------------------------------------------------------
def test_diffu_grpo_hides_every_completion_token_and_prompt_tokens_at_rate_015():
    b = batch(B=2000, P=10, L=4)
    (v,) = diffu_grpo.views(0, b, diffu_grpo.DiffuGRPOConfig(), gen())
    assert hidden(v, b).all() and v.score.all()
    rate = (v.input_ids[:, :b.P] == MASK).float().mean().item()
    assert rate == pytest.approx(0.15, abs=0.01)


def test_diffu_grpo_draws_a_fresh_prompt_mask_per_iteration_but_the_same_for_the_same_generator():
    b = batch(B=50, P=10)
    cfg = diffu_grpo.DiffuGRPOConfig()
    a1, a2, c = (diffu_grpo.views(0, b, cfg, gen(s))[0].input_ids for s in (1, 1, 2))
    assert torch.equal(a1, a2) and not torch.equal(a1, c)


def test_padding_in_the_prompt_is_never_hidden():
    b = batch(B=500, P=6)
    b.prompt_mask[:, :3] = False  # left padding
    (v,) = diffu_grpo.views(0, b, diffu_grpo.DiffuGRPOConfig(p_mask_prompt=1.0), gen())
    assert not (v.input_ids[:, :3] == MASK).any() and (v.input_ids[:, 3:6] == MASK).all()


# ---- unigrpo ---------------------------------------------------------------------------------------------
def test_unigrpo_structured_rates_spread_evenly_from_the_start_to_one():
    # u = 0.2, mu = 5: t_j = 0.2 + j * 0.8 / 4 = 0.2, 0.4, 0.6, 0.8, 1.0 (MMaDA Algorithm 1)
    start = torch.tensor([0.2])
    assert [round(structured_rates(start, j, 5).item(), 6) for j in range(5)] == [0.2, 0.4, 0.6, 0.8, 1.0]


def test_unigrpo_positions_are_hidden_uniformly_at_the_drawn_rate():
    # MMaDA Algorithm 1 with mu = 3: a row's ratios are u, u + (1 - u)/2, 1 for its own start u ~ U(0, 1).
    # Checked from the observed hidden fractions alone (no call to the code's generator or schedule):
    # h1 = (h0 + 1) / 2, h2 = 1, and the starts h0 spread over (0, 1).
    b = batch(B=32, L=4000)
    cfg = unigrpo.UniGRPOConfig(mu=3)
    h = []
    for j in range(3):
        (v,) = unigrpo.views(j, b, cfg, gen(j))
        hj = hidden(v, b).float()  # (B, L)
        h.append(hj.mean(1))
        # uniform over positions: the first and second halves are hidden equally often
        assert torch.allclose(hj[:, :2000].mean(1), hj[:, 2000:].mean(1), atol=0.04)
        assert not (v.input_ids[:, :b.P] == MASK).any()
    assert torch.allclose(h[1], (h[0] + 1) / 2, atol=0.03)
    assert torch.allclose(h[2], torch.ones(32))
    assert 0.25 < h[0].mean().item() < 0.75 and h[0].min() < 0.3 and h[0].max() > 0.7  # U(0, 1) starts


# ---- coupled-grpo ----------------------------------------------------------------------------------------
def test_coupled_masks_are_complementary_so_each_token_is_scored_once_by_the_pair():
    valid = torch.ones(16, 32, dtype=torch.bool)
    valid[:, 28:] = False  # after EOS: never scored
    b = batch(B=16, L=32, valid=valid)
    full, part, rev = coupled_grpo.views(0, b, coupled_grpo.CoupledGRPOConfig(), gen())
    assert hidden(full, b).all() and torch.equal(full.score, valid)
    assert not (part.score & rev.score).any()
    assert torch.equal(part.score | rev.score, valid)
    assert torch.equal(hidden(part, b), ~hidden(rev, b))
    t = 1.0 / part.weight[0, 0].item()
    assert 0.2 <= t <= 0.8 and rev.weight[0, 0].item() == pytest.approx(1.0 / (1.0 - t))


def test_coupled_estimate_averages_the_full_pass_with_the_weighted_pair():
    # a token in M with lp_full = -1, lp_M = -2, t = 0.25: (-1 + 4 * -2) / 2 = -4.5
    # a token in not-M with lp_full = -1, lp_notM = -3: (-1 + -3 / 0.75) / 2 = -2.5
    b = batch(B=1, L=2)
    M = torch.tensor([[True, False]])
    views = [make_view(b, torch.ones_like(M), torch.ones_like(M)),
             make_view(b, M, M, weight=1 / 0.25), make_view(b, ~M, ~M, weight=1 / 0.75)]
    est, scored = combine_views([torch.full((1, 2), -1.0), torch.full((1, 2), -2.0), torch.full((1, 2), -3.0)], views)
    assert torch.allclose(est, torch.tensor([[-4.5, -2.5]])) and scored.all()


# ---- tracerl ---------------------------------------------------------------------------------------------
def test_tracerl_hides_exactly_the_tokens_committed_at_or_after_step_s():
    commit = torch.tensor([[0, 3, 1, 2, 3, 0]])
    hide, score = trace_group_masks(commit, group=2, shrink=1)
    assert hide.tolist() == [[False, True, False, True, True, False]]  # committed at step >= 2
    assert score.tolist() == [[False, False, False, True, False, False]]  # committed at step 2
    # merged groups of 2 steps: group 1 = steps {2, 3}
    hide, score = trace_group_masks(commit, group=1, shrink=2)
    assert hide.tolist() == [[False, True, False, True, True, False]]
    assert score.tolist() == hide.tolist()


def test_tracerl_spreads_every_step_group_over_the_inner_updates():
    # 8 decoder steps, shrink 2 -> 4 groups over mu = 3 updates: {0, 3}, {1}, {2}; each group once
    commit = torch.arange(8).repeat(2, 1)  # (2, 8): token i committed at step i
    b = batch(B=2, L=8, commit_step=commit)
    cfg = tracerl.TraceRLConfig(mu=3, shrink=2)
    per_iter = [tracerl.views(j, b, cfg, gen()) for j in range(3)]
    assert [len(v) for v in per_iter] == [2, 1, 1]
    scored = torch.stack([v.score for vs in per_iter for v in vs]).sum(0)  # (B, L)
    assert (scored == 1).all()
    # group 0's view hides everything (all tokens committed at step >= 0) and scores steps 0 and 1
    v0 = per_iter[0][0]
    assert hidden(v0, b).all() and v0.score[0].tolist() == [True, True] + [False] * 6
    # with fewer groups than updates an update re-uses group j mod n
    assert tracerl.groups_for_iteration(3, 2, 4) == [1] and tracerl.groups_for_iteration(0, 2, 4) == [0]


# ---- spg -------------------------------------------------------------------------------------------------
def test_spg_block_view_keeps_earlier_blocks_clean_hides_later_blocks_and_scores_the_current_one():
    b = batch(B=300, L=12, block_length=4)  # 3 blocks
    v = spg.block_view(b, p_mask_clean=0.0, gen=gen())
    blk = torch.arange(12) // 4
    h = hidden(v, b)
    for r in range(b.B):
        cur = int(blk[v.region[r]].unique().item())
        assert not h[r, blk < cur].any() and h[r, blk > cur].all()
        assert torch.equal(v.score[r], v.region[r] & h[r])
        n_hidden = int(v.score[r].sum())
        if n_hidden:  # weight = block size / hidden in block = 1 / empirical t
            assert v.weight[r, 0].item() == pytest.approx(4 / n_hidden)
    # every block gets to be the current one
    assert {int(blk[v.region[r]][0]) for r in range(b.B)} == {0, 1, 2}


def test_spg_current_block_is_drawn_among_blocks_that_hold_text():
    valid = torch.zeros(200, 12, dtype=torch.bool)
    valid[:, :5] = True  # EOS in block 1: block 2 is all padding
    b = batch(B=200, L=12, block_length=4, valid=valid)
    v = spg.block_view(b, p_mask_clean=0.0, gen=gen())
    assert v.region.any(1).all() and not v.region[:, 8:].any()


def test_completion_validity_keeps_tokens_up_to_and_including_the_first_eos():
    ids = torch.tensor([[5, 6, 2, 7, 2], [5, 6, 7, 8, 9]])  # EOS = 2
    assert completion_validity(ids, eos_id=2, mask_id=MASK).tolist() == [[True, True, True, False, False], [True] * 5]


# ---- rank-count invariance: a row's masks do not depend on how the step's rows are split --------------------
SPLIT_CASES = [("maskgrpo", {}), ("diffu-grpo", {}), ("unigrpo", {}), ("coupled-grpo", {}), ("wd1", {}),
               ("spg", {"estimator": "hidden"}), ("spg", {"estimator": "block"}),
               ("tracerl", {"shrink": 1}), ("tracerl", {"shrink": 1, "groups": "global"})]


@pytest.mark.parametrize(("name", "overrides"), SPLIT_CASES, ids=[f"{n}-{'-'.join(map(str, o.values()))}" for n, o in SPLIT_CASES])
def test_a_rows_views_are_the_same_in_one_batch_and_split_over_two_processes(name, overrides):
    from trainers.methods import METHODS

    method = METHODS.get(name)
    cfg = method.make_config(mu=3, **overrides)
    full = uneven_batch()
    halves = [split_rows(full, slice(0, 6)), split_rows(full, slice(6, 12))]
    assert [h.P for h in halves] == [3, 5]  # the first process pads its prompts to 3 tokens, not 5
    n_full = {}
    for j in range(3):
        whole = method.views(j, full, cfg, gen(100 + j))
        if name == "tracerl":  # the loop gives each process the step's global maximum of the group count
            n_full[j] = int(tracerl.row_group_index(full.commit_step, 1).max()) + 1 if cfg.groups == "row" else \
                tracerl.trace_num_groups(full.commit_step, 1)
            for h in halves:
                h.all_reduce_max = lambda v, n=n_full[j]: max(v, n)
        parts = [method.views(j, h, cfg, gen(100 + j)) for h in halves]
        for (lo, hi), h, part in zip(((0, 6), (6, 12)), halves, parts):
            assert len(part) == len(whole)
            for v, w in zip(part, whole):
                assert torch.equal(v.score, w.score[lo:hi]) and torch.equal(v.weight, w.weight[lo:hi])
                assert (v.region is None) == (w.region is None)
                assert v.region is None or torch.equal(v.region, w.region[lo:hi])
                assert torch.equal(v.input_ids[:, h.P:], w.input_ids[lo:hi, full.P:])  # completion
                assert torch.equal(v.input_ids[:, :h.P], w.input_ids[lo:hi, full.P - h.P:full.P])  # real prompt
    # the split is not a tautology: the generator matters, and (where masks are random) rows differ
    if name != "tracerl":
        other = method.views(0, full, cfg, gen(999))
        assert any(not torch.equal(a.input_ids, b.input_ids) for a, b in zip(other, method.views(0, full, cfg, gen(100))))


def test_row_streams_depend_on_the_row_identity_not_its_position():
    b = batch(B=3, L=6)
    swapped = batch(B=3, L=6)
    swapped.row_ids = torch.tensor([2, 1, 0])
    x = RowStreams(b, 5).rand(6)
    y = RowStreams(swapped, 5).rand(6)
    assert torch.equal(x, y.flip(0))  # row identity 2 draws the same numbers at position 0 or 2
    assert not torch.equal(x[0], x[1])
    # the k-th real prompt token gets the row's k-th draw, whatever the padding in front of it
    pm = torch.tensor([[False, True, True], [True, True, True], [False, False, True]])
    u = RowStreams(b, 5).rand_prompt(pm)
    first = RowStreams(b, 5).rand(3)
    assert u[0, 1:].tolist() == first[0, :2].tolist() and u[2, 2].item() == first[2, 0].item()
    assert u[0, 0].item() == 1.0 and u[2, :2].tolist() == [1.0, 1.0]  # padding: never below a probability
