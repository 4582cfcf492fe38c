"""The image tasks' tiny model (harness/grid_model.py): a RoFormer whose last GRID*GRID positions are a 2-D
canvas. Saved and loaded through the ordinary hf path; the grid touches only the image cells; text tasks
keep the plain RoFormer."""

import pytest
import torch
import transformers

from harness.grid_model import TinyGridConfig, TinyGridForMaskedLM
from harness.pretrain import PretrainConfig, _build_module

SIDE = 5  # a 5x5 canvas: 25 cells (more than the dozen tokens of the padding probe of harness.models)
SMALL = dict(hidden=32, layers=2, heads=2, ffn=64)


def small_grid_model(seed: int = 0, positions: str = "rotary", **grid) -> TinyGridForMaskedLM:
    cfg = PretrainConfig(grid=SIDE, grid_positions=positions, **grid, **SMALL)
    return _build_module(cfg, vocab_size=40, pad_id=0, seed=seed).eval()


# every arrangement of the grid model: RoFormer's post-LN layers or the pre-LN ones, positions added after
# or before the embedding LayerNorm
VARIANTS = [dict(positions=p, grid_block=b, grid_position_input=i)
            for p in ("rotary", "learned") for b in ("post_ln", "pre_ln") for i in ("residual", "embedding")]


def _zero_attention(model: TinyGridForMaskedLM) -> None:
    with torch.no_grad():
        if model.config.block == "pre_ln":
            outs = [layer.out for layer in model.pre_layers]
        else:
            outs = [layer.attention.output.dense for layer in model.roformer.encoder.layer]
        for lin in outs:
            lin.weight.zero_()
            lin.bias.zero_()


def test_text_tasks_keep_the_plain_roformer_with_the_same_weights():
    # grid=0 (every text task's config) must build exactly what it built before the grid existed
    plain = _build_module(PretrainConfig(**SMALL), vocab_size=40, pad_id=0, seed=0)
    assert type(plain) is transformers.RoFormerForMaskedLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        direct = transformers.RoFormerForMaskedLM(plain.config)
    for (name, a), (_, b) in zip(plain.state_dict().items(), direct.state_dict().items()):
        assert torch.equal(a, b), name
    from tasks import get_task

    for name in ("arith", "minicode"):
        assert not PretrainConfig(**get_task(name).pretrain_config).grid
    assert PretrainConfig(**get_task("shapes").pretrain_config).grid == 10


def test_grid_needs_roformer():
    with pytest.raises(ValueError, match="arch='roformer'"):
        _build_module(PretrainConfig(grid=SIDE, arch="bert", **SMALL), vocab_size=40, pad_id=0, seed=0)


def test_the_grid_changes_only_the_image_cells_before_the_first_layer():
    model = small_grid_model()  # rotary: the prompt's positions are in the attention, not in its inputs
    seen = {}
    model.roformer.embeddings.register_forward_hook(lambda m, a, out: seen.__setitem__("emb", out))
    model.roformer.encoder.layer[0].register_forward_pre_hook(lambda m, args: seen.__setitem__("in", args[0]))
    ids = torch.randint(1, 40, (2, 5 + SIDE * SIDE))  # (2, 30): 5 prompt tokens, then the 25 cells
    with torch.no_grad():
        model(input_ids=ids)
    delta = (seen["in"] - seen["emb"]).abs().sum(-1)  # (2, 21)
    assert torch.all(delta[:, :5] == 0)  # prompt: untouched
    assert torch.all(delta[:, 5:] > 0)  # every cell: row/column embedding plus the convolution
    # row/column embeddings: two cells with the same token in different places get different inputs
    same = torch.full((1, 5 + SIDE * SIDE), 7)
    with torch.no_grad():
        model(input_ids=same)
    cells = seen["in"][0, 5:]  # (25, H)
    assert not torch.allclose(cells[0], cells[SIDE + 1])


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(v.values()))
def test_the_convolution_sees_the_cell_below_not_the_one_after_a_row_end(variant):
    # with attention switched off (zero output weights), a cell's logits depend on the grid only
    model = small_grid_model(**variant)
    _zero_attention(model)
    P = 3
    ids = torch.randint(1, 39, (1, P + SIDE * SIDE))  # +1 below stays in the vocabulary
    with torch.no_grad():
        base = model(input_ids=ids).logits
        below, wrap = ids.clone(), ids.clone()
        below[0, P + SIDE] += 1  # cell (1, 0): directly below cell (0, 0)
        wrap[0, P + SIDE - 1] += 1  # cell (0, SIDE-1): last of row 0, not a neighbour of cell (1, 0)
        d_below = (model(input_ids=below).logits - base)[0, P].abs().max()  # at cell (0, 0)
        d_wrap = (model(input_ids=wrap).logits - base)[0, P + SIDE].abs().max()  # at cell (1, 0)
    assert d_below > 1e-6 and d_wrap == 0


def test_a_sequence_shorter_than_the_grid_is_plain_roformer():
    model = small_grid_model()
    plain = transformers.RoFormerForMaskedLM(transformers.RoFormerConfig(**{
        k: v for k, v in model.config.to_dict().items() if k in transformers.RoFormerConfig().to_dict()})).eval()
    plain.load_state_dict(model.state_dict(), strict=False)
    ids = torch.randint(1, 40, (2, SIDE * SIDE - 1))
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, plain(input_ids=ids).logits, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(v.values()))
def test_saves_and_loads_through_the_hf_path_with_left_padding_intact(tmp_path, variant):
    from harness.models import load_hf, padding_error
    from harness.tokenizer import build_tokenizer

    tok = build_tokenizer(["a photo of a red square", "<img0><img1>"], multi=[f"<img{k}>" for k in range(3)])
    positions = variant["positions"]
    module = _build_module(PretrainConfig(grid=SIDE, grid_positions=positions, grid_block=variant["grid_block"],
                                          grid_position_input=variant["grid_position_input"], **SMALL),
                           vocab_size=len(tok), pad_id=tok.pad_token_id, seed=1)
    module.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model = load_hf(str(tmp_path))
    assert type(model.module) is TinyGridForMaskedLM and isinstance(model.module.config, TinyGridConfig)
    assert model.module.config.grid_size == SIDE and model.module.config.positions == positions
    assert model.module.config.block == variant["grid_block"]
    assert model.module.config.position_input == variant["grid_position_input"]
    assert module.state_dict().keys() == model.module.state_dict().keys()
    for a, b in zip(module.state_dict().values(), model.module.state_dict().values()):
        assert torch.equal(a, b)
    # a prompt left-padded inside a batch keeps its logits, cells included
    cells = [model.mask_id] * (SIDE * SIDE)
    long_row, short_row = [5, 6, 7, 8] + cells, [5, 6] + cells
    batch = torch.tensor([long_row, [model.pad_id] * 2 + short_row])
    keep = torch.ones_like(batch, dtype=torch.bool)
    keep[1, :2] = False
    with torch.no_grad():
        both = model.logits(batch, keep)
        alone = model.logits(torch.tensor([short_row]))
    assert torch.allclose(both[1, 2:], alone[0], atol=1e-4)
    assert padding_error(model) is None


def test_the_kv_cache_refuses_the_grid_model():
    from harness.kv_cache import CacheUnsupported, cached_forward

    class M:
        family, module = "generic", small_grid_model()

    with pytest.raises(CacheUnsupported, match="TinyGridForMaskedLM"):
        cached_forward(M(), "prefix")


def test_learned_positions_tell_prompt_tokens_apart_by_their_distance_to_the_image():
    model = small_grid_model(positions="learned")
    same = torch.full((1, 3 + SIDE * SIDE), 7)
    swapped = same.clone()
    swapped[0, 0] = 9  # first of three prompt tokens changed ...
    moved = same.clone()
    moved[0, 2] = 9  # ... or the last: the cells must see a difference between the two
    with torch.no_grad():
        a = model(input_ids=swapped).logits[0, 3:]
        b = model(input_ids=moved).logits[0, 3:]
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="rotary or learned"):
        TinyGridConfig(positions="absolute")


def test_embedding_position_input_normalises_token_and_position_together():
    # position_input="embedding": a cell's input to the first layer is LayerNorm(word + row + column), as
    # BERT adds its positions before the embedding LayerNorm ("residual" adds them after it)
    model = small_grid_model(grid_position_input="embedding")
    seen = {}
    model.roformer.embeddings.register_forward_hook(lambda m, a, out: seen.__setitem__("emb", out))
    P, r, c = 3, 2, 4
    ids = torch.full((1, P + SIDE * SIDE), 7)
    with torch.no_grad():
        model(input_ids=ids)
        emb = model.roformer.embeddings
        raw = emb.word_embeddings.weight[7] + emb.token_type_embeddings.weight[0] \
            + model.grid_row.weight[r] + model.grid_col.weight[c]
        mu, var = raw.mean(), raw.var(unbiased=False)
        want = (raw - mu) / torch.sqrt(var + emb.LayerNorm.eps) * emb.LayerNorm.weight + emb.LayerNorm.bias
    assert torch.allclose(seen["emb"][0, P + r * SIDE + c], want, atol=1e-5)
    # the prompt (rotary positions) gets the plain normalised token embedding
    raw_p = emb.word_embeddings.weight[7] + emb.token_type_embeddings.weight[0]
    want_p = (raw_p - raw_p.mean()) / torch.sqrt(raw_p.var(unbiased=False) + emb.LayerNorm.eps)
    assert torch.allclose(seen["emb"][0, 0], want_p * emb.LayerNorm.weight + emb.LayerNorm.bias, atol=1e-5)


def test_pre_ln_layers_add_to_an_unnormalised_residual_stream():
    # pre-LN: with attention and MLP outputs zeroed every layer is the identity on the cells' stream, so the
    # logits are the head applied to LayerNorm(embedding + the convolutions' additions)
    model = small_grid_model(grid_block="pre_ln")
    assert len(model.roformer.encoder.layer) == 0 and len(model.pre_layers) == SMALL["layers"]
    _zero_attention(model)
    with torch.no_grad():
        for layer in model.pre_layers:
            layer.fc2.weight.zero_()
            layer.fc2.bias.zero_()
    P = 2
    ids = torch.randint(1, 40, (1, P + SIDE * SIDE))
    with torch.no_grad():
        h = model.roformer.embeddings(input_ids=ids)[0]
        h = torch.cat([h[:P], h[P:] + model._cell_positions(h.device)])
        for mix in model.grid_convs:
            h = torch.cat([h[:P], h[P:] + mix(h[None, P:], SIDE)[0]])
        want = model.cls(torch.nn.functional.layer_norm(h, (h.shape[-1],), model.final_norm.weight,
                                                        model.final_norm.bias, model.final_norm.eps))
        got = model(input_ids=ids).logits[0]
    assert torch.allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="post_ln or pre_ln"):
        TinyGridConfig(block="sandwich")
    with pytest.raises(ValueError, match="residual or embedding"):
        TinyGridConfig(position_input="rope")
