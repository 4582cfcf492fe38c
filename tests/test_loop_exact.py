"""Exact-value tests of the RL loop's pieces (trainers/loop.py), each expected value worked by hand.

The loop's methods are called on a stand-in object holding only the attributes each one reads, so the
values can be chosen small enough to work out on paper."""

from __future__ import annotations

import dataclasses
import math
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from fakes import EXAMPLES, TINY, TinyBert, ToyImageTask, ToyTask, weights

import trainers.loop as loop
from harness.sampling import generate
from tasks.rewards import per_item
from trainers import checkpoint as ckpt
from trainers.estimators import MaskedView
from trainers.grpo import LossOutput
from trainers.loop import TrainConfig, TrainingDiverged, _Run, train
from trainers.methods import get_method


def _sync_run(ref_value: float, policy_value: float, every: int, alpha: float, updates_done: int):
    ref = torch.nn.Linear(1, 1, bias=False)
    policy = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        ref.weight.fill_(ref_value)
        policy.weight.fill_(policy_value)
    return SimpleNamespace(ref=ref, module=policy, mcfg=SimpleNamespace(ref_sync_every=every, ref_sync_alpha=alpha),
                           scheduler=SimpleNamespace(last_epoch=updates_done))


def test_reference_refresh_mixes_policy_into_reference_by_alpha_on_its_cadence():
    # TR-DPO / TRL SyncRefModelCallback: ref <- alpha * policy + (1 - alpha) * ref every `every` updates.
    # ref 1.0, policy 3.0, alpha 0.25: 0.25 * 3 + 0.75 * 1 = 1.5
    run = _sync_run(1.0, 3.0, every=2, alpha=0.25, updates_done=4)
    _Run.maybe_sync_reference(run)
    assert run.ref.weight.item() == pytest.approx(1.5)
    assert run.module.weight.item() == 3.0  # the policy is read, never written
    # a second refresh on the next multiple: 0.25 * 3 + 0.75 * 1.5 = 1.875
    run.scheduler.last_epoch = 6
    _Run.maybe_sync_reference(run)
    assert run.ref.weight.item() == pytest.approx(1.875)
    # alpha 1 copies the policy
    run = _sync_run(1.0, 3.0, every=1, alpha=1.0, updates_done=1)
    _Run.maybe_sync_reference(run)
    assert run.ref.weight.item() == 3.0


@pytest.mark.parametrize("every, updates_done", [(2, 3), (64, 1), (64, 63), (0, 4)])
def test_reference_is_left_alone_between_refreshes_and_when_refresh_is_off(every, updates_done):
    # 3 % 2, 1 % 64 and 63 % 64 are not 0: no refresh yet; every = 0 means never
    run = _sync_run(1.0, 3.0, every=every, alpha=0.6, updates_done=updates_done)
    _Run.maybe_sync_reference(run)
    assert run.ref.weight.item() == 1.0


def test_refresh_on_the_64th_update():
    run = _sync_run(1.0, 3.0, every=64, alpha=0.6, updates_done=64)  # 0.6 * 3 + 0.4 * 1 = 2.2
    _Run.maybe_sync_reference(run)
    assert run.ref.weight.item() == pytest.approx(2.2)


def test_no_reference_model_means_nothing_to_refresh_or_save():
    run = SimpleNamespace(ref=None, module=torch.nn.Linear(1, 1), scheduler=SimpleNamespace(last_epoch=64),
                          mcfg=SimpleNamespace(ref_sync_every=64, ref_sync_alpha=0.6))
    _Run.maybe_sync_reference(run)  # must not fail
    assert _Run.reference_state(run) == {}
    _Run.load_reference(run, {"weight": torch.zeros(1, 1)})  # nothing to load into: a no-op


def test_reference_state_is_saved_only_when_the_reference_moves_and_is_a_copy():
    frozen = _sync_run(1.0, 3.0, every=0, alpha=0.6, updates_done=0)
    assert _Run.reference_state(frozen) == {}  # a frozen reference is the base model: nothing to checkpoint
    moving = _sync_run(1.0, 3.0, every=64, alpha=0.6, updates_done=0)
    state = _Run.reference_state(moving)
    assert list(state) == ["reference"] and state["reference"]["weight"].item() == 1.0
    with torch.no_grad():
        moving.ref.weight.fill_(5.0)
    assert state["reference"]["weight"].item() == 1.0  # a clone, not a view of the live weights
    _Run.load_reference(moving, state["reference"])
    assert moving.ref.weight.item() == 1.0
    _Run.load_reference(moving, None)  # a checkpoint without a reference leaves it as it is
    assert moving.ref.weight.item() == 1.0


def test_global_views_gather_what_normalisers_read_from_every_process_in_process_order():
    # two processes, two rows each: the other process's rows are this one's with score/region flipped and
    # weight + 10, so the gathered tensors show which half came from where
    score = torch.tensor([[True, False, True], [False, False, True]])
    region = torch.tensor([[True, True, False], [False, True, True]])
    weight = torch.tensor([[1.0], [2.0]]).expand(2, 3)

    def gather(t):  # accelerate's gather: process 0's rows, then process 1's
        other = (1 - t) if t.dtype == torch.uint8 else t + 10
        return torch.cat([t, other])

    run = SimpleNamespace(acc=SimpleNamespace(num_processes=2), gather=gather)
    view = MaskedView(torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.bool), score, weight, region)
    (g,) = _Run.global_views(run, [view])
    assert g.score.dtype == torch.bool and g.region.dtype == torch.bool
    assert g.score.tolist() == [[True, False, True], [False, False, True], [False, True, False], [True, True, False]]
    assert g.region.tolist() == [[True, True, False], [False, True, True], [False, False, True], [True, False, False]]
    assert g.weight.tolist() == [[1.0] * 3, [2.0] * 3, [11.0] * 3, [12.0] * 3]
    assert g.input_ids.shape == (4, 0) and g.attention_mask.shape == (4, 0)  # inputs are not gathered
    # a view without a region stays without one; one process returns its views unchanged
    (g,) = _Run.global_views(run, [MaskedView(view.input_ids, view.attention_mask, score, weight, None)])
    assert g.region is None and g.score.shape == (4, 3)
    single = SimpleNamespace(acc=SimpleNamespace(num_processes=1), gather=None)
    assert _Run.global_views(single, [view])[0] is view


def test_gather_moves_to_the_accelerators_device_and_back_and_all_reduce_max_takes_the_largest():
    # one process: the tensor itself, accelerate is not asked; two: accelerate's gather sees the tensor on
    # the accelerator's device (meta here, so a forgotten .to() shows) and the result comes back on the CPU
    seen = []

    def acc_gather(t):
        seen.append(t.device.type)
        return torch.tensor([4, 9])  # process 0's value, then process 1's

    t = torch.tensor([4])
    assert _Run.gather(SimpleNamespace(acc=SimpleNamespace(num_processes=1)), t) is t
    two = SimpleNamespace(acc=SimpleNamespace(num_processes=2, device=torch.device("meta"), gather=acc_gather))
    out = _Run.gather(two, t)
    assert seen == ["meta"] and out.device.type == "cpu" and out.tolist() == [4, 9]
    # the maximum over processes of a Python int: 3 here, 7 and 1 elsewhere -> 7; 3 alone -> 3
    others = SimpleNamespace(gather=lambda x: torch.cat([x, torch.tensor([7, 1])]))
    assert _Run.all_reduce_max(others, 3) == 7 and type(_Run.all_reduce_max(others, 3)) is int
    assert _Run.all_reduce_max(SimpleNamespace(gather=lambda x: x), 3) == 3


# ---- the training loop's bookkeeping, end to end on the 2-layer fake (tests/fakes.py) ---------------------
def test_resume_restores_a_refreshed_reference(tmp_path, one_thread):
    # beta > 0 and ref <- 0.5 policy + 0.5 ref after every update: from step 2 on the reference differs from
    # the base model, so a resume that forgot it (reloading the base as reference) trains differently
    over = {"mu": 1, "beta": 0.5, "ref_sync_every": 1, "ref_sync_alpha": 0.5, "loss_norm": "token"}
    straight = TinyBert()
    full = train(straight, ToyTask(), "diffu-grpo", EXAMPLES, [], TrainConfig(**dict(TINY, steps=3), method_overrides=over),
                 seed=0, progress=False)
    train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, [], TrainConfig(**dict(TINY, steps=2), method_overrides=over),
          seed=0, out_dir=tmp_path, progress=False, checkpoint_every=1)
    resumed = TinyBert()
    res = train(resumed, ToyTask(), "diffu-grpo", EXAMPLES, [], TrainConfig(**dict(TINY, steps=3), method_overrides=over),
                seed=0, out_dir=tmp_path, progress=False, resume=True)
    assert res.curve[-1]["kl"] == pytest.approx(full.curve[-1]["kl"], rel=1e-5, abs=1e-9)
    assert torch.allclose(weights(straight), weights(resumed), atol=1e-6)


def test_budget_counters_by_hand(one_thread):
    # ToyTask: 8 completion tokens in blocks of 4, 4 decoder steps, all 2 x 3 completions in one decoder call:
    # 4 model calls per RL step (one per decoder step) -> train_nfe = 2 steps x 4 = 8; completions 2 x 2 x 3 = 12.
    # diffu-grpo, mu 1, beta 0.1: per step one view scored by the policy and one by the reference, no old
    # policy (mu = 1) -> 2 forward passes a step, 4 in all
    res = train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, [],
                TrainConfig(**TINY, method_overrides={"mu": 1, "beta": 0.1}), seed=0, progress=False)
    assert (res.train_nfe, res.rollouts_generated, res.rollout_budget, res.train_forwards) == (8, 12, 12, 4)
    assert [r["nfe"] for r in res.curve if r["step"]] == [4, 4]
    # mu 2 adds a second view (policy + reference) and the old policy's pass over it: 2 + 3 = 5 a step
    res = train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, [],
                TrainConfig(**TINY, method_overrides={"mu": 2, "beta": 0.1}), seed=0, progress=False)
    assert res.train_forwards == 10


def test_the_default_evaluator_scores_the_test_examples_every_step_when_eval_every_is_one(one_thread):


    res = train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, EXAMPLES[:2],
                TrainConfig(**dict(TINY, eval_every=1), method_overrides={"mu": 1}), seed=0, progress=False)
    assert [r["step"] for r in res.curve] == [0, 1, 2]
    assert all(isinstance(r.get("eval_accuracy"), float) for r in res.curve)  # steps 0, 1 and 2


def _patch_method(monkeypatch, make):
    """The loop gets each method with the fields `make(method)` returns replaced (always wrapping the registry's
    method, so patching twice replaces, never stacks)."""
    monkeypatch.setattr(loop, "get_method", lambda n: dataclasses.replace(get_method(n), **make(get_method(n))))


def test_logged_loss_is_the_global_row_mean_of_per_sequence_shares_by_hand(monkeypatch, one_thread):
    # a stand-in loss whose share for global row r (0..5 of the step's 2 x 3 rows) is r + 1, with a zero
    # gradient path through the log-probs. Each update's loss is sum_r (r + 1) / B = 21 / 6 = 3.5 whatever the
    # micro-batching (here 3 micro-batches of 2 rows); mu = 2 updates a step -> the logged mean is 3.5
    seen = []

    def share_loss(inp, cfg):
        rows = torch.arange(inp.rows.start, inp.rows.stop)  # this micro-batch's rows in the step's batch
        seen.append((rows.tolist(), inp.group_size))
        per = inp.logp[0].sum(1) * 0.0 + (rows + 1).float()
        return LossOutput(per_sequence=per, scored=inp.views[0].score)

    _patch_method(monkeypatch, lambda m: {"loss": share_loss})
    res = train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, [],
                TrainConfig(**dict(TINY, micro_batch_size=2), method_overrides={"mu": 2, "beta": 0.0}), seed=0,
                progress=False)
    assert [r["loss"] for r in res.curve if r["step"]] == [pytest.approx(3.5), pytest.approx(3.5)]
    assert seen[:3] == [([0, 1], 3), ([2, 3], 3), ([4, 5], 3)]  # global rows, groups of G = 3


def test_gradient_clipping_bounds_the_first_update(monkeypatch, one_thread):
    # AdamW's first step is lr * g / (|g| + 1e-8) per weight: scale-free, unless the clipped gradient is far
    # below eps. Clipped to a norm of 1e-12, every weight moves by at most lr * 1e-12 / 1e-8 = 1e-7 (plus weight
    # decay, lr * 0.1 * |w|); unclipped, the same step moves some weight by about lr = 1e-3
    moved = {}
    for clip in (1e-12, None):
        model = TinyBert()
        before = weights(model)
        train(model, ToyTask(), "diffu-grpo", EXAMPLES, [],
              TrainConfig(**dict(TINY, steps=1, max_grad_norm=clip, weight_decay=0.0),
                          method_overrides={"mu": 1, "beta": 0.0}), seed=0, progress=False)
        moved[clip] = (weights(model) - before).abs().max().item()
    assert moved[1e-12] <= 1.1e-7 and moved[None] > 5e-4


def test_a_non_finite_gradient_with_a_finite_loss_raises(monkeypatch, one_thread):
    # sqrt(0 * x) is 0, but its gradient 0.5 / sqrt(0) * 0 is NaN: the loss check passes, the norm check must not
    def nan_grad(inp, cfg):
        return LossOutput(per_sequence=torch.sqrt(inp.logp[0].sum(1) * 0.0), scored=inp.views[0].score)

    _patch_method(monkeypatch, lambda m: {"loss": nan_grad})
    with pytest.raises(TrainingDiverged, match=r"non-finite gradient norm at step 1, inner update 0 \(diffu-grpo\)"):
        train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, [], TrainConfig(**TINY, method_overrides={"mu": 1}),
              seed=0, progress=False)


def test_forward_pass_counts_without_reference_and_without_old_policy_by_hand(one_thread):
    # diffu-grpo with beta 0 keeps no reference: mu 1 -> 1 pass a step (the policy's), 2 in all.
    # wd1 computes no importance ratio (no old policy) and has no KL by default: mu 2 -> 2 views a step,
    # each scored once by the policy -> 4 in all (an old-policy pass would add 1 a step, a reference 2)
    res = train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, [],
                TrainConfig(**TINY, method_overrides={"mu": 1, "beta": 0.0}), seed=0, progress=False)
    assert res.train_forwards == 2
    res = train(TinyBert(), ToyTask(), "wd1", EXAMPLES, [], TrainConfig(**TINY, method_overrides={"mu": 2, "beta": 0.0}),
                seed=0, progress=False)
    assert res.train_forwards == 4
    assert all(0 < r["step_time_s"] < 120 for r in res.curve if r["step"])  # a duration, not a clock reading


def test_with_mu_two_the_second_update_sees_a_ratio_other_than_one(one_thread):
    # update 1 is scored against the old log-probs taken before update 0, so once update 0 moved the weights
    # its ratio leaves 1 (update 0 is on-policy: ratio exactly 1)
    res = train(TinyBert(), ToyTask(), "maskgrpo", EXAMPLES, [],
                TrainConfig(**dict(TINY, lr=1e-2), method_overrides={"mu": 2, "beta": 0.0}), seed=0, progress=False)
    assert any(r["ratio_max"] > 1 + 1e-6 or r["ratio_min"] < 1 - 1e-6 for r in res.curve if r["step"])
    assert all(r["grad_norm"] > 0 for r in res.curve if r["step"])  # a mean of norms: positive


def test_each_inner_iteration_step_and_seed_draws_its_own_masks(monkeypatch, one_thread):
    # the views of (seed, step, j) come from their own generator: iteration 0 and 1 of a step, the same j in
    # two steps, and two seeds must not share their masks
    drawn = []

    def recording(m):
        def views(j, batch, cfg, gen):
            out = m.views(j, batch, cfg, gen)
            drawn.append(torch.cat([v.input_ids for v in out]).clone())
            return out
        return {"views": views}

    _patch_method(monkeypatch, recording)
    masks = {}
    for seed in (0, 1):
        drawn.clear()
        train(TinyBert(), ToyTask(), "coupled-grpo", EXAMPLES, [], TrainConfig(**TINY, method_overrides={"mu": 2}),
              seed=seed, progress=False)
        masks[seed] = [d == 1 for d in drawn]  # ToyTask's mask id is 1: (step 1, j 0), (1, 1), (2, 0), (2, 1)
        assert len(masks[seed]) == 4  # coupled-grpo draws t ~ U per view, whatever j: only the seed tells j apart
    s0 = masks[0]
    assert not torch.equal(s0[0], s0[1])  # j = 0 vs 1 in step 1
    assert not torch.equal(s0[0], s0[2])  # step 1 vs step 2
    assert not all(torch.equal(a, b) for a, b in zip(masks[0], masks[1]))  # seed 0 vs seed 1


def test_on_an_image_task_policy_old_and_reference_share_the_codebook_normalisation(one_thread):
    # image tokens are scored by a softmax over the codebook ids only (token_range). If any of the policy,
    # old-policy or reference passes normalised over the whole vocabulary instead, the first, on-policy
    # update would see log-prob differences: ratio != 1 and k3 != 0. With all three alike: exactly 1 and 0.
    res = train(TinyBert(image=True), ToyImageTask(), "maskgrpo", EXAMPLES, [],
                TrainConfig(**dict(TINY, steps=1), method_overrides={"mu": 1, "beta": 0.1}), seed=0, progress=False)
    row = res.curve[-1]
    assert row["ratio_min"] == row["ratio_max"] == 1.0 and row["kl"] == 0.0
    res = train(TinyBert(image=True), ToyImageTask(), "maskgrpo", EXAMPLES, [],
                TrainConfig(**dict(TINY, steps=1, lr=1e-2), method_overrides={"mu": 2, "beta": 0.0}), seed=0,
                progress=False)
    assert res.curve[-1]["ratio_max"] > 1.0 + 1e-6 or res.curve[-1]["ratio_min"] < 1.0 - 1e-6  # old pass in play


def test_rollout_and_mask_randomness_is_fresh_each_step_and_keyed_by_the_run_seed(monkeypatch, one_thread):
    # every rollout row is decoded with its own seed; over two steps that each draw all 6 prompts, no seed
    # may repeat (a loop that reused a step's noise would hand the decoder the same seeds again), and a run
    # with another seed must hand out other seeds, other prompt orders and other mask streams (batch seeds)
    def run(seed):
        used, prompts, batch_seeds = [], [], []

        def recording_generate(model, ids, attn, decode, seeds=None, token_range=None):
            used.append(list(seeds))
            prompts.append(ids[:, -3:].tolist())
            return generate(model, ids, attn, decode, seeds=seeds, token_range=token_range)

        def recording(m):
            def views(j, batch, cfg, gen):
                batch_seeds.append(batch.seed)
                return m.views(j, batch, cfg, gen)
            return {"views": views}

        _patch_method(monkeypatch, recording)
        train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, [],
              TrainConfig(**dict(TINY, prompts_per_step=6), method_overrides={"mu": 1}), seed=seed, progress=False,
              generate_fn=recording_generate)
        return used, prompts, batch_seeds

    seeds0, prompts0, batch0 = run(0)
    assert len(seeds0) == 2 and len(seeds0[0]) == len(seeds0[1]) == 18  # 2 steps x 6 prompts x 3 completions
    assert len(set(seeds0[0]) | set(seeds0[1])) == 36  # no seed used twice, within or across steps
    assert len(batch0) == 2 and batch0[0] != batch0[1]  # each step's mask streams have their own seed
    seeds1, prompts1, batch1 = run(1)
    assert not set(seeds0[0] + seeds0[1]) & set(seeds1[0] + seeds1[1])
    assert prompts0 != prompts1  # the prompt order is shuffled per run seed
    assert not set(batch0) & set(batch1)


def test_logged_gradient_norm_is_the_mean_over_the_steps_updates(one_thread):
    # the accelerator reports norms 1, 3 (step 1's two updates), 5, 7 (step 2's): the curve logs each step's
    # mean over its updates, 2 and 6 (the clipping itself still happens in the real call)
    class Scripted(Accelerator):
        norms = iter([1.0, 3.0, 5.0, 7.0])

        def clip_grad_norm_(self, parameters, max_norm, norm_type=2):
            super().clip_grad_norm_(parameters, max_norm, norm_type)
            return torch.tensor(next(self.norms))

    res = train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, [], TrainConfig(**TINY, method_overrides={"mu": 2}),
                seed=0, progress=False, accelerator=Scripted(cpu=True))
    assert [r["grad_norm"] for r in res.curve if r["step"]] == [2.0, 6.0]


def test_without_resume_a_run_starts_over_even_where_a_checkpoint_exists(tmp_path, one_thread):
    # resume is opt-in: a second run into the same folder without it trains steps 1..3 from its own initial
    # weights (the harness's CLI refuses such a folder unless --overwrite; the loop itself just starts over)
    cfg = TrainConfig(**dict(TINY, steps=3), method_overrides={"mu": 1})
    fresh = TinyBert()
    train(fresh, ToyTask(), "diffu-grpo", EXAMPLES, [], cfg, seed=0, progress=False)
    # the folder holds another run's checkpoint (seed 1): resuming from it would be refused or change the weights
    train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, [], TrainConfig(**dict(TINY, steps=2), method_overrides={"mu": 1}),
          seed=1, out_dir=tmp_path, progress=False, checkpoint_every=1)
    again = TinyBert()
    res = train(again, ToyTask(), "diffu-grpo", EXAMPLES, [], cfg, seed=0, out_dir=tmp_path, progress=False)
    assert [r["step"] for r in res.curve] == [1, 2, 3] and res.rollouts_generated == 3 * 2 * 3
    assert torch.allclose(weights(fresh), weights(again), atol=1e-6)


def test_checkpoints_on_their_cadence_and_the_result_names_the_last_one(tmp_path, monkeypatch, one_thread):
    # checkpoint_every 2 over 3 steps: saved after step 2 (a multiple of 2) and after the last step, 3
    steps, real_save = [], ckpt.save

    def recording_save(path, **kw):
        steps.append(kw["step"])
        return real_save(path, **kw)

    monkeypatch.setattr(ckpt, "save", recording_save)
    cfg = TrainConfig(**dict(TINY, steps=3), method_overrides={"mu": 1})
    res = train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, [], cfg, seed=0, out_dir=tmp_path, progress=False,
                checkpoint_every=2)
    assert steps == [2, 3]
    assert res.checkpoint == str(ckpt.checkpoint_path(tmp_path)) and (tmp_path / "checkpoints" / "last.pt").exists()
    assert 0 < res.wall_time_s < 300  # seconds of training, not a clock reading
    assert train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, [], cfg, seed=0, progress=False).checkpoint is None


# ---- dynamic sampling inside the loop (oversample > 1): when decoding stops, what is trained on ------------
class _AllMixedTask(ToyTask):
    """Every row's reward is a checksum of its completion, so two different completions (all but certain for
    8 random tokens) give different rewards: every group is mixed."""

    def reward_functions(self):
        return {"match": per_item("match", lambda ex, c, k: zlib.crc32(c.encode()) / 2 ** 32, "a checksum")}


class _NeverMixedTask(ToyTask):
    def reward_functions(self):
        return {"match": per_item("match", lambda ex, c, k: 1.0, "always 1")}


def _advantage_shapes(monkeypatch):
    shapes = []

    def make(m):
        def spy(rewards, cfg):
            shapes.append(tuple(rewards.shape))
            return m.advantages(rewards, cfg)
        return {"advantages": spy}
    _patch_method(monkeypatch, make)
    return shapes


@pytest.mark.parametrize("oversample", [2, 3])
def test_dynamic_sampling_in_the_loop_stops_after_the_first_round_when_every_group_is_mixed(
        monkeypatch, one_thread, oversample):
    # 2 prompts a step, G = 3, gen 8 in blocks of 4 over 4 steps (an nfe of 4 per decoded round). Every group
    # mixed: the first round (2 prompts) already has the 2 mixed groups asked for, so each step decodes
    # 2 x 3 = 6 rollouts and 4 NFE, not oversample x 6 - whatever the oversampling factor - and trains on
    # 2 groups of 3
    shapes = _advantage_shapes(monkeypatch)
    res = train(TinyBert(), _AllMixedTask(), "diffu-grpo", EXAMPLES, [],
                TrainConfig(**dict(TINY, oversample=oversample), method_overrides={"mu": 1, "beta": 0.0}), seed=0,
                progress=False)
    rows = [r for r in res.curve if r["step"]]
    assert [(r["rollouts"], r["nfe"], r["zero_std_frac"], r["kept_mixed_frac"]) for r in rows] == [(6, 4, 0.0, 1.0)] * 2
    assert shapes == [(2, 3), (2, 3)] and res.rollouts_generated == 12
    assert res.rollout_budget == 2 * (2 * oversample) * 3  # the cap, had no group been mixed


def test_dynamic_sampling_in_the_loop_decodes_every_round_when_no_group_is_mixed_and_trains_on_prompts_per_step(
        monkeypatch, one_thread):
    # no group is ever mixed: both rounds of oversample 2 are decoded (12 rollouts, 2 x 4 NFE), and the step
    # still trains on the first prompts_per_step = 2 groups, never on all 4 decoded
    shapes = _advantage_shapes(monkeypatch)
    res = train(TinyBert(), _NeverMixedTask(), "diffu-grpo", EXAMPLES, [],
                TrainConfig(**dict(TINY, oversample=2), method_overrides={"mu": 1, "beta": 0.0}), seed=0,
                progress=False)
    rows = [r for r in res.curve if r["step"]]
    assert [(r["rollouts"], r["nfe"], r["zero_std_frac"], r["kept_mixed_frac"]) for r in rows] == [(12, 8, 1.0, 0.0)] * 2
    assert shapes == [(2, 3), (2, 3)]


# ---- checkpoints: where a save writes, what survives a failed save, what a load refuses and says ----------
def _ckpt_parts(module=None):
    module = module or torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    return dict(module=module, optimizer=opt, scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda u: 1.0))


def _save(path, step=3, config=None, **parts):
    ckpt.save(path, **(parts or _ckpt_parts()), step=step, state={"curve": [{"step": step}], "rollouts": 6},
              config=config or {"lr": 1e-3})


def test_a_checkpoint_save_makes_its_folders_and_leaves_only_the_checkpoint(tmp_path):
    path = tmp_path / "run" / "deep" / "checkpoints" / "last.pt"  # none of these folders exist yet
    parts = _ckpt_parts()
    with torch.no_grad():
        parts["module"].weight.fill_(0.5)
    _save(path, step=7, **parts)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]
    fresh = _ckpt_parts()
    step, state = ckpt.load(path, **fresh, config={"lr": 1e-3})
    assert (step, state) == (7, {"curve": [{"step": 7}], "rollouts": 6})
    assert torch.equal(fresh["module"].weight, torch.full((2, 2), 0.5))


def test_a_failed_checkpoint_save_keeps_the_previous_one_and_raises_the_cause(tmp_path, monkeypatch):
    # the payload goes to a hidden `.last.pt.*.tmp` beside the checkpoint (a rename within one folder is
    # atomic; the module docstring promises such leftovers are never read) and only then replaces last.pt
    path = tmp_path / "checkpoints" / "last.pt"
    _save(path, step=1)
    before = path.read_bytes()
    written = []

    def full_disk(obj, f):
        written.append(Path(f))
        Path(f).write_bytes(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    with pytest.raises(OSError, match="^No space left on device$"):
        _save(path, step=2)
    (tmp,) = written
    assert tmp.parent == path.parent and tmp.name.startswith(".last.pt.") and tmp.name.endswith(".tmp")
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


def test_an_unreadable_checkpoint_is_refused_with_the_cause_in_one_line(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    path.write_bytes(b"not a checkpoint")
    tail = "; pass --overwrite to start the run over, or another --out"

    def load_raising(exc):
        monkeypatch.setattr(ckpt.torch, "load", lambda *a, **k: (_ for _ in ()).throw(exc))
        with pytest.raises(ckpt.CheckpointError) as info:
            ckpt.load(path, **_ckpt_parts(), config={})
        return str(info.value)

    # the first line of torch's message, cut at 120 characters; an empty message gives the exception's name
    assert load_raising(RuntimeError("zip archive is truncated\nsecond line")) == \
        f"{path} is damaged and cannot be resumed from (RuntimeError: zip archive is truncated){tail}"
    assert load_raising(RuntimeError("x" * 200)) == \
        f"{path} is damaged and cannot be resumed from (RuntimeError: {'x' * 120}){tail}"
    assert load_raising(EOFError()) == f"{path} is damaged and cannot be resumed from (EOFError: EOFError){tail}"


def test_a_checkpoint_that_is_not_the_harness_format_is_refused_by_name(tmp_path):
    path = tmp_path / "last.pt"
    keys = "format, step, model, optimizer, scheduler, state, config"
    for payload in ([1, 2], {"format": 1, "step": 3}):  # not a dict; a dict without most of the keys
        torch.save(payload, path)
        with pytest.raises(ckpt.CheckpointError) as info:
            ckpt.load(path, **_ckpt_parts(), config={})
        assert str(info.value) == (f"{path} is damaged or not a harness checkpoint (expected the keys {keys}); "
                                   "pass --overwrite to start the run over, or another --out")
    torch.save(dict.fromkeys(keys.split(", ")) | {"format": 99}, path)
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load(path, **_ckpt_parts(), config={})
    assert str(info.value) == f"{path}: checkpoint format 99, expected 1; start a fresh run (--overwrite, or another --out)"


def test_resuming_under_other_settings_names_every_setting_that_differs(tmp_path):
    # `steps` may change on resume (RESUMABLE); lr changed, and beta exists only in the new config: both named
    path = tmp_path / "last.pt"
    _save(path, config={"lr": 1e-3, "seed": 0, "steps": 5})
    with pytest.raises(ValueError) as info:
        ckpt.load(path, **_ckpt_parts(), config={"lr": 2e-3, "seed": 0, "steps": 9, "beta": 0.1})
    assert str(info.value) == (f"{path} was written by a different configuration (beta: saved None, now 0.1; "
                               "lr: saved 0.001, now 0.002); resume with the same settings or start a fresh run "
                               "in another --out folder")


def test_a_checkpoint_of_another_model_names_the_first_three_missing_weights(tmp_path):
    path = tmp_path / "last.pt"
    _save(path)  # a Linear(2, 2): weight, bias
    other = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))  # 0.bias, 0.weight, 1.bias, 1.weight
    with pytest.raises(ValueError) as info:
        ckpt.load(path, **_ckpt_parts(other), config={"lr": 1e-3})
    assert str(info.value) == (f"{path}: checkpoint lacks trainable weights ['0.bias', '0.weight', '1.bias']...; "
                               "was it written for another model?")


# ---- one step's curve row, by hand ----------------------------------------------------------------------
def _row_inputs(verdicts, ratio_n):
    from trainers.loop import _Stats
    from trainers.rollout import Rollouts

    rewards = torch.tensor([[1.0, 0.0, 1.0], [2.0, 2.0, 2.0]])  # N = 2 groups of G = 3
    valid = torch.zeros(6, 4, dtype=torch.bool)
    valid.view(-1)[:15] = True  # 15 completion tokens over the 6 rows
    ro = Rollouts(SimpleNamespace(valid=valid), rewards, {"match": rewards / 2}, verdicts, ["c"] * 6, 12)
    st = _Stats()
    st.sums.update(tokens=20.0, ratio=4.4 if ratio_n else 0.0, ratio_n=ratio_n, kl=0.4, kl_n=4.0, clip=1.0,
                   clip_n=4.0, loss=3.0, grad_norm=1.0, updates=2.0)
    if ratio_n:
        st.ratio_min, st.ratio_max = 0.9, 1.3
    run = SimpleNamespace(acc=SimpleNamespace(num_processes=1), gather=lambda t: t,
                          scheduler=SimpleNamespace(get_last_lr=lambda: [2.5e-5]))
    adv = torch.tensor([[0.5, -1.0, 0.5], [0.0, 0.0, 0.0]])
    return run, ro, adv, st


def test_a_steps_curve_row_by_hand():
    run, ro, adv, st = _row_inputs([True, None, False, True, True, None], ratio_n=4.0)
    state = {"train_nfe": 100, "train_forwards": 10, "rollouts": 60}
    row = _Run.row(run, 3, ro, ro, adv, st, forwards=7, seconds=1.23456789, state=state)
    # reward: 8 / 6; accuracy over the 4 rows with a verdict: 3 / 4; kl 0.4 / 4; clip 1 / 4; loss and gradient
    # norm per update: 3 / 2, 1 / 2; reward_std: the mean of each group's unbiased std - group 1 (1, 0, 1):
    # sqrt(((1/3)^2 + (2/3)^2 + (1/3)^2) / 2) = sqrt(1/3) = 0.5773503, group 2: 0 -> 0.2886751; one group of
    # two is all-equal; |advantage| mean 2 / 6; ratio mean 4.4 / 4; tokens per update 20 / 2; completion
    # tokens per kept row 15 / 6
    assert row == {
        "step": 3, "reward": pytest.approx(8 / 6), "accuracy": 0.75, "kl": pytest.approx(0.1), "clip_frac": 0.25,
        "loss": 1.5, "grad_norm": 0.5, "step_time_s": 1.2346, "nfe": 12, "rollouts": 6,
        "reward_match": pytest.approx(4 / 6), "reward_std": pytest.approx(0.2886751), "zero_std_frac": 0.5,
        "kept_mixed_frac": 0.5, "adv_abs_mean": pytest.approx(1 / 3), "ratio_mean": pytest.approx(1.1),
        "ratio_min": 0.9, "ratio_max": 1.3, "scored_tokens": 10.0, "completion_tokens": 2.5, "lr": 2.5e-5,
        "train_forwards": 7}
    assert state == {"train_nfe": 112, "train_forwards": 17, "rollouts": 66}


def test_a_curve_row_without_verdicts_or_ratios_says_none():
    # every verdict None (a reward-only task), a ratio-free method (wd1, spg): no accuracy, no ratio statistics
    run, ro, adv, st = _row_inputs([None] * 6, ratio_n=0.0)
    row = _Run.row(run, 1, ro, ro, adv, st, forwards=1, seconds=0.5, state=dict.fromkeys(
        ("train_nfe", "train_forwards", "rollouts"), 0))
    assert (row["accuracy"], row["ratio_mean"], row["ratio_min"], row["ratio_max"]) == (None, None, None, None)


# ---- train()'s bookkeeping: curve, evaluations, progress lines, checkpoints, wall time, messages ----------
def _clock_namespace(values):
    """A stand-in for loop's `time` module whose perf_counter returns `values` in turn, then the last one."""
    import time as real_time

    it = iter(values)
    last = [values[-1]]

    def perf_counter():
        last[0] = next(it, last[0])
        return last[0]

    return SimpleNamespace(**{**{k: getattr(real_time, k) for k in dir(real_time) if not k.startswith("_")},
                              "perf_counter": perf_counter})


def test_wall_time_is_the_clock_difference_since_the_start_rounded_to_milliseconds(monkeypatch, one_thread):
    # the first reading is the start (1000.0); every later one 1002.34567: 0 (nothing before this run) +
    # 1002.34567 - 1000.0 = 2.34567 -> 2.346 at 3 decimals
    monkeypatch.setattr(loop, "time", _clock_namespace([1000.0, 1002.34567]))
    res = train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, [], TrainConfig(**TINY, method_overrides={"mu": 1}),
                seed=0, progress=False)
    assert res.wall_time_s == 2.346


def test_zero_steps_train_nothing_and_count_nothing(one_thread):
    # steps 0 with eval_every 0: no row at all, so the result says 0 steps and a budget of 0 completions
    res = train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, [], TrainConfig(**dict(TINY, steps=0)), seed=0,
                progress=False)
    assert (res.curve, res.steps, res.rollout_budget, res.rollouts_generated) == ([], 0, 0, 0)


def test_no_training_examples_is_refused_by_name(one_thread):
    with pytest.raises(ValueError, match=r"^method 'wd1' needs training examples; got none$"):
        train(TinyBert(), ToyTask(), "wd1", [], [], TrainConfig(**TINY), seed=0, progress=False)


def test_the_result_records_the_seed_and_names_no_checkpoint_without_out_dir(one_thread):
    res = train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, [], TrainConfig(**dict(TINY, steps=1)), seed=7,
                progress=False)
    assert res.config["seed"] == 7 and res.config["method"] == "diffu-grpo" and res.checkpoint is None


def test_evaluations_base_metrics_cadence_and_the_last_step_left_to_the_caller(one_thread):
    # eval_every 2 over 3 steps: due at 2 (a multiple) and 3 (the last); eval_at_end=False leaves step 3 to the
    # caller; base_metrics stands in for the step-0 evaluation; a given evaluate_fn wins over the test examples
    calls = []

    def evaluate_fn(model):
        calls.append(model)
        return {"accuracy": 0.5 + len(calls)}

    model = TinyBert()
    res = train(model, ToyTask(), "diffu-grpo", EXAMPLES, EXAMPLES[:2],
                TrainConfig(**dict(TINY, steps=3, eval_every=2), method_overrides={"mu": 1}), seed=0,
                progress=False, evaluate_fn=evaluate_fn, base_metrics={"accuracy": 0.25}, eval_at_end=False)
    assert [(r["step"], r.get("eval_accuracy")) for r in res.curve] == [(0, 0.25), (1, None), (2, 1.5), (3, None)]
    assert calls == [model]
    # eval_every 0: never, not even at step 0, whatever evaluator or base metrics are given
    res = train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, EXAMPLES[:2],
                TrainConfig(**dict(TINY, steps=1, eval_every=0), method_overrides={"mu": 1}), seed=0,
                progress=False, evaluate_fn=evaluate_fn, base_metrics={"accuracy": 0.25})
    assert [r["step"] for r in res.curve] == [1] and "eval_accuracy" not in res.curve[0] and len(calls) == 1


def test_the_default_evaluator_gets_the_run_seed_the_limit_and_the_tasks_decoder(monkeypatch, one_thread):
    import harness.evaluation as evaluation

    seen = []

    def fake_evaluate(task, model, examples, decode, *, seed, tag):
        seen.append((task.name, [e.id for e in examples], decode.gen_length, decode.block_length, decode.steps,
                     seed, tag))
        return SimpleNamespace(metrics={"accuracy": 0.0})

    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)
    # eval_limit 2 of 3 test examples; ToyTask's decoder: 8 tokens in blocks of 4, 4 steps; seed 5; step 0 and 1
    train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, EXAMPLES[3:6],
          TrainConfig(**dict(TINY, steps=1, eval_every=1, eval_limit=2), method_overrides={"mu": 1}), seed=5,
          progress=False)
    assert seen == [("toy", [3, 4], 8, 4, 4, 5, "eval")] * 2
    # eval_limit 0 (or None) means no limit: all three
    seen.clear()
    train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, EXAMPLES[3:6],
          TrainConfig(**dict(TINY, steps=1, eval_every=1, eval_limit=0), method_overrides={"mu": 1}), seed=5,
          progress=False)
    assert [ids for _, ids, *rest in seen] == [[3, 4, 5]] * 2


def test_progress_lines_go_to_stderr_every_log_every_steps_and_at_the_last(capsys, one_thread):
    # log_every 2 over 3 steps: lines after steps 2 and 3; progress is on by default
    train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, [],
          TrainConfig(**dict(TINY, steps=3, log_every=2), method_overrides={"mu": 1}), seed=0)
    out, err = capsys.readouterr()
    assert out == "" and [line.split(" reward ")[0] for line in err.splitlines()] == ["step 2/3", "step 3/3"]
    # log_every 1: every step; log_every 0 counts as 1
    for every in (1, 0):
        train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, [],
              TrainConfig(**dict(TINY, steps=3, log_every=every), method_overrides={"mu": 1}), seed=0)
        assert [line.split(" reward ")[0] for line in capsys.readouterr().err.splitlines()] == \
            ["step 1/3", "step 2/3", "step 3/3"]
    train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, [],
          TrainConfig(**dict(TINY, steps=2, log_every=1), method_overrides={"mu": 1}), seed=0, progress=False)
    assert capsys.readouterr() == ("", "")


def test_progress_line_by_hand():
    row = {"step": 2, "reward": 0.5, "accuracy": 0.25, "kl": 0.00123, "clip_frac": 0.1, "loss": -0.5,
           "grad_norm": 1.5, "step_time_s": 3.26, "eval_accuracy": 0.123456, "eval_n": 5, "rollouts": 48}
    # fixed decimals per field; eval_ metrics that are floats at 4 significant digits; ints left out
    assert loop._progress_line(row, 10) == ("step 2/10 reward 0.500 acc 0.250 kl 0.0012 clip 0.100 loss -0.5000 "
                                            "|g| 1.500 3.3s eval_accuracy=0.1235")
    empty = {"step": 1, "reward": None, "eval_overall": 0.5}
    assert loop._progress_line(empty, 3) == "step 1/3 reward - acc - kl - clip - loss - |g| - -s eval_overall=0.5"
    assert loop._progress_line({"step": 4}, 4) == "step 4/4 reward - acc - kl - clip - loss - |g| - -s"
    # non-finite values print in lower case, as Python writes them; two eval metrics are one space apart
    nan, inf = float("nan"), float("inf")
    bad = {"step": 5, "reward": nan, "accuracy": inf, "kl": nan, "clip_frac": -inf, "loss": nan, "grad_norm": inf,
           "step_time_s": 1.0, "eval_a": 0.5, "eval_b": 0.25}
    assert loop._progress_line(bad, 9) == ("step 5/9 reward nan acc inf kl nan clip -inf loss nan |g| inf 1.0s "
                                           "eval_a=0.5 eval_b=0.25")


def test_trackers_get_every_finite_number_of_each_row_at_its_step(one_thread):
    logged = []
    acc = SimpleNamespace(trackers=["tb"], log=lambda values, step: logged.append((values, step)))
    row = {"step": 3.0, "reward": 0.5, "rollouts": 48, "kl": float("nan"), "loss": float("inf"), "accuracy": None,
           "done": True, "tag": "x"}
    loop.log_to_trackers(acc, row)
    assert logged == [({"reward": 0.5, "rollouts": 48}, 3)] and isinstance(logged[0][1], int)
    loop.log_to_trackers(SimpleNamespace(trackers=[], log=lambda *a, **k: logged.append("no")), row)
    loop.log_to_trackers(None, row)
    loop.log_to_trackers(SimpleNamespace(log=lambda *a, **k: logged.append("no")), row)  # no trackers attribute
    assert len(logged) == 1
    # in a run: the step-0 row and every step's row, through the run's accelerator
    accelerator = Accelerator(cpu=True)
    accelerator.trackers = ["tb"]
    accelerator.log = lambda values, step: logged.append((sorted(values), step))
    train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, [], TrainConfig(**dict(TINY, eval_every=5),
          method_overrides={"mu": 1}), seed=0, progress=False, base_metrics={"accuracy": 0.5},
          accelerator=accelerator)
    assert [s for _, s in logged[1:]] == [0, 1, 2]
    assert logged[1][0] == ["eval_accuracy"] and "reward" in logged[2][0]


def _diverge_at_step(monkeypatch, bad_step):
    """A loss that is finite until the RL step `bad_step` (mu 1: one update, one micro-batch a step)."""
    calls = []

    def loss(inp, cfg):
        calls.append(1)
        value = math.nan if len(calls) >= bad_step else 0.0
        return LossOutput(per_sequence=inp.logp[0].sum(1) * 0.0 + value, scored=inp.views[0].score)

    _patch_method(monkeypatch, lambda m: {"loss": loss})


def test_divergence_names_the_last_good_checkpoint_or_says_there_is_none(tmp_path, monkeypatch, one_thread):
    cfg = TrainConfig(**dict(TINY, steps=4), method_overrides={"mu": 1, "beta": 0.0})
    _diverge_at_step(monkeypatch, 4)
    with pytest.raises(TrainingDiverged) as e:  # checkpoints after steps 2 (cadence) ... and the NaN at step 4
        train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, [], cfg, seed=0, out_dir=tmp_path, progress=False,
              checkpoint_every=2)
    path = ckpt.checkpoint_path(tmp_path)
    assert str(e.value).startswith("non-finite loss at step 4, inner update 0")
    assert str(e.value).endswith(f"; last good checkpoint: {path} (step 2), left untouched; the run is "
                                 "deterministic, so resuming with the same settings diverges again: lower lr or "
                                 "max_grad_norm and start over")
    _diverge_at_step(monkeypatch, 1)
    with pytest.raises(TrainingDiverged, match=r"; no checkpoint was written; the run"):
        train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, [], cfg, seed=0, out_dir=tmp_path / "b", progress=False)
    _diverge_at_step(monkeypatch, 1)
    with pytest.raises(TrainingDiverged, match=r"; no checkpoint was written \(pass out_dir to keep one\); the run"):
        train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, [], cfg, seed=0, progress=False)


def test_resuming_a_checkpoint_saved_before_rollouts_were_counted(tmp_path, one_thread):
    # an older checkpoint's state has no "rollouts": it is taken as start x prompts_per_step x G = 2 x 2 x 3 = 12
    # (no dynamic sampling then), and the third step adds 2 x 3 = 6 -> 18. Its state has no reference either
    # (beta 0), which resuming must accept
    cfg2 = TrainConfig(**dict(TINY, steps=2), method_overrides={"mu": 1, "beta": 0.0})
    train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, [], cfg2, seed=0, out_dir=tmp_path, progress=False)
    path = ckpt.checkpoint_path(tmp_path)
    payload = torch.load(path, weights_only=False)
    del payload["state"]["rollouts"]
    assert "reference" not in payload["state"]
    torch.save(payload, path)
    res = train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, [],
                TrainConfig(**dict(TINY, steps=3), method_overrides={"mu": 1, "beta": 0.0}), seed=0,
                out_dir=tmp_path, progress=False, resume=True)
    assert [r["step"] for r in res.curve] == [1, 2, 3] and res.rollouts_generated == 18


def _build(model, task, method_name, cfg, **mo):
    method = get_method(method_name)
    mcfg = method.make_config(**mo).for_kind(task.kind)
    return _Run.build(model, task, method, mcfg, cfg, list(EXAMPLES), 3, generate, None)


def test_build_sets_up_the_optimizer_schedule_reference_and_decoder_by_hand(one_thread):
    # AdamW with the config's values; lr schedule over steps x mu = 2 x 2 = 4 updates: warm-up 1 gives
    # factor (0 + 1) / (1 + 1) = 0.5 at update 0; cosine at update 3: p = (3 - 1) / (4 - 1) = 2/3,
    # 0.5 (1 + cos(2 pi / 3)) = 0.25, factor 0.1 + 0.9 x 0.25 = 0.325
    cfg = TrainConfig(**dict(TINY, lr=2e-3, weight_decay=0.05, adam_betas=(0.8, 0.95), adam_eps=1e-7,
                             lr_schedule="cosine", warmup_steps=1, min_lr_ratio=0.1))
    model, task = TinyBert(), ToyTask()
    model.module.train()
    run = _build(model, task, "diffu-grpo", cfg, mu=2, beta=0.1)
    group = run.optimizer.param_groups[0]
    assert (group["betas"], group["eps"], group["weight_decay"]) == ((0.8, 0.95), 1e-7, 0.05)
    assert group["lr"] == pytest.approx(1e-3)  # 0.5 x 2e-3 (not AdamW's default 1e-3 x 0.5)
    for _ in range(3):
        run.optimizer.step()
        run.scheduler.step()
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(0.65e-3)  # 0.325 x 2e-3
    trainable = [p for p in model.module.parameters() if p.requires_grad]
    assert len(run.params) == len(trainable) and all(a is b for a, b in zip(run.params, trainable))
    # beta > 0: a frozen copy of the initial policy, in eval mode; the policy switched to eval (dropout off),
    # its previous mode kept to restore at the end
    assert run.ref is not None and run.ref is not model.module and not any(p.requires_grad for p in run.ref.parameters())
    assert torch.equal(torch.cat([p.flatten() for p in run.ref.parameters()]), weights(model))
    assert run.was_training is True and model.module.training is False and run.module is model.module
    # the rollout decoder: ToyTask's 8 tokens in blocks of 4 and 4 steps, at the config's temperature
    d = run.decode
    assert (d.gen_length, d.block_length, d.steps, d.temperature) == (8, 4, 4, 1.0)
    assert (run.task, run.model, run.cfg, run.seed, run.generate_fn, run.token_range) == (task, model, cfg, 3, generate,
                                                                                          None)
    assert run.mcfg.mu == 2 and run.method.name == "diffu-grpo" and run.examples == list(EXAMPLES)
    assert run.acc.num_processes == 1 and run.acc.device.type == "cpu" and run.wrapped is not None


def test_build_without_kl_keeps_no_reference_and_an_image_task_gets_the_codebook(one_thread):
    run = _build(TinyBert(image=True), ToyImageTask(), "maskgrpo", TrainConfig(**TINY), beta=0.0)
    assert run.ref is None and run.token_range == (3, TinyBert(image=True).image_token_range[1])
    run = _build(TinyBert(), ToyTask(), "maskgrpo", TrainConfig(**TINY), beta=0.5)  # beta below 1 still has one
    assert run.ref is not None
    # a model that also draws images (as MMaDA does) decodes a text task over the whole vocabulary
    assert _build(TinyBert(image=True), ToyTask(), "maskgrpo", TrainConfig(**TINY)).token_range is None


def test_build_refuses_a_frozen_model_and_groups_split_across_processes(one_thread):
    model = TinyBert()
    model.module.requires_grad_(False)
    with pytest.raises(ValueError, match=r"^the model has no trainable parameters \(all requires_grad=False\)$"):
        _build(model, ToyTask(), "diffu-grpo", TrainConfig(**TINY))
    acc = SimpleNamespace(num_processes=3)
    method = get_method("diffu-grpo")
    with pytest.raises(ValueError, match=r"^prompts_per_step=2 must be a multiple of the number of processes \(3\) "
                                         r"so that every process gets whole groups$"):
        _Run.build(TinyBert(), ToyTask(), method, method.make_config(), TrainConfig(**TINY), list(EXAMPLES), 0,
                   generate, acc)


def test_build_asks_accelerate_for_the_cpu_exactly_when_the_model_is_on_the_cpu(monkeypatch, one_thread):
    import accelerate

    asked, real = [], accelerate.Accelerator

    def recording(**kw):
        asked.append(kw)
        return real(cpu=True)

    monkeypatch.setattr(accelerate, "Accelerator", recording)
    no_device = TinyBert()
    del no_device.device  # an adapter without `device` counts as on the CPU
    on_gpu = TinyBert()
    on_gpu.device = torch.device("cuda", 0)  # only the device's type is read while building
    for model in (TinyBert(), no_device, on_gpu):
        _build(model, ToyTask(), "diffu-grpo", TrainConfig(**TINY))
    assert asked == [{"cpu": True}, {"cpu": True}, {"cpu": False}]


def test_lora_dropout_is_on_only_in_the_policys_gradient_forwards(one_thread):
    # LoRA dropout 0.5 (peft's dropout layers): off while decoding rollouts and for the old policy, on for
    # the forward whose gradient trains the adapters. diffu-grpo, mu 1, beta 0: per step 4 decoder calls
    # (ToyTask: 8 tokens in blocks of 4, 4 steps) and 1 policy forward -> 2 steps give 8 off, 2 on
    from harness.lora import apply_lora

    model = TinyBert()
    apply_lora(model, r=2, dropout=0.5)
    drops = [m for n, m in model.module.named_modules() if "lora_dropout" in n and isinstance(m, torch.nn.Dropout)]
    assert drops
    states, logits = [], model.logits

    def recording_logits(*a, **k):
        states.append(all(m.training for m in drops))
        return logits(*a, **k)

    model.logits = recording_logits
    train(model, ToyTask(), "diffu-grpo", EXAMPLES, [], TrainConfig(**TINY, method_overrides={"mu": 1, "beta": 0.0}),
          seed=0, progress=False)
    assert states == [False] * 4 + [True] + [False] * 4 + [True]
    assert not any(m.training for m in drops)


def test_decoding_rollouts_in_chunks_changes_nothing_but_the_number_of_calls(one_thread):
    # each completion has its own seed, so 6 completions decoded 2 at a time are the 6 decoded at once:
    # the same rewards and the same trained weights; the decoder is called 3 x as often (4 -> 12 a step)
    # (NFE counts denoising steps, so it stays 8). beta 0: the policy's forward (6 rows) is the only other call
    runs = {}
    for chunk in (None, 2):
        model, rows = TinyBert(), []
        logits = model.logits

        def counting_logits(input_ids, *a, _logits=logits, _rows=rows, **k):
            _rows.append(input_ids.shape[0])
            return _logits(input_ids, *a, **k)

        model.logits = counting_logits
        res = train(model, ToyTask(), "diffu-grpo", EXAMPLES, [],
                    TrainConfig(**dict(TINY, rollout_batch_size=chunk), method_overrides={"mu": 1, "beta": 0.0}),
                    seed=0, progress=False)
        runs[chunk] = (res, weights(model), rows)
    (a, wa, rows_a), (b, wb, rows_b) = runs[None], runs[2]
    assert rows_a == ([6] * 4 + [6]) * 2 and rows_b == ([2] * 12 + [6]) * 2
    assert [r["reward"] for r in a.curve] == [r["reward"] for r in b.curve]
    assert torch.allclose(wa, wb, atol=1e-6)
    assert a.train_nfe == b.train_nfe == 8
