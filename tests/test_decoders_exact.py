"""Exact-value tests of the emerge and MaskGIT decoders (harness/sampling.py): expected values worked by hand.

The model is a fixed logit table (it ignores its input), and the decoders' uniforms come from a stub of
`_Run.uniform` that hands out chosen values, so which position is committed at which step follows from
the definitions in DESIGN.md section 4 with pencil-and-paper arithmetic.
"""

import math

import torch

from harness.sampling import DecodeConfig, _Run, generate

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
