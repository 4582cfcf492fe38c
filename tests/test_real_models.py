"""The real LLaDA and Dream code paths, on the tiny random-weight fixtures in ../shared/models/.

The fixtures are built from the unmodified upstream modeling files, so these tests exercise exactly the
code a user's hub folder holds: loading, padding, decoding parity with the published algorithms, and one
RL update. The reference decoders here are written from the papers (LLaDA appendix B) or are the upstream
generator itself (Dream's `diffusion_generate`), never the harness's own sampler.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from harness.models import DiffusionModel, ModelError, load_model, padding_error
from harness.sampling import DecodeConfig, generate

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
LLADA, DREAM = MODELS / "llada-tiny", MODELS / "dream-tiny"
pytestmark = pytest.mark.skipif(not (LLADA.is_dir() and DREAM.is_dir()),
                                reason="the tiny LLaDA/Dream fixtures live in ../shared/models")

PROMPTS = ["What is 2+3?", "Natalia sold clips to 48 of her friends in April.", "How many eggs?",
           "A train leaves at noon and arrives at 3 pm. How long is the trip?", "Janet has 3 ducks.",
           "Weng earns $12 an hour for babysitting.", "Betty is saving money for a new wallet which costs $100.",
           "James writes a 3-page letter to 2 different friends twice a week."]


@pytest.fixture(scope="module")
def llada():
    return load_model(f"hf:{LLADA}")


@pytest.fixture(scope="module")
def dream():
    return load_model(f"hf:{DREAM}")


def test_fixtures_load_as_their_families(llada, dream):
    assert (llada.family, llada.mask_id, llada.eos_id) == ("llada", 126336, 126081)
    assert type(llada.module).__name__ == "LLaDAModelLM"
    assert (dream.family, dream.mask_id) == ("dream", 1503)
    assert type(dream.module).__name__ == "DreamModel"


@pytest.mark.parametrize("which", ["llada", "dream"])
@pytest.mark.parametrize("pad", [1, 3, 7])
def test_a_left_padded_row_has_the_logits_of_the_row_alone(which, pad, request):
    model = request.getfixturevalue(which)
    ids, _ = model.encode_prompts(["Natalia sold clips to 48 of her friends in April, and then half as many."])
    row = torch.cat([ids[0], torch.full((6,), model.mask_id)])  # prompt + a masked completion
    padded = torch.cat([torch.full((pad,), model.pad_id), row])
    other = torch.cat([row[:pad], row])  # an unpadded neighbour of the same length
    batch = torch.stack([padded, other])
    keep = torch.ones_like(batch, dtype=torch.bool)
    keep[0, :pad] = False
    with torch.no_grad():
        both = model.logits(batch, keep)
        alone = model.logits(row[None])
        alone_other = model.logits(other[None])
    assert (both[0, pad:] - alone[0]).abs().max().item() <= 1e-4
    assert (both[1] - alone_other[0]).abs().max().item() <= 1e-4


def test_llada_given_its_2d_attention_mask_is_refused_at_load(monkeypatch):
    """The upstream code turns a 2-D mask into a causal bias; the load-time probe must catch that."""
    def old_kwargs(self, attention_mask):
        if attention_mask is None or bool(attention_mask.all()):
            return {}
        return {"attention_mask": attention_mask.long()}

    monkeypatch.setattr(DiffusionModel, "_forward_kwargs", old_kwargs)
    with pytest.raises(ModelError, match="left-padded by 3 tokens gets logits"):
        load_model(f"hf:{LLADA}")


def test_padding_probe_passes_on_both_fixtures(llada, dream):
    assert padding_error(llada) is None and padding_error(dream) is None


@pytest.mark.parametrize("which,cfg", [
    ("llada", DecodeConfig(gen_length=16, block_length=8, steps=8)),
    ("dream", DecodeConfig(gen_length=16, block_length=8, steps=8)),
])
# Not the dream sampler: on random weights its confidences of the still-masked positions tie to 1e-6
# (entropy of a near-uniform 1.5k vocabulary), and the 3e-7 float differences of a batched forward
# reorder them; a trained model's confidences are not tied like that.
def test_greedy_completions_are_the_same_one_by_one_and_as_one_batch(which, cfg, request):
    model = request.getfixturevalue(which)
    ids, attn = model.encode_prompts(PROMPTS)
    assert not bool(attn.all())  # the batch really is padded
    batch = generate(model, ids, attn, cfg).completion_ids
    for i, p in enumerate(PROMPTS):
        one_ids, one_attn = model.encode_prompts([p])
        assert bool(one_attn.all())
        alone = generate(model, one_ids, one_attn, cfg).completion_ids[0]
        assert torch.equal(alone, batch[i]), f"prompt {i} decodes differently inside a padded batch"


# ---- LLaDA's published decoder (Nie et al. 2025, appendix B, Algorithm 4 with low-confidence remasking) ----

def published_llada_decode(module, prompt: torch.Tensor, steps: int, gen_length: int, block_length: int,
                           mask_id: int) -> tuple[torch.Tensor, bool]:
    """Semi-autoregressive blocks left to right; each block gets steps/num_blocks steps; a step predicts
    every masked token by argmax, scores it by its softmax probability over the whole vocabulary, and
    commits the k most confident masked tokens of the current block, k splitting the block's masked count
    as evenly as possible over its steps with the remainder on the first steps.

    Returns the completion and whether the model's argmax was ever the mask id at a masked position (the
    harness never samples the mask id; the published decoder would, so parity is claimed only without it).
    """
    P = prompt.shape[1]
    x = torch.cat([prompt, torch.full((1, gen_length), mask_id, dtype=torch.long)], dim=1)
    per_block = steps // (gen_length // block_length)
    argmax_was_mask = False
    for b in range(gen_length // block_length):
        start, end = P + b * block_length, P + (b + 1) * block_length
        n = int((x[:, start:end] == mask_id).sum())
        counts = [n // per_block + (1 if i < n % per_block else 0) for i in range(per_block)]
        for k in counts:
            masked = x == mask_id
            with torch.no_grad():
                logits = module(x).logits
            pred = logits.argmax(-1)
            argmax_was_mask |= bool((pred[masked] == mask_id).any())
            prob = F.softmax(logits.double(), dim=-1).gather(-1, pred[..., None])[..., 0]
            prob[:, end:] = -math.inf
            conf = torch.where(masked, prob, torch.full_like(prob, -math.inf))
            chosen = conf[0].topk(k).indices
            x[0, chosen] = pred[0, chosen]
    return x[:, P:], argmax_was_mask


@pytest.mark.parametrize("gen_length,block_length,steps", [(16, 8, 8), (24, 8, 12), (16, 16, 5)])
def test_low_confidence_at_temperature_0_is_the_published_llada_decoder(llada, gen_length, block_length, steps):
    cfg = DecodeConfig(gen_length=gen_length, block_length=block_length, steps=steps, temperature=0.0)
    for p in PROMPTS[:4]:
        ids, attn = llada.encode_prompts([p])
        ours = generate(llada, ids, attn, cfg).completion_ids
        ref, argmax_was_mask = published_llada_decode(llada.module, ids, steps, gen_length, block_length,
                                                      llada.mask_id)
        assert not argmax_was_mask  # the precondition of parity, checked rather than assumed
        assert torch.equal(ours, ref), p


def _upstream_dream_generate(dream, ids, gen_length, steps, alg):
    """Dream's own `diffusion_generate` from the fixture's unmodified generation_utils.py."""
    upstream = sys.modules[type(dream.module).__module__]
    config = upstream.DreamGenerationConfig(max_new_tokens=gen_length, steps=steps, alg=alg, temperature=0.0,
                                            mask_token_id=dream.mask_id, pad_token_id=dream.pad_id,
                                            eos_token_id=dream.eos_id)
    saw_mask = []

    def hook(step, x, logits):  # is the model's argmax ever the mask id at a masked position?
        saw_mask.append(bool((logits[x == dream.mask_id].argmax(-1) == dream.mask_id).any()))
        return logits

    out = dream.module.diffusion_generate(ids, generation_config=config, generation_logits_hook_func=hook)
    seq = out.sequences if hasattr(out, "sequences") else out
    return seq[:, ids.shape[1]:], any(saw_mask)


@pytest.mark.parametrize("alg", ["entropy", "maskgit_plus", "topk_margin"])
def test_dream_sampler_matches_dreams_own_diffusion_generate(dream, alg):
    cfg = DecodeConfig(sampler="dream", gen_length=16, steps=8, alg=alg, temperature=0.0)
    for p in PROMPTS[:4]:
        ids, attn = dream.encode_prompts([p])
        ours = generate(dream, ids, attn, cfg).completion_ids
        ref, saw_mask = _upstream_dream_generate(dream, ids, 16, 8, alg)
        assert not saw_mask
        assert torch.equal(ours, ref), (alg, p)


# ---- loading failures --------------------------------------------------------------------------------

def _broken_folder(tmp_path: Path, error: str) -> Path:
    """A copy of the Dream fixture whose model class fails in __init__, as upstream code under an
    incompatible transformers does."""
    folder = tmp_path / "broken"
    folder.mkdir()
    for f in DREAM.iterdir():
        text = f.read_bytes()
        if f.name == "modeling_dream.py":
            text += (b"\n\ndef _fail(self, *args, **kwargs):\n    raise " + error.encode() + b"\n\n\n"
                     b"DreamModel.__init__ = _fail\n")
        (folder / f.name).write_bytes(text)
    return folder


def test_a_model_whose_code_fails_to_load_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    from harness.cli import main

    folder = _broken_folder(tmp_path, "AttributeError(\"'DreamModel' object has no attribute 'all_tied_weights_keys'\")")
    data = tmp_path / "g.jsonl"
    data.write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    code = main(["eval", "--task", "gsm8k", "--model", f"hf:{folder}", "--data", str(data),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "all_tied_weights_keys" in err
    # under transformers 5 the message names the supported range
    import transformers

    monkeypatch.setattr(transformers, "__version__", "5.3.0")
    code = main(["eval", "--task", "gsm8k", "--model", f"hf:{folder}", "--data", str(data),
                 "--out", str(tmp_path / "out2")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "transformers>=4.46,<5" in err


# ---- one RL update on the fixtures -------------------------------------------------------------------

def test_a_non_zero_advantage_changes_the_fixture_weights():
    """Random weights earn zero task reward, so the reward here is built to differ between completions
    (the number of distinct tokens): non-zero advantages, one MaskGRPO step, weights must move."""
    from tasks.base import Example, Task
    from tasks.rewards import per_item
    from trainers.loop import TrainConfig, train

    class Varied(Task):
        name, kind = "varied", "text"
        gen_defaults = {"gen_length": 8, "block_length": 8, "steps": 4}

        def extract(self, completion):
            return completion

        def verify(self, completion, reference):
            return None

        default_rewards = {"distinct": 1.0}

        def reward_functions(self):
            return {"distinct": per_item("distinct", lambda ex, c, k: float(len(set(c))), "distinct characters")}

    examples = [Example(id=i, prompt=p, reference="") for i, p in enumerate(PROMPTS[:2])]
    for folder in (DREAM, LLADA):
        model = load_model(f"hf:{folder}")
        params = [p for p in model.module.parameters() if p.requires_grad]
        before = [p.detach().clone() for p in params]
        # no weight decay: AdamW's decoupled decay would move the weights even with a zero gradient
        cfg = TrainConfig(steps=1, prompts_per_step=2, num_generations=3, lr=1e-3, temperature=1.0, eval_every=0,
                          weight_decay=0.0, method_overrides={"mu": 1})
        res = train(model, Varied(), "maskgrpo", examples, [], cfg, seed=0, progress=False)
        row = res.curve[0]
        assert row["reward_std"] > 0  # completions of a prompt earned different rewards: A != 0
        assert math.isfinite(row["loss"]) and row["grad_norm"] > 0, folder.name
        assert any(not torch.equal(b, p.detach()) for b, p in zip(before, params)), folder.name
