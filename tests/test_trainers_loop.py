"""End-to-end tests of trainers/loop.py on a 2-layer BERT masked LM and a toy task (CPU, seconds).

The fake adapter follows the DiffusionModel contract (docs/CONTRACTS.md); rollouts use the real
decoders of harness/sampling.py.
"""

import math

import pytest
import torch
from fakes import EXAMPLES, TINY, TinyBert, ToyImageTask, ToyTask, weights

from tasks.rewards import per_item
from trainers import METHODS
from trainers.loop import TrainConfig, TrainingDiverged, train
from trainers.rollout import prompt_indices

MU2 = {"mu": 2}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: one intra-op thread (the shared fixture in conftest.py)."""


@pytest.mark.parametrize("method", METHODS.names())
def test_tiny_run_of_every_method_changes_weights_and_keeps_loss_finite(method):
    model = TinyBert()
    before = weights(model)
    over = dict(MU2, shrink=1) if method == "tracerl" else MU2
    res = train(model, ToyTask(), method, EXAMPLES, [], TrainConfig(**TINY, method_overrides=over),
                seed=0, progress=False)
    assert not torch.equal(before, weights(model))
    assert res.steps == 2 and len(res.curve) == 2
    # equal budget by construction: steps x prompts_per_step x G
    assert res.rollout_budget == 2 * 2 * 3
    for row in res.curve:
        assert math.isfinite(row["loss"]) and math.isfinite(row["grad_norm"])
        assert row["nfe"] == 4  # one decoder call per denoising step over the 6-row batch
    assert res.config["method"] == method and res.config["mu"] == 2 and res.config["prompts_per_step"] == 2


def test_maskgrpo_raises_the_toy_reward():
    # 30 steps x 6 prompts x 6 completions (~2 s): the fraction of reference letters roughly doubles (0.07 -> 0.15)
    res = train(TinyBert(), ToyTask(), "maskgrpo", EXAMPLES, [],
                TrainConfig(steps=30, prompts_per_step=6, num_generations=6, lr=3e-3, temperature=1.0, eval_every=0,
                            method_overrides=MU2), seed=0, progress=False)
    r = [row["reward"] for row in res.curve]
    assert sum(r[-5:]) / 5 > sum(r[:5]) / 5 + 0.03


def test_first_update_has_ratio_exactly_one_and_zero_kl():
    # mu = 1: the only update is on-policy, old = current, and the reference (frozen initial weights)
    # equals the current policy, so rho = exp(0) = 1 and k3 = exp(0) - 0 - 1 = 0 on every scored token.
    # BERT has dropout 0.1: this holds only because the loop runs the module in eval mode.
    res = train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, [],
                TrainConfig(**dict(TINY, steps=1), method_overrides={"mu": 1, "beta": 0.04}), seed=0, progress=False)
    row = res.curve[0]
    assert row["ratio_mean"] == 1.0 and row["ratio_min"] == 1.0 and row["ratio_max"] == 1.0
    assert row["kl"] == 0.0 and row["clip_frac"] == 0.0


def test_same_seed_reproduces_the_run_and_another_seed_does_not():
    runs = []
    for seed in (0, 0, 1):
        model = TinyBert()
        res = train(model, ToyTask(), "maskgrpo", EXAMPLES, [], TrainConfig(**TINY, method_overrides=MU2),
                    seed=seed, progress=False)
        runs.append(([r["reward"] for r in res.curve], weights(model)))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][1], runs[2][1])


def test_micro_batches_give_the_same_update_as_one_batch():
    out = []
    for mb in (None, 2):
        model = TinyBert()
        train(model, ToyTask(), "unigrpo", EXAMPLES, [],
              TrainConfig(**dict(TINY, steps=1, micro_batch_size=mb), method_overrides=MU2), seed=0, progress=False)
        out.append(weights(model))
    assert torch.allclose(out[0], out[1], atol=1e-6)


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    cfg3 = TrainConfig(**dict(TINY, steps=3), method_overrides=MU2)
    straight = TinyBert()
    train(straight, ToyTask(), "maskgrpo", EXAMPLES, [], cfg3, seed=0, progress=False)

    first = TinyBert()
    train(first, ToyTask(), "maskgrpo", EXAMPLES, [], TrainConfig(**dict(TINY, steps=2), method_overrides=MU2),
          seed=0, out_dir=tmp_path, progress=False, checkpoint_every=1)
    resumed = TinyBert()  # fresh initial weights, as after reloading the base model
    res = train(resumed, ToyTask(), "maskgrpo", EXAMPLES, [], cfg3, seed=0, out_dir=tmp_path, progress=False,
                resume=True)
    assert [r["step"] for r in res.curve] == [1, 2, 3] and res.steps == 3
    assert torch.allclose(weights(straight), weights(resumed), atol=1e-6)


def test_resume_with_a_different_method_setting_is_refused(tmp_path):
    train(TinyBert(), ToyTask(), "maskgrpo", EXAMPLES, [], TrainConfig(**TINY, method_overrides=MU2), seed=0,
          out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="different configuration"):
        train(TinyBert(), ToyTask(), "maskgrpo", EXAMPLES, [],
              TrainConfig(**dict(TINY, steps=3), method_overrides={"mu": 3}), seed=0, out_dir=tmp_path,
              progress=False, resume=True)


def test_non_finite_loss_raises_and_keeps_the_last_good_checkpoint(tmp_path):
    model = TinyBert()
    cfg = TrainConfig(**dict(TINY, steps=1), method_overrides=MU2)
    train(model, ToyTask(), "diffu-grpo", EXAMPLES, [], cfg, seed=0, out_dir=tmp_path, progress=False)
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    model.poison = True  # logits become NaN from now on
    with pytest.raises(TrainingDiverged, match="non-finite .* step 2.*last good checkpoint"):
        train(model, ToyTask(), "diffu-grpo", EXAMPLES, [], TrainConfig(**dict(TINY, steps=2), method_overrides=MU2),
              seed=0, out_dir=tmp_path, progress=False, resume=True)
    again = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert again["step"] == saved["step"] == 1


def test_periodic_evaluation_fills_eval_columns_at_step_zero_and_every_n_steps():
    calls = []

    def evaluate_fn(m):
        calls.append(1)
        return {"accuracy": 0.5}

    res = train(TinyBert(), ToyTask(), "diffu-grpo", EXAMPLES, [],
                TrainConfig(**dict(TINY, steps=3, eval_every=2), method_overrides={"mu": 1}), seed=0,
                evaluate_fn=evaluate_fn, progress=False)
    assert [r["step"] for r in res.curve] == [0, 1, 2, 3]
    assert [r.get("eval_accuracy") for r in res.curve] == [0.5, None, 0.5, 0.5]  # 0, every 2, and the last
    assert res.curve[0]["reward"] is None and len(calls) == 3


def test_maskgrpo_on_an_image_task_uses_the_emerge_sampler_and_image_epsilon():
    model = TinyBert(image=True)
    before = weights(model)
    res = train(model, ToyImageTask(), "maskgrpo", EXAMPLES, [], TrainConfig(**TINY, method_overrides=MU2),
                seed=0, progress=False)
    assert res.config["sampler"] == "emerge" and res.config["epsilon"] == 0.001 and res.config["gamma"] == 0.8
    assert not torch.equal(before, weights(model))


def test_for_task_routes_method_fields_and_rejects_unknown_keys():
    cfg = TrainConfig.for_task(ToyTask(), "maskgrpo", steps=7, lr=1e-5, mu=3)
    assert cfg.steps == 7 and cfg.lr == 1e-5 and cfg.method_overrides["mu"] == 3 and cfg.recipe == "equal"
    with pytest.raises(ValueError, match="unknown training setting 'nope'"):
        TrainConfig.for_task(ToyTask(), "maskgrpo", nope=1)


def test_prompts_cycle_through_shuffled_epochs():
    # 6 examples, 4 per step: steps 1-3 read positions 0..11 = two full epochs, each a permutation
    seen = sum((prompt_indices(6, 4, s, seed=0) for s in (1, 2, 3)), [])
    assert sorted(seen[:6]) == list(range(6)) and sorted(seen[6:]) == list(range(6))
    assert prompt_indices(6, 4, 2, seed=0) == prompt_indices(6, 4, 2, seed=0)


def test_every_method_is_registered_and_none_is_not():
    assert set(METHODS.names()) >= {"maskgrpo", "diffu-grpo", "unigrpo", "coupled-grpo", "tracerl", "wd1", "spg"}
    assert "none" not in METHODS


def _rollouts(rewards):
    """Rollouts with (N, G) `rewards`; completion row b holds the value b so selection can be traced."""
    from trainers.estimators import RolloutBatch
    from trainers.rollout import Rollouts

    r = torch.tensor(rewards, dtype=torch.float32)
    N, G = r.shape
    B = N * G
    rows = torch.arange(B)[:, None]
    batch = RolloutBatch(prompt_ids=rows.repeat(1, 2), prompt_mask=torch.ones(B, 2, dtype=torch.bool),
                         completion_ids=rows.repeat(1, 3), valid=torch.ones(B, 3, dtype=torch.bool),
                         commit_step=torch.zeros(B, 3, dtype=torch.long), mask_id=99, seed=5)
    return Rollouts(batch, r, {"correct": r.clone()}, [bool(x) for x in r.flatten()],
                    [str(b) for b in range(B)], nfe=7)


def test_select_groups_keeps_mixed_groups_first_in_drawn_order_then_tops_up():
    from trainers.rollout import select_groups

    # groups: 0 all wrong, 1 mixed, 2 all right, 3 mixed (G = 2, rows 2i and 2i+1)
    ro = _rollouts([[0, 0], [0, 1], [1, 1], [1, 0]])
    two = select_groups(ro, 2)  # both mixed groups: 1 and 3 -> rows 2, 3, 6, 7
    assert two.batch.completion_ids[:, 0].tolist() == [2, 3, 6, 7]
    assert two.rewards.tolist() == [[0, 1], [1, 0]] and two.terms["correct"].tolist() == [[0, 1], [1, 0]]
    assert two.completions == ["2", "3", "6", "7"] and two.verdicts == [False, True, True, False]
    assert two.batch.seed == 5 and two.nfe == 7
    # three: the two mixed ones, topped up with the first all-equal group (0), back in drawn order: 0, 1, 3
    assert select_groups(ro, 3).batch.prompt_ids[:, 0].tolist() == [0, 1, 2, 3, 6, 7]
    with pytest.raises(ValueError, match="between 1 and the 4 groups"):
        select_groups(ro, 5)


class ContainsTask(ToyTask):
    """Pass/fail reward: 1 if the completion contains the reference letter (about half of random ones do)."""

    def verify(self, completion, reference):
        return reference in completion

    def reward_functions(self):
        return {"match": per_item("match", lambda ex, c, k: float(k.verdict), "1 when the letter is in it")}


def test_dynamic_sampling_stops_after_enough_mixed_groups_and_keeps_what_a_full_decode_keeps():
    from harness.sampling import DecodeConfig, generate
    from trainers.rollout import collect_rollouts, select_groups

    model, task, G = TinyBert(), ContainsTask(), 3
    model.module.eval()  # dropout off, as in the loop
    dec = DecodeConfig(**{**task.gen_defaults, "temperature": 1.0})
    kw = dict(seed=0, step=1, generate_fn=generate, batch_seed=0)
    full = collect_rollouts(model, task, EXAMPLES, range(6), G, dec, **kw)
    early = collect_rollouts(model, task, EXAMPLES, range(6), G, dec, round_size=2, enough=2, **kw)
    # rounds of 2 prompts until 2 groups are mixed: the first round whose running count of mixed groups
    # in the full decode reaches 2 is the last one decoded
    mixed = (full.rewards.max(1).values > full.rewards.min(1).values).int()  # (6,)
    rounds = next((r + 1 for r in range(3) if int(mixed[:2 * (r + 1)].sum()) >= 2), 3)
    assert rounds < 3  # seed 0 stops early, so the test exercises the stop
    B = rounds * 2 * G
    assert early.batch.B == B and early.nfe == rounds * full.nfe  # one decoder call per step and round
    assert torch.equal(early.batch.completion_ids, full.batch.completion_ids[:B])  # each row has its own seed
    assert torch.equal(early.rewards, full.rewards[:rounds * 2])
    assert torch.equal(select_groups(early, 2).batch.completion_ids, select_groups(full, 2).batch.completion_ids)


def test_oversampling_rolls_out_more_prompts_and_trains_on_prompts_per_step_groups():
    model = TinyBert()
    res = train(model, ContainsTask(), "maskgrpo", EXAMPLES, [], TrainConfig(**{**TINY, "oversample": 3},
                method_overrides=MU2), seed=0, progress=False)
    # the budget is the cap: 2 steps x (2 x 3) prompts x 3 completions
    assert res.rollout_budget == 2 * 6 * 3 and res.config["oversample"] == 3
    assert res.rollouts_generated == sum(row["rollouts"] for row in res.curve)
    for row in res.curve:
        rounds = row["rollouts"] // 6  # rounds of 2 prompts x 3 completions
        assert row["rollouts"] % 6 == 0 and 1 <= rounds <= 3 and row["nfe"] == 4 * rounds
        # trained on 2 groups, mixed ones first: as many mixed as were decoded, up to 2
        mixed = round((1 - row["zero_std_frac"]) * 2 * rounds)
        assert rounds == 3 or mixed >= 2  # it stopped early only with enough mixed groups
        assert row["kept_mixed_frac"] == min(mixed, 2) / 2 and math.isfinite(row["loss"])
    with pytest.raises(ValueError, match="oversample=0"):
        TrainConfig(oversample=0)


def test_rows_gathered_from_processes_that_decoded_different_numbers_of_rounds():
    """Two simulated processes: one decoded 2 groups, the other 1; padding rows are dropped after the gather."""
    from trainers.loop import _gather_rows

    class TwoProcesses:  # what accelerate does for process 1 of 2, with process 0's rows known
        num_processes, device = 2, torch.device("cpu")
        other = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # process 0: 2 groups of G = 2

        def pad_across_processes(self, t, dim=0, pad_index=0):
            n = max(t.shape[0], self.other.shape[0])
            pad = lambda x: torch.cat([x, torch.full((n - x.shape[0], *x.shape[1:]), pad_index)])  # noqa: E731
            self.other_padded = pad(self.other)
            return pad(t)

        def gather(self, t):
            return torch.cat([self.other_padded, t])

    mine = torch.tensor([[0.0, 0.0]])  # process 1: 1 group
    assert _gather_rows(TwoProcesses(), mine).tolist() == [[1, 0], [1, 1], [0, 0]]
