"""Tests for harness/models.py (the adapter) and harness/tokenizer.py, on tiny models built in-process."""

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from harness import models
from harness.models import DiffusionModel, GoldModel, ModelError, load_model
from harness.registry import UnknownNameError
from harness.tokenizer import SPECIALS, build_tokenizer

TEXTS = ["Tom has 12 apples. He buys 3 more.", "<reasoning>\n012+003=015\n</reasoning>",
         "```python\ndef add_k(x):\n    return x + 7\n```"]


def tiny_bert(vocab_size: int, seed: int = 0) -> BertForMaskedLM:
    cfg = BertConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, type_vocab_size=1, pad_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BertForMaskedLM(cfg).eval()


@pytest.fixture()
def tok():
    return build_tokenizer(TEXTS)


@pytest.fixture()
def saved(tmp_path, tok):
    """A tiny model folder saved the way `harness pretrain` saves one."""
    module = tiny_bert(len(tok))
    module.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    return tmp_path / "m", module


# ---- tokenizer ------------------------------------------------------------------------------------
def test_tokenizer_round_trips_text_exactly_and_splits_digits(tok):
    for text in TEXTS:
        assert tok.decode(tok(text)["input_ids"]) == text
    pieces = tok.convert_ids_to_tokens(tok("Tom has 12")["input_ids"])
    assert pieces == ["Tom", "\u2581has", "\u2581", "1", "2"]  # one token per digit, spaces glued to words


def test_tokenizer_specials_have_fixed_ids_and_markup_is_one_token(tok):
    assert [tok.pad_token_id, tok.unk_token_id, tok.mask_token_id, tok.eos_token_id] == [0, 1, 2, 3]
    assert list(SPECIALS) == ["[PAD]", "[UNK]", "[MASK]", "[EOS]"]
    assert tok.convert_ids_to_tokens(tok("```python\n")["input_ids"]) == ["```python", "\n"]
    assert tok("zebra")["input_ids"] == [tok.unk_token_id]  # an unseen word


# ---- loading ---------------------------------------------------------------------------------------
def test_round_trip_through_hf_folder_gives_identical_logits(saved):
    folder, module = saved
    model = load_model(f"hf:{folder}")
    assert isinstance(model, DiffusionModel) and model.family == "generic"
    assert (model.mask_id, model.pad_id, model.eos_id, model.image_token_range) == (2, 0, 3, None)
    ids = torch.tensor([[5, 6, 7, 2, 2], [8, 9, 10, 11, 2]])
    ref = DiffusionModel(module, model.tokenizer, name="ref", mask_id=2, pad_id=0, eos_id=3)
    assert torch.equal(model.logits(ids), ref.logits(ids))


def test_tiny_spec_loads_the_cached_model_of_the_task(saved, monkeypatch, tmp_path):
    folder, _ = saved
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    assert not models.is_pretrained("arith")
    with pytest.raises(ModelError, match="harness pretrain --task arith"):
        load_model("tiny", task="arith")
    target = models.tiny_model_path("arith")
    assert target == tmp_path / "home" / "models" / "tiny-arith"
    target.parent.mkdir(parents=True)
    folder.rename(target)
    assert models.is_pretrained("arith")
    assert load_model("tiny", task="arith").name == "tiny-arith"


def test_tiny_without_task_is_a_model_error():
    with pytest.raises(ModelError, match="per task"):
        load_model("tiny")


def test_gold_and_unknown_specs():
    assert isinstance(load_model("gold"), GoldModel) and load_model("gold").is_gold
    with pytest.raises(UnknownNameError, match="llada-8b-instruct"):
        load_model("llada-9b")


def test_unreachable_hub_id_says_to_pass_a_local_folder(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail fast, no network
    with pytest.raises(ModelError) as err:
        load_model("hf:some-org/not-a-real-diffusion-model")
    msg = str(err.value)
    assert "\n" not in msg and "--model hf:/path/to/folder" in msg and "some-org/not-a-real" in msg


def test_missing_local_folder_is_reported_as_such(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(f"hf:{tmp_path}/nothing/here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        load_model(f"hf:{tmp_path}/empty")


def test_presets_point_at_the_published_checkpoints():
    assert models.PRESETS["llada-8b-instruct"] == "hf:GSAI-ML/LLaDA-8B-Instruct"
    assert {"dream-7b-instruct", "mmada-8b"} <= set(models.PRESETS)


# ---- prompts and completions -------------------------------------------------------------------
def test_encode_prompts_left_pads_and_left_padding_does_not_change_the_logits(saved):
    folder, _ = saved
    model = load_model(f"hf:{folder}")
    ids, attn = model.encode_prompts(["Tom has 12 apples.", "He buys 3 more apples. Tom has 12."])
    assert ids.shape == attn.shape and attn.dtype == torch.bool
    n0 = int(attn[0].sum())
    assert not attn[0, :-n0].any() and (ids[0, :-n0] == model.pad_id).all()  # left padding
    alone, _ = model.encode_prompts(["Tom has 12 apples."])
    # positions count from the first real token and padding is never attended, so the short prompt's
    # logits are the same alone and left-padded in a batch
    batched = model.logits(ids, attn)[0, -n0:]
    single = model.logits(alone)[0]
    assert torch.allclose(batched, single, atol=1e-5)


def test_encode_prompts_applies_the_chat_template_when_there_is_one(saved):
    folder, _ = saved
    model = load_model(f"hf:{folder}")
    model.tokenizer.chat_template = "{% for m in messages %}Tom {{ m['content'] }}{% endfor %}"
    ids, _ = model.encode_prompts(["has 12"])
    assert model.tokenizer.decode(ids[0]) == "Tom has 12"


def test_decode_completion_stops_at_eos_and_drops_masks(saved):
    folder, _ = saved
    model = load_model(f"hf:{folder}")
    tok = model.tokenizer
    body = tok("Tom has 12")["input_ids"]
    ids = torch.tensor([body[0], model.mask_id, *body[1:], model.eos_id, *body])
    assert model.decode_completion(ids) == "Tom has 12"


# ---- family differences with fake modules --------------------------------------------------------
class FakeOutput:
    def __init__(self, logits):
        self.logits = logits


class FakeModule(torch.nn.Module):
    """logits[b, i, :] = [input id, i, 0, ...]: easy to see where each row came from. Records kwargs."""

    def __init__(self, vocab=8):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.vocab, self.calls = vocab, []

    def forward(self, input_ids, attention_mask=None, position_ids=None, attention_bias=None):
        self.calls.append({"attention_mask": attention_mask, "position_ids": position_ids,
                           "attention_bias": attention_bias})
        B, L = input_ids.shape
        out = torch.zeros(B, L, self.vocab)
        out[..., 0] = input_ids.float()
        out[..., 1] = torch.arange(L).float()
        return FakeOutput(out)


def test_dream_logits_are_shifted_back_by_one_position():
    fake = FakeModule()
    model = DiffusionModel(fake, None, name="dream", mask_id=7, pad_id=0, eos_id=1, family="dream")
    ids = torch.tensor([[3, 4, 5, 6]])
    out = model.logits(ids)
    # Dream's row i predicts token i+1, so the adapter's row i is Dream's row i-1; row 0 keeps its own
    assert out[0, :, 1].tolist() == [0.0, 0.0, 1.0, 2.0]
    assert out[0, :, 0].tolist() == [3.0, 3.0, 4.0, 5.0]


def test_generic_models_get_no_shift():
    model = DiffusionModel(FakeModule(), None, name="bert", mask_id=7, pad_id=0, eos_id=1)
    assert model.logits(torch.tensor([[3, 4, 5]]))[0, :, 1].tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("family, expected", [
    ("dream", {"attention_mask": (1, 1, 3, 3), "position_ids": (1, 3)}),
    ("mmada", {"attention_bias": (1, 1, 3, 3)}),
    ("llada", {"attention_bias": (1, 1, 3, 3)}),  # never its 2-D mask: upstream makes that causal
    ("generic", {"attention_mask": (1, 3), "position_ids": (1, 3)}),
])
def test_padding_reaches_each_family_in_its_own_form(family, expected):
    fake = FakeModule()
    model = DiffusionModel(fake, None, name=family, mask_id=7, pad_id=0, eos_id=1, family=family)
    model.logits(torch.tensor([[0, 4, 5]]), torch.tensor([[False, True, True]]))
    got = {k: tuple(v.shape) for k, v in fake.calls[-1].items() if v is not None}
    assert got == expected
    if "position_ids" in expected:
        assert fake.calls[-1]["position_ids"].tolist() == [[0, 0, 1]]  # counted from the first real token
    model.logits(torch.tensor([[3, 4, 5]]), torch.tensor([[True, True, True]]))
    assert all(v is None for v in fake.calls[-1].values())  # no padding: the plain full-attention path


def test_mmada_image_codebook_follows_the_text_vocabulary(tok):
    class Cfg:
        codebook_size = 8192

    assert models._image_token_range(Cfg(), tok, "mmada") == (len(tok), len(tok) + 8192)
    assert models._image_token_range(Cfg(), tok, "llada") is None

    class Explicit:
        image_token_range = [100, 164]

    assert models._image_token_range(Explicit(), tok, "generic") == (100, 164)


def test_family_comes_from_the_model_type():
    class C:
        model_type = "Dream"

    assert models._family(C()) == "dream"
    C.model_type = "llada"
    assert models._family(C()) == "llada"
    C.model_type = "bert"
    assert models._family(C()) == "generic"


def test_the_generate_deprecation_notice_is_dropped_and_other_transformers_warnings_are_not():
    # RoFormerForMaskedLM defines prepare_inputs_for_generation without GenerationMixin, so transformers
    # 4.5x prints a four-line notice whenever one is built (every tiny-model load). The harness never
    # calls .generate(); harness.models drops that one record and nothing else.
    import logging

    import transformers

    import harness.models as hm

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    cfg = transformers.RoFormerConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=16, max_position_embeddings=16)
    log = logging.getLogger("transformers.modeling_utils")
    ours = [f for f in log.filters if isinstance(f, hm._DropGenerateNotice)]
    assert ours, "harness.models must install its filter at import"
    keep = Keep()
    log.addHandler(keep)
    try:
        for f in ours:
            log.removeFilter(f)
        try:
            transformers.RoFormerForMaskedLM(cfg)
        finally:
            for f in ours:
                log.addFilter(f)
        unfiltered, keep.messages = keep.messages, []
        if not any("GenerationMixin" in m for m in unfiltered):
            pytest.skip("this transformers version no longer prints the notice")
        transformers.RoFormerForMaskedLM(cfg)
        log.warning("another notice from transformers")
    finally:
        log.removeHandler(keep)
    assert not any("GenerationMixin" in m for m in keep.messages)
    assert "another notice from transformers" in keep.messages


def test_weights_sha256_identifies_local_weights_and_skips_what_it_cannot_hash_cheaply(tmp_path, monkeypatch):
    from harness import models

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "b.safetensors").write_bytes(b"c")
    (folder / "a.safetensors").write_bytes(b"ab")
    (folder / "ignored.bin").write_bytes(b"zzz")  # safetensors present: .bin files are not the weights
    abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256("abc"), FIPS 180-2
    assert models.weights_sha256(f"hf:{folder}") == abc  # the files in name order, as one stream
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    tiny = models.tiny_model_path("arith")
    tiny.mkdir(parents=True)
    (tiny / "pytorch_model.bin").write_bytes(b"abc")
    assert models.weights_sha256("tiny", "arith") == abc
    assert models.weights_sha256("tiny", "mbpp") is None  # nothing cached
    assert models.weights_sha256("gold") is None and models.weights_sha256("GSAI-ML/LLaDA-8B-Instruct") is None
    assert models.weights_sha256(f"hf:{tmp_path / 'missing'}") is None
    monkeypatch.setattr(models, "HASH_LIMIT_BYTES", 2)  # 3 bytes of weights: too large to hash
    assert models.weights_sha256(f"hf:{folder}") is None
