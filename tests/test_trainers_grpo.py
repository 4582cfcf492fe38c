"""GRPO's pure pieces and the method losses, with expected values worked by hand in the comments."""

import math

import pytest
import torch
from fakes import uneven_batch

from trainers import maskgrpo, spg, wd1
from trainers.estimators import RolloutBatch, make_view
from trainers.grpo import (
    LossInputs,
    MethodConfig,
    centered_advantages,
    clipped_surrogate,
    grpo_loss,
    k3_kl,
    leave_one_out_advantages,
    std_normalized_advantages,
)
from trainers.methods import METHODS


def test_advantages_by_hand():
    r = torch.tensor([[1.0, 2.0, 3.0]])
    # mean 2: centred -1, 0, 1; unbiased std = sqrt((1 + 0 + 1) / 2) = 1
    assert torch.allclose(centered_advantages(r), torch.tensor([[-1.0, 0.0, 1.0]]))
    assert torch.allclose(std_normalized_advantages(r, eps=0.0), torch.tensor([[-1.0, 0.0, 1.0]]))
    # leave-one-out: 1 - (2+3)/2 = -1.5, 2 - (1+3)/2 = 0, 3 - (1+2)/2 = 1.5
    assert torch.allclose(leave_one_out_advantages(r), torch.tensor([[-1.5, 0.0, 1.5]]))


@pytest.mark.parametrize("name", METHODS.names())
def test_a_group_with_equal_rewards_has_advantages_exactly_zero(name):
    method = METHODS.get(name)
    r = torch.tensor([[0.1, 0.1, 0.1], [0.3, 0.3, 0.3], [0.0, 1.0, 0.0]])  # 0.1 * 3 / 3 is not exactly 0.1
    adv = method.advantages(r, method.make_config())
    assert torch.equal(adv[:2], torch.zeros(2, 3))
    assert adv[2].abs().sum() > 0


def test_clipped_surrogate_by_hand():
    ratio = torch.tensor([[0.5, 1.0, 1.5]])
    # A = +1, eps = 0.2: min(rho, clip(rho)) = min(.5,.8), min(1,1), min(1.5,1.2) = .5, 1, 1.2; clip active at 1.5
    loss, active = clipped_surrogate(ratio, torch.tensor([[1.0]]), 0.2)
    assert torch.allclose(loss, torch.tensor([[-0.5, -1.0, -1.2]])) and active.tolist() == [[False, False, True]]
    # A = -1: min(-.5,-.8), -1, min(-1.5,-1.2) = -.8, -1, -1.5; clip active at 0.5
    loss, active = clipped_surrogate(ratio, torch.tensor([[-1.0]]), 0.2)
    assert torch.allclose(loss, torch.tensor([[0.8, 1.0, 1.5]])) and active.tolist() == [[True, False, False]]


def test_k3_kl_by_hand():
    # logp = -1, ref = -2: d = -1, e^-1 + 1 - 1 = 0.36788; logp = -2, ref = -1: d = 1, e - 1 - 1 = 0.71828
    kl = k3_kl(torch.tensor([-1.0, -2.0, -0.7]), torch.tensor([-2.0, -1.0, -0.7]))
    assert torch.allclose(kl, torch.tensor([math.exp(-1), math.e - 2, 0.0]))


def _batch(B=3, L=4):
    return RolloutBatch(prompt_ids=torch.ones(B, 2, dtype=torch.long), prompt_mask=torch.ones(B, 2, dtype=torch.bool),
                        completion_ids=torch.full((B, L), 5), valid=torch.ones(B, L, dtype=torch.bool),
                        commit_step=torch.zeros(B, L, dtype=torch.long), mask_id=0)


def _logp(B=3, L=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (-torch.rand(B, L, generator=g) * 3).requires_grad_(True)


def test_first_inner_iteration_has_ratio_exactly_one_and_zero_kl_when_old_current_and_ref_agree():
    b = _batch()
    view = make_view(b, torch.ones(3, 4, dtype=torch.bool), torch.ones(3, 4, dtype=torch.bool))
    lp = _logp()
    out = grpo_loss(LossInputs([lp], None, [lp.detach().clone()], [view], torch.tensor([1.0, -0.5, 0.0])),
                    MethodConfig(beta=0.04))
    assert torch.equal(out.ratio, torch.ones(3, 4)) and torch.equal(out.kl, torch.zeros(3, 4))
    assert not out.clipped.any()
    # with rho = 1 the loss of a row is -A (the KL adds 0)
    assert torch.allclose(out.per_sequence, torch.tensor([-1.0, 0.5, 0.0]))


@pytest.mark.parametrize("name", METHODS.names())
def test_equal_rewards_produce_no_gradient(name):
    method = METHODS.get(name)
    cfg = method.make_config(beta=0.04)
    b = RolloutBatch(prompt_ids=torch.ones(3, 2, dtype=torch.long), prompt_mask=torch.ones(3, 2, dtype=torch.bool),
                     completion_ids=torch.full((3, 8), 5), valid=torch.ones(3, 8, dtype=torch.bool),
                     commit_step=torch.arange(8).repeat(3, 1), mask_id=0, block_length=4)
    cfg.shrink = 1 if name == "tracerl" else getattr(cfg, "shrink", None)
    views = method.views(0, b, cfg, torch.Generator().manual_seed(0))
    lps = [_logp(3, 8, seed=i) for i in range(len(views))]
    adv = method.advantages(torch.full((1, 3), 0.7), cfg).reshape(-1)
    # first iteration: old = current; reference = current, so the KL gradient vanishes too
    out = method.loss(LossInputs(lps, None, [lp.detach().clone() for lp in lps], views, adv), cfg)
    out.per_sequence.sum().backward()
    for lp in lps:
        assert torch.equal(lp.grad, torch.zeros_like(lp))


def test_wd1_weights_by_hand():
    # rewards 1, 0, 0: A = 2/3, -1/3, -1/3
    # softmax(A) = (e^.667, e^-.333, e^-.333) / 3.3808 = 0.5761, 0.2119, 0.2119
    # softmax(-A) = (e^-.667, e^.333, e^.333) / 3.3047 = 0.1554, 0.4223, 0.4223
    # net weight w+ - w- = 0.4207, -0.2104, -0.2104 (sums to 0)
    net = wd1.advantages(torch.tensor([[1.0, 0.0, 0.0]]), wd1.WD1Config())
    assert torch.allclose(net, torch.tensor([[0.4207, -0.2104, -0.2104]]), atol=1e-4)
    assert net.sum().abs().item() < 1e-6


def test_wd1_loss_is_minus_net_weight_times_summed_log_likelihood():
    b = _batch(B=2, L=3)
    view = make_view(b, torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 3, dtype=torch.bool))
    lp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -1.0]], requires_grad=True)
    inp = LossInputs([lp], None, None, [view], torch.tensor([0.4, -0.4]))
    out = wd1.loss(inp, wd1.WD1Config(loss_norm="sequence"))
    # row 0: -0.4 * (-6) = 2.4; row 1: 0.4 * (-2) = -0.8
    assert torch.allclose(out.per_sequence, torch.tensor([2.4, -0.8]))
    # wd1's code sums over the group (its micro-batch): the loop's sum / B must be 2.4 - 0.8 = 1.6
    out = wd1.loss(inp, wd1.WD1Config())
    assert out.per_sequence.sum().item() / 2 == pytest.approx(1.6)


def test_spg_uses_the_elbo_for_positive_and_the_mixture_for_negative_advantages():
    # one token covered by m = 2 views, both hiding it with weight w = 1:
    # log-probs -1 and -3 -> ELBO = (-1 - 3) / 2 = -2
    # EUBO (beta_u = 1.5) = log((e^-1.5 + e^-4.5) / 2) / 1.5 = log(0.11712) / 1.5 = -1.42979
    # mixture (omega = 0.5) = -1.71490
    b = _batch(B=2, L=1)
    one = torch.ones(2, 1, dtype=torch.bool)
    views = [make_view(b, one, one, region=one), make_view(b, one, one, region=one)]
    lps = [torch.full((2, 1), -1.0), torch.full((2, 1), -3.0)]
    elbo, eubo = spg.bounds(lps, views, 1.5)
    assert torch.allclose(elbo, torch.tensor([-2.0, -2.0]))
    assert torch.allclose(eubo, torch.full((2,), math.log((math.exp(-1.5) + math.exp(-4.5)) / 2) / 1.5))
    out = spg.loss(LossInputs(lps, None, None, views, torch.tensor([1.0, -1.0])), spg.SPGConfig())
    assert torch.allclose(out.per_sequence, torch.tensor([2.0, -1.71490]), atol=1e-4)  # -A * bound
    assert spg.bounds(lps, views, 1.5)[1][0] >= elbo[0]  # the upper bound is above the lower one


def test_spg_loss_stays_finite_when_a_row_hides_nothing():
    b = _batch(B=2, L=3)
    region = torch.ones(2, 3, dtype=torch.bool)
    hide = torch.tensor([[True, False, False], [False, False, False]])
    views = [make_view(b, hide, hide, region=region)]
    lp = torch.full((2, 3), -1.0, requires_grad=True)
    out = spg.loss(LossInputs([lp], None, None, views, torch.tensor([-1.0, -1.0])), spg.SPGConfig())
    out.per_sequence.sum().backward()
    assert torch.isfinite(out.per_sequence).all() and torch.isfinite(lp.grad).all()


def test_recipes_give_the_mask_ratio_schedules_worked_from_maskgrpos_formula():
    """t_j = min(gamma + (1 - gamma)(j+1)/mu, 0.999) (mask_grpo_trainer.py _get_per_token_logps_uni) with
    the recipe's mu: paper mu = 12, gamma = 0.6 -> 0.6333, 0.6667, ..., 0.9667, 0.999; equal mu = 4 ->
    0.7, 0.8, 0.9, 0.999 (values worked by hand, not by the code under test)."""
    from tasks import get_task
    from trainers.loop import TrainConfig

    task = get_task("arith")
    expected = {"paper": [0.6 + 0.4 * k / 12 for k in range(1, 12)] + [0.999], "equal": [0.7, 0.8, 0.9, 0.999]}
    for recipe, ts in expected.items():
        cfg = TrainConfig.for_task(task, "maskgrpo", recipe=recipe)
        mcfg = METHODS.get("maskgrpo").make_config(**cfg.method_overrides)
        assert maskgrpo.maskgrpo_schedule(mcfg.mu, mcfg.gamma, mcfg.t_max) == pytest.approx(ts)
    assert maskgrpo.MaskGRPOConfig().for_kind("image").gamma == 0.8


def test_unknown_method_setting_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown maskgrpo setting.*valid: mu, epsilon, beta, .*gamma"):
        METHODS.get("maskgrpo").make_config(gamm=0.5)


# ---- rank-count invariance of the loss normalisers ----------------------------------------------------------
@pytest.mark.parametrize("name", METHODS.names())
def test_loss_shares_are_the_same_when_the_rows_are_split_over_processes_and_micro_batches(name):
    # 12 rows (4 groups of G = 3) with unequal scored-token counts, normalisation units of 4 rows (so unit
    # 1, rows 4-7, straddles two processes of 6 rows) and tracerl rows with unequal numbers of examples.
    # One process computes every row's share at once; two processes of 6 rows, each in micro-batches of 2,
    # compute them given the loop's gathered views of the whole step (all_views) and their global rows.
    # The shares must agree: the loop's loss is their sum / B_all, whatever the layout.
    method = METHODS.get(name)
    over = {"shrink": 1} if name == "tracerl" else {}
    cfg = method.make_config(mu=2, beta=0.04, norm_rows=4, **over)
    b = uneven_batch()
    views = method.views(1, b, cfg, torch.Generator().manual_seed(3))
    n = len(views)
    lps = [_logp(12, 8, seed=i) for i in range(n)]
    old = [(lp.detach() + 0.05 * torch.randn(12, 8, generator=torch.Generator().manual_seed(50 + i)))
           for i, lp in enumerate(lps)]
    ref = [lp.detach() - 0.1 for lp in lps]
    A = torch.randn(12, generator=torch.Generator().manual_seed(9))

    def shares(rows: slice):
        inp = LossInputs([lp[rows] for lp in lps], [o[rows] for o in old], [r[rows] for r in ref],
                         [v.rows(rows) for v in views], A[rows], all_views=views, rows=rows, group_size=3)
        return method.loss(inp, cfg).per_sequence

    whole = shares(slice(0, 12))
    split = torch.cat([shares(slice(i, i + 2)) for i in range(0, 12, 2)])
    assert whole.abs().sum() > 0
    torch.testing.assert_close(split, whole, rtol=1e-6, atol=1e-7)
