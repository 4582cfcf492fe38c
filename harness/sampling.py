"""Decoders for masked diffusion models (DESIGN.md section 4).

`generate(model, prompt_ids, attention_mask, cfg, seeds, token_range)` appends `cfg.gen_length` mask
tokens to a left-padded prompt and unmasks them with one of three samplers (`cfg.sampler`):

* `low_confidence` - LLaDA's semi-autoregressive decoder (Nie et al. 2025, appendix B.2): the
  completion is cut into blocks of `block_length`, decoded left to right with `steps // num_blocks`
  steps each; every step predicts all masked positions of the block and commits the k most confident
  (or a random k with `remasking="random"`), k splitting the block as evenly as possible over its steps.
* `emerge` - the MDLM reverse step with a cosine schedule (MaskGRPO's image sampler): at step s each
  masked position independently stays masked with probability k(s+1)/k(s), k(s) = cos(pi/2 * s/T).
* `maskgit` - MaskGIT (Chang et al. 2022): sample every masked position, keep the most confident
  (log-probability plus Gumbel noise annealed to zero) so that floor(L * cos(pi/2 * (s+1)/T)) stay masked.
* `dream` - Dream's own `diffusion_generate` (Ye et al. 2025) over the whole completion, with its
  decoding orders as the `alg` option: `entropy` (Dream's evaluation setting), `maskgit_plus`,
  `topk_margin`, `origin`; `alg_temp` and `eps` as in Dream. Works for every family. At temperature 0
  it produces the tokens of Dream's own generator (tests/test_real_models.py runs both on the Dream
  fixture). Not supported: Dream's top_p / top_k truncation.

Every decoder records the 0-based step at which each completion token was committed (`commit_step`,
TraceRL replays it) and counts model calls (`nfe`: one per forward over the batch, two with CFG). NFE
is fixed by the config (there is no early exit), except with the fast options below.

Fast decoding (low_confidence only; Fast-dLLM, Wu et al. 2025, arXiv 2505.22618), all off by default:
* `threshold=t` - within the current block, each step commits every masked position whose confidence
  (the probability of its sampled token, normalised as below) is >= t, and at least the most confident
  one, so the number of model calls adapts to the model's certainty (`steps` is then unused; at most
  `block_length` steps per block). `factor=f` - Fast-dLLM's factor rule instead: the n most confident
  positions, n the largest with (n+1)(1 - c_(n)) <= f. Each row counts its own steps: `commit_step[b]`
  is the step of row b (a row that finished its block waits for the batch without counting steps), so
  commit steps are 0..(that row's steps - 1) and do not depend on the batch; `nfe` counts the batch's
  forwards. Blocks stay batch-synchronous.
* `cache=prefix|dual` - approximate KV cache (harness.kv_cache): the first step of each block is one
  full forward whose keys/values are stored; later steps of the block run only the block plus the suffix
  after it (`prefix`) or only the block (`dual`) against them. Only for models whose forward the
  harness controls (the embedded tiny RoFormer); other families get a one-line error.
With every fast option off, `generate` runs exactly the code it ran before they existed (bit for bit).

Randomness: one `torch.Generator` per row, seeded from `seeds`. A row draws only from its own generator,
and how much it draws depends only on its own state, so a row decodes the same in any batch (given a
model whose logits for a row do not depend on the other rows).

Deliberate departures from the reference implementations:
* The mask id is never sampled (its logit is -inf); with `token_range=(lo, hi)` only ids in [lo, hi)
  are. Without a range, confidences are probabilities under the whole vocabulary, mask id included,
  as in LLaDA (so at temperature 0 the tokens equal the published decoder's whenever the model's
  argmax is not the mask id itself: `tests/test_real_models.py` checks it on the LLaDA fixture); with a
  range they are probabilities under the restricted distribution (MMaDA restricts to its codebook).
* Confidence is ranked as a log-probability (same order as LLaDA's probability, no underflow).
* Gumbel noise is drawn only at the positions being sampled (LLaDA draws it over the whole sequence):
  same distribution, less work. It is float64, as in LLaDA, whose authors found lower precision
  hurts sampling quality.
* MaskGIT's confidence is `log p + temperature * (1 - s/T) * Gumbel`; one temperature serves both the
  token sampling and the confidence noise.
* CFG runs one forward over the concatenated [cond; uncond] batch (LLaDA does the same), counted as 2 NFE.
  The unconditional input replaces every prompt position by the mask id.
* `emerge` calls the model on every step, even when no position of the batch is revealed, so its NFE
  is exactly `steps` (x2 with CFG).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SAMPLERS = ("low_confidence", "emerge", "maskgit", "dream")
REMASKING = ("low_confidence", "random")
DREAM_ALGS = ("entropy", "maskgit_plus", "topk_margin", "origin")


@dataclass
class DecodeConfig:
    sampler: str = "low_confidence"  # low_confidence | emerge | maskgit (see the module docstring)
    gen_length: int = 256  # L, completion tokens; 256 is the setting of the MaskGRPO/d1 text results
    block_length: int = 32  # low_confidence only: semi-AR block; must divide gen_length (LLaDA uses 32)
    steps: int = 128  # T, denoising steps = model calls (x2 with CFG); L/2 is LLaDA's usual setting
    temperature: float = 0.0  # 0 = argmax (deterministic); >0 = Gumbel-max sampling at this temperature
    remasking: str = "low_confidence"  # low_confidence | random: which k to commit (low_confidence only)
    cfg_scale: float = 0.0  # classifier-free guidance weight w; 0 = off (no unconditional pass)
    alg: str = "entropy"  # dream only: entropy | maskgit_plus | topk_margin | origin (Dream's `alg`)
    alg_temp: float = 0.0  # dream only: 0 = commit the most confident; >0 = sample positions by softmax(conf/alg_temp)
    eps: float = 1e-3  # dream only: the schedule runs t from 1 down to eps in `steps` steps
    # ---- fast decoding (low_confidence only; see "Fast decoding" in the module docstring)
    threshold: float | None = None  # commit every masked block position with probability >= threshold (>= 1/step)
    factor: float | None = None  # Fast-dLLM's factor rule: the largest n with (n+1)(1 - c_(n)) <= factor
    cache: str = "none"  # none | prefix | dual: approximate KV cache (harness.kv_cache), refreshed per block

    def __post_init__(self):
        self.check()

    @classmethod
    def from_task(cls, task, **overrides) -> DecodeConfig:
        """The one constructor of decoder settings: `task.gen_defaults`, overridden by every value in
        `overrides` that is not None (CLI flags, the run spec, the trainer's rollout settings). A
        non-finite temperature or cfg_scale, and every setting `check` rejects, is a ValueError."""
        values = dict(task.gen_defaults)
        values.update({k: v for k, v in overrides.items() if v is not None})
        for k in ("temperature", "cfg_scale"):
            if k in values and not math.isfinite(values[k]):
                raise ValueError(f"--{k.replace('_', '-')} {values[k]} must be a finite number")
        return cls(**values)

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    def check(self) -> None:
        """Raise ValueError naming the offending values and which values would work."""
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if self.remasking not in REMASKING:
            raise ValueError(f"unknown remasking {self.remasking!r}; choose one of {', '.join(REMASKING)}")
        for name in ("gen_length", "block_length", "steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 (0 = greedy argmax)")
        if self.cfg_scale < 0:
            raise ValueError(f"cfg_scale={self.cfg_scale} must be >= 0 (0 = no guidance)")
        L, T = self.gen_length, self.steps
        self._check_fast()
        if self.sampler == "dream":
            if self.alg not in DREAM_ALGS:
                raise ValueError(f"unknown alg {self.alg!r} for the dream sampler; choose one of {', '.join(DREAM_ALGS)}")
            if not (self.alg_temp >= 0 and math.isfinite(self.alg_temp)):
                raise ValueError(f"alg_temp={self.alg_temp} must be a finite number >= 0 (0 = most confident first)")
            if not 0 < self.eps < 1:
                raise ValueError(f"eps={self.eps} must lie in (0, 1) (Dream uses 1e-3)")
        if self.sampler == "maskgit" and T > L:
            raise ValueError(f"maskgit reveals at least one token per step, so steps={T} must be "
                             f"<= gen_length={L}")
        if self.sampler != "low_confidence":
            return
        if L % self.block_length:
            divisors = [d for d in range(1, L + 1) if L % d == 0]
            near = sorted(sorted(divisors, key=lambda d: abs(d - self.block_length))[:6])
            raise ValueError(f"gen_length={L} is not a multiple of block_length={self.block_length}; "
                             f"valid block lengths nearby: {near}")
        nb = self.num_blocks
        if T > L:
            raise ValueError(f"steps={T} > gen_length={L} would leave steps that commit nothing; "
                             f"use steps <= {L} (a multiple of num_blocks={nb})")
        if T % nb:
            valid = [m for m in range(nb, L + 1, nb)]
            near = sorted(sorted(valid, key=lambda m: abs(m - T))[:4])
            raise ValueError(f"steps={T} is not a multiple of num_blocks={nb} (gen_length={L} / "
                             f"block_length={self.block_length}); valid steps nearby: {near}")

    @property
    def fast(self) -> bool:
        """True when the decoder runs the fast path (threshold/factor rule or a KV cache)."""
        return self.threshold is not None or self.factor is not None or self.cache != "none"

    def _check_fast(self) -> None:
        from harness.kv_cache import CACHES

        if self.cache not in CACHES:
            raise ValueError(f"unknown cache {self.cache!r}; choose one of {', '.join(CACHES)}")
        if self.threshold is not None and not 0 < self.threshold <= 1:
            raise ValueError(f"threshold={self.threshold} must lie in (0, 1] (a probability; Fast-dLLM uses 0.9)")
        if self.factor is not None and not (self.factor > 0 and math.isfinite(self.factor)):
            raise ValueError(f"factor={self.factor} must be a finite number > 0 (Fast-dLLM uses 1)")
        if self.threshold is not None and self.factor is not None:
            raise ValueError("give threshold or factor, not both")
        if self.fast and self.sampler != "low_confidence":
            raise ValueError(f"threshold, factor and cache apply to the low_confidence sampler only, "
                             f"not {self.sampler!r}")
        if (self.threshold is not None or self.factor is not None) and self.remasking != "low_confidence":
            raise ValueError("threshold and factor rank positions by confidence; use remasking=low_confidence")


@dataclass
class GenerationOutput:
    sequences: torch.Tensor  # (B, P + L) prompt followed by the generated completion
    prompt_length: int  # P
    commit_step: torch.Tensor  # (B, L) long: the step (0-based) at which each completion token was committed
    nfe: int  # number of model calls (forward passes over the batch), CFG counted as 2 per step

    @property
    def completion_ids(self) -> torch.Tensor:  # (B, L)
        return self.sequences[:, self.prompt_length:]


def generate(model, prompt_ids, attention_mask, cfg: DecodeConfig, seeds=None, token_range=None) -> GenerationOutput:
    """Decode `cfg.gen_length` tokens after each (left-padded) prompt; see the module docstring.

    prompt_ids (B, P) long; attention_mask (B, P) bool/int or None (False/0 = padding, never attended);
    seeds: one int per row (default: the row index); token_range: (lo, hi) to sample ids in [lo, hi) only.
    """
    cfg.check()
    B, P = prompt_ids.shape
    seeds = list(range(B)) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != B:
        raise ValueError(f"got {len(seeds)} seeds for a batch of {B} prompts; pass one seed per row")
    device = getattr(model, "device", None) or prompt_ids.device
    mask_id = int(model.mask_id)
    vocab = _Vocab.build(token_range, mask_id)
    L = cfg.gen_length
    if attention_mask is None:
        attention_mask = torch.ones(B, P, dtype=torch.bool)
    attn = torch.cat([attention_mask.to(device=device, dtype=torch.bool),
                      torch.ones(B, L, dtype=torch.bool, device=device)], dim=1)  # (B, P+L)
    x = torch.cat([prompt_ids.to(device=device, dtype=torch.long),
                   torch.full((B, L), mask_id, dtype=torch.long, device=device)], dim=1)  # (B, P+L)
    gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    decoder = _DECODERS[cfg.sampler]
    if cfg.fast:
        decoder = _low_confidence_fast
        if cfg.cache != "none":
            from harness.kv_cache import cached_forward

            cached_forward(model, cfg.cache)  # CacheUnsupported (one line) for remote-code families
    # no_grad, not inference_mode: inference tensors cannot be saved for backward, and trainers feed
    # these sequences straight into training forwards.
    with torch.no_grad():
        commit_step, nfe = decoder(_Run(model, x, attn, P, cfg, gens, vocab, mask_id))
    return GenerationOutput(sequences=x, prompt_length=P, commit_step=commit_step, nfe=nfe)


# ----------------------------------------------------------------------------------------------------
# shared pieces


@dataclass
class _Vocab:
    lo: int  # first allowed id
    hi: int | None  # one past the last allowed id (None = end of vocabulary)
    banned: int | None  # mask id relative to lo, if it falls inside [lo, hi)

    @staticmethod
    def build(token_range, mask_id: int) -> _Vocab:
        if token_range is None:
            return _Vocab(0, None, mask_id)
        lo, hi = (int(v) for v in token_range)
        if not 0 <= lo < hi:
            raise ValueError(f"token_range={token_range} must be (lo, hi) with 0 <= lo < hi")
        return _Vocab(lo, hi, mask_id - lo if lo <= mask_id < hi else None)


@dataclass
class _Run:
    """Everything one decoding run shares; `x` is updated in place."""

    model: object
    x: torch.Tensor  # (B, P+L) long, prompt then completion (mask id where not yet committed)
    attn: torch.Tensor  # (B, P+L) bool, False on prompt padding
    P: int
    cfg: DecodeConfig
    gens: list  # B torch.Generators
    vocab: _Vocab
    mask_id: int
    nfe: int = 0

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's input (B, P+L) and attention mask, or [cond; uncond] (2B, P+L) with CFG."""
        x, attn = self.x, self.attn
        if self.cfg.cfg_scale > 0:
            uncond = x.clone()  # (B, P+L)
            uncond[:, :self.P] = self.mask_id
            x, attn = torch.cat([x, uncond]), torch.cat([attn, attn])  # (2B, P+L)
        return x, attn

    def forward(self) -> torch.Tensor:
        """Logits of the completion part: (B, L, V), or (2B, L, V) = [cond; uncond] with CFG."""
        x, attn = self.inputs()
        self.nfe += 2 if self.cfg.cfg_scale > 0 else 1
        return self.model.logits(x, attn)[:, self.P:]

    def sample(self, raw: torch.Tensor, sel: torch.Tensor, with_logp: bool = True):
        """Sample a token at each selected position.

        raw (B or 2B, N, V) logits from `forward` (possibly a window of it); sel (B, N) bool.
        Returns ids (M,) and their log-probabilities (M,) (None unless with_logp), M = sel.sum(),
        in row-major order of the selected positions.
        """
        B, v = sel.shape[0], self.vocab
        raw = raw[..., v.lo:v.hi]  # (B or 2B, N, V')
        logits = raw[:B][sel].float()  # (M, V') - advanced indexing copies, so editing it below is safe
        w = self.cfg.cfg_scale
        if w > 0:
            # (1+w)*cond - w*uncond, which is LLaDA's uncond + (w+1)*(cond - uncond) rearranged
            logits = (1 + w) * logits - w * raw[B:][sel].float()  # (M, V')
        # Confidence is normalised over the whole vocabulary, mask id included, as LLaDA's softmax is
        # (the same token order at temperature 0 as the published decoder); over [lo, hi) with a range.
        norm = logits.logsumexp(-1) if with_logp and v.hi is None else None  # (M,)
        if v.banned is not None:
            logits[:, v.banned] = -math.inf
        counts = sel.sum(1).tolist()
        ids = _gumbel_argmax(logits, self.cfg.temperature, counts, self.gens)  # (M,)
        logp = None
        if with_logp:
            logp = logits.gather(1, ids[:, None]).squeeze(1) - (logits.logsumexp(-1) if norm is None else norm)
        return ids + v.lo, logp

    def confidence(self, raw: torch.Tensor, sel: torch.Tensor, kind: str):
        """Sample a token at each selected position and score the position as Dream's `alg` does.

        raw (B, N, V) logits; sel (B, N) bool. Returns ids (M,) and confidences (M,) float32: the
        probability of the sampled token (`maskgit_plus`), top-1 minus top-2 probability (`topk_margin`)
        or the negative entropy sum p log(p + 1e-10) (`entropy`), all under the softmax of the whole
        vocabulary (of [lo, hi) with a range), computed in float32 as Dream's `sample_tokens` does.
        """
        if self.cfg.cfg_scale > 0:
            raise ValueError("the dream sampler has no classifier-free guidance; use cfg_scale=0")
        v = self.vocab
        logits = raw[..., v.lo:v.hi][sel].float()  # (M, V')
        if self.cfg.temperature > 0:
            logits = logits / self.cfg.temperature
        probs = torch.softmax(logits, dim=-1)  # (M, V')
        banned = logits.clone()
        if v.banned is not None:
            banned[:, v.banned] = -math.inf
        ids = _gumbel_argmax(banned, 1.0 if self.cfg.temperature > 0 else 0.0, sel.sum(1).tolist(), self.gens)
        if kind == "topk_margin":
            top2 = probs.topk(2, dim=-1).values  # (M, 2)
            conf = top2[:, 0] - top2[:, 1]
        elif kind == "entropy":
            conf = (probs * torch.log(probs + 1e-10)).sum(-1)
        else:
            conf = probs.gather(1, ids[:, None]).squeeze(1)
        return ids + v.lo, conf

    def uniform(self, counts: list[int]) -> torch.Tensor:
        """(sum(counts),) float64 uniforms in [0, 1), counts[b] of them from row b's generator."""
        parts = [torch.rand(n, generator=g, dtype=torch.float64, device=self.x.device)
                 for n, g in zip(counts, self.gens)]
        return torch.cat(parts)

    def commit_top(self, window: slice, masked, ids, conf, k: int, commit_step, step: int) -> None:
        """Commit, in each row, the k masked positions of `window` with the highest confidence.

        masked (B, N) bool; ids (M,), conf (M,) at the masked positions (row-major); commit_step (B, L).
        """
        B, N = masked.shape
        full_conf = torch.full((B, N), -math.inf, dtype=torch.float64, device=masked.device)  # (B, N)
        full_conf[masked] = conf.double()
        pick = full_conf.topk(k, dim=1).indices  # (B, k)
        commit = torch.zeros_like(masked).scatter_(1, pick, True)  # (B, N) bool
        cand = torch.full((B, N), self.mask_id, dtype=torch.long, device=masked.device)  # (B, N)
        cand[masked] = ids
        comp = self.x[:, self.P:]  # (B, L) view: writing it writes x
        comp[:, window][commit] = cand[commit]
        commit_step[:, window][commit] = step


def _gumbel_argmax(logits: torch.Tensor, temperature: float, counts: list[int], gens: list) -> torch.Tensor:
    """One id per row of logits (M, V'): argmax of logits/T + Gumbel noise (float64), argmax if T == 0.

    The rows come from the batch rows in runs of counts[b]; run b draws its noise from gens[b].
    """
    if temperature == 0:
        return logits.argmax(-1)  # (M,)
    ids = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)  # (M,)
    start = 0
    for n, g in zip(counts, gens):
        if n:  # one row at a time keeps the float64 buffer at (n, V')
            scaled = logits[start:start + n].to(torch.float64, copy=True)  # (n, V')
            if temperature != 1:
                scaled /= temperature
            u = torch.rand(scaled.shape, generator=g, dtype=torch.float64, device=logits.device)  # (n, V')
            scaled -= u.log_().neg_().log_()  # + Gumbel noise -log(-log u), in place: this is the hot loop
            ids[start:start + n] = scaled.argmax(-1)
        start += n
    return ids


def low_confidence_schedule(n: int, steps: int) -> list[int]:
    """Tokens committed at each of `steps` steps to unmask n: as even as possible, remainder first (LLaDA).

    e.g. n=8, steps=3 -> [3, 3, 2].
    """
    base, rem = divmod(n, steps)
    return [base + 1] * rem + [base] * (steps - rem)


def maskgit_schedule(n: int, steps: int) -> list[int]:
    """Positions still masked after each step: floor(n cos(pi/2 (s+1)/T)), at least one reveal per step.

    e.g. n=16, steps=4 -> [14, 11, 6, 0].
    """
    left, prev = [], n
    for s in range(steps):
        m = 0 if s == steps - 1 else min(math.floor(n * math.cos(math.pi / 2 * (s + 1) / steps)), prev - 1)
        left.append(m)
        prev = m
    return left


# ----------------------------------------------------------------------------------------------------
# the decoders: each takes a _Run, fills run.x in place, returns (commit_step (B, L), nfe)


def _low_confidence(run: _Run):
    cfg, B = run.cfg, run.x.shape[0]
    Lb = cfg.block_length
    ks = low_confidence_schedule(Lb, cfg.steps // cfg.num_blocks)  # every row's block starts fully masked
    commit_step = torch.full((B, cfg.gen_length), -1, dtype=torch.long, device=run.x.device)  # (B, L)
    step = 0
    for b in range(cfg.num_blocks):
        window = slice(b * Lb, (b + 1) * Lb)
        for k in ks:
            masked = run.x[:, run.P:][:, window] == run.mask_id  # (B, Lb)
            raw = run.forward()[:, window]  # (B or 2B, Lb, V)
            random = cfg.remasking == "random"
            ids, logp = run.sample(raw, masked, with_logp=not random)  # (M,), (M,)
            conf = run.uniform(masked.sum(1).tolist()) if random else logp  # (M,)
            run.commit_top(window, masked, ids, conf, k, commit_step, step)
            step += 1
    return commit_step, run.nfe


class _BlockCache:
    """Block logits through harness.kv_cache: a full forward (cache refresh) at a block's first step,
    then the block and the suffix after it (`prefix`) or the block alone (`dual`) against stored keys/values."""

    def __init__(self, run: _Run):
        from harness.kv_cache import cached_forward

        self.forward_fn = cached_forward(run.model, run.cfg.cache)
        self.kv = None

    def logits(self, run: _Run, window: slice, refresh: bool, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(B' or 2B', Lb, V) logits of the completion positions `window`; rows (B',) = the batch rows to
        run (default all; a refresh always runs all)."""
        x, attn = run.inputs()  # (B or 2B, S)
        run.nfe += 2 if run.cfg.cfg_scale > 0 else 1
        a, e = run.P + window.start, run.P + window.stop
        if refresh or self.kv is None:
            logits, self.kv = self.forward_fn(x, attn, rows=slice(a, e))
            return logits
        kv = self.kv
        if rows is not None:
            sub = _input_rows(rows, run)
            x, attn = x[sub], attn[sub]
            kv = [(k[sub], v[sub]) for k, v in kv]
        stop = e if run.cfg.cache == "dual" else x.shape[1]
        logits, _ = self.forward_fn(x[:, a:stop], attn, start=a, kv=kv, rows=slice(0, e - a))
        return logits


def _input_rows(rows: torch.Tensor, run: _Run) -> torch.Tensor:
    """Indices of the model-input rows of batch rows `rows` ([cond; uncond] with CFG)."""
    B = run.x.shape[0]
    return torch.cat([rows, rows + B]) if run.cfg.cfg_scale > 0 else rows


def _scatter_rows(sub: torch.Tensor, rows: torch.Tensor, run: _Run) -> torch.Tensor:
    """Logits of some input rows -> a tensor over all input rows (zeros elsewhere; those rows select nothing)."""
    n = run.x.shape[0] * (2 if run.cfg.cfg_scale > 0 else 1)
    full = sub.new_zeros((n, *sub.shape[1:]))
    full[_input_rows(rows, run)] = sub
    return full


def _adaptive_commit(masked: torch.Tensor, logp: torch.Tensor, cfg: DecodeConfig) -> torch.Tensor:
    """(B, N) bool: which masked positions to commit under the threshold or factor rule.

    masked (B, N) bool; logp (M,) log-probability of the sampled token at each masked position (row-major).
    Every row with a masked position commits at least its most confident one. Threshold: also every
    position whose probability is >= threshold. Factor (Fast-dLLM): the n most confident, n the largest
    count such that (n+1)(1 - c_(n)) <= factor, c_(n) the n-th highest probability.
    Equal probabilities are ranked leftmost first (as the argmax), so exactly n are committed.
    """
    B, N = masked.shape
    conf = torch.full((B, N), -math.inf, dtype=torch.float64, device=masked.device)  # (B, N)
    conf[masked] = logp.double()
    top = conf.argmax(1, keepdim=True)  # (B, 1)
    commit = torch.zeros_like(masked).scatter_(1, top, True) & masked  # (B, N)
    if cfg.threshold is not None:
        return commit | (masked & (conf >= math.log(cfg.threshold)))
    order = conf.sort(dim=1, descending=True, stable=True).indices  # (B, N)
    p = conf.gather(1, order).exp()  # (B, N) sorted probabilities
    live = masked.gather(1, order)  # (B, N) the sorted entries that are masked positions (ahead of the others)
    n = torch.arange(1, N + 1, device=masked.device, dtype=torch.float64)  # (N,)
    # a masked position counts even when its probability underflows to 0.0 (e^-746): c_(n) = 0 is still a c_(n)
    ok = ((n + 1) * (1 - p) <= cfg.factor) & live  # (B, N)
    count = (ok.long() * n.long()).amax(1).clamp(min=1)  # (B,) largest n passing
    picked = torch.zeros_like(masked).scatter_(1, order, n.long()[None, :].expand(B, N) <= count[:, None])
    return commit | (picked & masked)


def _low_confidence_fast(run: _Run):
    """The low_confidence decoder with a threshold/factor rule and/or a KV cache (module docstring).

    Blocks are batch-synchronous: the batch moves to the next block when no row has a masked position
    left in the current one; a row that finished early waits (no forward input changes, no steps counted).
    Without a rule, each block runs the fixed LLaDA schedule (one global step counter, as `_low_confidence`).
    With a rule, each row counts its own steps (those in which it had something to commit), so a row's
    tokens and commit steps do not depend on the batch it was decoded in.
    """
    cfg, B = run.cfg, run.x.shape[0]
    Lb, dev = cfg.block_length, run.x.device
    adaptive = cfg.threshold is not None or cfg.factor is not None
    ks = low_confidence_schedule(Lb, cfg.steps // cfg.num_blocks)
    commit_step = torch.full((B, cfg.gen_length), -1, dtype=torch.long, device=dev)  # (B, L)
    row_step = torch.zeros(B, dtype=torch.long, device=dev)  # (B,) adaptive: each row's own step count
    cache = _BlockCache(run) if cfg.cache != "none" else None
    comp = run.x[:, run.P:]  # (B, L) view: writing it writes x
    random = cfg.remasking == "random"
    step = 0
    for b in range(cfg.num_blocks):
        window = slice(b * Lb, (b + 1) * Lb)
        i = 0
        while True:
            masked = comp[:, window] == run.mask_id  # (B, Lb)
            if (adaptive and not bool(masked.any())) or (not adaptive and i == len(ks)):
                break
            # rows that finished the block wait: only the others are run (a row's logits do not depend
            # on the other rows, so this changes no output, only the cost)
            live = masked.any(1)  # (B,)
            rows = None if bool(live.all()) else live.nonzero().squeeze(1)
            if cache is not None:
                raw = cache.logits(run, window, refresh=i == 0, rows=rows)  # (B' or 2B', Lb, V)
            elif rows is None:
                raw = run.forward()[:, window]
            else:
                x, attn = run.inputs()
                sub = _input_rows(rows, run)
                run.nfe += 2 if cfg.cfg_scale > 0 else 1
                raw = run.model.logits(x[sub], attn[sub])[:, run.P:][:, window]
            if rows is not None and not (cache is not None and i == 0):
                raw = _scatter_rows(raw, rows, run)  # (B or 2B, Lb, V)
            ids, logp = run.sample(raw, masked, with_logp=not random)  # (M,), (M,)
            if adaptive:
                commit = _adaptive_commit(masked, logp, cfg)  # (B, Lb)
                cand = torch.full_like(masked, run.mask_id, dtype=torch.long)  # (B, Lb)
                cand[masked] = ids
                comp[:, window][commit] = cand[commit]
                commit_step[:, window][commit] = row_step[:, None].expand(B, Lb)[commit]
                row_step += masked.any(1).long()
            else:
                conf = run.uniform(masked.sum(1).tolist()) if random else logp  # (M,)
                run.commit_top(window, masked, ids, conf, ks[i], commit_step, step)
                step += 1
            i += 1
    return commit_step, run.nfe


def _emerge(run: _Run):
    cfg, B = run.cfg, run.x.shape[0]
    T = cfg.steps
    alpha = [math.cos(math.pi / 2 * s / T) for s in range(T + 1)]  # fraction still masked before step s
    commit_step = torch.full((B, cfg.gen_length), -1, dtype=torch.long, device=run.x.device)  # (B, L)
    comp = run.x[:, run.P:]  # (B, L) view
    for s in range(T):
        masked = comp == run.mask_id  # (B, L)
        if s == T - 1:
            reveal = masked  # the last step fills all
        else:
            stay = alpha[s + 1] / alpha[s]
            reveal = torch.zeros_like(masked)  # (B, L)
            reveal[masked] = run.uniform(masked.sum(1).tolist()) >= stay
        raw = run.forward()  # (B or 2B, L, V)
        ids, _ = run.sample(raw, reveal, with_logp=False)  # (M,)
        comp[reveal] = ids
        commit_step[reveal] = s
    return commit_step, run.nfe


def _maskgit(run: _Run):
    cfg, B = run.cfg, run.x.shape[0]
    T, L = cfg.steps, cfg.gen_length
    commit_step = torch.full((B, L), -1, dtype=torch.long, device=run.x.device)  # (B, L)
    before = L
    for s, after in enumerate(maskgit_schedule(L, T)):
        masked = run.x[:, run.P:] == run.mask_id  # (B, L)
        raw = run.forward()  # (B or 2B, L, V)
        ids, logp = run.sample(raw, masked)  # (M,), (M,)
        conf = logp.double()  # (M,)
        noise_scale = cfg.temperature * (1 - s / T)  # annealed to 0 over the run (MaskGIT)
        if noise_scale > 0:
            conf = conf - noise_scale * torch.log(-torch.log(run.uniform(masked.sum(1).tolist())))
        run.commit_top(slice(None), masked, ids, conf, before - after, commit_step, s)
        before = after
    return commit_step, run.nfe


def _dream(run: _Run):
    """Dream's `diffusion_generate` order over the whole completion (no blocks).

    The schedule t runs from 1 to eps over T steps (float32, as Dream's linspace). At step i, with
    t = ts[i], s = ts[i+1] and n positions still masked: `origin` reveals each masked position with
    probability 1 - s/t (all at the last step); the other algs commit the int(n (1 - s/t)) most confident
    positions (all n at the last step), or sample that many by softmax(conf / alg_temp) when alg_temp > 0.
    """
    cfg, B = run.cfg, run.x.shape[0]
    T = cfg.steps
    ts = torch.linspace(1, cfg.eps, T + 1, dtype=torch.float32, device="cpu")  # same values on any device
    commit_step = torch.full((B, cfg.gen_length), -1, dtype=torch.long, device=run.x.device)  # (B, L)
    comp = run.x[:, run.P:]  # (B, L) view
    for i in range(T):
        masked = comp == run.mask_id  # (B, L)
        raw = run.forward()  # (B, L, V)
        last = i == T - 1
        frac = ts[i + 1] / ts[i]  # float32 s / t
        if cfg.alg == "origin":
            reveal = masked.clone() if last else torch.zeros_like(masked)  # (B, L)
            if not last:
                reveal[masked] = run.uniform(masked.sum(1).tolist()) < float(1 - frac)
            ids, _ = run.sample(raw, reveal, with_logp=False)  # (M,)
            comp[reveal] = ids
            commit_step[reveal] = i
            continue
        ids, conf = run.confidence(raw, masked, cfg.alg)  # (M,), (M,)
        # confidences over the whole sequence (prompt at -inf), the shape Dream ranks: a random-weight
        # model gives many exactly equal confidences, and topk breaks such ties by position in its input
        full = torch.full(run.x.shape, -math.inf, dtype=torch.float32, device=masked.device)  # (B, P+L)
        full[:, run.P:][masked] = conf
        cand = torch.full_like(comp, run.mask_id)  # (B, L)
        cand[masked] = ids
        for b in range(B):
            n = int(masked[b].sum())
            k = n if last else int(torch.tensor(n, dtype=torch.float32, device="cpu") * (1 - frac))
            if k <= 0:
                continue
            if cfg.alg_temp > 0:
                weights = torch.softmax(full[b] / cfg.alg_temp, dim=-1)  # (P+L,)
                pick = torch.multinomial(weights, k, generator=run.gens[b]) - run.P  # (k,)
            else:
                pick = full[b:b + 1].topk(k).indices[0] - run.P  # (k,)
            comp[b, pick] = cand[b, pick]
            commit_step[b, pick] = i
    return commit_step, run.nfe


_DECODERS = {"low_confidence": _low_confidence, "emerge": _emerge, "maskgit": _maskgit, "dream": _dream}
