"""The tiny model with a 2-D inductive bias, for image tasks: RoFormer plus a grid over the image cells.

    from harness.grid_model import TinyGridConfig, TinyGridForMaskedLM   # registered with transformers' Auto*

What it adds to `RoFormerForMaskedLM` (the text tasks' tiny model, which stays untouched): the last
`grid_size**2` positions of every sequence are the image cells of a grid_size x grid_size canvas, row-major
(an image task's completion is exactly that many codebook tokens, so the cells are found by position
without looking at ids, which may be masks). On those cells only:

* learned **row and column embeddings** are added to the token embeddings, so a cell knows where it is
  on the canvas (the rotary positions alone give offsets along the flat sequence, where the cell after
  a row's last is the next row's first: sampled shapes wrapped across row ends);
* with `positions="learned"`, no rotary attention at all: a prompt token gets a learned embedding of its
  distance to the image instead (the cells keep their row/column embeddings);
* before each transformer layer, a residual **3x3 depthwise convolution over the grid**:
  h_cells += Linear(GELU(DWConv3x3(LayerNorm(h_cells)))). Neighbouring cells - the pieces of one shape -
  see each other directly, above and below included, at the cost of a few thousand parameters a layer.

The prompt positions get neither. A sequence shorter than the grid holds no image (the padding probe of
harness.models runs a dozen text tokens) and passes through as plain RoFormer. Measured on shapes
(README, "shapes"): without these, 10 minutes of pretraining drew nothing GenEval's rules accept
(overall 0.03-0.08 over fourteen variants); the design follows the prototype of DESIGN.md section 6.

Saved and loaded as an ordinary transformers folder (model_type `harness-tiny-grid`), so `load_hf` loads
it through AutoModelForMaskedLM once this module is imported (harness.models imports it before loading).
Not supported: the approximate KV cache (harness.kv_cache refuses any class but plain RoFormer), head
masks, attention outputs.
"""

from __future__ import annotations

import math

import torch
import transformers
from torch import nn
from transformers.modeling_outputs import MaskedLMOutput
from transformers.models.roformer.modeling_roformer import RoFormerSelfAttention

MODEL_TYPE = "harness-tiny-grid"


class TinyGridConfig(transformers.RoFormerConfig):
    """RoFormer's config plus `grid_size` (the image is the last grid_size**2 positions of a sequence) and
    `positions`: "rotary" (RoFormer's rotary attention over the whole sequence, plus the cells' row/column
    embeddings) or "learned" (no rotary: cells have only their row/column embeddings, and a prompt token a
    learned embedding of its distance to the image, so left padding changes nothing).
    `position_input`: where those learned embeddings enter: "residual" (added after RoFormer's embedding
    LayerNorm, at their initial scale of 0.02 against the normalised token embeddings' ~1: the first
    design, kept so that models saved with it load unchanged) or "embedding" (added to the word embeddings
    before that LayerNorm, as BERT adds its position embeddings, so position and token start on one scale).
    `block`: "post_ln" (RoFormer's own layers: attention and MLP each followed by a LayerNorm) or "pre_ln"
    (a LayerNorm before attention and MLP, residual stream left unnormalised, one LayerNorm before the
    head: GPT-2's arrangement, the usual choice for small transformers trained at a high learning rate)."""

    model_type = MODEL_TYPE

    def __init__(self, grid_size: int = 10, positions: str = "rotary", position_input: str = "residual",
                 block: str = "post_ln", **kwargs):
        super().__init__(**kwargs)
        if positions not in ("rotary", "learned"):
            raise ValueError(f"positions={positions!r}; choose rotary or learned")
        if position_input not in ("residual", "embedding"):
            raise ValueError(f"position_input={position_input!r}; choose residual or embedding")
        if block not in ("post_ln", "pre_ln"):
            raise ValueError(f"block={block!r}; choose post_ln or pre_ln")
        self.grid_size = int(grid_size)
        self.positions = positions
        self.position_input = position_input
        self.block = block


class GridConv(nn.Module):
    """LayerNorm -> depthwise 3x3 convolution over the grid -> GELU -> Linear; its output is added to the cells."""

    def __init__(self, hidden: int, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.conv = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, groups=hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, cells: torch.Tensor, side: int) -> torch.Tensor:
        B, N, H = cells.shape  # (B, side*side, H)
        x = self.norm(cells).transpose(1, 2).reshape(B, H, side, side)  # (B, H, side, side)
        x = nn.functional.gelu(self.conv(x))  # (B, H, side, side)
        return self.proj(x.reshape(B, H, N).transpose(1, 2))  # (B, N, H)


class PreLNLayer(nn.Module):
    """x += Attention(LayerNorm(x)); x += MLP(LayerNorm(x)). Multi-head self-attention with RoFormer's rotary
    positions when a table is given; the keys of padded positions are masked."""

    def __init__(self, hidden: int, heads: int, ffn: int, eps: float):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden={hidden} is not a multiple of heads={heads}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden, eps=eps)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, eps=eps)
        self.fc1 = nn.Linear(hidden, ffn)
        self.fc2 = nn.Linear(ffn, hidden)

    def forward(self, h: torch.Tensor, keep: torch.Tensor, rotary: torch.Tensor | None) -> torch.Tensor:
        """h (B, S, H); keep (B, 1, 1, S) bool, True for keys that may be attended to; rotary (1, 1, S, d) or None."""
        B, S, H = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(B, S, 3, self.heads, H // self.heads).permute(2, 0, 3, 1, 4)
        if rotary is not None:  # q, k: (B, heads, S, d)
            q, k = RoFormerSelfAttention.apply_rotary_position_embeddings(rotary, q, k)
        # written out rather than scaled_dot_product_attention: on CPU under bf16 autocast a training step
        # took 0.67 s with it and 0.45 s with this (batch 64 x 112 tokens, one thread)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, heads, S, S)
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
        a = scores.softmax(-1) @ v  # (B, heads, S, d)
        h = h + self.out(a.transpose(1, 2).reshape(B, S, H))
        return h + self.fc2(nn.functional.gelu(self.fc1(self.norm2(h))))


class TinyGridForMaskedLM(transformers.RoFormerForMaskedLM):
    """RoFormerForMaskedLM whose last grid_size**2 positions are a 2-D canvas (module docstring)."""

    config_class = TinyGridConfig

    def __init__(self, config: TinyGridConfig):
        super().__init__(config)
        side, hidden = config.grid_size, config.hidden_size
        self.grid_row = nn.Embedding(side, hidden)
        self.grid_col = nn.Embedding(side, hidden)
        self.grid_convs = nn.ModuleList(GridConv(hidden, config.layer_norm_eps)
                                        for _ in range(config.num_hidden_layers))
        if config.positions == "learned":
            self.prompt_pos = nn.Embedding(config.max_position_embeddings, hidden)
        if config.block == "pre_ln":  # own layers replace RoFormer's (which are then not built into the weights)
            self.roformer.encoder.layer = nn.ModuleList()
            self.pre_layers = nn.ModuleList(
                PreLNLayer(hidden, config.num_attention_heads, config.intermediate_size, config.layer_norm_eps)
                for _ in range(config.num_hidden_layers))
            self.final_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.post_init()

    def _cell_positions(self, device) -> torch.Tensor:
        side = self.config.grid_size
        rows = torch.arange(side, device=device).repeat_interleave(side)  # (side*side,) row-major
        cols = torch.arange(side, device=device).repeat(side)  # (side*side,)
        return self.grid_row(rows) + self.grid_col(cols)  # (side*side, H)

    def forward(self, input_ids=None, attention_mask=None, labels=None, return_dict=None, **_):
        """Logits (B, S, V) like RoFormerForMaskedLM's; keyword arguments other than these are ignored."""
        model, config = self.roformer, self.config
        B, S = input_ids.shape
        side = config.grid_size
        n = side * side
        if attention_mask is None:
            attention_mask = torch.ones(B, S, dtype=torch.long, device=input_ids.device)
        grid = S >= n  # shorter: no image in this sequence
        P = S - n if grid else S  # prompt positions (with any left padding)
        # the learned positions: row + column on the cells, distance to the image on the prompt ("learned")
        extra = torch.zeros(S, config.hidden_size, device=input_ids.device)  # (S, H)
        if config.positions == "learned":
            # distance to the image: 0 for the last prompt token, whatever the padding on the left
            dist = (P - 1 - torch.arange(P, device=input_ids.device)).clamp(max=config.max_position_embeddings - 1)
            extra[:P] = self.prompt_pos(dist)
        if grid:
            extra[S - n:] = self._cell_positions(input_ids.device)
        if config.position_input == "embedding":  # before the embedding LayerNorm, as BERT's positions
            h = model.embeddings(inputs_embeds=model.embeddings.word_embeddings(input_ids) + extra)  # (B, S, H)
        else:  # after it (the first design)
            h = model.embeddings(input_ids=input_ids)
            h = h + extra.to(h.dtype)
        if hasattr(model, "embeddings_project"):
            h = model.embeddings_project(h)
        pos = None if config.positions == "learned" else model.encoder.embed_positions((B, S), 0)[None, None, :, :]
        if config.block == "pre_ln":
            keep = attention_mask[:, None, None, :].bool()  # (B, 1, 1, S)
            layers, run = self.pre_layers, (lambda layer, x: layer(x, keep, pos))
        else:
            ext = model.get_extended_attention_mask(attention_mask, (B, S))  # (B, 1, 1, S) additive
            layers, run = model.encoder.layer, (lambda layer, x: layer(x, ext, pos)[0])
        for layer, mix in zip(layers, self.grid_convs):
            if grid:
                cells = h[:, S - n:]  # (B, n, H)
                h = torch.cat([h[:, :S - n], cells + mix(cells, side).to(cells.dtype)], dim=1)
            h = run(layer, h)
        if config.block == "pre_ln":
            h = self.final_norm(h)
        logits = self.cls(h)  # (B, S, V)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1))
        return MaskedLMOutput(loss=loss, logits=logits)


transformers.AutoConfig.register(MODEL_TYPE, TinyGridConfig, exist_ok=True)
transformers.AutoModelForMaskedLM.register(TinyGridConfig, TinyGridForMaskedLM, exist_ok=True)
