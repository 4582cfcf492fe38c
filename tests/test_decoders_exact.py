"""Exact-value tests of the emerge and MaskGIT decoders (harness/sampling.py): expected values worked by hand.

The model is a fixed logit table (it ignores its input), and the decoders' uniforms come from a stub of
`_Run.uniform` that hands out chosen values, so which position is committed at which step follows from
the definitions in DESIGN.md section 4 with pencil-and-paper arithmetic.
"""

import math
from types import SimpleNamespace

import pytest
import torch

from harness.sampling import DecodeConfig, _adaptive_commit, _gumbel_argmax, _Run, _Vocab, generate

V, MASK = 8, 7  # vocabulary of the table models; the mask id is the last id
NEG = -math.inf


class TableModel:
    """Ignores its input: the logits of completion position i are table[i] (L, V), the prompt's are zeros.
    Every tensor it makes is on the CPU explicitly (the device tests run under another default device)."""

    def __init__(self, table, P):
        self.table, self.P, self.mask_id = table, P, MASK

    def logits(self, ids, attention_mask=None):  # (B, P+L) -> (B, P+L, V)
        B = ids.shape[0]
        prompt = torch.zeros(B, self.P, V, device="cpu")
        return torch.cat([prompt, self.table.expand(B, -1, -1)], dim=1)


def one_token_table(logp):
    """Row i allows only token 2+i besides the mask id: logit log p_i for the token, log(1 - p_i) for the mask
    id, -inf elsewhere. The mask id is never sampled, so position i always gets token 2+i, and its confidence
    (log-probability normalised over the whole vocabulary, mask id included) is log p_i + log 1 = log p_i."""
    table = torch.full((len(logp), V), NEG)
    for i, lp in enumerate(logp):
        table[i, 2 + i] = lp
        table[i, MASK] = math.log1p(-math.exp(lp))
    return table


def argmax_table(L):
    """Position i: token 2+i has logit 1, every other id 0 -> greedy decoding gives token 2+i."""
    table = torch.zeros(L, V)
    for i in range(L):
        table[i, 2 + i] = 1.0
    return table


class Draws:
    """Stands in for `_Run.uniform`: call c returns the values calls[c] (float64, CPU) and records the counts."""

    def __init__(self, *calls, fill=None):
        self.calls, self.fill, self.counts = list(calls), fill, []

    def install(self, monkeypatch):
        monkeypatch.setattr(_Run, "uniform", lambda run, counts: self(counts))
        return self

    def __call__(self, counts):
        self.counts.append(list(counts))
        u = [self.fill] * sum(counts) if self.fill is not None else self.calls.pop(0)
        assert len(u) == sum(counts)
        return torch.tensor(u, dtype=torch.float64, device="cpu")


PROMPT = torch.tensor([[3, 4]])  # (1, P=2)
PMASK = torch.ones(1, 2, dtype=torch.bool)


def gumbel_u(k):
    """The uniform u whose MaskGIT noise term log(-log u) equals k: u = exp(-exp(k))."""
    return math.exp(-math.exp(k))


# ------------------------------------------------------------------------------------------------------
# emerge: at step s (of T) each masked position stays masked iff u < k(s+1)/k(s), k(s) = cos(pi/2 s/T);
# the last step fills every position left


def test_emerge_reveals_where_the_uniform_reaches_the_cosine_ratio_and_fills_all_at_the_last_step(monkeypatch):
    # T=3: k = [1, cos(pi/6)=0.8660, cos(pi/3)=0.5, 0]; stay(s=0) = 0.8660/1 = 0.8660,
    # stay(s=1) = 0.5/0.8660 = 0.5774; s=2 is the last step (no draw, fills all)
    # s=0, masked {0,1,2,3}, u = [0.95, 0.2, 0.5, 0.87]: 0.95 and 0.87 >= 0.8660 -> reveal 0 and 3
    # s=1, masked {1,2},     u = [0.6, 0.55]: 0.6 >= 0.5774 -> reveal 1; 0.55 < 0.5774 -> 2 stays
    #   (0.55 would reveal under the bare k(2) = 0.5: the ratio matters)
    # s=2: reveal 2. Greedy tokens: position i -> 2+i
    draws = Draws([0.95, 0.2, 0.5, 0.87], [0.6, 0.55]).install(monkeypatch)
    cfg = DecodeConfig("emerge", gen_length=4, steps=3, temperature=0.0)
    out = generate(TableModel(argmax_table(4), P=2), PROMPT, PMASK, cfg, seeds=[0])
    assert out.commit_step.tolist() == [[0, 1, 2, 0]]
    assert out.sequences.tolist() == [[3, 4, 2, 3, 4, 5]]
    assert draws.counts == [[4], [2]]  # one uniform per masked position; none at the last step
    assert out.nfe == 3


def test_emerge_last_step_fills_every_position_even_when_every_draw_says_stay(monkeypatch):
    # u = 0 < k(s+1)/k(s) for every s < T-1 -> nothing is revealed before the last step, which fills all
    # (including the last step's ratio k(T)/k(T-1) = cos(pi/2)/cos(pi/2 (T-1)/T) ~ 6e-17 > 0 = u, which would
    # keep everything masked if the last step drew too)
    Draws(fill=0.0).install(monkeypatch)
    cfg = DecodeConfig("emerge", gen_length=3, steps=4, temperature=0.0)
    out = generate(TableModel(argmax_table(3), P=2), PROMPT, PMASK, cfg, seeds=[0])
    assert out.commit_step.tolist() == [[3, 3, 3]]
    assert out.sequences.tolist() == [[3, 4, 2, 3, 4]]


def test_emerge_a_draw_equal_to_the_stay_probability_reveals(monkeypatch):
    # stays masked with probability k(s+1)/k(s) <=> stays iff u < k(s+1)/k(s) (u uniform on [0, 1)), so
    # u == ratio reveals. T=2: ratio(s=0) = cos(pi/4)/cos(0) = cos(pi/4) exactly (pi/2 * 1/2 = pi/4 in floats)
    # s=0: u = [cos(pi/4), 0.7]: position 0 reveals (u == ratio), position 1 stays (0.7 < 0.7071); s=1: fills 1
    Draws([math.cos(math.pi / 4), 0.7]).install(monkeypatch)
    cfg = DecodeConfig("emerge", gen_length=2, steps=2, temperature=0.0)
    out = generate(TableModel(argmax_table(2), P=2), PROMPT, PMASK, cfg, seeds=[0])
    assert out.commit_step.tolist() == [[0, 1]]


# ------------------------------------------------------------------------------------------------------
# maskgit: at step s, every masked position gets conf = log p - temperature * (1 - s/T) * log(-log u);
# the (before - after) most confident are committed, after = floor(L cos(pi/2 (s+1)/T)) (0 at the last step)


def test_maskgit_commits_by_log_prob_plus_annealed_gumbel_noise(monkeypatch):
    # L=5, T=3, temperature 1. Schedule: floor(5 cos(pi/6)) = floor(4.33) = 4, floor(5 cos(pi/3)) = floor(2.5) = 2,
    # then 0 -> commit 1, 2, 2. Noise scale 1 * (1 - s/3) = 1, 2/3, 1/3.
    # log p = [-0.1, -0.2, -0.3, -0.4, -0.5]; the stub's u = exp(-exp(k)) makes log(-log u) = k, so
    # conf = log p - scale * k.
    # s=0 (scale 1), k = [0.5, -1.0, 0.5, 0.5, -1.2]:
    #   conf = [-0.1-0.5, -0.2+1.0, -0.3-0.5, -0.4-0.5, -0.5+1.2] = [-0.6, 0.8, -0.8, -0.9, 0.7] -> commit 1
    #   (no noise: 0 would win; scale 2: -0.2+2.0 = 1.8 < -0.5+2.4 = 1.9, 4 would win; noise added with the
    #   wrong sign: [0.4, -1.2, 0.2, 0.1, -1.7], 0 would win)
    # s=1 (scale 2/3), masked {0,2,3,4}, k = [0.1, 0.5, -0.6, -0.3]:
    #   conf = [-0.1-0.0667, -0.3-0.3333, -0.4+0.4, -0.5+0.2] = [-0.167, -0.633, 0.0, -0.3] -> commit {3, 0}
    #   (no noise: {0, 2}; scale 4/3: [-0.233, -0.967, 0.4, -0.1] -> {3, 4}; scale 1.5: [-0.25, -1.05, 0.5,
    #   -0.05] -> {3, 4}; log p - scale / k: [-6.77, -1.63, 0.71, 1.72] -> {4, 3})
    # s=2 (scale 1/3), masked {2,4}: both committed whatever the noise
    logp = [-0.1, -0.2, -0.3, -0.4, -0.5]
    draws = Draws([gumbel_u(k) for k in (0.5, -1.0, 0.5, 0.5, -1.2)],
                  [gumbel_u(k) for k in (0.1, 0.5, -0.6, -0.3)],
                  [gumbel_u(0.5), gumbel_u(0.5)]).install(monkeypatch)
    cfg = DecodeConfig("maskgit", gen_length=5, steps=3, temperature=1.0)
    out = generate(TableModel(one_token_table(logp), P=2), PROMPT, PMASK, cfg, seeds=[0])
    assert out.commit_step.tolist() == [[1, 0, 2, 1, 2]]
    assert out.sequences.tolist() == [[3, 4, 2, 3, 4, 5, 6]]
    assert draws.counts == [[5], [4], [2]]
    assert out.nfe == 3


def test_maskgit_at_temperature_zero_ranks_by_log_prob_alone_and_draws_no_noise(monkeypatch):
    # temperature 0 -> noise scale 0 * (1 - s/T) = 0: conf = log p, no uniform drawn (the stub would return
    # u = 0, whose noise term log(-log 0) = inf would turn 0 * inf into nan).
    # log p = [-0.3, -0.5, -0.1, -0.4, -0.2] -> order 2, 4, 0, 3, 1; commits 1, 2, 2 (schedule above):
    # s=0: {2}; s=1: {4, 0}; s=2: {3, 1} -> commit_step [1, 2, 0, 2, 1]
    draws = Draws(fill=0.0).install(monkeypatch)
    cfg = DecodeConfig("maskgit", gen_length=5, steps=3, temperature=0.0)
    out = generate(TableModel(one_token_table([-0.3, -0.5, -0.1, -0.4, -0.2]), P=2), PROMPT, PMASK, cfg, seeds=[0])
    assert out.commit_step.tolist() == [[1, 2, 0, 2, 1]]
    assert out.sequences.tolist() == [[3, 4, 2, 3, 4, 5, 6]]
    assert draws.counts == []


# ------------------------------------------------------------------------------------------------------
# randomness and devices: uniforms are float64 draws of each row's own generator, and the decoders' outputs
# live on the input's device, not on torch's default device (here "meta", so a tensor made without an
# explicit device would land there)


def _run(x, seeds):
    cfg = DecodeConfig("emerge", gen_length=x.shape[1], steps=1)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    return _Run(model=None, x=x, attn=torch.ones_like(x, dtype=torch.bool), P=0, cfg=cfg, gens=gens,
                vocab=None, mask_id=MASK)


def test_uniform_is_float64_from_each_rows_generator_on_the_runs_device():
    run = _run(torch.full((3, 4), MASK), seeds=[11, 12, 13])
    # counts [2, 0, 3]: two draws of row 0's generator (seed 11), none of row 1's, three of row 2's (seed 13),
    # float64 (53-bit) draws: the same numbers as torch.rand(n, dtype=float64) from a generator with that seed
    expected = torch.cat([torch.rand(2, generator=torch.Generator().manual_seed(11), dtype=torch.float64),
                          torch.rand(3, generator=torch.Generator().manual_seed(13), dtype=torch.float64)])
    with torch.device("meta"):
        u = run.uniform([2, 0, 3])
    assert u.dtype == torch.float64 and u.device.type == "cpu"
    assert torch.equal(u, expected)


def test_emerge_and_maskgit_outputs_stay_on_the_input_device_whatever_the_default_device(monkeypatch):
    Draws(fill=0.0).install(monkeypatch)  # emerge: nothing revealed before the last step (see above)
    model = TableModel(one_token_table([-0.1, -0.2, -0.3]), P=2)  # position i -> token 2+i
    # emerge, T=2: all three revealed at the last step (s=1). maskgit, T=2, greedy: floor(3 cos(pi/4)) = 2
    # -> commit 1 (the most likely, position 0) at s=0, then positions 1 and 2 at s=1
    for sampler, steps in (("emerge", [[1, 1, 1]]), ("maskgit", [[0, 1, 1]])):
        cfg = DecodeConfig(sampler, gen_length=3, steps=2, temperature=0.0)
        with torch.device("meta"):
            out = generate(model, PROMPT, PMASK, cfg, seeds=[0])
        assert out.commit_step.device.type == "cpu" and out.sequences.device.type == "cpu"
        assert out.commit_step.tolist() == steps
        assert out.sequences.tolist() == [[3, 4, 2, 3, 4]]


def test_dream_runs_and_stays_on_the_input_device_whatever_the_default_device():
    # dream, T=2 (eps 1e-3: ts = [1, 0.5005, 0.001]), greedy, maskgit_plus: the confidence of each position is
    # the probability of its argmax token, e^-0.1 > e^-0.2 > e^-0.3; step 0 commits int(3 x 0.4995) = 1 position
    # (position 0), the last step the other two. Its schedule and commit count must not be made on the
    # default device (a meta tensor has no value to read)
    model = TableModel(one_token_table([-0.1, -0.2, -0.3]), P=2)
    cfg = DecodeConfig("dream", gen_length=3, steps=2, temperature=0.0, alg="maskgit_plus")
    with torch.device("meta"):
        out = generate(model, PROMPT, PMASK, cfg, seeds=[0])
    assert out.commit_step.device.type == "cpu" and out.sequences.device.type == "cpu"
    assert out.commit_step.tolist() == [[0, 1, 1]]
    assert out.sequences.tolist() == [[3, 4, 2, 3, 4]]


# ------------------------------------------------------------------------------------------------------
# dream (Dream's diffusion_generate): ts = linspace(1, eps, T+1) in float32; at step i (t = ts[i], s = ts[i+1])
# with n positions still masked, `origin` reveals each with probability 1 - s/t, the other algs commit the
# k = int(n (1 - s/t)) most confident (float32 arithmetic, as Dream's); the last step commits all n.
# Schedules used below:
#   T=3, eps=.25: ts = [1, .75, .5, .25] (exact in float32). i=0: 1 - s/t = .25. i=1: .5/.75 rounds to
#     0.66666669 in float32, so 1 - s/t = 0.33333331: n=4 -> int(1.3333333) = 1, n=3 -> int(0.99999994) = 0
#     (float64 would give 1). i=2 is the last step.
#   T=2, eps=.5: ts = [1, .75, .5]. i=0: 1 - s/t = .25; i=1 is the last step.


def dist_table(*rows):
    """Position i: logit log p for each {id: p} of rows[i], -inf (probability 0) for every other id, so the softmax
    over the whole vocabulary gives back these probabilities."""
    table = torch.full((len(rows), V), NEG)
    for i, row in enumerate(rows):
        for t, p in row.items():
            table[i, t] = math.log(p)
    return table


def dream(alg, L, T, eps, **kw):
    return DecodeConfig("dream", gen_length=L, steps=T, eps=eps, alg=alg, **kw)


def test_dream_maskgit_plus_commits_the_most_probable_sampled_tokens_on_the_schedule():
    # L=5, T=3, eps=.25: k = int(5 * .25) = 1 at i=0, int(4 * 0.33333331) = 1 at i=1, the 3 left at i=2.
    # Greedy token (the mask id is never sampled) and its probability (mask id included in the softmax):
    #   pos 0: {2: .3, mask: .7} -> 2, .3     pos 1: {3: .6, 4: .4} -> 3, .6
    #   pos 2: {4: .2, 5: .1, mask: .7} -> 4, .2     pos 3: {5: .9, mask: .1} -> 5, .9
    #   pos 4: {6: .5, 0: .25, 1: .25} -> 6, .5
    # i=0: pos 3 (.9); i=1: pos 1 (.6 > .5 > .3 > .2); i=2: 0, 2, 4
    table = dist_table({2: .3, MASK: .7}, {3: .6, 4: .4}, {4: .2, 5: .1, MASK: .7}, {5: .9, MASK: .1},
                       {6: .5, 0: .25, 1: .25})
    out = generate(TableModel(table, P=2), PROMPT, PMASK, dream("maskgit_plus", 5, 3, 0.25), seeds=[0])
    assert out.commit_step.tolist() == [[2, 1, 2, 0, 2]]
    assert out.sequences.tolist() == [[3, 4, 2, 3, 4, 5, 6]]
    assert out.nfe == 3


def test_dream_commit_count_is_float32_and_a_step_may_commit_nothing():
    # L=4, T=3, eps=.25: i=0: k = int(4 * .25) = 1; i=1: n=3, k = int(3 * 0.33333331) = int(0.99999994) = 0, nothing
    # is committed (but the model is still called); i=2: the last 3.
    # one_token_table: position i -> token 2+i with probability p_i = [.6, .9, .7, .8]: i=0 commits pos 1
    table = one_token_table([math.log(p) for p in (.6, .9, .7, .8)])
    out = generate(TableModel(table, P=2), PROMPT, PMASK, dream("maskgit_plus", 4, 3, 0.25), seeds=[0])
    assert out.commit_step.tolist() == [[2, 0, 2, 2]]
    assert out.sequences.tolist() == [[3, 4, 2, 3, 4, 5]]
    assert out.nfe == 3


def test_dream_entropy_ranks_by_sum_p_log_p():
    # conf = sum p log(p + 1e-10) (0 for the ids of probability 0); L=5, T=3, eps=.25 -> commit 1, 1, 3
    #   pos 0: {0: .4, 1: .2, 2: .2, 3: .2}: .4 ln .4 + .6 ln .2 = -.3665 - .9657 = -1.3322; token 0
    #   pos 1: {3: .8, 4/5/6/0: .05}: .8 ln .8 + .2 ln .05 = -.1785 - .5991 = -.7777; token 3
    #   pos 2: {4: .6, 5: .4}: .6 ln .6 + .4 ln .4 = -.3065 - .3665 = -.6730; token 4
    #   pos 3: {5: .5, 6: .3, 1: .2}: -.3466 - .3612 - .3219 = -1.0297; token 5
    #   pos 4: {6: .95, mask: .05}: .95 ln .95 + .05 ln .05 = -.0487 - .1498 = -.1985; token 6 (mask id banned)
    # i=0: pos 4; i=1: pos 2 (-.6730 > -.7777); i=2: 0, 1, 3.
    # (sum p log(p + 1) would rank pos 1 (.4800) above pos 2 (.4166); the probability of the sampled token would
    # too (.8 > .6), and so would the top-2 margin (.75 > .2))
    table = dist_table({0: .4, 1: .2, 2: .2, 3: .2}, {3: .8, 4: .05, 5: .05, 6: .05, 0: .05}, {4: .6, 5: .4},
                       {5: .5, 6: .3, 1: .2}, {6: .95, MASK: .05})
    out = generate(TableModel(table, P=2), PROMPT, PMASK, dream("entropy", 5, 3, 0.25), seeds=[0])
    assert out.commit_step.tolist() == [[2, 2, 1, 2, 0]]
    assert out.sequences.tolist() == [[3, 4, 0, 3, 4, 5, 6]]


def test_dream_topk_margin_ranks_by_top1_minus_top2_probability():
    # conf = top-1 - top-2 probability over the whole vocabulary (mask id included); L=5, T=3, eps=.25 -> 1, 1, 3
    #   pos 0: {2: .5, 3: .45, 4: .05}: .5 - .45 = .05; token 2
    #   pos 1: {3: .65, 0/1/2/4/5: .07}: .65 - .07 = .58; token 3
    #   pos 2: {4: .7, 5: .3}: .4; token 4
    #   pos 3: {5: .45, mask: .55}: .55 - .45 = .1; token 5 (the mask id is never sampled, but its probability counts)
    #   pos 4: {6: .8, 0: .1, 1: .1}: .7; token 6
    # i=0: pos 4 (.7); i=1: pos 1 (.58 > .4); i=2: 0, 2, 3
    # (the probability of the sampled token would take pos 2 (.7 > .65) at i=1, top-1 + top-2 pos 2 or 3 (1.0) at i=0)
    table = dist_table({2: .5, 3: .45, 4: .05}, {3: .65, 0: .07, 1: .07, 2: .07, 4: .07, 5: .07}, {4: .7, 5: .3},
                       {5: .45, MASK: .55}, {6: .8, 0: .1, 1: .1})
    out = generate(TableModel(table, P=2), PROMPT, PMASK, dream("topk_margin", 5, 3, 0.25), seeds=[0])
    assert out.commit_step.tolist() == [[2, 1, 2, 2, 0]]
    assert out.sequences.tolist() == [[3, 4, 2, 3, 4, 5, 6]]


def test_dream_topk_margin_over_a_two_id_codebook_range():
    # token_range=(2, 4): ids 2 and 3 only, probabilities renormalised over them (the mask id 7 and id 0, both with
    # large logits, are outside the range and ignored); margin = |p2 - p3|. L=5, T=3, eps=.25 -> 1, 1, 3
    #   pos 0: (.6, .4) -> .2, token 2   pos 1: (.1, .9) -> .8, token 3   pos 2: (.3, .7) -> .4, token 3
    #   pos 3: (.55, .45) -> .1, token 2   pos 4: (.75, .25) -> .5, token 2
    # i=0: pos 1; i=1: pos 4; i=2: 0, 2, 3
    pairs = [(.6, .4), (.1, .9), (.3, .7), (.55, .45), (.75, .25)]
    table = dist_table(*({2: a, 3: b, 0: .9, MASK: 5.0} for a, b in pairs))
    cfg = dream("topk_margin", 5, 3, 0.25)
    out = generate(TableModel(table, P=2), PROMPT, PMASK, cfg, seeds=[0], token_range=(2, 4))
    assert out.commit_step.tolist() == [[2, 0, 2, 2, 1]]
    assert out.sequences.tolist() == [[3, 4, 2, 3, 3, 2, 2]]


def test_dream_ties_are_broken_as_topk_over_the_whole_row_with_the_prompt_at_minus_inf():
    # every position has the same confidence; Dream ranks the (1, P+L) row [-inf, -inf, c, c, c, c, c] with topk,
    # committed positions set to -inf too. L=5, T=3, eps=.25 -> 1, 1, 3; the expected picks are torch.topk's on
    # that row (Dream's rule, independent of the decoder)
    row = torch.tensor([[NEG, NEG, .5, .5, .5, .5, .5]])
    first = int(row.topk(1).indices[0, 0])
    row[0, first] = NEG
    second = int(row.topk(1).indices[0, 0])
    expected = [2] * 5
    expected[first - 2], expected[second - 2] = 0, 1
    table = one_token_table([math.log(.5)] * 5)
    out = generate(TableModel(table, P=2), PROMPT, PMASK, dream("maskgit_plus", 5, 3, 0.25), seeds=[0])
    assert out.commit_step.tolist() == [expected]


def test_dream_origin_reveals_where_the_uniform_is_below_one_minus_s_over_t(monkeypatch):
    # L=4, T=3, eps=.25: reveal iff u < 1 - s/t: .25 at i=0, 0.33333331 at i=1; i=2 reveals the rest, no draw
    # i=0: u = [.1, .25, .3, .2499]: 0 and 3 reveal; 1 (u == .25) and 2 stay
    # i=1: masked {1, 2}, u = [.4, .3]: 2 reveals; i=2: 1. Greedy tokens: position i -> 2+i
    draws = Draws([.1, .25, .3, .2499], [.4, .3]).install(monkeypatch)
    out = generate(TableModel(argmax_table(4), P=2), PROMPT, PMASK, dream("origin", 4, 3, 0.25), seeds=[0])
    assert out.commit_step.tolist() == [[0, 2, 1, 0]]
    assert out.sequences.tolist() == [[3, 4, 2, 3, 4, 5]]
    assert draws.counts == [[4], [2]]
    assert out.nfe == 3


def test_dream_origin_last_step_fills_every_position(monkeypatch):
    # u = .99 >= 1 - s/t at every step before the last: nothing is revealed until i = T-1 = 1, which fills all
    # (mask id banned: argmax_table + a larger mask logit still gives token 2+i)
    Draws(fill=.99).install(monkeypatch)
    table = argmax_table(3)
    table[:, MASK] = 5.0
    out = generate(TableModel(table, P=2), PROMPT, PMASK, dream("origin", 3, 2, 0.5), seeds=[0])
    assert out.commit_step.tolist() == [[1, 1, 1]]
    assert out.sequences.tolist() == [[3, 4, 2, 3, 4]]


class Picks:
    """Stands in for torch.multinomial: call c returns the indices picks[c] and records the weights, the count and the
    seed of the generator it was given."""

    def __init__(self, *picks):
        self.picks, self.calls = list(picks), []

    def install(self, monkeypatch):
        monkeypatch.setattr(torch, "multinomial", self)
        return self

    def __call__(self, weights, k, generator=None):
        self.calls.append((weights.tolist(), k, None if generator is None else generator.initial_seed()))
        return torch.tensor(self.picks.pop(0))


def test_dream_alg_temp_samples_positions_by_softmax_of_conf_over_alg_temp_from_the_rows_generator(monkeypatch):
    # maskgit_plus, conf p = [.2, .4, .6, .8] (position i -> token 2+i), alg_temp .5: weights over the (P+L) row =
    # softmax(conf / .5) = softmax(2p) with the prompt and committed positions at -inf (weight 0).
    # L=4, T=3, eps=.25: k = 1, 0 (no draw), 3. Two rows, seeds 5 and 9, each drawing from its own generator.
    # i=0, both rows: e^.4, e^.8, e^1.2, e^1.6 = 1.4918, 2.2255, 3.3201, 4.9530 (sum 11.9905)
    #   -> [0, 0, .12442, .18561, .27690, .41308]; the stub picks index 2 (pos 0) for row 0, 4 (pos 2) for row 1
    # i=2: row 0 (pos 1, 2, 3 left): 2.2255, 3.3201, 4.9530 (sum 10.4986) -> [0, 0, 0, .21198, .31624, .47178]
    #      row 1 (pos 0, 1, 3 left): 1.4918, 2.2255, 4.9530 (sum 8.6703) -> [0, 0, .17206, .25668, 0, .57126]
    picks = Picks([2], [4], [3, 4, 5], [5, 2, 3]).install(monkeypatch)
    table = one_token_table([math.log(p) for p in (.2, .4, .6, .8)])
    cfg = dream("maskgit_plus", 4, 3, 0.25, alg_temp=0.5)
    out = generate(TableModel(table, P=2), PROMPT.expand(2, 2), PMASK.expand(2, 2), cfg, seeds=[5, 9])
    assert out.commit_step.tolist() == [[0, 2, 2, 2], [2, 2, 0, 2]]
    assert out.sequences.tolist() == [[3, 4, 2, 3, 4, 5]] * 2
    assert [(k, seed) for _, k, seed in picks.calls] == [(1, 5), (1, 9), (3, 5), (3, 9)]
    expected = [[0, 0, .12442, .18561, .27690, .41308]] * 2 + [[0, 0, 0, .21198, .31624, .47178],
                                                               [0, 0, .17206, .25668, 0, .57126]]
    for (weights, _, _), exp in zip(picks.calls, expected):
        assert weights == pytest.approx(exp, abs=1e-5)


# ------------------------------------------------------------------------------------------------------
# _Run.confidence: the sampled id at each selected position and Dream's score for it, under softmax(logits / T)


def _conf_run(cfg, seeds=(0,), vocab=None):
    B = len(seeds)
    return _Run(model=None, x=torch.full((B, 2), MASK), attn=torch.ones(B, 2, dtype=torch.bool), P=0, cfg=cfg,
                gens=[torch.Generator().manual_seed(s) for s in seeds], vocab=vocab or _Vocab(0, None, MASK),
                mask_id=MASK)


# two positions: A = logits {2: 0, mask: ln 3} (probabilities 1/4, 3/4), B = {3: ln .5, 4: ln .3, 5: ln .2}
CONF_RAW = dist_table({2: 1.0, MASK: 3.0}, {3: .5, 4: .3, 5: .2})[None]  # (1, 2, V)
ALL_SEL = torch.ones(1, 2, dtype=torch.bool)


@pytest.mark.parametrize("kind, expected", [
    ("maskgit_plus", [.25, .5]),  # A: id 2 (mask id banned) has 1/4; B: id 3 has .5
    ("topk_margin", [.5, .2]),  # A: .75 - .25 (the mask id's probability counts); B: .5 - .3
    # A: .25 ln .25 + .75 ln .75 = -.34657 - .21576; B: .5 ln .5 + .3 ln .3 + .2 ln .2 = -.34657 - .36119 - .32189
    # (the ids of probability 0 add 0 ln 1e-10 = 0)
    ("entropy", [-.56234, -1.02965]),
])
def test_confidence_scores_each_kind_under_the_whole_vocabulary(kind, expected):
    cfg = dream(kind, 2, 1, 0.5)
    run = _conf_run(cfg)
    state = run.gens[0].get_state()
    ids, conf = run.confidence(CONF_RAW, ALL_SEL, kind)
    assert ids.tolist() == [2, 3]
    assert conf.dtype == torch.float32
    assert conf.tolist() == pytest.approx(expected, abs=1e-5)
    assert torch.equal(run.gens[0].get_state(), state)  # greedy: no noise drawn


@pytest.mark.parametrize("kind, expected", [
    # temperature .5: logits doubled, probabilities p^2 / sum p^2. A: 1/(1+9) = .1 and .9; B: .25, .09, .04 / .38 =
    # .65789, .23684, .10526
    ("topk_margin", [.8, .42105]),
    # A: .1 ln .1 + .9 ln .9 = -.23026 - .09482; B: .65789 ln .65789 + .23684 ln .23684 + .10526 ln .10526
    ("entropy", [-.32508, -.85358]),
])
def test_confidence_divides_the_logits_by_the_temperature(kind, expected):
    _, conf = _conf_run(dream(kind, 2, 1, 0.5, temperature=0.5)).confidence(CONF_RAW, ALL_SEL, kind)
    assert conf.tolist() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("temperature, expected", [
    (0.5, .1),  # logits [0, 2 ln 3]: 1 / (1 + 9)
    (2.0, 1 / (1 + math.sqrt(3))),  # logits [0, ln 3 / 2]: 1 / (1 + sqrt 3) = .36603
    (1.0, .25),
])
def test_confidence_maskgit_plus_is_the_sampled_tokens_probability_at_that_temperature(temperature, expected):
    # position A only: one id besides the (banned) mask id, so the sampled id is 2 whatever the noise
    cfg = dream("maskgit_plus", 2, 1, 0.5, temperature=temperature)
    sel = torch.tensor([[True, False]])
    ids, conf = _conf_run(cfg).confidence(CONF_RAW, sel, "maskgit_plus")
    assert ids.tolist() == [2]
    assert conf.tolist() == pytest.approx([expected], abs=1e-6)


class Noise:
    """Stands in for torch.rand in `_gumbel_argmax`: call c returns gumbel_u(k) for the noise terms ks[c] ((n, V'),
    so the Gumbel noise -log(-log u) is -k) and records the shape, dtype and generator seed of each call."""

    def __init__(self, *ks):
        self.ks, self.calls = list(ks), []

    def install(self, monkeypatch):
        monkeypatch.setattr(torch, "rand", self)
        return self

    def __call__(self, *shape, generator=None, dtype=None, device=None):
        shape = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else shape
        self.calls.append((shape, dtype, None if generator is None else generator.initial_seed()))
        return torch.tensor([[gumbel_u(k) for k in row] for row in self.ks.pop(0)], dtype=torch.float64)


def test_confidence_samples_with_gumbel_noise_on_the_temperature_scaled_logits(monkeypatch):
    # temperature .5, two positions with logits {0: 0, 1: .5} (other ids -inf) -> scaled [0, 1]; the id is the
    # argmax of scaled + Gumbel noise = scaled - k (noise drawn once, at temperature 1):
    #   pos 0: k = [0, 1.5] -> [0, -.5] -> id 0 (no noise: 1; noise on logits / (2 x .5) = [0, .5]: -> 0 too)
    #   pos 1: k = [0, .7] -> [0, .3] -> id 1 (scaled twice, [0, .5] - k = [0, -.2]: 0; unscaled [0, .5]: 0)
    # the rest of the row is -inf whatever the noise (k = 0 there)
    ks = [[0.0, 1.5] + [0.0] * (V - 2), [0.0, 0.7] + [0.0] * (V - 2)]
    noise = Noise(ks).install(monkeypatch)
    raw = torch.full((1, 2, V), NEG)
    raw[0, :, 0], raw[0, :, 1] = 0.0, 0.5
    ids, conf = _conf_run(dream("topk_margin", 2, 1, 0.5, temperature=0.5), seeds=(7,)).confidence(
        raw, ALL_SEL, "topk_margin")
    assert ids.tolist() == [0, 1]
    assert noise.calls == [((2, V), torch.float64, 7)]
    # probabilities of scaled [0, 1]: 1/(1+e) = .26894, e/(1+e) = .73106 -> margin .46212
    assert conf.tolist() == pytest.approx([.46212, .46212], abs=1e-5)


def test_confidence_over_a_range_returns_absolute_ids_and_bans_the_mask_id_inside_it():
    # vocab [3, 8) with the mask id 7 inside (relative 4): position A' = {3: ln .2, 6: ln .3, mask: ln .5}:
    # sampled id 6 (mask banned), probability .3 under the range's softmax (mask id included);
    # ids 0-2 are outside the range (logit 5, ignored)
    raw = dist_table({3: .2, 6: .3, MASK: .5})[None].clone()  # (1, 1, V)
    raw[0, 0, :3] = 5.0
    run = _conf_run(dream("maskgit_plus", 2, 1, 0.5), vocab=_Vocab(3, 8, 4))
    ids, conf = run.confidence(raw, torch.tensor([[True]]), "maskgit_plus")
    assert ids.tolist() == [6]
    assert conf.tolist() == pytest.approx([.3], abs=1e-6)


def test_dream_has_no_classifier_free_guidance():
    cfg = dream("entropy", 2, 1, 0.5, cfg_scale=0.5)
    with pytest.raises(ValueError) as e:
        generate(TableModel(argmax_table(2), P=2), PROMPT, PMASK, cfg, seeds=[0])
    assert str(e.value) == "the dream sampler has no classifier-free guidance; use cfg_scale=0"


# ------------------------------------------------------------------------------------------------------
# _gumbel_argmax, _Run.sample, _Vocab.build


def test_gumbel_argmax_adds_the_noise_in_float64():
    # logits [1, 1] (float32), noise terms k = [1e-9, 0] (Gumbel noise -k): float64 scores [1 - 1e-9, 1] -> id 1;
    # in float32 1 - 1e-9 rounds to 1, a tie, and argmax would return the first id, 0
    noise = Noise([[1e-9, 0.0]])
    with pytest.MonkeyPatch.context() as mp:
        noise.install(mp)
        ids = _gumbel_argmax(torch.ones(1, 2), 1.0, [1], [torch.Generator().manual_seed(3)])
    assert ids.tolist() == [1]
    assert noise.calls == [((1, 2), torch.float64, 3)]


def test_gumbel_argmax_leaves_float64_logits_untouched():
    logits = torch.tensor([[0.5, 1.5], [2.0, -1.0]], dtype=torch.float64)
    before = logits.clone()
    _gumbel_argmax(logits, 2.0, [2], [torch.Generator().manual_seed(0)])
    assert torch.equal(logits, before)


def test_gumbel_argmax_output_and_noise_live_on_the_logits_device_whatever_the_default_device():
    # logits [0, .001] at temperature 2: the noise decides each row (nearly a coin flip); noise made on the default
    # device ("meta") would be dropped silently by the in-place update of the CPU scores, and every row would get
    # id 1. Runs of 12, 0 and 8 rows: the ids must be those of the same call without a default device.
    logits = torch.tensor([[0.0, 0.001]]).expand(20, 2)
    cpu = _gumbel_argmax(logits, 2.0, [12, 0, 8], [torch.Generator().manual_seed(s) for s in (0, 1, 2)])
    with torch.device("meta"):
        ids = _gumbel_argmax(logits, 2.0, [12, 0, 8], [torch.Generator().manual_seed(s) for s in (0, 1, 2)])
    assert ids.device.type == "cpu" and ids.dtype == torch.long
    assert torch.equal(ids, cpu)
    assert 0 < int(ids.sum()) < 20


def _sample_run(vocab, **cfg):
    return _Run(model=None, x=torch.full((1, 1), MASK), attn=torch.ones(1, 1, dtype=torch.bool), P=0,
                cfg=DecodeConfig(gen_length=1, block_length=1, steps=1, **cfg), gens=[torch.Generator()],
                vocab=vocab, mask_id=MASK)


def test_sample_normalises_over_the_whole_vocabulary_but_over_the_range_without_the_mask_id():
    # one position, probabilities {3: .2, 6: .3, mask: .5}, ids 0-2 logit 5 (log-odds, not normalised)
    raw = dist_table({3: .2, 6: .3, MASK: .5})[None].clone()  # (1, 1, V)
    raw[0, 0, :3] = 5.0
    sel = torch.ones(1, 1, dtype=torch.bool)
    # no range: greedy id 0 (logit 5); log-probability 5 - log(3 e^5 + 1) = -log(3 + e^-5) = -log 3.00674 = -1.10086
    ids, logp = _sample_run(_Vocab(0, None, MASK)).sample(raw, sel)
    assert ids.tolist() == [0]
    assert logp.tolist() == pytest.approx([-1.10086], abs=1e-5)
    # range [3, 8) with the mask id inside (relative 4): greedy id 6 (mask banned); normalised over the range with the
    # mask id banned: log(.3 / (.2 + .3)) = log .6 = -.51083 (with the mask id: log .3 = -1.20397)
    ids, logp = _sample_run(_Vocab(3, 8, 4)).sample(raw, sel)
    assert ids.tolist() == [6]
    assert logp.tolist() == pytest.approx([-.51083], abs=1e-5)
    # without log-probabilities: None
    ids, logp = _sample_run(_Vocab(3, 8, 4)).sample(raw, sel, with_logp=False)
    assert ids.tolist() == [6] and logp is None


@pytest.mark.parametrize("token_range, expected", [
    (None, _Vocab(0, None, MASK)),
    ((0, 5), _Vocab(0, 5, None)),  # lo = 0 is allowed; the mask id 7 is outside
    ((7, 9), _Vocab(7, 9, 0)),  # mask id == lo: banned, relative id 0
    ((2, 7), _Vocab(2, 7, None)),  # mask id == hi: outside [lo, hi)
    ((2.0, 8.0), _Vocab(2, 8, 5)),  # ints
])
def test_vocab_build(token_range, expected):
    assert _Vocab.build(token_range, MASK) == expected


@pytest.mark.parametrize("token_range", [(5, 5), (-1, 4), (6, 2)])
def test_vocab_build_rejects_an_empty_or_negative_range(token_range):
    with pytest.raises(ValueError) as e:
        _Vocab.build(token_range, MASK)
    assert str(e.value) == f"token_range={token_range} must be (lo, hi) with 0 <= lo < hi"


# ------------------------------------------------------------------------------------------------------
# DecodeConfig: every rejected setting is a one-line ValueError saying what would work


@pytest.mark.parametrize("kwargs, message", [
    (dict(sampler="ddim"), "unknown sampler 'ddim'; choose one of low_confidence, emerge, maskgit, dream"),
    (dict(remasking="topk"), "unknown remasking 'topk'; choose one of low_confidence, random"),
    (dict(gen_length=0), "gen_length=0 must be a positive integer"),
    (dict(block_length=0), "block_length=0 must be a positive integer"),
    (dict(steps=-2), "steps=-2 must be a positive integer"),
    (dict(temperature=-0.5), "temperature=-0.5 must be >= 0 (0 = greedy argmax)"),
    (dict(cfg_scale=-1.0), "cfg_scale=-1.0 must be >= 0 (0 = no guidance)"),
    (dict(sampler="dream", alg="greedy"),
     "unknown alg 'greedy' for the dream sampler; choose one of entropy, maskgit_plus, topk_margin, origin"),
    (dict(sampler="dream", alg_temp=-0.1), "alg_temp=-0.1 must be a finite number >= 0 (0 = most confident first)"),
    (dict(sampler="dream", alg_temp=math.inf), "alg_temp=inf must be a finite number >= 0 (0 = most confident first)"),
    (dict(sampler="dream", eps=0.0), "eps=0.0 must lie in (0, 1) (Dream uses 1e-3)"),
    (dict(sampler="dream", eps=1.0), "eps=1.0 must lie in (0, 1) (Dream uses 1e-3)"),
    (dict(sampler="dream", eps=1.5), "eps=1.5 must lie in (0, 1) (Dream uses 1e-3)"),
    (dict(sampler="maskgit", gen_length=8, steps=9),
     "maskgit reveals at least one token per step, so steps=9 must be <= gen_length=8"),
    # divisors of 6: 1, 2, 3, 6, all among the 6 nearest to 4
    (dict(gen_length=6, block_length=4, steps=2),
     "gen_length=6 is not a multiple of block_length=4; valid block lengths nearby: [1, 2, 3, 6]"),
    # divisors of 100 nearest 32: 25 (7), 20 (12), 50 (18), 10 (22), 5 (27), 4 (28); not 2 (30)
    (dict(gen_length=100, block_length=32),
     "gen_length=100 is not a multiple of block_length=32; valid block lengths nearby: [4, 5, 10, 20, 25, 50]"),
    (dict(gen_length=256, block_length=32, steps=257),
     "steps=257 > gen_length=256 would leave steps that commit nothing; use steps <= 256 (a multiple of num_blocks=8)"),
    # 8 / 2 = 4 blocks: multiples of 4 up to 8 are 4 and 8 (gen_length itself included)
    (dict(gen_length=8, block_length=2, steps=6),
     "steps=6 is not a multiple of num_blocks=4 (gen_length=8 / block_length=2); valid steps nearby: [4, 8]"),
    # 256 / 32 = 8 blocks: multiples of 8 nearest 100: 96 (4), 104 (4), 88 (12), 112 (12); not 80 or 120 (20)
    (dict(gen_length=256, block_length=32, steps=100),
     "steps=100 is not a multiple of num_blocks=8 (gen_length=256 / block_length=32); valid steps nearby: "
     "[88, 96, 104, 112]"),
    (dict(cache="full"), "unknown cache 'full'; choose one of none, prefix, dual"),
    (dict(threshold=0.0), "threshold=0.0 must lie in (0, 1] (a probability; Fast-dLLM uses 0.9)"),
    (dict(threshold=1.01), "threshold=1.01 must lie in (0, 1] (a probability; Fast-dLLM uses 0.9)"),
    (dict(factor=0.0), "factor=0.0 must be a finite number > 0 (Fast-dLLM uses 1)"),
    (dict(factor=math.inf), "factor=inf must be a finite number > 0 (Fast-dLLM uses 1)"),
    (dict(threshold=0.9, factor=1.0), "give threshold or factor, not both"),
    (dict(sampler="emerge", cache="dual"),
     "threshold, factor and cache apply to the low_confidence sampler only, not 'emerge'"),
    (dict(threshold=0.9, remasking="random"),
     "threshold and factor rank positions by confidence; use remasking=low_confidence"),
    (dict(factor=1.0, remasking="random"),
     "threshold and factor rank positions by confidence; use remasking=low_confidence"),
])
def test_config_errors_word_for_word(kwargs, message):
    with pytest.raises(ValueError) as e:
        DecodeConfig(**{"gen_length": 16, "block_length": 8, "steps": 8, **kwargs})
    assert str(e.value) == message


@pytest.mark.parametrize("kwargs", [
    dict(gen_length=1, block_length=1, steps=1),  # the smallest positive values
    dict(gen_length=8, block_length=4, steps=8),  # steps == gen_length
    dict(sampler="maskgit", gen_length=4, steps=4),  # one reveal per step
    dict(sampler="emerge", gen_length=2, steps=5),  # emerge may have more steps than tokens
    dict(sampler="dream", gen_length=2, steps=5, alg_temp=0.0, eps=0.999),  # and so may dream
    dict(sampler="dream", alg="origin", alg_temp=0.5, eps=1e-9),
    dict(threshold=1.0), dict(threshold=1e-6), dict(factor=0.5),
    dict(cache="prefix", remasking="random"),  # a cache alone may rank at random
    dict(temperature=0.0, cfg_scale=0.0),
])
def test_config_boundaries_that_are_allowed(kwargs):
    DecodeConfig(**{"gen_length": 16, "block_length": 8, "steps": 8, **kwargs})


def test_from_task_overrides_the_tasks_defaults_with_every_value_that_is_not_none():
    task = SimpleNamespace(gen_defaults=dict(sampler="dream", gen_length=4, steps=2, temperature=0.5, alg="entropy"))
    cfg = DecodeConfig.from_task(task, steps=3, temperature=None, alg="origin", eps=None)
    assert cfg == DecodeConfig("dream", gen_length=4, steps=3, temperature=0.5, alg="origin")
    assert task.gen_defaults["steps"] == 2  # the task's dict is not changed
    # defaults without a temperature or cfg_scale: nothing to check
    assert DecodeConfig.from_task(SimpleNamespace(gen_defaults={})) == DecodeConfig()


@pytest.mark.parametrize("defaults, overrides, message", [
    ({}, dict(temperature=math.inf), "--temperature inf must be a finite number"),
    ({}, dict(cfg_scale=math.nan), "--cfg-scale nan must be a finite number"),
    (dict(temperature=-math.inf), {}, "--temperature -inf must be a finite number"),
])
def test_from_task_rejects_a_non_finite_temperature_or_cfg_scale(defaults, overrides, message):
    with pytest.raises(ValueError) as e:
        DecodeConfig.from_task(SimpleNamespace(gen_defaults=defaults), **overrides)
    assert str(e.value) == message


# ------------------------------------------------------------------------------------------------------
# generate: arguments and outputs


class Recording(TableModel):
    """A TableModel that keeps each call's input ids and attention mask."""

    def __init__(self, table, P):
        super().__init__(table, P)
        self.calls = []

    def logits(self, ids, attention_mask=None):
        self.calls.append((ids.clone(), attention_mask.clone()))
        return super().logits(ids, attention_mask)


def test_generate_extends_the_prompt_with_mask_ids_and_the_attention_mask_with_true():
    # int32 prompt, int attention mask with a pad: the model sees long ids [prompt, mask x L] and a bool mask
    # [0 -> False, 1 -> True, True x L]; the output keeps the prompt and its length
    model = Recording(argmax_table(2), P=2)
    cfg = DecodeConfig(gen_length=2, block_length=2, steps=1)
    out = generate(model, torch.tensor([[0, 4]], dtype=torch.int32), torch.tensor([[0, 1]]), cfg, seeds=[0])
    (ids, attn), = model.calls
    assert ids.dtype == torch.long and ids.tolist() == [[0, 4, MASK, MASK]]
    assert attn.dtype == torch.bool and attn.tolist() == [[False, True, True, True]]
    assert out.sequences.dtype == torch.long and out.sequences.tolist() == [[0, 4, 2, 3]]
    assert out.prompt_length == 2 and out.completion_ids.tolist() == [[2, 3]]
    assert out.commit_step.tolist() == [[0, 0]] and out.nfe == 1
    # no attention mask: every prompt position attended
    model = Recording(argmax_table(2), P=2)
    generate(model, PROMPT.expand(2, 2), None, cfg)
    assert model.calls[0][1].dtype == torch.bool and model.calls[0][1].tolist() == [[True] * 4] * 2


@pytest.mark.parametrize("seeds, expected", [(None, [0, 1]), (torch.tensor([7, 8]), [7, 8]), ([3.0, 4.0], [3, 4])])
def test_generate_seeds_each_rows_generator_default_the_row_index(monkeypatch, seeds, expected):
    # dream with alg_temp > 0 and one step draws the k = 2 positions of each row from that row's generator
    # (the stub picks both completion positions, indices 2 and 3 of the (P+L) row)
    picks = Picks([2, 3], [3, 2]).install(monkeypatch)
    cfg = dream("maskgit_plus", 2, 1, 0.5, alg_temp=1.0)
    out = generate(TableModel(argmax_table(2), P=2), PROMPT.expand(2, 2), PMASK.expand(2, 2), cfg, seeds=seeds)
    assert [seed for _, _, seed in picks.calls] == expected
    assert out.sequences.tolist() == [[3, 4, 2, 3]] * 2


def test_generate_wants_one_seed_per_row():
    with pytest.raises(ValueError) as e:
        generate(TableModel(argmax_table(2), P=2), PROMPT, PMASK, DecodeConfig(gen_length=2, block_length=2, steps=1),
                 seeds=[1, 2])
    assert str(e.value) == "got 2 seeds for a batch of 1 prompts; pass one seed per row"


def test_generate_refuses_a_cache_for_a_model_without_a_native_forward_before_any_call():
    from harness.kv_cache import CacheUnsupported

    model = Recording(argmax_table(4), P=2)
    cfg = DecodeConfig(gen_length=4, block_length=2, steps=2, cache="prefix")
    with pytest.raises(CacheUnsupported) as e:
        generate(model, PROMPT, PMASK, cfg, seeds=[0])
    assert str(e.value) == ("cache=prefix is supported only for the embedded tiny model (RoFormerForMaskedLM), "
                            "not Recording; use cache=none")
    assert model.calls == []


# ------------------------------------------------------------------------------------------------------
# low_confidence with the fast options (threshold / factor rule, KV cache): exact commits on table models.
# Confidence = probability of the sampled token under the softmax of the whole vocabulary (mask id included);
# threshold t: commit every masked block position with probability >= t, and at least the most confident;
# factor f: the n most confident, n the largest with (n+1)(1 - c_(n)) <= f (at least 1).


class PromptTables:
    """A model whose logits at completion position j are tables[first prompt id][j] ((L, V) tables); a row whose
    prompt is all mask ids (CFG's unconditional input) gets `uncond`. `fwd` stands in for harness.kv_cache's cached
    forward (the same call contract): a full forward stores each row's input ids as its "keys", and a window forward
    reads the row's prompt back from the stored keys it is given, so it returns a row's logits only when it gets that
    row's cache. Every call is kept as (rows, width, start, full forward)."""

    def __init__(self, tables, uncond=None, P=2):
        self.tables, self.uncond, self.P, self.mask_id, self.calls = tables, uncond, P, MASK, []

    def _window(self, prompt, start, W):  # prompt (B, P) -> (B, W, V): logits of sequence positions [start, start + W)
        L = next(iter(self.tables.values())).shape[0]
        out = torch.zeros(prompt.shape[0], self.P + L, V, device="cpu")
        for b, p in enumerate(prompt.tolist()):
            out[b, self.P:] = self.uncond if p == [MASK] * self.P else self.tables[p[0]]
        return out[:, start:start + W]

    def logits(self, ids, attention_mask=None):  # the plain forward: (B, P+L) -> (B, P+L, V)
        self.calls.append((ids.shape[0], ids.shape[1], 0, True))
        return self._window(ids[:, :self.P], 0, ids.shape[1])

    def fwd(self, ids, keep, start=0, kv=None, rows=None):
        B, W = ids.shape
        self.calls.append((B, W, start, kv is None))
        if kv is None:
            assert start == 0 and W == keep.shape[1], "a forward without stored keys/values covers the whole sequence"
            keys = ids
        else:
            (keys, _), = kv
            assert keys.shape == (B, keep.shape[1]), "one stored row per input row"
        logits = self._window(keys[:, :self.P], start, W)
        return (logits if rows is None else logits[:, rows]), [(ids, ids)]


def two_token_tables(a):
    """Position j: logit a_j for token 2+j, 0 for token 0, -inf elsewhere (the mask id too): p(2+j) = sigmoid(a_j).
    The unconditional table: 2 for token 2+j, 0 for every other id, so with CFG weight w = .5 the guided logits
    1.5 cond - .5 uncond are 1.5 a_j - 1 for token 2+j, 0 for token 0, -inf elsewhere."""
    cond, uncond = torch.full((len(a), V), NEG), torch.zeros(len(a), V)
    for j, aj in enumerate(a):
        cond[j, 2 + j], cond[j, 0] = aj, 0.0
        uncond[j, 2 + j] = 2.0
    return cond, uncond


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize("cfg_scale", [0.0, 0.5])
def test_threshold_runs_only_the_rows_left_in_the_block_with_or_without_cache_and_cfg(cache, cfg_scale, monkeypatch):
    # Two rows (prompts [3, 4] and [5, 6]), L = 4 in one block, greedy, threshold .8.
    # Row 0, a = [2, 2, 2, 2]: p(token 2+j) = sigmoid(2) = .8808 >= .8 everywhere (guided: 1.5*2 - 1 = 2, the same)
    #   -> all four at step 0, tokens [2, 3, 4, 5].
    # Row 1, a = [2, .2, -.4, 1]:
    #   no CFG: p = [sig 2 = .8808 (tok 2), sig .2 = .5498 (tok 3), sig .4 = .5987 (tok 0), sig 1 = .7311 (tok 5)]
    #     step 0: pos 0 (.8808 >= .8); step 1: none >= .8 -> the most confident, pos 3 (.7311); step 2: pos 2 (.5987);
    #     step 3: pos 1 -> commit steps [0, 3, 2, 1], tokens [2, 3, 0, 5]
    #   CFG w = .5: logit of 2+j minus that of 0 is 1.5 a - 1 = [2, -.7, -1.6, .5]:
    #     p = [.8808 (tok 2), sig .7 = .6682 (tok 0), sig 1.6 = .8320 (tok 0), sig .5 = .6225 (tok 5)]
    #     step 0: pos 0 and 2 (>= .8); step 1: pos 1 (.6682 > .6225); step 2: pos 3 -> [0, 1, 0, 2], tokens [2, 0, 0, 5]
    #     (with the unconditional rows left out, i.e. 1.5 a alone: pos 3 (sig 1.5 = .8176) would go at step 0 too)
    # Row 0 is done after the first call, so the later calls run row 1 alone: no CFG 4 calls of 2, 1, 1, 1 rows
    # (nfe 4); CFG 3 calls of [cond; uncond] = 4, 2, 2 rows (nfe 2 per call = 6). With a cache the first call is
    # the full forward (width 6 = P + L), the later ones the block (positions 2-5, width 4) against the stored rows.
    monkeypatch.setattr("harness.kv_cache.cached_forward", lambda model, cache: model.fwd)
    t0, uncond = two_token_tables([2.0, 2.0, 2.0, 2.0])
    t1, _ = two_token_tables([2.0, 0.2, -0.4, 1.0])
    model = PromptTables({3: t0, 5: t1}, uncond)
    cfg = DecodeConfig(gen_length=4, block_length=4, steps=4, threshold=0.8, cache=cache, cfg_scale=cfg_scale)
    out = generate(model, torch.tensor([[3, 4], [5, 6]]), PMASK.expand(2, 2), cfg, seeds=[0, 1])
    if cfg_scale == 0:
        steps, tokens, rows, nfe = [[0, 0, 0, 0], [0, 3, 2, 1]], [[2, 3, 4, 5], [2, 3, 0, 5]], [2, 1, 1, 1], 4
    else:
        steps, tokens, rows, nfe = [[0, 0, 0, 0], [0, 1, 0, 2]], [[2, 3, 4, 5], [2, 0, 0, 5]], [4, 2, 2], 6
    assert out.commit_step.tolist() == steps
    assert out.completion_ids.tolist() == tokens
    assert out.nfe == nfe
    if cache == "none":
        assert model.calls == [(r, 6, 0, True) for r in rows]
    else:
        assert model.calls == [(rows[0], 6, 0, True)] + [(r, 4, 2, False) for r in rows[1:]]


@pytest.mark.parametrize("cache, widths", [("prefix", [6, 4, 6, 2]), ("dual", [6, 2, 6, 2])])
def test_cached_fixed_schedule_with_random_remasking_commits_by_the_uniforms_on_one_step_count(cache, widths,
                                                                                            monkeypatch):
    # cache without a rule: LLaDA's fixed schedule, L = 4 in blocks of 2, steps 4 -> k = 1, 1 per block; one global
    # step counter. remasking=random ranks by the stubbed uniforms, not by confidence:
    #   block 0: step 0, u = [.9, .1] -> pos 0 (confidence would take pos 1, p .9 > .6); step 1: pos 1
    #   block 1: step 2, u = [.2, .7] -> pos 3 (confidence: pos 2, .8 > .7); step 3: pos 2
    # calls: per block a full forward (width P + L = 6, start 0) then, at start P + 2 * block, the rest of the
    # sequence (prefix: 4 then 2 positions) or the block alone (dual: 2)
    monkeypatch.setattr("harness.kv_cache.cached_forward", lambda model, cache: model.fwd)
    draws = Draws([.9, .1], [.5], [.2, .7], [.5]).install(monkeypatch)
    model = PromptTables({3: one_token_table([math.log(p) for p in (.6, .9, .8, .7)])})
    cfg = DecodeConfig(gen_length=4, block_length=2, steps=4, remasking="random", cache=cache)
    out = generate(model, PROMPT, PMASK, cfg, seeds=[0])
    assert out.commit_step.tolist() == [[0, 1, 3, 2]]
    assert out.sequences.tolist() == [[3, 4, 2, 3, 4, 5]]
    assert draws.counts == [[2], [1], [2], [1]]
    assert out.nfe == 4
    assert model.calls == [(1, widths[0], 0, True), (1, widths[1], 2, False), (1, widths[2], 0, True),
                           (1, widths[3], 4, False)]


@pytest.mark.parametrize("kwargs, steps, nfe", [
    # p = [.9, .6, .8, .7] (position j -> token 2+j), L = 4 in one block
    # fixed schedule, steps 2 -> k = 2, 2: step 0 the two most confident (pos 0, 2), step 1 pos 1 and 3
    (dict(steps=2), [[0, 1, 0, 1]], 2),
    # threshold .75: step 0 pos 0, 2 (.9, .8); step 1 none of .6, .7 -> the most confident, pos 3; step 2 pos 1
    (dict(steps=4, threshold=0.75), [[0, 2, 0, 1]], 3),
    # factor 1.3: step 0 sorted .9 .8 .7 .6: (n+1)(1-c) = .2, .6, 1.2, 2.0 -> n = 3 (pos 0, 2, 3);
    # step 1 pos 1
    (dict(steps=4, factor=1.3), [[0, 1, 0, 0]], 2),
])
def test_low_confidence_outputs_stay_on_the_input_device_whatever_the_default_device(kwargs, steps, nfe):
    model = TableModel(one_token_table([math.log(p) for p in (.9, .6, .8, .7)]), P=2)
    cfg = DecodeConfig(gen_length=4, block_length=4, **kwargs)
    with torch.device("meta"):
        out = generate(model, PROMPT, PMASK, cfg, seeds=[0])
    assert out.commit_step.device.type == "cpu" and out.sequences.device.type == "cpu"
    assert out.commit_step.tolist() == steps
    assert out.sequences.tolist() == [[3, 4, 2, 3, 4, 5]]
    assert out.nfe == nfe


def test_threshold_one_commits_every_position_whose_probability_is_exactly_one():
    # positions 0 and 2: token logit log 1 = 0, every other id -inf (mask id too) -> log-probability exactly 0 (p = 1);
    # positions 1, 3: p = .6, .8 (token 3, 5; the rest on the mask id). threshold 1 ("probability >= 1"):
    # step 0 commits 0 and 2; step 1 pos 3 (.8, the most confident); step 2 pos 1
    model = TableModel(dist_table({2: 1.0}, {3: .6, MASK: .4}, {4: 1.0}, {5: .8, MASK: .2}), P=2)
    out = generate(model, PROMPT, PMASK, DecodeConfig(gen_length=4, block_length=4, steps=4, threshold=1.0), seeds=[0])
    assert out.commit_step.tolist() == [[0, 2, 0, 1]]
    assert out.sequences.tolist() == [[3, 4, 2, 3, 4, 5]]
    assert out.nfe == 3


def test_factor_rule_includes_n_where_n_plus_one_times_one_minus_c_equals_f():
    # c = [.5, .5] (exp(log .5) is exactly .5 in float64): n=1: 2 x .5 = 1 <= 1.5; n=2: 3 x .5 = 1.5 <= 1.5 -> both
    masked = torch.ones(1, 2, dtype=torch.bool)
    logp = torch.tensor([math.log(.5)] * 2, dtype=torch.float64)
    assert _adaptive_commit(masked, logp, DecodeConfig(factor=1.5)).tolist() == [[True, True]]
    assert _adaptive_commit(masked, logp, DecodeConfig(factor=1.4)).tolist() == [[True, False]]


def test_factor_rule_breaks_ties_by_position_and_commits_exactly_n():
    # 20 masked positions, all c = .75: (n+1)(1 - .75) = (n+1)/4 <= 1.1 -> n = 3. Among equal confidences the
    # leftmost go first (as the argmax, which is always committed): positions 0, 1, 2 and no fourth
    masked = torch.ones(1, 20, dtype=torch.bool)
    logp = torch.full((20,), math.log(.75), dtype=torch.float64)
    commit = _adaptive_commit(masked, logp, DecodeConfig(factor=1.1))
    assert commit[0].nonzero().squeeze(1).tolist() == [0, 1, 2]


@pytest.mark.parametrize("mask_logit", [700.0, 1000.0])
def test_factor_rule_counts_a_position_whose_probability_underflows_to_zero(mask_logit):
    # pos 0: p(token 2) = .9; pos 1: token 3 has logit 0 and the mask id `mask_logit`, so its log-probability is
    # -mask_logit (float32: logsumexp = mask_logit exactly) and its probability e^-700 = 1e-304 or e^-1000 = 0.0 in
    # float64. factor 3.5: sorted c = [.9, ~0]: n=1: 2 x .1 = .2 <= 3.5; n=2: 3 x (1 - 0) = 3 <= 3.5 -> n = 2, both
    # at step 0 in one call, whether the probability is tiny or exactly 0
    table = dist_table({2: .9, MASK: .1}, {3: 1.0})
    table[1, MASK] = mask_logit
    cfg = DecodeConfig(gen_length=2, block_length=2, steps=2, factor=3.5)
    out = generate(TableModel(table, P=2), PROMPT, PMASK, cfg, seeds=[0])
    assert out.commit_step.tolist() == [[0, 0]]
    assert out.sequences.tolist() == [[3, 4, 2, 3]]
    assert out.nfe == 1
