"""The RL math, with every expected value worked by hand from the reference formulas (never by calling the
code under test to build the expectation), and loop-level checks that fail when the importance ratio is
stuck at 1, the KL term vanishes or the reference refresh does nothing."""


import re

import pytest
import torch
from fakes import EXAMPLES, TINY, TinyBert, ToyTask

from trainers import maskgrpo, spg, tracerl, wd1
from trainers.estimators import RolloutBatch, make_view
from trainers.grpo import LossInputs, MethodConfig, grpo_loss, reduce_tokens
from trainers.loop import TrainConfig, train


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: one intra-op thread (the shared fixture in conftest.py)."""


def _batch(B, L, valid=None, completion=None, commit=None):
    return RolloutBatch(prompt_ids=torch.ones(B, 2, dtype=torch.long), prompt_mask=torch.ones(B, 2, dtype=torch.bool),
                        completion_ids=torch.full((B, L), 5) if completion is None else completion,
                        valid=torch.ones(B, L, dtype=torch.bool) if valid is None else valid,
                        commit_step=torch.zeros(B, L, dtype=torch.long) if commit is None else commit, mask_id=0)


def _rows(*rows):
    return torch.tensor(rows, dtype=torch.bool)


# ---- advantages over several groups -------------------------------------------------------------------------
def test_advantages_are_taken_within_each_group_by_hand():
    from trainers.grpo import centered_advantages, leave_one_out_advantages, std_normalized_advantages

    r = torch.tensor([[1.0, 2.0, 3.0], [10.0, 10.0, 13.0]])
    # group 2: mean 11, centred -1, -1, 2; unbiased std sqrt((1 + 1 + 4) / 2) = sqrt(3) = 1.7320508
    assert centered_advantages(r).flatten().tolist() == pytest.approx([-1, 0, 1, -1, -1, 2])
    assert std_normalized_advantages(r, eps=0.0).flatten().tolist() == pytest.approx(
        [-1, 0, 1, -0.5773503, -0.5773503, 1.1547005], abs=1e-6)
    # leave-one-out, group 2: 10 - (10 + 13)/2 = -1.5 (twice), 13 - (10 + 10)/2 = 3
    assert leave_one_out_advantages(r).flatten().tolist() == pytest.approx([-1.5, 0, 1.5, -1.5, -1.5, 3])


def test_std_advantage_epsilon_and_small_groups_by_hand():
    from trainers.grpo import leave_one_out_advantages, std_normalized_advantages

    r = torch.tensor([[0.0, 1.0]])  # G = 2: mean 0.5, unbiased std 0.7071068
    # TRL's eps 1e-4 (the default): 0.5 / 0.7072068 = 0.7070068; eps 0.1: 0.5 / 0.8071068 = 0.6194975
    assert std_normalized_advantages(r).flatten().tolist() == pytest.approx([-0.7070068, 0.7070068], abs=1e-6)
    assert std_normalized_advantages(r, eps=0.1).flatten().tolist() == pytest.approx([-0.6194975, 0.6194975],
                                                                                      abs=1e-6)
    assert std_normalized_advantages(torch.tensor([[1.0]])).tolist() == [[0.0]]  # G = 1: no spread, no signal
    assert leave_one_out_advantages(r).flatten().tolist() == pytest.approx([-1.0, 1.0])  # G = 2 is enough
    with pytest.raises(ValueError, match="leave-one-out advantages need num_generations >= 2"):
        leave_one_out_advantages(torch.tensor([[1.0]]))


# ---- the clipped surrogate with a ratio that is not 1 ---------------------------------------------------
def test_ratio_not_one_clips_by_hand_and_the_gradient_flows_only_through_the_unclipped_side():
    # logp = -1, old = -1.5: rho = e^0.5 = 1.648721; eps = 0.2.
    # A = +1: -min(1.6487, 1.2) = -1.2 (clipped: no gradient); A = -1: -min(-1.6487, -1.2) = 1.648721,
    # d/dlogp = rho = 1.648721 per token. One token per row, sequence mean: per_sequence = [-1.2, 1.648721].
    b = _batch(2, 1)
    view = make_view(b, _rows([True], [True]), _rows([True], [True]))
    lp = torch.full((2, 1), -1.0, requires_grad=True)
    old = torch.full((2, 1), -1.5)
    out = grpo_loss(LossInputs([lp], [old], None, [view], torch.tensor([1.0, -1.0])),
                    MethodConfig(epsilon=0.2, beta=0.0, loss_norm="sequence"))
    assert out.per_sequence.tolist() == pytest.approx([-1.2, 1.648721], abs=1e-6)
    assert out.ratio.flatten().tolist() == pytest.approx([1.648721, 1.648721], abs=1e-6)
    assert out.clipped.flatten().tolist() == [True, False]
    out.per_sequence.sum().backward()
    assert lp.grad.flatten().tolist() == pytest.approx([0.0, 1.648721], abs=1e-6)


def test_kl_term_adds_beta_times_k3_by_hand():
    # A = 0 leaves only the KL: logp = -1, ref = -2, k3 = e^(ref-logp) - (ref-logp) - 1 = e^-1 + 1 - 1 = 0.367879;
    # beta = 0.04 -> 0.0147152 per token, and the mean over tokens is the same.
    b = _batch(1, 3)
    view = make_view(b, _rows([True] * 3), _rows([True] * 3))
    lp = torch.full((1, 3), -1.0, requires_grad=True)
    out = grpo_loss(LossInputs([lp], None, [torch.full((1, 3), -2.0)], [view], torch.tensor([0.0])),
                    MethodConfig(beta=0.04, loss_norm="sequence"))
    assert out.per_sequence.item() == pytest.approx(0.04 * 0.367879, abs=1e-6)
    assert out.kl.flatten().tolist() == pytest.approx([0.367879] * 3, abs=1e-6)
    # d/dlogp of beta * k3 = beta * (1 - e^(ref - logp)) = 0.04 * (1 - 0.367879) = 0.0252848, / 3 tokens
    out.per_sequence.sum().backward()
    assert lp.grad.flatten().tolist() == pytest.approx([0.0252848 / 3] * 3, abs=1e-6)


# ---- normalisation ---------------------------------------------------------------------------------------
def test_token_level_mean_over_the_micro_batch_versus_the_mean_per_completion_by_hand():
    # one group of 2 (G = 2), first update (rho = 1, surrogate = -A per token), A = [+1, -1];
    # row 0 scores 3 tokens, row 1 one token.
    # per completion then over completions: (-1 + 1) / 2 = 0.
    # token-level (d1/MaskGRPO/DiffuCoder: sum(loss * mask) / sum(mask)): (3 * -1 + 1 * 1) / 4 = -0.5.
    b = _batch(2, 3)
    score = _rows([True, True, True], [True, False, False])
    view = make_view(b, score, score)
    lp = torch.full((2, 3), -1.0, requires_grad=True)
    A = torch.tensor([1.0, -1.0])
    seq = grpo_loss(LossInputs([lp], None, None, [view], A, group_size=2), MethodConfig(beta=0.0, loss_norm="sequence"))
    tok = grpo_loss(LossInputs([lp], None, None, [view], A, group_size=2), MethodConfig(beta=0.0, loss_norm="token"))
    assert seq.per_sequence.sum().item() / 2 == pytest.approx(0.0)
    assert tok.per_sequence.sum().item() / 2 == pytest.approx(-0.5)


def test_token_mean_is_per_unit_of_norm_rows_and_independent_of_the_micro_batch_split():
    # 4 rows, units of 2 rows (norm_rows = 2): unit 0 rows score 1 and 1 tokens, unit 1 rows 3 and 2.
    # per-token loss = row index + 1: unit 0: (1*1 + 2*1) / 2 = 1.5; unit 1: (3*3 + 4*2) / 5 = 3.4;
    # the loss is (1.5 + 3.4) / 2 = 2.45 (one unit of all 4 rows would give 20 / 7 = 2.857), and splitting
    # the 4 rows into micro-batches of 1 changes nothing.
    b = _batch(4, 3)
    score = _rows([True, False, False], [True, False, False], [True, True, True], [True, True, False])
    view = make_view(b, score, score)
    per_token = torch.arange(1.0, 5.0)[:, None].expand(4, 3)
    cfg = MethodConfig(loss_norm="token", norm_rows=2)
    whole = reduce_tokens(per_token, score, LossInputs([], None, None, [view], torch.zeros(4)), cfg)
    assert whole.sum().item() / 4 == pytest.approx(2.45)
    parts = [reduce_tokens(per_token[i:i + 1], score[i:i + 1],
                           LossInputs([], None, None, [view.rows(slice(i, i + 1))], torch.zeros(1),
                                      all_views=[view], rows=slice(i, i + 1)), cfg) for i in range(4)]
    assert sum(p.item() for p in parts) / 4 == pytest.approx(2.45)
    # without norm_rows the unit is the group: group_size 2 gives the same 2.45; neither gives the batch
    by_group = reduce_tokens(per_token, score, LossInputs([], None, None, [view], torch.zeros(4), group_size=2),
                             MethodConfig(loss_norm="token"))
    assert by_group.sum().item() / 4 == pytest.approx(2.45)
    whole_batch = reduce_tokens(per_token, score, LossInputs([], None, None, [view], torch.zeros(4)),
                                MethodConfig(loss_norm="token"))
    assert whole_batch.sum().item() / 4 == pytest.approx(20 / 7)
    # units of one row are the per-completion means: (1 + 2 + 3 + 4) / 4 = 2.5 (rows with 1 token divide by 1)
    one = reduce_tokens(per_token, score, LossInputs([], None, None, [view], torch.zeros(4)),
                        MethodConfig(loss_norm="token", norm_rows=1))
    assert one.tolist() == pytest.approx([1.0, 2.0, 3.0, 4.0])


def test_wd1_sums_over_the_group_as_its_code_does():
    # wd1 compute_loss: -sum_i w_i * sum_t logp (sum over the 6-completion micro-batch). Two rows of one
    # group: weights [0.4, -0.4], summed logp [-6, -2]: -(0.4 * -6) - (-0.4 * -2) = 2.4 - 0.8 = 1.6.
    b = _batch(2, 3)
    everything = _rows([True] * 3, [True] * 3)
    view = make_view(b, everything, everything)
    lp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -1.0]])
    out = wd1.loss(LossInputs([lp], None, None, [view], torch.tensor([0.4, -0.4]), group_size=2),
                   wd1.WD1Config(norm_rows=2))
    assert out.per_sequence.sum().item() / 2 == pytest.approx(1.6)


# ---- MaskGRPO --------------------------------------------------------------------------------------------
def test_maskgrpo_scores_hidden_eos_padding_like_its_perturb_mask():
    # completion [7, EOS=1, 1, 1]: valid (d1's mask) = first two; the reference scores every hidden
    # token (completion_mask = perturb_mask), so with t close to 1 all 4 positions can be scored.
    comp = torch.tensor([[7, 1, 1, 1]])
    b = _batch(1, 4, valid=_rows([True, True, False, False]), completion=comp)
    hide = _rows([True, True, True, True])
    assert make_view(b, hide, hide, score_padding=True).score.sum().item() == 4
    assert make_view(b, hide, hide).score.sum().item() == 2
    cfg = maskgrpo.MaskGRPOConfig(mu=1)  # t = min(0.6 + 0.4, 0.999) = 0.999: nearly every position hidden
    (v,) = maskgrpo.views(0, b, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(v.score, v.input_ids[:, 2:] == 0)  # scored exactly where hidden, padding included


# ---- TraceRL ---------------------------------------------------------------------------------------------
def test_tracerl_advantage_uses_the_population_std_without_epsilon():
    # r = [1, 0, 0, 0]: mean 0.25, population std sqrt((0.5625 + 3 * 0.0625) / 4) = 0.4330127
    # -> [1.7320508, -0.5773503 x 3] (z_score_normalize in dLLM-RL reward/rl_reward.py)
    adv = tracerl.advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), tracerl.TraceRLConfig())
    assert adv.flatten().tolist() == pytest.approx([1.7320508, -0.5773503, -0.5773503, -0.5773503], abs=1e-6)


def test_tracerl_groups_are_the_distinct_steps_of_each_row_merged_by_shrink():
    # row steps [0, 0, 1, 3, 3, 5, -1]: distinct 0, 1, 3, 5 -> ranks 0, 0, 1, 2, 2, 3; shrink 2 -> examples
    # 0, 0, 0, 1, 1, 1; the unrecorded token stays -1. Row [4, 4, 4, 9, 9, 9, 9]: distinct 4, 9 -> one example.
    commit = torch.tensor([[0, 0, 1, 3, 3, 5, -1], [4, 4, 4, 9, 9, 9, 9]])
    idx = tracerl.row_group_index(commit, 2)
    assert idx.tolist() == [[0, 0, 0, 1, 1, 1, -1], [0, 0, 0, 0, 0, 0, 0]]
    b = _batch(2, 7, commit=commit)
    vs = tracerl.views(0, b, tracerl.TraceRLConfig(shrink=2, mu=1), torch.Generator())
    assert len(vs) == 2  # examples 0 and 1 (row 1 has only example 0)
    assert vs[1].score.tolist() == [[False, False, False, True, True, True, False], [False] * 7]
    # example 1 of row 0 sees the tokens of example 0 and hides the rest
    assert (vs[1].input_ids[0, 2:] == 0).tolist() == [False, False, False, True, True, True, False]


def test_tracerl_loss_per_example_with_the_kl_to_the_old_policy_summed_over_tokens():
    # one row, two examples: tokens {0, 1} and {2}. A = 1, eps = 0.2, beta = 0.01, first pass old = logp
    # except token 2 where old = -1.1 and logp = -1: rho = e^0.1 = 1.105171 (< 1.2, unclipped).
    # example 0: surrogate mean -1; KL 0. example 1: surrogate -1.105171; KL k3 with anchor old:
    # e^(-0.1) + 0.1 - 1 = 0.0048374, summed (one token) x 0.01 = 0.0000484.
    # loss = mean over the 2 examples = (-1 + -1.105171 + 0.0000484) / 2 = -1.0525613
    commit = torch.tensor([[0, 0, 1]])
    b = _batch(1, 3, commit=commit)
    cfg = tracerl.TraceRLConfig(shrink=1, mu=1, epsilon=0.2, beta=0.01)
    vs = tracerl.views(0, b, cfg, torch.Generator())
    lp = [torch.full((1, 3), -1.0, requires_grad=True) for _ in vs]
    old = [torch.full((1, 3), -1.0), torch.tensor([[-1.0, -1.0, -1.1]])]
    out = tracerl.loss(LossInputs(lp, old, None, vs, torch.tensor([1.0])), cfg)
    assert out.per_sequence.sum().item() == pytest.approx(-1.0525613, abs=1e-6)


def _tracerl_two_examples(old_token_logp: float = -1.1):
    """One row, commit steps [0, 0, 1], shrink 1: example 0 scores tokens {0, 1}, example 1 token {2}.
    logp = -1 everywhere; the old policy is `old_token_logp` on each example's scored tokens."""
    b = _batch(1, 3, commit=torch.tensor([[0, 0, 1]]))
    vs = tracerl.views(0, b, tracerl.TraceRLConfig(shrink=1, mu=1), torch.Generator())
    lp = [torch.full((1, 3), -1.0, requires_grad=True) for _ in vs]
    old = [torch.where(v.score, torch.tensor(old_token_logp), torch.tensor(-1.0)) for v in vs]
    return vs, lp, old


def test_tracerl_kl_anchor_and_normalisation_by_hand():
    # every scored token: rho = e^(-1 - -1.1) = 1.1051709 (unclipped at eps 0.2), A = 1 -> surrogate -1.1051709
    # k3 to the old policy (d = -0.1): e^-0.1 + 0.1 - 1 = 0.0048374; to a reference at -1.2 (d = -0.2):
    # e^-0.2 + 0.2 - 1 = 0.0187308. beta = 0.5.
    vs, lp, old = _tracerl_two_examples()
    A = torch.tensor([1.0])
    # example (the reference's): per example surrogate mean + beta x KL *summed*; mean over the 2 examples
    # ex0 = -1.1051709 + 0.5 x 2 x 0.0048374 = -1.1003335; ex1 = -1.1051709 + 0.5 x 0.0048374 = -1.1027522
    out = tracerl.loss(LossInputs(lp, old, None, vs, A), tracerl.TraceRLConfig(shrink=1, mu=1, beta=0.5))
    assert out.per_sequence.item() == pytest.approx(-1.1015429, abs=1e-6)
    assert out.ratio.flatten().tolist() == pytest.approx([1.1051709] * 3, abs=1e-6)  # each token in one view
    assert out.kl.flatten().tolist() == pytest.approx([0.0048374] * 3, abs=1e-6)
    assert not out.clipped.any()
    # sequence with the KL to the old policy: the KL is a mean per example too; both examples -1.1027522
    out = tracerl.loss(LossInputs(lp, old, None, vs, A),
                       tracerl.TraceRLConfig(shrink=1, mu=1, beta=0.5, loss_norm="sequence"))
    assert out.per_sequence.item() == pytest.approx(-1.1027522, abs=1e-6)
    # example with the KL to a frozen reference at -1.2: ex0 = -1.1051709 + 0.5 x 2 x 0.0187308 = -1.0864401,
    # ex1 = -1.1051709 + 0.5 x 0.0187308 = -1.0958055; mean -1.0911228
    ref = [torch.full((1, 3), -1.2) for _ in vs]
    out = tracerl.loss(LossInputs(lp, old, ref, vs, A),
                       tracerl.TraceRLConfig(shrink=1, mu=1, beta=0.5, kl_to="reference"))
    assert out.per_sequence.item() == pytest.approx(-1.0911228, abs=1e-6)
    assert out.kl.flatten().tolist() == pytest.approx([0.0187308] * 3, abs=1e-6)


def test_tracerl_clip_by_hand():
    # old -1.3 on every scored token: rho = e^0.3 = 1.3498588 > 1.2; A = 1 -> surrogate -min(1.3498588, 1.2) = -1.2
    # per example, so the loss is -1.2 and every scored token reports the clip; A = -1: -min(-1.3498588, -1.2)
    # = 1.3498588 (the pessimistic side is the unclipped one, the clip is not active)
    vs, lp, old = _tracerl_two_examples(-1.3)
    out = tracerl.loss(LossInputs(lp, old, None, vs, torch.tensor([1.0])), tracerl.TraceRLConfig(shrink=1, mu=1, beta=0))
    assert out.per_sequence.item() == pytest.approx(-1.2, abs=1e-6)
    assert out.clipped.all()
    out = tracerl.loss(LossInputs(lp, old, None, vs, torch.tensor([-1.0])), tracerl.TraceRLConfig(shrink=1, mu=1, beta=0))
    assert out.per_sequence.item() == pytest.approx(1.3498588, abs=1e-6)
    assert not out.clipped.any()
    # the clip is reported on scored tokens only: example 1's view with old -1.3 on all three tokens (ratio
    # 1.35 everywhere) and example 0's with old = logp: only token 2 (scored in example 1's view) is clipped;
    # the loss: ex0 -1, ex1 -1.2 -> -1.1
    old = [torch.full((1, 3), -1.0), torch.full((1, 3), -1.3)]
    out = tracerl.loss(LossInputs(lp, old, None, vs, torch.tensor([1.0])), tracerl.TraceRLConfig(shrink=1, mu=1, beta=0))
    assert out.per_sequence.item() == pytest.approx(-1.1, abs=1e-6)
    assert out.clipped.tolist() == [[False, False, True]]


def test_tracerl_example_mean_spans_the_micro_batches_by_hand():
    # two rows, shrink 1: row 0 commit [0, 0, 1] (examples {0, 1} and {2}), row 1 [0, 0, 0] (one example):
    # 3 examples in the batch. A = (1, -0.5), ratio 1, beta 0: the example losses are -1, -1 (row 0) and
    # 0.5 (row 1); the batch loss = their mean = -0.5. Each micro-batch of one row gives its share
    # total x B_all / n_examples = total x 2/3 (row 0: -2 x 2/3 = -1.3333333, row 1: 0.5 x 2/3 = 0.3333333),
    # and the loop divides the sum of shares by B_all = 2: -0.5.
    b = _batch(2, 3, commit=torch.tensor([[0, 0, 1], [0, 0, 0]]))
    cfg = tracerl.TraceRLConfig(shrink=1, mu=1, beta=0)
    vs = tracerl.views(0, b, cfg, torch.Generator())
    assert len(vs) == 2
    A = torch.tensor([1.0, -0.5])
    shares = []
    for r in (0, 1):
        sl = slice(r, r + 1)
        lp = [torch.full((1, 3), -1.0, requires_grad=True) for _ in vs]
        out = tracerl.loss(LossInputs(lp, None, None, [v.rows(sl) for v in vs], A[sl], all_views=vs, rows=sl), cfg)
        shares.append(out.per_sequence.item())
    assert shares == pytest.approx([-1.3333333, 0.3333333], abs=1e-6)
    assert sum(shares) / 2 == pytest.approx(-0.5, abs=1e-6)


def test_tracerl_sample_std_option_and_constant_groups_by_hand():
    # adv_std sample (the equal recipe): r = [1, 0, 0, 0], mean 0.25, unbiased std sqrt(0.75 / 3) = 0.5;
    # (r - 0.25) / (0.5 + 1e-4) = 1.4997001, -0.4999000
    adv = tracerl.advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), tracerl.TraceRLConfig(adv_std="sample"))
    assert adv.flatten().tolist() == pytest.approx([1.4997001, -0.4999000, -0.4999000, -0.4999000], abs=1e-6)
    # a group of equal rewards has std 0: advantages exactly 0, no NaN (population std, no epsilon)
    assert tracerl.advantages(torch.tensor([[2.0, 2.0, 2.0]]), tracerl.TraceRLConfig()).tolist() == [[0.0, 0.0, 0.0]]


def test_tracerl_global_groups_of_the_equal_recipe_by_hand():
    # commit steps [0, 0, 1, 3, 3, 5, -1], shrink 2: decoder steps [0, 2) -> tokens 0-2, [2, 4) -> 3-4,
    # [4, 6) -> 5; 3 groups. Group 1 hides every token committed at step >= 2 and scores tokens 3-4.
    commit = torch.tensor([[0, 0, 1, 3, 3, 5, -1]])
    b = _batch(1, 7, commit=commit)
    vs = tracerl.views(0, b, tracerl.TraceRLConfig(shrink=2, mu=1, groups="global"), torch.Generator())
    assert [v.score[0].nonzero().flatten().tolist() for v in vs] == [[0, 1, 2], [3, 4], [5]]
    assert (vs[1].input_ids[0, 2:] == 0).tolist() == [False, False, False, True, True, True, False]
    # mu = 2: iteration 0 trains groups 0 and 2, iteration 1 group 1
    cfg = tracerl.TraceRLConfig(shrink=2, mu=2, groups="global")
    assert [v.score[0].nonzero().flatten().tolist() for v in tracerl.views(0, b, cfg, torch.Generator())] == [[0, 1, 2], [5]]
    assert [v.score[0].nonzero().flatten().tolist() for v in tracerl.views(1, b, cfg, torch.Generator())] == [[3, 4]]


def test_tracerl_equal_recipe_loss_is_the_shared_token_mean_by_hand():
    # the equal recipe (loss_norm sequence, KL to the frozen reference) is the shared GRPO loss over the
    # union of the examples' tokens: old = -1 on tokens 0-1 (ratio 1), -1.1 on token 2 (ratio 1.1051709);
    # A = 1, beta 0: the mean over the 3 tokens (-1 - 1 - 1.1051709) / 3 = -1.0350570. The reference's
    # per-example mean would give (-1 + -1.1051709) / 2 = -1.0525855 instead.
    vs, lp, _ = _tracerl_two_examples()
    old = [torch.full((1, 3), -1.0), torch.tensor([[-1.0, -1.0, -1.1]])]
    cfg = tracerl.TraceRLConfig(shrink=1, mu=1, beta=0.0, loss_norm="sequence", kl_to="reference")
    out = tracerl.loss(LossInputs(lp, old, None, vs, torch.tensor([1.0])), cfg)
    assert out.per_sequence.item() == pytest.approx(-1.0350570, abs=1e-6)
    cfg = tracerl.TraceRLConfig(shrink=1, mu=1, beta=0.0, loss_norm="sequence", kl_to="old")
    out = tracerl.loss(LossInputs(lp, old, None, vs, torch.tensor([1.0])), cfg)
    assert out.per_sequence.item() == pytest.approx(-1.0525855, abs=1e-6)


def test_tracerl_sequence_mean_counts_each_rows_own_examples_by_hand():
    # row 0 commit [0, 0, 1] (2 examples), row 1 [0, 0, 0] (1 example); ratio 1, beta 0, A = (1, -0.5):
    # row 0: examples -1 and -1, mean over its 2 examples -1; row 1: its one example 0.5, divided by 1
    b = _batch(2, 3, commit=torch.tensor([[0, 0, 1], [0, 0, 0]]))
    cfg = tracerl.TraceRLConfig(shrink=1, mu=1, beta=0.0, loss_norm="sequence")
    vs = tracerl.views(0, b, cfg, torch.Generator())
    lp = [torch.full((2, 3), -1.0, requires_grad=True) for _ in vs]
    out = tracerl.loss(LossInputs(lp, None, None, vs, torch.tensor([1.0, -0.5])), cfg)
    assert out.per_sequence.tolist() == pytest.approx([-1.0, 0.5])
    assert out.scored.tolist() == [[True, True, True], [True, True, True]]  # the union of the views
    assert out.kl is None  # beta 0: no KL term and no KL statistic


def test_tracerl_one_example_in_the_batch_and_no_views_by_hand():
    # commit [0, 0, 0]: one view, one example; A = 1, ratio 1: surrogate mean -1, share -1 x 1 row / 1 example
    b = _batch(1, 3, commit=torch.tensor([[0, 0, 0]]))
    cfg = tracerl.TraceRLConfig(shrink=1, mu=1, beta=0.0)
    vs = tracerl.views(0, b, cfg, torch.Generator())
    assert len(vs) == 1
    out = tracerl.loss(LossInputs([torch.full((1, 3), -1.0)], None, None, vs, torch.tensor([1.0])), cfg)
    assert out.per_sequence.item() == pytest.approx(-1.0)
    # no views at all (an iteration with no example): zero loss, nothing scored
    out = tracerl.loss(LossInputs([], None, None, [], torch.tensor([1.0, 2.0])), cfg)
    assert out.per_sequence.tolist() == [0.0, 0.0] and tuple(out.scored.shape) == (2, 0)
    assert out.scored.dtype == torch.bool
    # kl_to reference without reference log-probs: no KL term (nothing to anchor to), the surrogate only
    vs2, lp, old = _tracerl_two_examples()
    out = tracerl.loss(LossInputs(lp, old, None, vs2, torch.tensor([1.0])),
                       tracerl.TraceRLConfig(shrink=1, mu=1, beta=0.5, kl_to="reference"))
    assert out.per_sequence.item() == pytest.approx(-1.1051709, abs=1e-6) and out.kl is None


def test_tracerl_group_counts_by_hand():
    # two prompts' groups: [1, 0, 0, 0] -> 1.7320508, -0.5773503 x 3; [2, 2, 2, 4]: mean 2.5, population std
    # sqrt((3 x 0.25 + 2.25) / 4) = 0.8660254 -> -0.5773503 x 3, 1.7320508 (each group on its own)
    adv = tracerl.advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0], [2.0, 2.0, 2.0, 4.0]]), tracerl.TraceRLConfig())
    assert adv.flatten().tolist() == pytest.approx([1.7320508, -0.5773503, -0.5773503, -0.5773503,
                                                    -0.5773503, -0.5773503, -0.5773503, 1.7320508], abs=1e-6)
    # decoder-step groups of the equal recipe: max step 5, shrink 2 -> 3; all at step 0 -> 1; nothing
    # recorded (-1) or no positions -> 0
    assert tracerl.trace_num_groups(torch.tensor([[0, 0, 1, 3, 3, 5, -1]]), 2) == 3
    assert tracerl.trace_num_groups(torch.tensor([[0, 0]]), 1) == 1
    assert tracerl.trace_num_groups(torch.tensor([[-1, -1]]), 1) == 0
    assert tracerl.trace_num_groups(torch.zeros(1, 0, dtype=torch.long), 1) == 0
    # round-robin over updates with one group or none
    assert tracerl.groups_for_iteration(0, 1, 4) == [0] and tracerl.groups_for_iteration(2, 1, 4) == [0]
    assert tracerl.groups_for_iteration(0, 0, 4) == []


def test_tracerl_config_rejects_bad_values_with_what_to_choose():
    with pytest.raises(ValueError, match=r"shrink=0 must be >= 1"):
        tracerl.TraceRLConfig(shrink=0)
    for bad in ({"kl_to": "policy"}, {"adv_std": "mad"}, {"groups": "steps"}):
        with pytest.raises(ValueError, match=re.escape("kl_to: old|reference; adv_std: population|sample; groups: row|global")):
            tracerl.TraceRLConfig(**bad)


# ---- SPG -------------------------------------------------------------------------------------------------
def test_spg_bounds_by_hand_from_its_per_seq_logps():
    # one row of 2 valid tokens, m = 2 views. View 1 hides token 0 (t = 1/2), view 2 hides both (t = 1).
    # log-probs: view 1 token 0 = -1; view 2 tokens = -2, -3.
    # ELBO: view 1 mean over hidden = -1; view 2 = -2.5; mean over views = -1.75.
    # EUBO (beta_u = 1.5): token 0: log((e^-1.5 * 2 + e^-3 * 1) / 2) = -1.3942310;
    # token 1: log((0 + e^-4.5) / 2) = -5.1931472; mean / 1.5 = -2.1957927.
    b = _batch(1, 2)
    v1 = make_view(b, _rows([True, False]), _rows([True, False]), weight=2.0, region=_rows([True, True]))
    v2 = make_view(b, _rows([True, True]), _rows([True, True]), weight=1.0, region=_rows([True, True]))
    lps = [torch.tensor([[-1.0, -9.0]]), torch.tensor([[-2.0, -3.0]])]
    elbo, eubo = spg.hidden_bounds(lps, [v1, v2], 1.5)
    assert elbo.item() == pytest.approx(-1.75)
    assert eubo.item() == pytest.approx(-2.1957927, abs=1e-6)
    # the loss: A = -1 (negative: the mixture 0.5 EUBO + 0.5 ELBO = -1.9728964), length weight 2 / 2:
    # -A * bound = -1.9728964
    out = spg.loss(LossInputs(lps, None, None, [v1, v2], torch.tensor([-1.0]), group_size=1), spg.SPGConfig())
    assert out.per_sequence.item() == pytest.approx(-1.9728964, abs=1e-6)


def test_spg_bound_choice_by_the_sign_of_the_advantage_by_hand():
    # the row of test_spg_bounds_by_hand_from_its_per_seq_logps: ELBO -1.75, EUBO -2.1957927; 2 valid tokens,
    # one unit, so the length weight is 2 / 2 x (1 row / 1 unit) = 1
    b = _batch(1, 2)
    v1 = make_view(b, _rows([True, False]), _rows([True, False]), weight=2.0, region=_rows([True, True]))
    v2 = make_view(b, _rows([True, True]), _rows([True, True]), weight=1.0, region=_rows([True, True]))
    lps = [torch.tensor([[-1.0, -9.0]]), torch.tensor([[-2.0, -3.0]])]

    def loss(A, **cfg):
        inp = LossInputs(lps, None, None, [v1, v2], torch.tensor([A]), group_size=1)
        return spg.loss(inp, spg.SPGConfig(**cfg)).per_sequence.item()

    assert loss(2.0) == pytest.approx(3.5)  # A > 0: the ELBO, -2 x -1.75
    assert loss(2.0, bound="eubo") == pytest.approx(3.5)  # the bound option changes only the negative side
    assert loss(-1.0, bound="eubo") == pytest.approx(-2.1957927, abs=1e-6)  # A < 0: -(-1) x EUBO
    assert loss(-1.0, bound="elbo") == pytest.approx(-1.75)
    # the mixture with omega = 0.25: 0.25 x -2.1957927 + 0.75 x -1.75 = -1.8614482
    assert loss(-1.0, mix_weight=0.25) == pytest.approx(-1.8614482, abs=1e-6)


def _spg_two_rows():
    """Two rows of lengths 2 and 1 and two views (hand values in the tests that use them)."""
    valid = _rows([True, True], [True, False])
    b = _batch(2, 2, valid=valid)
    v1 = make_view(b, _rows([True, False], [True, False]), _rows([True, False], [True, False]),
                   weight=torch.tensor([[2.0], [1.0]]), region=valid)
    v2 = make_view(b, _rows([True, True], [True, False]), _rows([True, True], [True, False]),
                   weight=torch.tensor([[1.0], [1.0]]), region=valid)
    lps = [torch.tensor([[-1.0, -9.0], [-0.5, -9.0]]), torch.tensor([[-2.0, -3.0], [-1.5, -9.0]])]
    return v1, v2, lps, torch.tensor([1.0, -1.0])


def test_spg_length_weighted_mean_over_the_micro_batch_by_hand():
    # row 0 as above (2 valid tokens, ELBO -1.75); row 1 has 1 valid token, hidden in both views (t = 1) with
    # log-probs -0.5 and -1.5: ELBO (-0.5 + -1.5) / 2 = -1.0; EUBO log((e^-0.75 + e^-2.25) / 2) / 1.5 = -0.8278226.
    # A = (+1, -1): row 0 takes its ELBO, row 1 the mixture 0.5 x -0.8278226 + 0.5 x -1.0 = -0.9139113.
    # "length" (the reference's): share_b = -A_b x bound_b x len_b / (2 + 1 tokens) x (2 rows / 1 unit):
    # row 0: 1.75 x 2 / 3 x 2 = 2.3333333; row 1: -0.9139113 x 1 / 3 x 2 = -0.6092742.
    # "sequence": -A_b x bound_b: 1.75 and -0.9139113.
    v1, v2, lps, A = _spg_two_rows()
    out = spg.loss(LossInputs(lps, None, None, [v1, v2], A, group_size=2), spg.SPGConfig())
    assert out.per_sequence.tolist() == pytest.approx([2.3333333, -0.6092742], abs=1e-6)
    out = spg.loss(LossInputs(lps, None, None, [v1, v2], A, group_size=2), spg.SPGConfig(loss_norm="sequence"))
    assert out.per_sequence.tolist() == pytest.approx([1.75, -0.9139113], abs=1e-6)


def test_spg_block_estimator_of_the_equal_recipe_by_hand():
    # L = 2 in two blocks of 1. Views (block estimator: weight n_region / n_hidden = 1 here): v1 and v3 make
    # block 0 current and hide token 0 (log-probs -1 and -3), v2 makes block 1 current and hides token 1 (-4).
    # cover = views in which the token's block was current: token 0: 2, token 1: 1.
    # ELBO: token 0 (-1 + -3) / 2 = -2, token 1 -4 -> -3.
    # EUBO (beta_u 1.5): token 0 (log(e^-1.5 + e^-4.5) - log 2) / 1.5 = -1.4297066, token 1 -6 / 1.5 = -4
    # -> -2.7148533.
    b = _batch(1, 2)
    r0, r1 = _rows([True, False]), _rows([False, True])
    v1 = make_view(b, _rows([True, True]), r0, weight=1.0, region=r0)
    v2 = make_view(b, r1, r1, weight=1.0, region=r1)
    v3 = make_view(b, _rows([True, True]), r0, weight=1.0, region=r0)
    lps = [torch.tensor([[-1.0, -7.0]]), torch.tensor([[-9.0, -4.0]]), torch.tensor([[-3.0, -7.0]])]
    elbo, eubo = spg.bounds(lps, [v1, v2, v3], 1.5)
    assert (elbo.item(), eubo.item()) == pytest.approx((-3.0, -2.7148533), abs=1e-6)

    def loss(A, beta=0.0, ref=None, **cfg):
        c = spg.SPGConfig(**{"estimator": "block", "loss_norm": "sequence", "beta": beta, **cfg})
        return spg.loss(LossInputs(lps, None, ref, [v1, v2, v3], torch.tensor([A]), group_size=1), c)

    assert loss(0.5).per_sequence.item() == pytest.approx(1.5)  # A >= 0: the ELBO, -0.5 x -3
    assert loss(-1.0, bound="eubo").per_sequence.item() == pytest.approx(-2.7148533, abs=1e-6)
    # the mixture 0.5 x -2.7148533 + 0.5 x -3 = -2.8574266
    assert loss(-1.0).per_sequence.item() == pytest.approx(-2.8574266, abs=1e-6)
    assert loss(0.5).kl is None
    # the reference's "hidden" estimator on the same views averages over all m = 3 views instead:
    # ELBO (-1 + -4 + -3) / 3; EUBO token 0 (log(e^-1.5 + e^-4.5) - log 3) / 1.5, token 1 (-6 - log 3) / 1.5
    # -> -3.2162124
    assert loss(-1.0, bound="eubo", estimator="hidden").per_sequence.item() == pytest.approx(-3.2162124, abs=1e-6)
    assert loss(0.5, estimator="hidden").per_sequence.item() == pytest.approx(0.5 * 8 / 3, abs=1e-6)
    # beta > 0 adds beta x the k3 KL of the combined estimates (token 0: (-1 + -3) / 2 = -2; token 1: -4) to a
    # reference at -2.5: token 0 e^-0.5 + 0.5 - 1 = 0.1065307, token 1 e^1.5 - 1.5 - 1 = 1.9816891; mean
    # 1.0441099; 1.5 + 0.1 x 1.0441099 = 1.6044110
    ref = [torch.full((1, 2), -2.5) for _ in range(3)]
    out = loss(0.5, beta=0.1, ref=ref)
    assert out.per_sequence.item() == pytest.approx(1.6044110, abs=1e-6)
    assert out.kl.flatten().tolist() == pytest.approx([0.1065307, 1.9816891], abs=1e-6)


def test_spg_gradients_stay_finite_when_a_token_is_never_hidden():
    # token 1 is hidden in no view: its EUBO term is a finite dummy, so the backward pass has no NaN
    b = _batch(1, 2)
    r0 = _rows([True, False])
    v = make_view(b, r0, r0, weight=1.0, region=_rows([True, True]))
    for estimator in ("block", "hidden"):
        lp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
        out = spg.loss(LossInputs([lp], None, None, [v], torch.tensor([-1.0]), group_size=1),
                       spg.SPGConfig(estimator=estimator, num_mc=1))
        out.per_sequence.sum().backward()
        assert torch.isfinite(lp.grad).all() and lp.grad[0, 1] == 0


def test_spg_normalisation_units_by_hand():
    # the two rows of test_spg_length_weighted_mean_over_the_micro_batch_by_hand (lengths 2 and 1; -A x bound
    # = 1.75 and -0.9139113). norm_rows 6 makes the two rows one unit whatever the group size: shares
    # 2.3333333 and -0.6092742 as before. norm_rows 1: a unit per row, share = -A bound len / len x (2 rows /
    # 2 units) = 1.75 and -0.9139113.
    v1, v2, lps, A = _spg_two_rows()
    out = spg.loss(LossInputs(lps, None, None, [v1, v2], A, group_size=1), spg.SPGConfig())
    assert out.per_sequence.tolist() == pytest.approx([2.3333333, -0.6092742], abs=1e-6)
    out = spg.loss(LossInputs(lps, None, None, [v1, v2], A, group_size=2), spg.SPGConfig(norm_rows=1))
    assert out.per_sequence.tolist() == pytest.approx([1.75, -0.9139113], abs=1e-6)
    # norm_rows 0: a unit is a group (G = 1 here): the same as one row per unit
    out = spg.loss(LossInputs(lps, None, None, [v1, v2], A, group_size=1), spg.SPGConfig(norm_rows=0))
    assert out.per_sequence.tolist() == pytest.approx([1.75, -0.9139113], abs=1e-6)
    # one view (num_mc 1) in a micro-batch of the whole batch: row 0 ELBO -1 -> 1 x 2 / 3 x 2 = 1.3333333;
    # row 1 ELBO -0.5, EUBO (1.5 x -0.5) / 1.5 = -0.5, mix -0.5 -> -0.5 x 1 / 3 x 2 = -0.3333333
    out = spg.loss(LossInputs([lps[0]], None, None, [v1], A, all_views=[v1], rows=slice(0, 2), group_size=2),
                   spg.SPGConfig(num_mc=1))
    assert out.per_sequence.tolist() == pytest.approx([1.3333333, -0.3333333], abs=1e-6)


def test_spg_block_positions_and_prompt_perturbation():
    assert spg.block_positions(8, 4).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert spg.block_positions(4, 1).tolist() == [0, 1, 2, 3]
    assert spg.block_positions(4, 0).tolist() == [0, 0, 0, 0]  # 0 = one block
    assert spg.block_positions(4, 4).tolist() == [0, 0, 0, 0]
    # p_mask_clean = 1: every prompt token is hidden in both estimators' views; 0: none
    b = _batch(3, 4)
    b.block_length = 2
    for cfg in (spg.SPGConfig(p_mask_clean=1.0), spg.SPGConfig(p_mask_clean=1.0, estimator="block")):
        for v in spg.views(0, b, cfg, torch.Generator().manual_seed(0)):
            assert (v.input_ids[:, :2] == 0).all()
    for cfg in (spg.SPGConfig(p_mask_clean=0.0), spg.SPGConfig(p_mask_clean=0.0, estimator="block")):
        for v in spg.views(0, b, cfg, torch.Generator().manual_seed(0)):
            assert (v.input_ids[:, :2] == 1).all()
    # one block (block length 0 or L, as on image tasks): every view hides 1..L of its tokens
    for bl in (0, 4):
        b.block_length = bl
        for v in spg.hidden_views(b, 2, 0.0, torch.Generator().manual_seed(0)):
            assert v.score.any(1).all()
    # blocks of 1 token, 4 views: each row's views make each of its 4 blocks current exactly once (a permutation)
    b.block_length = 1
    vs = spg.hidden_views(b, 4, 0.0, torch.Generator().manual_seed(0))
    current = torch.stack([v.score.float().argmax(1) for v in vs])  # (4, B): the first hidden token's block
    assert torch.equal(current.sort(0).values, torch.arange(4)[:, None].expand(4, 3).float())


def _hidden_view_masks(p_mask_clean: float, m: int = 3):
    """The reference estimator's m views on 500 rows of lengths 12, 6, 4, 5, 1 (L = 12, blocks of 4): checks
    that hold for every view, then each view's (B, L) hidden mask for the callers to read."""
    lengths = torch.tensor([12, 6, 4, 5, 1] * 100)
    valid = torch.arange(12)[None, :] < lengths[:, None]
    b = _batch(500, 12, valid=valid)
    b.block_length = 4
    vs = spg.hidden_views(b, m, p_mask_clean, torch.Generator().manual_seed(0))
    blk = torch.arange(12) // 4
    hiddens = []
    for v in vs:
        hidden = v.input_ids[:, 2:] == 0
        assert torch.equal(v.score, hidden & valid) and hidden[~valid].all()
        assert torch.allclose(v.weight[:, 0], lengths.float() / v.score.sum(1).float())  # 1/t, t of the whole row
        hiddens.append(hidden)
    return lengths, valid, blk, hiddens


def test_spg_reference_views_current_block_and_hidden_count_by_hand():
    lengths, valid, blk, hiddens = _hidden_view_masks(0.0)
    text_blocks = (lengths - 1) // 4 + 1  # 3, 2, 1, 2, 1
    seen = {12: [], 5: []}
    full = []
    for hidden in hiddens:
        for r in range(500):
            h = hidden[r] & valid[r]
            c = int(blk[h].min())  # with p_mask_clean 0 nothing before the current block is hidden
            assert c < text_blocks[r]  # the current block holds text
            assert h[blk > c][valid[r][blk > c]].all()  # later text blocks: all hidden
            m_text = min(int(lengths[r]) - 4 * c, 4)
            k = int(h[blk == c].sum())
            assert 1 <= k <= m_text  # k uniform on {1, ..., m_text}
            if int(lengths[r]) in seen:
                seen[int(lengths[r])].append(c)
            if int(lengths[r]) == 12:
                full.append(k == m_text)
    # length 12: the first view's block is a uniform permutation's first entry: 0, 1, 2 about 1/3 each over
    # the 100 rows x 3 views (each row's 3 views are its permutation: exactly one view per block)
    c12 = torch.tensor(seen[12]).reshape(3, 100)
    assert torch.equal(c12.sort(0).values, torch.tensor([[0], [1], [2]]).expand(3, 100))
    # length 5: blocks 0 and 1 hold text (1 token in block 1); the permutation of the 3 blocks taken modulo
    # 2 text blocks is {0, 1, 0}: in each row's 3 views block 0 is current twice and block 1 once
    c5 = torch.tensor(seen[5]).reshape(3, 100)
    assert torch.equal(c5.sort(0).values, torch.tensor([[0], [0], [1]]).expand(3, 100))
    # a whole block of 4 hidden when k = 4: probability 1/4
    assert 0.17 < sum(full) / len(full) < 0.33


def test_spg_reference_views_perturb_only_earlier_blocks():
    # p_mask_clean 1: every text token before the current block is hidden, and the current block still hides
    # exactly k of its text tokens (so sometimes fewer than all of them)
    lengths, valid, blk, hiddens = _hidden_view_masks(1.0)
    partial = 0
    for hidden in hiddens:
        for r in range(0, 500, 5):  # the length-12 rows
            h = hidden[r]
            # earlier blocks (all perturbed) and later ones are fully hidden: at most the current block keeps
            # visible tokens, and it does whenever k < 4
            not_full = [c for c in range(3) if not h[blk == c].all()]
            if not_full:
                assert len(not_full) == 1  # only the current block can keep tokens visible
                partial += 1
    assert partial > 150  # k < 4 in about 3/4 of the 300 views


def test_spg_config_rejects_bad_values_with_what_to_choose():
    with pytest.raises(ValueError, match="estimator='x'; choose hidden or block"):
        spg.SPGConfig(estimator="x")
    with pytest.raises(ValueError, match="bound='x'; choose mix, eubo or elbo"):
        spg.SPGConfig(bound="x")
    for bad in ({"num_mc": 0}, {"eubo_beta": 0.9}, {"mix_weight": 1.1}, {"mix_weight": -0.1}):
        with pytest.raises(ValueError, match="need num_mc >= 1, eubo_beta >= 1 and 0 <= mix_weight <= 1"):
            spg.SPGConfig(**bad)
    spg.SPGConfig(num_mc=1, eubo_beta=1.0, mix_weight=1.0)  # the edges are allowed
    spg.SPGConfig(mix_weight=0.0)


def test_spg_views_hide_at_least_one_token_of_the_current_block_and_score_every_hidden_valid_token():
    # 400 rows, L = 8 in blocks of 4, 6 valid tokens (so the second block has 2 text tokens).
    valid = torch.zeros(400, 8, dtype=torch.bool)
    valid[:, :6] = True
    b = _batch(400, 8, valid=valid)
    b.block_length = 4
    vs = spg.views(0, b, spg.SPGConfig(), torch.Generator().manual_seed(0))
    assert len(vs) == 2  # --num_t 2
    for v in vs:
        hidden = v.input_ids[:, 2:] == 0
        assert torch.equal(v.score, hidden & valid)  # every hidden valid token, not only the block's
        assert hidden[:, 6:].all()  # after the completion: always hidden
        assert v.score.any(1).all()  # k >= 1: never a view with nothing hidden
        # the weight is 1/t with t the hidden share of the whole completion
        assert torch.allclose(v.weight[:, 0], 6.0 / v.score.sum(1).float())
    # the current block is the first or the second (both hold text) about equally; when it is the second
    # (2 text tokens), k is uniform on {1, 2}, so exactly one of tokens 4-5 is hidden in ~1/2 x 1/2 of views
    # (when the first block is current, tokens 4-5 are a later block: both hidden)
    second = torch.stack([v.score[:, 4:6].sum(1) for v in vs]).flatten().float()
    assert 0.18 < (second == 1).float().mean().item() < 0.32


# ---- the loop: ratio, KL and reference refresh must act --------------------------------------------------
def _train(method, steps=2, **over):
    return train(TinyBert(), ToyTask(), method, EXAMPLES, [],
                 TrainConfig(**{**TINY, "steps": steps}, method_overrides=over), seed=0, progress=False)


def test_after_the_first_update_the_ratio_moves_away_from_one():
    # mu = 3: updates 1 and 2 use old log-probs from before update 0, so rho != 1 once the weights moved
    res = _train("maskgrpo", mu=3, beta=0.0)
    assert any(r["ratio_max"] > 1 + 1e-6 or r["ratio_min"] < 1 - 1e-6 for r in res.curve)


def test_the_kl_to_the_reference_is_positive_once_the_policy_moved_and_absent_without_beta():
    res = _train("diffu-grpo", mu=2, beta=0.1)
    assert res.curve[-1]["kl"] > 0
    assert all(r["kl"] is None for r in _train("diffu-grpo", mu=2, beta=0.0).curve)


def test_reference_refresh_with_alpha_one_keeps_the_kl_at_zero():
    # mu = 1 and ref <- policy after every update: each step's only update starts where the reference is,
    # so k3 = 0 exactly; without the refresh the second step's KL is positive.
    synced = _train("diffu-grpo", steps=3, mu=1, beta=0.1, ref_sync_every=1, ref_sync_alpha=1.0, loss_norm="token")
    frozen = _train("diffu-grpo", steps=3, mu=1, beta=0.1, ref_sync_every=0, loss_norm="token")
    assert all(r["kl"] == 0.0 for r in synced.curve)
    assert frozen.curve[-1]["kl"] > 0


def test_clip_bounds_and_where_the_clip_is_active_by_hand():
    from trainers.grpo import clipped_surrogate

    # PPO: the clip is active where the ratio left [1 - eps, 1 + eps] on the side the advantage pushes:
    # below 1 - eps with A < 0, above 1 + eps with A > 0. Exactly on a bound is not clipped.
    ratio = torch.tensor([[0.75, 1.25, 0.5, 2.0, 0.5]])
    adv = torch.tensor([[-1.0, 1.0, 0.0, 0.0, 0.5]])
    loss, active = clipped_surrogate(ratio, adv, 0.25)
    assert active.tolist() == [[False, False, False, False, False]]
    # -min(rho A, clip(rho) A): 0.75, -1.25, 0, 0, -min(0.25, 0.375) = -0.25
    assert loss.flatten().tolist() == pytest.approx([0.75, -1.25, 0.0, 0.0, -0.25])
    # DAPO's asymmetric clip: eps_high 0.4 lets 1.3 through (A = 1: -1.3, not clipped); eps 0.2 alone clips it
    loss, active = clipped_surrogate(torch.tensor([[1.3]]), torch.tensor([[1.0]]), 0.2, epsilon_high=0.4)
    assert loss.item() == pytest.approx(-1.3) and not active.item()
    loss, active = clipped_surrogate(torch.tensor([[1.3]]), torch.tensor([[1.0]]), 0.2)
    assert loss.item() == pytest.approx(-1.2) and active.item()


def test_no_kl_is_computed_at_beta_zero_even_with_reference_log_probs():
    b = _batch(1, 2)
    view = make_view(b, _rows([True, True]), _rows([True, True]))
    lp = torch.full((1, 2), -1.0)
    out = grpo_loss(LossInputs([lp], None, [torch.full((1, 2), -2.0)], [view], torch.tensor([1.0])),
                    MethodConfig(beta=0.0))
    assert out.kl is None


def test_unit_sizes_by_hand_including_an_empty_batch():
    from trainers.grpo import unit_sizes

    scored = _rows([True, False], [True, True], [False, False])  # rows score 1, 2, 0 tokens
    n, units = unit_sizes(scored, 2)  # units {0, 1} (3 tokens) and {2} (0 tokens)
    assert n.tolist() == [3.0, 3.0, 0.0] and units == 2
    n, units = unit_sizes(torch.zeros(0, 2, dtype=torch.bool), 2)
    assert n.numel() == 0 and units == 0
    # the whole batch given as all_views without a row slice: the micro-batch is the batch itself
    b = _batch(3, 2)
    view = make_view(b, scored, scored)
    per_token = torch.ones(3, 2)
    got = reduce_tokens(per_token, scored, LossInputs([], None, None, [view], torch.zeros(3), all_views=[view]),
                        MethodConfig(loss_norm="token", norm_rows=2))
    # unit 0: 3 tokens of loss 1 over 3 = 1; unit 1: nothing scored = 0; mean over 2 units = 0.5
    assert got.sum().item() / 3 == pytest.approx(0.5)


# ---- masks are a function of the generator they are given (managed randomness) ---------------------------
@pytest.mark.parametrize("name", ["maskgrpo", "diffu-grpo", "unigrpo", "coupled-grpo", "wd1", "spg"])
def test_views_depend_only_on_the_generator_they_are_given(name):
    # the old, reference and current policies must see the same masks: the same seed gives the same views
    # whatever else drew random numbers in between; another seed gives other views
    from trainers.methods import METHODS

    method = METHODS.get(name)
    cfg = method.make_config(mu=2)
    b = _batch(6, 64)
    b.block_length = 16

    def draw(seed):
        return method.views(0, b, cfg, torch.Generator().manual_seed(seed))

    first = draw(5)
    torch.rand(100)  # the global RNG moves; the views must not
    again, other = draw(5), draw(6)
    assert all(torch.equal(x.input_ids, y.input_ids) and torch.equal(x.score, y.score) for x, y in zip(first, again))
    assert any(not torch.equal(x.input_ids, y.input_ids) for x, y in zip(first, other))


def test_batch_generators_differ_by_tag_and_repeat_for_the_same_tag():
    b = _batch(1, 2)
    assert torch.equal(torch.rand(4, generator=b.generator("a")), torch.rand(4, generator=b.generator("a")))
    assert not torch.equal(torch.rand(4, generator=b.generator("a")), torch.rand(4, generator=b.generator("b")))


def test_unigrpo_rates_for_one_and_two_updates_by_hand():
    from trainers.unigrpo import structured_rates

    u = torch.tensor([0.3])
    assert structured_rates(u, 0, 1).tolist() == pytest.approx([0.3])  # mu = 1: the start alone
    # mu = 2: t_0 = u, t_1 = u + (1 - u) / 1 = 1
    assert [structured_rates(u, j, 2).item() for j in (0, 1)] == pytest.approx([0.3, 1.0])


def test_maskgrpo_fading_out_for_one_and_two_positions_by_hand():
    # L = 1: the ratio itself; L = 2, t = 0.7: 1 - 2 * 0.3 * (1 - n/1) = 0.4 at n = 0, 1.0 at n = 1
    assert maskgrpo.fading_out_probs(0.7, 1).tolist() == pytest.approx([0.7])
    assert maskgrpo.fading_out_probs(0.7, 2).tolist() == pytest.approx([0.4, 1.0])


def test_coupled_grpo_ratio_stays_in_its_range_and_the_pair_weights_are_one_over_t():
    from trainers import coupled_grpo

    b = _batch(2, 8)
    cfg = coupled_grpo.CoupledGRPOConfig()
    for seed in range(40):
        full, part, comp = coupled_grpo.views(0, b, cfg, torch.Generator().manual_seed(seed))
        t = 1.0 / part.weight[0, 0].item()
        assert 0.2 <= t <= 0.8  # t ~ U(0.2, 0.8)
        assert comp.weight[0, 0].item() == pytest.approx(1.0 / (1.0 - t))


def test_config_ranges_by_hand():
    from trainers import coupled_grpo, diffu_grpo

    coupled_grpo.CoupledGRPOConfig(t_low=0.5, t_high=0.5)  # a single ratio is allowed
    for lo, hi in ((0.0, 0.5), (0.2, 1.0), (0.2, 1.5), (0.6, 0.5)):
        with pytest.raises(ValueError, match="need 0 < t_low <= t_high < 1"):
            coupled_grpo.CoupledGRPOConfig(t_low=lo, t_high=hi)
    diffu_grpo.DiffuGRPOConfig(p_mask_prompt=0.0)
    diffu_grpo.DiffuGRPOConfig(p_mask_prompt=1.0)
    with pytest.raises(ValueError, match="must be a probability"):
        diffu_grpo.DiffuGRPOConfig(p_mask_prompt=1.5)


def test_wd1_units_and_its_optional_kl_by_hand():
    b = _batch(4, 1)
    view = make_view(b, _rows([True], [True], [True], [True]), _rows([True], [True], [True], [True]))
    lp = torch.full((4, 1), -1.0)
    A = torch.tensor([1.0, 0.0, 0.0, 0.0])
    # units of 2 rows summed: row 0 share = 2 * (-1 * -1) = 2 (the loop's sum / 4 = 0.5 = one unit's sum 1
    # averaged over 2 units); with units of the whole batch (4 rows) it would be 4
    by_group = wd1.loss(LossInputs([lp], None, None, [view], A, group_size=2), wd1.WD1Config(norm_rows=0))
    assert by_group.per_sequence[0].item() == pytest.approx(2.0)
    by_rows = wd1.loss(LossInputs([lp], None, None, [view], A), wd1.WD1Config(norm_rows=2))
    assert by_rows.per_sequence[0].item() == pytest.approx(2.0)
    # beta 0.1 adds beta * mean k3 per completion: logp -1, ref -2: 0.1 * 0.367879 = 0.0367879
    out = wd1.loss(LossInputs([lp], None, [torch.full((4, 1), -2.0)], [view], torch.zeros(4)),
                   wd1.WD1Config(beta=0.1, loss_norm="sequence"))
    assert out.per_sequence.tolist() == pytest.approx([0.0367879] * 4, abs=1e-6)
    assert out.kl is not None and out.kl.flatten().tolist() == pytest.approx([0.367879] * 4, abs=1e-6)


def test_maskgrpo_config_range_kind_switch_and_its_own_advantage_epsilon_by_hand():
    maskgrpo.MaskGRPOConfig(gamma=0.0)  # gamma in [0, 1)
    for bad in (1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"gamma=.* must be in \[0, 1\)"):
            maskgrpo.MaskGRPOConfig(gamma=bad)
    text = maskgrpo.MaskGRPOConfig().for_kind("text")
    assert (text.gamma, text.epsilon) == (0.6, 0.2)
    assert maskgrpo.rollout_sampler("text") is None and maskgrpo.rollout_sampler("image") == "emerge"
    # (r - mean) / (std + 1e-5), r = [0, 1]: 0.5 / (0.7071068 + 0.00001) = 0.7070968 (TRL's 1e-4 gives 0.7070068)
    adv = maskgrpo.advantages(torch.tensor([[0.0, 1.0]]), maskgrpo.MaskGRPOConfig())
    assert adv.flatten().tolist() == pytest.approx([-0.7070968, 0.7070968], abs=2e-7)


def test_maskgrpo_honours_its_t_max():
    # mu = 1: t = min(0.6 + 0.4, t_max) = t_max; fading-out keeps the mean hidden share at t for t >= 0.5
    b = _batch(4, 4000)
    (v,) = maskgrpo.views(0, b, maskgrpo.MaskGRPOConfig(mu=1, t_max=0.9), torch.Generator().manual_seed(0))
    assert v.score.float().mean().item() == pytest.approx(0.9, abs=0.01)


def test_view_rows_keep_every_field_and_weights_are_float32():
    b = _batch(2, 3)
    region = _rows([True, True, False], [True, False, False])
    v = make_view(b, region, region, weight=torch.tensor([[2.0], [4.0]], dtype=torch.float64), region=region)
    assert v.weight.dtype == torch.float32 and v.weight[1].tolist() == [4.0, 4.0, 4.0]
    r = v.rows(slice(1, 2))  # what a micro-batch sees
    assert torch.equal(r.attention_mask, v.attention_mask[1:]) and torch.equal(r.region, region[1:])
    assert torch.equal(r.input_ids, v.input_ids[1:]) and torch.equal(r.weight, v.weight[1:])
    assert make_view(b, region, region).rows(slice(0, 1)).region is None


def test_an_unknown_loss_normalisation_names_the_valid_ones():
    with pytest.raises(ValueError, match="loss_norm='x'; choose token or sequence"):
        MethodConfig(loss_norm="x")
    with pytest.raises(ValueError, match="choose group_sum or sequence"):
        wd1.WD1Config(loss_norm="token")


def test_method_config_ranges_of_the_recipe_fields():
    MethodConfig(norm_rows=0, ref_sync_every=0, ref_sync_alpha=1.0)  # 0 = G / never; alpha 1 = copy
    for bad in ({"norm_rows": -1}, {"ref_sync_every": -1}):
        with pytest.raises(ValueError, match="norm_rows and ref_sync_every must be >= 0"):
            MethodConfig(**bad)
    for alpha in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match=r"ref_sync_alpha=.* must be in \(0, 1\]"):
            MethodConfig(ref_sync_alpha=alpha)


def test_method_config_rejects_impossible_mu_epsilon_and_beta():
    MethodConfig(mu=1, epsilon=1e-3, beta=0.0)
    with pytest.raises(ValueError, match="mu=0 must be >= 1"):
        MethodConfig(mu=0)
    with pytest.raises(ValueError, match="epsilon=0 must be > 0"):
        MethodConfig(epsilon=0)
    with pytest.raises(ValueError, match="beta=-1 must be >= 0"):
        MethodConfig(beta=-1)


# ---- the loop's pure pieces: learning-rate schedule and step statistics ---------------------------------
def test_lr_factor_by_hand():
    from trainers.loop import lr_factor

    def curve(total, us, **cfg):
        f = lr_factor(TrainConfig(**cfg), total)
        return [f(u) for u in us]

    # warm-up over w = 3 updates: (u + 1) / (w + 1), then constant 1
    assert curve(10, [0, 1, 2, 3, 100], warmup_steps=3) == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    # cosine, no warm-up, 10 updates, floor 0.1: 0.1 + 0.9 x 0.5 (1 + cos(pi u / 10)); u = 2: 0.9140576,
    # u = 5: 0.55, u = 10 and past the end: 0.1
    assert curve(10, [0, 2, 5, 10, 20], lr_schedule="cosine", min_lr_ratio=0.1) == pytest.approx(
        [1.0, 0.9140576, 0.55, 0.1, 0.1], abs=1e-6)
    # linear after 2 warm-up updates, 12 in all: p = (u - 2) / 10; floor 0: 1 - p; floor 0.1: 0.1 + 0.9 (1 - p)
    assert curve(12, [0, 1, 2, 7, 12], lr_schedule="linear", warmup_steps=2, min_lr_ratio=0.0) == pytest.approx(
        [1 / 3, 2 / 3, 1.0, 0.5, 0.0])
    assert curve(12, [7], lr_schedule="linear", warmup_steps=2, min_lr_ratio=0.1) == pytest.approx([0.55])
    # where linear and cosine part: u = 4, p = 0.2 -> linear 0.8 (cosine would give 0.9045085)
    assert curve(12, [4], lr_schedule="linear", warmup_steps=2, min_lr_ratio=0.0) == pytest.approx([0.8])
    # one update after a 2-update warm-up: p = (3 - 2) / 1 = 1, straight to the floor
    assert curve(3, [2, 3], lr_schedule="linear", warmup_steps=2, min_lr_ratio=0.0) == pytest.approx([1.0, 0.0])


def test_step_statistics_count_scored_tokens_only_by_hand():
    from trainers.grpo import LossOutput
    from trainers.loop import _Stats

    st = _Stats()
    scored = _rows([True, True, False], [False, True, False])
    # ratio on the 3 scored tokens 1.1, 0.8, 1.3 (the unscored 9.0 and 0.1 must not count): mean 1.0667, min 0.8,
    # max 1.3; KL 0.2, 0.4, 0.6 -> mean 0.4; clip on 1 of the 3
    st.add_tokens(LossOutput(torch.zeros(2), scored, ratio=torch.tensor([[1.1, 0.8, 9.0], [0.1, 1.3, 0.1]]),
                             kl=torch.tensor([[0.2, 0.4, 5.0], [5.0, 0.6, 5.0]]),
                             clipped=_rows([False, False, True], [False, True, True])))
    # a ratio-free loss (spg) adds tokens but no ratio, KL or clip
    st.add_tokens(LossOutput(torch.zeros(1), _rows([True, True, True])))
    # a micro-batch whose views score nothing (a tracerl row without that example) changes nothing
    st.add_tokens(LossOutput(torch.zeros(1), _rows([False, False, False]), ratio=torch.full((1, 3), 7.0),
                             kl=torch.ones(1, 3), clipped=_rows([True, True, True])))
    assert st.sums["tokens"] == 6
    assert (st.sums["ratio"] / st.sums["ratio_n"]) == pytest.approx(3.2 / 3)
    assert (st.ratio_min, st.ratio_max) == pytest.approx((0.8, 1.3))
    assert st.sums["kl"] / st.sums["kl_n"] == pytest.approx(0.4)
    assert st.sums["clip"] / st.sums["clip_n"] == pytest.approx(1 / 3)


# ---- SPG's block estimator (the `equal` recipe): rules every view must obey, and `bounds` by hand ---------
def _two_block_batch():
    # L = 8 in blocks of 4; row 0 holds text in block 0 only (3 tokens), row 1 in both blocks (8 tokens)
    valid = torch.tensor([[1, 1, 1, 0, 0, 0, 0, 0], [1] * 8], dtype=torch.bool)
    return RolloutBatch(prompt_ids=torch.full((2, 2), 5), prompt_mask=torch.ones(2, 2, dtype=torch.bool),
                        completion_ids=torch.full((2, 8), 4), valid=valid, commit_step=torch.zeros(2, 8, dtype=torch.long),
                        mask_id=1, block_length=4, seed=3)


@pytest.mark.parametrize("p_clean", [0.0, 1.0])
def test_spg_block_views_hide_later_blocks_keep_or_hide_earlier_ones_and_only_score_the_current_block(p_clean):
    batch = _two_block_batch()
    blk = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    gen = torch.Generator().manual_seed(0)
    partly_hidden_region = False
    for _ in range(40):
        v = spg.block_view(batch, p_clean, gen)
        hidden = v.input_ids[:, 2:] == 1  # (2, 8) completion positions holding the mask id
        for r in range(2):
            cur = int(blk[v.region[r]].unique().item())  # the region is exactly one block
            assert (v.region[r] & batch.valid[r]).any()  # the current block always holds text (row 0: block 0)
            assert hidden[r, blk > cur].all()  # every later block is hidden
            # earlier blocks: hidden with probability p_clean (so all of them at 1, none at 0)
            assert hidden[r, blk < cur].all() if p_clean == 1.0 else not hidden[r, blk < cur].any()
            assert torch.equal(v.score[r], v.region[r] & hidden[r] & batch.valid[r])  # scored: hidden text of the block
            n_region, n_hidden = int((v.region[r] & batch.valid[r]).sum()), int(v.score[r].sum())
            assert v.weight[r, 0].item() == pytest.approx(n_region / max(n_hidden, 1))  # 1 / empirical t
            partly_hidden_region |= bool((v.region[r] & ~hidden[r]).any())
    assert partly_hidden_region  # t ~ U(0, 1): the current block is not always hidden whole


def test_spg_block_bounds_average_the_elbo_over_covered_tokens_only_by_hand():
    # one view, one row of 4 tokens; the current block covers tokens 0-1, both hidden, weight 1 (t = 1);
    # log-probs -1, -2, -3, -4: ELBO = mean over covered tokens = (-1 - 2) / 2 = -1.5 (tokens 2-3 were never
    # in a current block and must not count as zeros: (-1 - 2 + 0 + 0) / 4 = -0.75 would be wrong).
    # EUBO with beta 1: each hidden token's log-mean-exp over its 1 covering view is log(1) + lp, so its mean
    # over hidden tokens is (-1 - 2) / 2 = -1.5 as well
    region = torch.tensor([[True, True, False, False]])
    view = type("V", (), {"score": region.clone(), "weight": torch.ones(1, 4), "region": region})()
    elbo, eubo = spg.bounds([torch.tensor([[-1.0, -2.0, -3.0, -4.0]])], [view], 1.0)
    assert elbo.item() == pytest.approx(-1.5) and eubo.item() == pytest.approx(-1.5)


# ---- recipes and the method registry: what a recipe hands each method, and what a user is told ------------
def test_equal_recipe_keeps_the_implementation_its_committed_results_were_made_with():
    """`--recipe equal` must reproduce the committed results: per-completion averaging, a frozen reference,
    maskgrpo scoring up to the first EOS only; on embedded tasks also the shared mu 4 and beta 0.1 (README,
    docs/RL_SETTINGS.md). Written out by hand from those docs, not read from trainers/recipes.py."""
    from trainers.recipes import recipe_settings

    mg = {"loss_norm": "sequence", "ref_sync_every": 0, "score_padding": False}
    assert recipe_settings("equal", "maskgrpo", False) == ({}, mg)
    assert recipe_settings("equal", "maskgrpo", True) == ({}, {**mg, "mu": 4, "beta": 0.1})
    assert recipe_settings("equal", "spg", True) == (
        {}, {"loss_norm": "sequence", "estimator": "block", "num_mc": 3, "mu": 4, "beta": 0.1})
    # a method the recipe tables do not know (a user's new method file) gets only the shared values
    assert recipe_settings("equal", "my-method", True) == ({}, {"mu": 4, "beta": 0.1})
    assert recipe_settings("equal", "my-method", False) == ({}, {})
    # the paper recipe's group size goes to TrainConfig, the rest to the method
    train_part, method_part = recipe_settings("paper", "coupled-grpo", True)
    assert train_part == {"num_generations": 10} and method_part["mu"] == 2 and method_part["epsilon"] == 0.5


def test_recipe_and_method_errors_say_what_to_choose_instead():
    from trainers.methods import get_method
    from trainers.recipes import check_recipe, recipe_settings

    with pytest.raises(ValueError, match=r"^unknown recipe 'fast'; choose equal or paper$"):
        check_recipe("fast")
    with pytest.raises(ValueError, match=r"^unknown recipe 'fast'; choose equal or paper$"):
        recipe_settings("fast", "maskgrpo", True)
    with pytest.raises(ValueError, match=r"^no paper recipe for method 'my-method'; known: coupled-grpo, "
                                         r"diffu-grpo, maskgrpo, spg, tracerl, unigrpo, wd1$"):
        recipe_settings("paper", "my-method", True)
    with pytest.raises(ValueError, match=r"^unknown maskgrpo setting\(s\) alpha, zeta; valid: mu, "):
        get_method("maskgrpo").make_config(zeta=1, alpha=2, mu=3)


def test_a_registered_method_is_found_by_its_name():
    from trainers.methods import METHODS, Method, get_method, register

    m = Method(name="test-only-method", config_cls=MethodConfig, advantages=lambda r, c: r,
               views=lambda j, b, c, g: [])
    try:
        assert register(m) is m
        assert get_method("test-only-method") is m and "test-only-method" in METHODS.names()
    finally:
        METHODS._items.pop("test-only-method", None)


def test_unigrpo_start_ratio_is_drawn_anew_from_each_batch_seed():
    # each row's start ratio u comes from the batch's seed (a fresh u every step) and view j = 0 hides each
    # position with probability u, the draws coming from the iteration's generator: with one generator seed,
    # one batch seed gives the same mask twice and another batch seed another mask (64 positions a row)
    from trainers import unigrpo

    def hidden(seed):
        b = _batch(2, 64)
        b.seed = seed
        return unigrpo.views(0, b, unigrpo.UniGRPOConfig(mu=2), torch.Generator().manual_seed(0))[0].score

    assert torch.equal(hidden(1), hidden(1))
    assert not torch.equal(hidden(1), hidden(2))


# ---- the training config: its ranges, how a task and --set fill it, and what a run records ---------------
def test_train_config_ranges_allow_their_boundaries_and_refuse_word_for_word():
    TrainConfig(steps=0, prompts_per_step=1, num_generations=2, lr=1e-9, micro_batch_size=1, rollout_batch_size=1)
    bad = [({"steps": -1}, "need steps >= 0 and prompts_per_step >= 1, got -1 and 8"),
           ({"prompts_per_step": 0}, "need steps >= 0 and prompts_per_step >= 1, got 100 and 0"),
           ({"num_generations": 1}, "num_generations=1: group advantages need G >= 2"),
           ({"lr": 0.0}, "lr=0.0 must be > 0"),
           ({"lr_schedule": "step"}, "lr_schedule='step'; choose constant, cosine or linear"),
           ({"micro_batch_size": 0}, "micro_batch_size must be >= 1 or None (all at once)"),
           ({"rollout_batch_size": 0}, "rollout_batch_size must be >= 1 or None (all at once)")]
    for kw, msg in bad:
        with pytest.raises(ValueError) as info:
            TrainConfig(**{"steps": 100, "prompts_per_step": 8, **kw})
        assert str(info.value) == msg


def test_for_task_fills_embedded_defaults_then_method_overrides_and_names_valid_keys():
    from fakes import ToyTask

    class Embedded(ToyTask):
        embedded = True

    cfg = TrainConfig.for_task(Embedded(), "maskgrpo", method_overrides={"gamma": 0.7}, mu=3)
    # the embedded tasks' CPU budget (docs/RL_SETTINGS.md): 100 steps, 8 prompts x 6, lr 3e-5, 16 rollout steps
    assert (cfg.steps, cfg.prompts_per_step, cfg.num_generations, cfg.lr, cfg.diffusion_steps) == (100, 8, 6, 3e-5, 16)
    assert cfg.method_overrides["gamma"] == 0.7 and cfg.method_overrides["mu"] == 3
    with pytest.raises(ValueError) as info:
        TrainConfig.for_task(Embedded(), "wd1", zz=1)
    msg = str(info.value)
    assert msg.startswith("unknown training setting 'zz'; TrainConfig fields: adam_betas, adam_eps, ")
    assert "; wd1 fields: beta, epsilon, " in msg


def test_rollout_decoder_takes_every_training_setting_over_the_tasks_defaults():
    from fakes import ToyTask

    from trainers.loop import rollout_decode_config
    from trainers.methods import get_method

    cfg = TrainConfig(sampler="low_confidence", gen_length=12, block_length=4, diffusion_steps=6, temperature=0.5,
                      remasking="random", cfg_scale=2.0, rollout_cache="prefix")
    d = rollout_decode_config(cfg, ToyTask(), get_method("diffu-grpo"))  # the task's own: gen 8, block 4, 4 steps
    assert (d.sampler, d.gen_length, d.block_length, d.steps, d.temperature, d.remasking, d.cfg_scale, d.cache) == \
        ("low_confidence", 12, 4, 6, 0.5, "random", 2.0, "prefix")
    d = rollout_decode_config(TrainConfig(gen_length=12, block_length=6, diffusion_steps=6), ToyTask(),
                              get_method("diffu-grpo"))
    assert (d.gen_length, d.block_length, d.steps) == (12, 6, 6)


def test_step_statistics_add_up_over_updates_by_hand():
    from trainers.grpo import LossOutput
    from trainers.loop import _Stats

    st = _Stats()
    # two updates with ratios: 1.2 and 0.8 on one token each, then 1.0 and 1.4 -> mean 4.4 / 4 = 1.1
    st.add_tokens(LossOutput(torch.zeros(1), _rows([True, True]), ratio=torch.tensor([[1.2, 0.8]])))
    st.add_tokens(LossOutput(torch.zeros(1), _rows([True, True]), ratio=torch.tensor([[1.0, 1.4]])))
    assert (st.sums["ratio"], st.sums["ratio_n"], st.sums["tokens"]) == (pytest.approx(4.4), 4.0, 4.0)
    assert (st.ratio_min, st.ratio_max) == pytest.approx((0.8, 1.4))


def test_a_runs_flat_config_records_the_rollout_decoder_and_the_methods_fields():
    from types import SimpleNamespace

    from harness.sampling import DecodeConfig
    from trainers.loop import _Run

    run = SimpleNamespace(cfg=TrainConfig(method_overrides={"mu": 3}, adam_betas=(0.9, 0.95)),
                          decode=DecodeConfig("emerge", gen_length=12, block_length=12, steps=6, temperature=0.5,
                                              cfg_scale=1.5),
                          mcfg=MethodConfig(mu=3), reward_workers=4)
    flat = _Run.flat_config(run, "maskgrpo", 5)
    assert (flat["method"], flat["seed"], flat["mu"], flat["reward_workers"], flat["adam_betas"]) == \
        ("maskgrpo", 5, 3, 4, [0.9, 0.95])
    assert (flat["sampler"], flat["gen_length"], flat["block_length"], flat["diffusion_steps"], flat["temperature"],
            flat["remasking"], flat["cfg_scale"]) == ("emerge", 12, 12, 6, 0.5, "low_confidence", 1.5)
    assert "method_overrides" not in flat


def test_batch_generators_and_row_streams_differ_by_seed_and_handle_an_empty_batch():
    from trainers.estimators import RowStreams

    a, b = _batch(2, 4), _batch(2, 4)
    a.seed, b.seed = 1, 2
    draw = lambda batch: torch.rand(4, generator=batch.generator("t")).tolist()  # noqa: E731
    assert draw(a) == draw(a) and draw(a) != draw(b)  # the batch's seed keys its generators
    # RowStreams.draw takes a base from the full 62-bit range: 200 generator seeds give 200 different row-0
    # streams (a range of 124 values would repeat)
    firsts = {RowStreams.draw(a, torch.Generator().manual_seed(k)).rand(1)[0, 0].item() for k in range(200)}
    assert len(firsts) == 200
    empty = _batch(0, 4)
    rows = RowStreams(empty, 0)
    assert rows.rand(3).shape == (0, 3) and rows.randperm(5).shape == (0, 5) and rows.randperm(5).dtype == torch.long
