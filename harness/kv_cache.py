"""Approximate KV caching for block-wise decoding (the idea of Fast-dLLM, Wu et al. 2025, arXiv 2505.22618).

A masked diffusion model attends bidirectionally, so no key or value is exact once any token changes.
Fast-dLLM observes that within one semi-autoregressive block the keys and values outside the block
barely move, and reuses them:

* `prefix` - at the first step of each block one full forward computes (and stores) the keys/values of
  every position; the later steps of that block run only the current block *and everything after it*,
  attending to the stored keys/values of the prompt and the finished blocks.
* `dual` - the later steps run only the current block, attending to stored keys/values of both the
  prefix and the still-masked suffix.

The cache is refreshed at every block boundary (the full forward of the block's first step), and each
forward, full or partial, counts as one model call (NFE), as Fast-dLLM counts them.

This needs a forward of our own that takes stored keys/values, so it exists only for models whose code
the harness controls. Today that is the embedded `tiny` model (a transformers `RoFormerForMaskedLM`):
`RoFormerCachedForward` runs that module's own weights (read live, so it follows training updates)
with the same arithmetic as transformers' RoFormer (rotary queries/keys, post-LayerNorm blocks, the MLM
head), and without a cache it reproduces the module's logits (tests/test_fast_decoding.py). The harness
has no native implementation of a real family: LLaDA, Dream and MMaDA run their own remote code, which
takes no stored keys/values for the masked suffix, so asking for a cache there is a one-line error:
from the model's name before any model work (`harness.models.check_cache_model`, called by `harness eval`,
`harness run` for the evaluation and rollout decoders, and lm-eval's `--model harness`), and here, at the
first decode, for a model built in code.
"""

from __future__ import annotations

import math

import torch

CACHES = ("none", "prefix", "dual")
REMOTE_FAMILIES = ("llada", "dream", "mmada")


class CacheUnsupported(ValueError):
    """The model's forward cannot take stored keys/values (one line that says what to pass instead)."""


def cached_forward(model, cache: str) -> RoFormerCachedForward:
    """The cache-capable forward of `model`, or CacheUnsupported naming the family."""
    family = getattr(model, "family", "generic")
    if family in REMOTE_FAMILIES:
        raise CacheUnsupported(f"cache={cache} is not supported for the {family} family: the harness does not "
                               "control its (remote) code, so it cannot pass stored keys/values; use cache=none "
                               "(threshold decoding still works)")
    module = getattr(model, "module", None)
    if type(module).__name__ != "RoFormerForMaskedLM":
        raise CacheUnsupported(f"cache={cache} is supported only for the embedded tiny model (RoFormerForMaskedLM), "
                               f"not {type(module).__name__ if module is not None else type(model).__name__}; "
                               "use cache=none")
    fwd = getattr(module, "_harness_cached_forward", None)
    if fwd is None:
        fwd = RoFormerCachedForward(module)
        module._harness_cached_forward = fwd
    return fwd


class RoFormerCachedForward:
    """transformers' RoFormerForMaskedLM forward over a window of positions, with stored keys/values."""

    def __init__(self, module):
        cfg = module.config
        if getattr(cfg, "is_decoder", False) or getattr(cfg, "add_cross_attention", False):
            raise CacheUnsupported("cached forward: only the encoder (bidirectional) RoFormer is supported")
        self.module = module
        self.heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.rotary_value = bool(getattr(cfg, "rotary_value", False))

    def __call__(self, ids: torch.Tensor, keep: torch.Tensor, start: int = 0, kv: list | None = None,
                 rows: slice | None = None):
        """Run positions [start, start + W) of the sequence.

        ids (B, W) the window's tokens; keep (B, S) bool over the whole sequence (False = padding);
        kv: per layer (keys, values), each (B, H, S, d), from an earlier full forward - the window's own
        entries are recomputed, every other position's are read from it; None = the window is the whole
        sequence (start must be 0). rows: which window positions need logits (default all).
        Returns logits (B, |rows|, V) and this call's per-layer (keys, values) of the window.
        """
        m = self.module
        B, W = ids.shape
        S = keep.shape[1]
        if kv is None and (start != 0 or W != S):
            raise ValueError("a forward without stored keys/values must cover the whole sequence")
        enc = m.roformer.encoder
        h = m.roformer.embeddings(input_ids=ids)  # (B, W, E)
        if hasattr(m.roformer, "embeddings_project"):
            h = m.roformer.embeddings_project(h)  # (B, W, D)
        table = enc.embed_positions.weight[start:start + W]  # (W, d): sin half then cos half
        sin, cos = table.chunk(2, dim=-1)  # (W, d/2) each
        sin = torch.stack([sin, sin], dim=-1).reshape(W, -1)  # (W, d): each frequency twice, as RoFormer
        cos = torch.stack([cos, cos], dim=-1).reshape(W, -1)
        bias = torch.zeros(B, 1, 1, S, dtype=h.dtype, device=h.device)  # (B, 1, 1, S)
        bias.masked_fill_(~keep.to(device=h.device, dtype=torch.bool)[:, None, None, :], torch.finfo(h.dtype).min)
        new_kv = []
        for i, layer in enumerate(enc.layer):
            att = layer.attention.self
            q = self._heads(att.query(h))  # (B, H, W, d)
            k = self._rotate(self._heads(att.key(h)), sin, cos)
            v = self._heads(att.value(h))
            q = self._rotate(q, sin, cos)
            if self.rotary_value:
                v = self._rotate(v, sin, cos)
            new_kv.append((k, v))
            if kv is not None:
                K, V = kv[i]  # (B, H, S, d)
                k = torch.cat([K[:, :, :start], k, K[:, :, start + W:]], dim=2)  # (B, H, S, d)
                v = torch.cat([V[:, :, :start], v, V[:, :, start + W:]], dim=2)
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + bias  # (B, H, W, S)
            ctx = torch.softmax(scores, dim=-1) @ v  # (B, H, W, d)
            ctx = ctx.transpose(1, 2).reshape(B, W, -1)  # (B, W, D)
            a = layer.attention.output(ctx, h)  # dense, LayerNorm(. + h)
            h = layer.output(layer.intermediate(a), a)  # (B, W, D)
        if rows is not None:
            h = h[:, rows]
        return m.cls(h), new_kv  # (B, |rows|, V)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:  # (B, W, D) -> (B, H, W, d)
        B, W, _ = t.shape
        return t.view(B, W, self.heads, self.head_dim).transpose(1, 2)

    @staticmethod
    def _rotate(t: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
        """RoFormer's rotary embedding: pairs (t0, t1) -> (t0 cos - t1 sin, t1 cos + t0 sin)."""
        half = torch.stack([-t[..., 1::2], t[..., ::2]], dim=-1).reshape_as(t)
        return t * cos + half * sin
