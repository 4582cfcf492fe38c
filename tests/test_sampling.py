"""Tests for harness/sampling.py on a tiny fake model with deterministic random logits."""

import math

import pytest
import torch

from harness.sampling import (
    DecodeConfig,
    _gumbel_argmax,
    generate,
    low_confidence_schedule,
    maskgit_schedule,
)

V, MASK = 32, 31  # vocabulary of the fake model; the mask id is its last id


class FakeModel:
    """Logits from a fixed random table, indexed by (token, position counted from the first attended
    token, sum of the attended tokens). Pure integer indexing, so a row's logits are exact and do not
    depend on the other rows or on its left padding. The mask id gets the largest logit everywhere,
    so a decoder that forgets to ban it would sample it."""

    def __init__(self, seed=0, mask_id=MASK, table_size=997):
        g = torch.Generator().manual_seed(seed)
        self.table = 3 * torch.randn(table_size, V, generator=g)  # (K, V)
        self.table[:, mask_id] += 20.0
        self.mask_id = mask_id

    def logits(self, ids, attention_mask=None):  # (B, N) -> (B, N, V)
        am = torch.ones_like(ids) if attention_mask is None else attention_mask.long()
        pos = am.cumsum(1) - 1  # (B, N)
        ctx = (ids * am).sum(1, keepdim=True)  # (B, 1)
        return self.table[(ids * 31 + pos * 17 + ctx * 7) % self.table.shape[0]]


class Recorder:
    """Wraps a model and keeps a copy of every input it is called with."""

    def __init__(self, model):
        self.model, self.mask_id, self.calls = model, model.mask_id, []

    def logits(self, ids, attention_mask=None):
        self.calls.append((ids.clone(), attention_mask.clone()))
        return self.model.logits(ids, attention_mask)


def prompts(B=3, P=5, seed=1):
    """Left-padded prompts (B, P) of ids in [0, 20); row 1 has two pads (id 0)."""
    ids = torch.randint(0, 20, (B, P), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(B, P, dtype=torch.bool)
    if B > 1:
        ids[1, :2], mask[1, :2] = 0, False
    return ids, mask


CONFIGS = {  # one small config per sampler, sampling at temperature 1
    "low_confidence": DecodeConfig("low_confidence", gen_length=16, block_length=8, steps=6, temperature=1.0),
    "random": DecodeConfig("low_confidence", gen_length=16, block_length=8, steps=6, temperature=1.0,
                           remasking="random"),
    "emerge": DecodeConfig("emerge", gen_length=16, steps=5, temperature=1.0),
    "maskgit": DecodeConfig("maskgit", gen_length=16, steps=4, temperature=1.0),
}
ALL = pytest.mark.parametrize("name", list(CONFIGS))


@ALL
def test_committed_tokens_never_change_and_prompt_is_untouched(name):
    ids, mask = prompts()
    rec = Recorder(FakeModel())
    out = generate(rec, ids, mask, CONFIGS[name], seeds=[3, 4, 5])
    final = out.completion_ids  # (B, L)
    assert torch.equal(out.sequences[:, :5], ids)
    for seen, _ in rec.calls:
        comp = seen[:, 5:]  # (B, L) completion as the model saw it
        done = comp != MASK
        assert torch.equal(comp[done], final[done])


@ALL
def test_commit_step_marks_what_was_still_masked_at_each_call(name):
    # TraceRL's reading of the record: at model call s, exactly the tokens with commit_step >= s are masked.
    ids, mask = prompts()
    rec = Recorder(FakeModel())
    out = generate(rec, ids, mask, CONFIGS[name])
    assert len(rec.calls) == CONFIGS[name].steps
    for s, (seen, _) in enumerate(rec.calls):
        assert torch.equal(seen[:, 5:] == MASK, out.commit_step >= s)


@ALL
def test_no_mask_token_remains_and_every_token_has_a_commit_step(name):
    ids, mask = prompts()
    out = generate(FakeModel(), ids, mask, CONFIGS[name])
    assert out.sequences.shape == (3, 5 + 16)
    assert not (out.completion_ids == MASK).any()
    assert out.commit_step.min() >= 0 and out.commit_step.max() < CONFIGS[name].steps


def test_mask_id_is_never_sampled_even_when_it_has_the_largest_logit():
    # FakeModel gives the mask id +20 over every other logit, so greedy decoding would pick it if not banned.
    ids, mask = prompts()
    for sampler in ("low_confidence", "emerge", "maskgit"):
        out = generate(FakeModel(), ids, mask, DecodeConfig(sampler, gen_length=8, block_length=8, steps=4))
        assert not (out.completion_ids == MASK).any()


@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
def test_low_confidence_commits_k_per_step_on_llada_schedule(remasking):
    # gen_length 16, block 8, steps 6 -> 2 blocks x 3 steps; 8 tokens over 3 steps = 3, 3, 2 (remainder first)
    cfg = DecodeConfig(gen_length=16, block_length=8, steps=6, temperature=1.0, remasking=remasking)
    ids, mask = prompts()
    rec = Recorder(FakeModel())
    out = generate(rec, ids, mask, cfg)
    for row in out.commit_step:
        assert torch.bincount(row, minlength=6).tolist() == [3, 3, 2, 3, 3, 2]
    # masks seen by the model at each call: 16, 16-3, 16-6, 16-8, 8-3, 8-6
    assert [int((seen[0, 5:] == MASK).sum()) for seen, _ in rec.calls] == [16, 13, 10, 8, 5, 2]
    assert low_confidence_schedule(8, 3) == [3, 3, 2] and low_confidence_schedule(32, 4) == [8] * 4


def test_low_confidence_fills_blocks_left_to_right():
    cfg = DecodeConfig(gen_length=24, block_length=8, steps=6, temperature=1.0)  # 3 blocks x 2 steps
    ids, mask = prompts()
    rec = Recorder(FakeModel())
    out = generate(rec, ids, mask, cfg)
    for b in range(3):  # block b is committed during steps 2b and 2b+1, and untouched before
        assert ((out.commit_step[:, 8 * b:8 * b + 8] // 2) == b).all()
        for seen, _ in rec.calls[:2 * b]:
            assert (seen[:, 5 + 8 * b:5 + 8 * b + 8] == MASK).all()


def test_low_confidence_commits_the_most_confident_positions_first():
    cfg = DecodeConfig(gen_length=8, block_length=8, steps=4)  # greedy, 2 tokens per step
    ids, mask = prompts()
    model = FakeModel()
    out = generate(model, ids, mask, cfg)
    attn = torch.cat([mask, torch.ones(3, 8, dtype=torch.bool)], 1)
    x0 = torch.cat([ids, torch.full((3, 8), MASK)], 1)
    logits = model.logits(x0, attn)[:, 5:].clone()  # (B, 8, V) at the first call
    logp = logits.log_softmax(-1)  # over the whole vocabulary, mask id included, as LLaDA's softmax
    logits[..., MASK] = -math.inf  # but the mask id itself is never the token chosen
    conf = logp.gather(-1, logits.argmax(-1, keepdim=True))[..., 0]  # (B, 8) confidence of the greedy token
    first = conf.topk(2, dim=1).indices.sort(1).values  # (B, 2)
    assert torch.equal((out.commit_step == 0).nonzero()[:, 1].view(3, 2), first)


def test_greedy_low_confidence_ignores_the_seed():
    cfg = DecodeConfig(gen_length=16, block_length=8, steps=8)
    ids, mask = prompts()
    a = generate(FakeModel(), ids, mask, cfg, seeds=[0, 1, 2])
    b = generate(FakeModel(), ids, mask, cfg, seeds=[7, 8, 9])
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.commit_step, b.commit_step)


def test_emerge_reveal_fraction_per_step_follows_cosine_schedule():
    # T = 4: fraction revealed at step s is cos(pi/2 s/4) - cos(pi/2 (s+1)/4)
    #   = 1 - .9239 = .0761, .9239 - .7071 = .2168, .7071 - .3827 = .3244, .3827 - 0 = .3827
    # 64 rows x 64 tokens = 4096 positions: binomial std <= sqrt(.25 / 4096) = .008, tolerance 5 std.
    cfg = DecodeConfig("emerge", gen_length=64, steps=4, temperature=1.0)
    ids = torch.randint(0, 20, (64, 3), generator=torch.Generator().manual_seed(0))
    out = generate(FakeModel(), ids, None, cfg, seeds=list(range(100, 164)))
    frac = torch.bincount(out.commit_step.flatten(), minlength=4).double() / out.commit_step.numel()
    expected = torch.tensor([.0761, .2168, .3244, .3827], dtype=torch.float64)
    assert (frac - expected).abs().max() < 0.04
    per_row = (out.commit_step == 1).sum(1)  # (64,) reveals at step 1 vary from row to row
    assert per_row.min() < per_row.max()


def test_maskgit_reveals_a_fixed_cosine_count_per_step():
    # L = 16, T = 4: still masked after step s = floor(16 cos(pi/2 (s+1)/4)) = floor(14.78), floor(11.31),
    # floor(6.12), 0 = 14, 11, 6, 0 -> reveals 2, 3, 5, 6 in every row.
    assert maskgit_schedule(16, 4) == [14, 11, 6, 0]
    ids, mask = prompts()
    out = generate(FakeModel(), ids, mask, CONFIGS["maskgit"], seeds=[1, 2, 3])
    for row in out.commit_step:
        assert torch.bincount(row, minlength=4).tolist() == [2, 3, 5, 6]
    # steps == gen_length: the "at least one per step" rule gives exactly one each step
    assert maskgit_schedule(5, 5) == [4, 3, 2, 1, 0]


@ALL
def test_same_seed_gives_same_output_and_other_seeds_differ(name):
    ids, mask = prompts()
    cfg = CONFIGS[name]
    a = generate(FakeModel(), ids, mask, cfg, seeds=[10, 11, 12])
    b = generate(FakeModel(), ids, mask, cfg, seeds=[10, 11, 12])
    c = generate(FakeModel(), ids, mask, cfg, seeds=[20, 21, 22])
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.commit_step, b.commit_step)
    assert not torch.equal(a.sequences, c.sequences)


@ALL
def test_row_output_does_not_depend_on_the_rest_of_the_batch(name):
    ids, mask = prompts(B=4)
    cfg = CONFIGS[name]
    batch = generate(FakeModel(), ids, mask, cfg, seeds=[5, 6, 7, 8])
    # row 1 alone, with its left padding removed, under the same seed
    alone = generate(FakeModel(), ids[1:2, 2:], None, cfg, seeds=[6])
    assert torch.equal(alone.completion_ids[0], batch.completion_ids[1])
    assert torch.equal(alone.commit_step[0], batch.commit_step[1])
    # the batch reversed, seeds following their rows
    rev = generate(FakeModel(), ids.flip(0), mask.flip(0), cfg, seeds=[8, 7, 6, 5])
    assert torch.equal(rev.sequences.flip(0), batch.sequences)


def test_model_sees_the_prompt_mask_extended_with_ones():
    ids, mask = prompts()
    rec = Recorder(FakeModel())
    generate(rec, ids, mask, DecodeConfig(gen_length=8, block_length=8, steps=2))
    expected = torch.cat([mask, torch.ones(3, 8, dtype=torch.bool)], 1)  # row 1: F F T T T then 8 x T
    for _, am in rec.calls:
        assert torch.equal(am.bool(), expected)


@pytest.mark.parametrize("name, nfe", [("low_confidence", 6), ("random", 6), ("emerge", 5), ("maskgit", 4)])
def test_nfe_is_one_per_step_and_two_with_cfg(name, nfe):
    ids, mask = prompts()
    cfg = CONFIGS[name]
    assert generate(FakeModel(), ids, mask, cfg).nfe == nfe
    rec = Recorder(FakeModel())
    guided = DecodeConfig(**{**cfg.__dict__, "cfg_scale": 1.5})
    assert generate(rec, ids, mask, guided).nfe == 2 * nfe
    # one forward per step over [cond; uncond]: the uncond half has every prompt position masked
    assert len(rec.calls) == nfe
    for seen, _ in rec.calls:
        assert seen.shape[0] == 6
        assert (seen[3:, :5] == MASK).all() and torch.equal(seen[3:, 5:], seen[:3, 5:])


class TwoFacedModel:
    """Logits [1.0, 0, 1.2, *] with the prompt visible, [0, 0, 1.5, *] with it masked (id 3 = mask)."""

    mask_id = 3

    def logits(self, ids, attention_mask=None):  # (B, N) -> (B, N, 4)
        cond = torch.tensor([1.0, 0.0, 1.2, 0.0])
        uncond = torch.tensor([0.0, 0.0, 1.5, 0.0])
        masked_prompt = (ids[:, :1] == 3)[..., None]  # (B, 1, 1)
        return torch.where(masked_prompt, uncond, cond).expand(*ids.shape, 4).clone()


@pytest.mark.parametrize("sampler", ["low_confidence", "emerge", "maskgit"])
def test_cfg_combines_as_one_plus_w_cond_minus_w_uncond(sampler):
    # w = 0: argmax [1.0, 0, 1.2] = id 2.  w = 1: 2 * [1.0, 0, 1.2] - [0, 0, 1.5] = [2.0, 0, 0.9] -> id 0.
    ids = torch.tensor([[1, 2]])
    plain = DecodeConfig(sampler, gen_length=4, block_length=4, steps=2)
    guided = DecodeConfig(sampler, gen_length=4, block_length=4, steps=2, cfg_scale=1.0)
    assert generate(TwoFacedModel(), ids, None, plain).completion_ids.tolist() == [[2, 2, 2, 2]]
    assert generate(TwoFacedModel(), ids, None, guided).completion_ids.tolist() == [[0, 0, 0, 0]]


@pytest.mark.parametrize("name", ["low_confidence", "emerge", "maskgit"])
def test_token_range_restricts_sampled_ids(name):
    ids, mask = prompts()
    out = generate(FakeModel(), ids, mask, CONFIGS[name], token_range=(10, 20))
    assert ((out.completion_ids >= 10) & (out.completion_ids < 20)).all()
    # a mask id inside the range is still banned
    out = generate(FakeModel(mask_id=15), ids, mask, CONFIGS[name], token_range=(10, 20))
    comp = out.completion_ids
    assert ((comp >= 10) & (comp < 20) & (comp != 15)).all()


def test_gumbel_argmax_samples_softmax_at_temperature():
    # logits [0, 1, 2] at T = 2 -> softmax([0, .5, 1]) = [1, 1.6487, 2.7183] / 5.3670 = [.1863, .3072, .5065]
    # 20000 draws: std <= .0036, tolerance ~5 std.
    logits = torch.tensor([[0.0, 1.0, 2.0]]).expand(20000, 3)
    ids = _gumbel_argmax(logits, 2.0, [20000], [torch.Generator().manual_seed(0)])
    freq = torch.bincount(ids, minlength=3).double() / 20000
    assert (freq - torch.tensor([.1863, .3072, .5065], dtype=torch.float64)).abs().max() < 0.018


@pytest.mark.parametrize("kwargs, message", [
    # divisors of 100 nearest 32: 25, 20, 50, 10, 5, 4
    (dict(gen_length=100, block_length=32), r"block_length=32.*\[4, 5, 10, 20, 25, 50\]"),
    # 256 / 32 = 8 blocks; multiples of 8 nearest 100: 96, 104, 88, 112
    (dict(gen_length=256, block_length=32, steps=100), r"num_blocks=8.*\[88, 96, 104, 112\]"),
    (dict(gen_length=256, block_length=32, steps=512), r"steps <= 256"),
    (dict(sampler="ddim"), r"low_confidence, emerge, maskgit"),
    (dict(remasking="topk"), r"low_confidence, random"),
    (dict(temperature=-0.5), r"temperature=-0.5 must be >= 0"),
    (dict(sampler="maskgit", gen_length=8, steps=9), r"steps=9 must be <= gen_length=8"),
    (dict(steps=0), r"steps=0 must be a positive"),
])
def test_bad_settings_raise_errors_that_say_what_would_work(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DecodeConfig(**kwargs)


def test_generate_rechecks_config_and_arguments():
    ids, mask = prompts()
    cfg = DecodeConfig(gen_length=16, block_length=8, steps=6)
    cfg.steps = 7  # changed after construction: not a multiple of 2 blocks
    with pytest.raises(ValueError, match=r"valid steps nearby: \[4, 6, 8, 10\]"):
        generate(FakeModel(), ids, mask, cfg)
    cfg.steps = 6
    with pytest.raises(ValueError, match="one seed per row"):
        generate(FakeModel(), ids, mask, cfg, seeds=[1, 2])
    with pytest.raises(ValueError, match="token_range"):
        generate(FakeModel(), ids, mask, cfg, token_range=(20, 10))
