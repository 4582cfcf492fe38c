"""Fast decoding (issue 20): threshold / factor parallel decoding and the approximate KV cache.

Fake models from tests/test_sampling.py and a randomly initialised 2-layer RoFormer (the tiny model's
class) wrapped in the real DiffusionModel adapter; CPU, about a second in all.
"""

import hashlib
import math

import pytest
import torch
from test_sampling import FakeModel, Recorder, prompts
from transformers import RoFormerConfig, RoFormerForMaskedLM

from harness.kv_cache import CacheUnsupported, cached_forward
from harness.models import DiffusionModel
from harness.sampling import DecodeConfig, _adaptive_commit, generate
from trainers.estimators import RolloutBatch
from trainers.tracerl import trace_group_masks, trace_num_groups

V, MASK = 32, 31


class SoftFake(FakeModel):
    """FakeModel whose mask logit is not dominant, so probabilities of real tokens reach a threshold."""

    def __init__(self, seed=0):
        super().__init__(seed)
        self.table[:, MASK] -= 40.0


def roformer(seed=0, vocab=40):
    torch.manual_seed(seed)
    cfg = RoFormerConfig(vocab_size=vocab, embedding_size=32, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, type_vocab_size=1)
    module = RoFormerForMaskedLM(cfg).eval()
    return DiffusionModel(module, None, name="rand-roformer", mask_id=vocab - 1, pad_id=0, eos_id=1)


def digest(out):
    h = hashlib.sha256()
    h.update(out.sequences.numpy().tobytes())
    h.update(out.commit_step.numpy().tobytes())
    h.update(str(out.nfe).encode())
    return h.hexdigest()[:16]


# recorded from harness/sampling.py at main a01edaa, before the fast options existed
GOLDEN = {
    "greedy": (dict(gen_length=16, block_length=8, steps=8, temperature=0.0), "99eb2047d90d49f3"),
    "sampled": (dict(gen_length=16, block_length=8, steps=6, temperature=1.0), "dca5773ab75b6d43"),
    "random": (dict(gen_length=16, block_length=8, steps=6, temperature=1.0, remasking="random"), "730b27c702065906"),
    "cfg": (dict(gen_length=16, block_length=4, steps=8, temperature=0.7, cfg_scale=1.5), "0b6235943c475099"),
}


@pytest.mark.parametrize("name", list(GOLDEN))
def test_fast_options_off_are_bit_for_bit_the_decoder_before_them(name):
    kwargs, expected = GOLDEN[name]
    cfg = DecodeConfig("low_confidence", **kwargs)
    assert not cfg.fast
    ids, mask = prompts()
    assert digest(generate(FakeModel(), ids, mask, cfg, seeds=[3, 4, 5])) == expected


def test_threshold_one_commits_exactly_one_token_per_row_and_step():
    ids, mask = prompts()
    out = generate(SoftFake(), ids, mask, DecodeConfig(gen_length=16, block_length=8, steps=4, threshold=1.0))
    assert out.nfe == 16  # at least (and here exactly) one per step: `steps` is not used
    for row in out.commit_step:
        assert sorted(row.tolist()) == list(range(16))
        assert row[:8].max() < row[8:].min()  # blocks left to right


def test_tiny_threshold_fills_each_block_in_one_call():
    ids, mask = prompts()
    out = generate(SoftFake(), ids, mask, DecodeConfig(gen_length=16, block_length=8, steps=8, threshold=1e-30))
    assert out.nfe == 2
    assert out.commit_step.tolist() == [[0] * 8 + [1] * 8] * 3


def test_threshold_commits_the_positions_at_or_above_it_and_at_least_the_most_confident():
    ids, mask = prompts()
    model = SoftFake()
    cfg = DecodeConfig(gen_length=8, block_length=8, steps=8, threshold=0.3)
    out = generate(model, ids, mask, cfg)
    attn = torch.cat([mask, torch.ones(3, 8, dtype=torch.bool)], 1)
    x0 = torch.cat([ids, torch.full((3, 8), MASK)], 1)
    logits = model.logits(x0, attn)[:, 5:].clone()  # (B, 8, V) at the first call
    norm = logits.logsumexp(-1)  # LLaDA's normalisation: mask id included
    logits[..., MASK] = -math.inf
    conf = (logits.max(-1).values - norm).exp()  # (B, 8)
    expect = (conf >= 0.3) | (conf == conf.max(1, keepdim=True).values)
    assert torch.equal(out.commit_step == 0, expect)
    assert 1 < int(expect.sum()) < 24  # the case is not trivial


def test_factor_rule_takes_the_largest_n_with_n_plus_one_times_one_minus_c_n_at_most_f():
    masked = torch.tensor([[True, True, True, True, True, False]])
    p = torch.tensor([0.97, 0.85, 0.6, 0.93, 0.3]).log()  # sorted: .97 .93 .85 .6 .3 -> (n+1)(1-c): .06 .21 .6 1.6 4.2
    for f, n in [(0.01, 1), (0.1, 1), (0.3, 2), (1.0, 3), (2.0, 4), (5.0, 5)]:
        commit = _adaptive_commit(masked, p, DecodeConfig(factor=f))
        assert int(commit.sum()) == n
        assert not commit[0, 5]
    commit = _adaptive_commit(masked, p, DecodeConfig(factor=0.3))
    assert commit[0].tolist() == [True, False, False, True, False, False]


def test_rows_that_finished_their_block_are_not_run():
    ids, mask = prompts(B=4)
    rec = Recorder(SoftFake())
    out = generate(rec, ids, mask, DecodeConfig(gen_length=16, block_length=8, steps=8, temperature=1.0,
                                                threshold=0.4), seeds=[7, 8, 9, 10])
    assert sum(x.shape[0] for x, _ in rec.calls) == int((out.commit_step.max(1).values + 1).sum())
    assert min(x.shape[0] for x, _ in rec.calls) < 4


def test_adaptive_rows_decode_the_same_alone_as_in_a_batch():
    ids, mask = prompts(B=4)
    cfg = DecodeConfig(gen_length=16, block_length=8, steps=8, temperature=1.0, threshold=0.4)
    full = generate(SoftFake(), ids, mask, cfg, seeds=[7, 8, 9, 10])
    assert len(set(full.commit_step.max(1).values.tolist())) > 1  # rows took different numbers of steps
    for b in range(4):
        alone = generate(SoftFake(), ids[b:b + 1], mask[b:b + 1], cfg, seeds=[7 + b])
        assert torch.equal(alone.sequences[0], full.sequences[b])
        assert torch.equal(alone.commit_step[0], full.commit_step[b])


def test_adaptive_commit_steps_replay_exactly_what_the_row_saw():
    """TraceRL's view of step s (hide tokens committed at >= s) is the row's input at its s-th step."""
    ids, mask = prompts()
    for b in range(3):  # one row at a time: in a batch, rows that finished their block are not run
        rec = Recorder(SoftFake())
        out = generate(rec, ids[b:b + 1], mask[b:b + 1], DecodeConfig(gen_length=16, block_length=8, steps=8,
                                                                      temperature=1.0, threshold=0.5), seeds=[b])
        seen = []
        for x, _ in rec.calls:
            state = x[0, 5:]
            if (state == MASK).any() and (not seen or not torch.equal(seen[-1], state)):
                seen.append(state)
        cs = out.commit_step[0]
        views = [torch.where(cs >= s, torch.full_like(cs, MASK), out.completion_ids[0]) for s in range(int(cs.max()) + 1)]
        assert len(seen) == len(views)
        assert all(torch.equal(a, v) for a, v in zip(seen, views))


def test_tracerl_groups_cover_each_token_once_with_variable_steps_per_block():
    ids, mask = prompts(B=4)
    out = generate(SoftFake(), ids, mask, DecodeConfig(gen_length=16, block_length=8, steps=8, temperature=1.0,
                                                       threshold=0.4), seeds=[4, 5, 6, 7])
    for shrink in (1, 3):
        n = trace_num_groups(out.commit_step, shrink)
        scored = sum(trace_group_masks(out.commit_step, g, shrink)[1].long() for g in range(n))
        assert (scored == 1).all()
    batch = RolloutBatch(prompt_ids=ids, prompt_mask=mask, completion_ids=out.completion_ids,
                         valid=torch.ones_like(out.completion_ids, dtype=torch.bool), commit_step=out.commit_step,
                         mask_id=MASK, block_length=8)
    assert batch.commit_step.min() == 0


# ---- the KV cache -------------------------------------------------------------------------------------------

def padded_batch(model, B=3, P=6, L=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, model.mask_id, (B, P + L), generator=g)
    ids[:, P + 3:] = model.mask_id
    keep = torch.ones(B, P + L, dtype=torch.bool)
    ids[1, :2], keep[1, :2] = 0, False
    return ids, keep


def test_cached_forward_without_a_cache_reproduces_the_module():
    model = roformer()
    ids, keep = padded_batch(model)
    fwd = cached_forward(model, "prefix")
    with torch.no_grad():
        ours, kv = fwd(ids, keep)
        theirs = model.logits(ids, keep)
    assert len(kv) == 2 and kv[0][0].shape == (3, 2, 14, 16)
    assert torch.allclose(ours[keep], theirs[keep], atol=1e-5)


@pytest.mark.parametrize("start,stop", [(6, 14), (6, 10), (10, 14)])
def test_window_forward_over_fresh_keys_values_equals_the_full_forward(start, stop):
    model = roformer()
    ids, keep = padded_batch(model)
    fwd = cached_forward(model, "dual")
    with torch.no_grad():
        full, kv = fwd(ids, keep)
        part, _ = fwd(ids[:, start:stop], keep, start=start, kv=kv)
    assert torch.allclose(part, full[:, start:stop], atol=1e-5)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_cache_refreshes_at_each_block_and_runs_only_the_window_in_between(cache, monkeypatch):
    model = roformer()
    fwd = cached_forward(model, cache)
    widths = []
    real = type(fwd).__call__

    def spy(self, ids, keep, start=0, kv=None, rows=None):
        widths.append((ids.shape[1], start, kv is None))
        return real(self, ids, keep, start, kv, rows)

    monkeypatch.setattr(type(fwd), "__call__", spy)
    ids, keep = padded_batch(model, L=0)
    out = generate(model, ids, keep, DecodeConfig(gen_length=12, block_length=4, steps=6, cache=cache))
    assert out.nfe == 6 and not (out.completion_ids == model.mask_id).any()
    S = 6 + 12
    if cache == "prefix":
        assert widths == [(S, 0, True), (S - 6, 6, False), (S, 0, True), (S - 10, 10, False),
                          (S, 0, True), (S - 14, 14, False)]
    else:
        assert widths == [(S, 0, True), (4, 6, False), (S, 0, True), (4, 10, False), (S, 0, True), (4, 14, False)]


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_cached_decoding_keeps_the_contract(cache):
    model = roformer()
    ids, keep = padded_batch(model, L=0)
    cfg = DecodeConfig(gen_length=16, block_length=8, steps=8, temperature=1.0, cache=cache, threshold=0.05)
    out = generate(model, ids, keep, cfg, seeds=[1, 2, 3])
    assert not (out.completion_ids == model.mask_id).any() and (out.commit_step >= 0).all()
    assert out.nfe <= 16
    # a row decodes the same alone as in the batch (the cache is per row)
    alone = generate(model, ids[1:2], keep[1:2], cfg, seeds=[2])
    assert torch.equal(alone.sequences[0], out.sequences[1])


def test_greedy_single_block_prefix_cache_first_step_matches_no_cache():
    model = roformer()
    ids, keep = padded_batch(model, L=0)
    a = generate(model, ids, keep, DecodeConfig(gen_length=8, block_length=8, steps=8))
    b = generate(model, ids, keep, DecodeConfig(gen_length=8, block_length=8, steps=8, cache="prefix"))
    assert torch.equal(a.commit_step == 0, b.commit_step == 0)  # step 0 is a full forward in both


@pytest.mark.parametrize("family", ["llada", "dream", "mmada"])
def test_cache_on_a_remote_code_family_is_a_one_line_error(family):
    model = SoftFake()
    model.family = family
    ids, mask = prompts()
    with pytest.raises(CacheUnsupported, match=f"not supported for the {family} family") as e:
        generate(model, ids, mask, DecodeConfig(gen_length=16, block_length=8, steps=8, cache="prefix"))
    assert "\n" not in str(e.value)
    # threshold decoding works for every family
    out = generate(model, ids, mask, DecodeConfig(gen_length=16, block_length=8, steps=8, threshold=0.9))
    assert not (out.completion_ids == MASK).any()


def test_cache_on_a_model_without_a_native_forward_is_refused():
    ids, mask = prompts()
    with pytest.raises(CacheUnsupported, match="only for the embedded tiny model"):
        generate(SoftFake(), ids, mask, DecodeConfig(gen_length=16, block_length=8, steps=8, cache="dual"))


@pytest.mark.parametrize("kwargs,message", [
    (dict(threshold=0.0), "threshold=0.0 must lie in"),
    (dict(threshold=1.5), "threshold=1.5 must lie in"),
    (dict(factor=-1.0), "factor=-1.0 must be"),
    (dict(threshold=0.9, factor=1.0), "not both"),
    (dict(cache="full"), "unknown cache"),
    (dict(sampler="emerge", threshold=0.9), "low_confidence sampler only"),
    (dict(sampler="maskgit", cache="prefix"), "low_confidence sampler only"),
    (dict(remasking="random", threshold=0.9), "remasking=low_confidence"),
])
def test_bad_fast_settings_say_what_works(kwargs, message):
    base = dict(gen_length=16, block_length=8, steps=8)
    with pytest.raises(ValueError, match=message):
        DecodeConfig(**{**base, **kwargs})


# ---- fast rollouts in the RL loop ----------------------------------------------------------------------------

def roformer_adapter():
    from fakes import TinyBert
    from fakes import V as TOY_V

    model = TinyBert()
    torch.manual_seed(0)
    model.module = RoFormerForMaskedLM(RoFormerConfig(
        vocab_size=TOY_V, embedding_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        type_vocab_size=1))
    return model


def test_rollout_fields_reach_the_rollout_decoder():
    from fakes import ToyTask

    from trainers.loop import TrainConfig, rollout_decode_config
    from trainers.methods import get_method

    task = ToyTask()
    cfg = TrainConfig.for_task(task, "maskgrpo", rollout_threshold=0.9, rollout_cache="prefix")
    d = rollout_decode_config(cfg, task, get_method("maskgrpo"))
    assert (d.threshold, d.cache, d.factor) == (0.9, "prefix", None)
    cfg = TrainConfig.for_task(task, "maskgrpo", rollout_factor=1.0, rollout_cache="dual")
    d = rollout_decode_config(cfg, task, get_method("maskgrpo"))
    assert (d.threshold, d.cache, d.factor) == (None, "dual", 1.0)
    off = rollout_decode_config(TrainConfig.for_task(task, "maskgrpo"), task, get_method("maskgrpo"))
    assert not off.fast


@pytest.mark.parametrize("method", ["maskgrpo", "tracerl", "diffu-grpo"])
def test_training_with_fast_rollouts_runs_every_estimator_on_variable_steps(method):
    from fakes import EXAMPLES, TINY, ToyTask

    from trainers.loop import TrainConfig, train

    model = roformer_adapter()
    before = torch.cat([p.detach().flatten().clone() for p in model.module.parameters()])
    over = {"mu": 2, "shrink": 1} if method == "tracerl" else {"mu": 2}
    cfg = TrainConfig(**TINY, method_overrides=over, rollout_threshold=0.3, rollout_cache="dual")
    res = train(model, ToyTask(), method, EXAMPLES, [], cfg, seed=0, progress=False)
    after = torch.cat([p.detach().flatten() for p in model.module.parameters()])
    assert not torch.equal(before, after)
    for row in res.curve:
        assert math.isfinite(row["loss"]) and 2 <= row["nfe"] <= 8  # 2 blocks of 4: 1..4 calls each
    assert res.config["rollout_threshold"] == 0.3 and res.config["rollout_cache"] == "dual"


def test_tracerl_views_replay_an_adaptive_rollout():
    """Each TraceRL view of a threshold rollout shows exactly the row's input at that step."""
    from trainers.tracerl import TraceRLConfig, views

    ids, mask = prompts(B=2)
    cfg = DecodeConfig(gen_length=16, block_length=8, steps=8, temperature=1.0, threshold=0.5)
    out = generate(SoftFake(), ids, mask, cfg, seeds=[5, 6])
    batch = RolloutBatch(prompt_ids=ids, prompt_mask=mask, completion_ids=out.completion_ids,
                         valid=torch.ones_like(out.completion_ids, dtype=torch.bool), commit_step=out.commit_step,
                         mask_id=MASK, block_length=8)
    tcfg = TraceRLConfig(mu=1, shrink=1)
    vs = views(0, batch, tcfg, torch.Generator())
    assert len(vs) == trace_num_groups(out.commit_step, 1) == int(out.commit_step.max()) + 1
    for b in range(2):
        rec = Recorder(SoftFake())
        generate(rec, ids[b:b + 1], mask[b:b + 1], cfg, seeds=[5 + b])
        seen = []
        for x, _ in rec.calls:
            if not seen or not torch.equal(seen[-1], x[0]):
                seen.append(x[0])
        steps_b = int(out.commit_step[b].max()) + 1
        assert [torch.equal(v.input_ids[b], s) for v, s in zip(vs[:steps_b], seen)] == [True] * steps_b
        assert all(not v.score[b].any() for v in vs[steps_b:])  # past the row's last step: nothing to score
