"""Shared fakes for the tests: a tiny trainable model adapter, toy tasks and their examples.

Fixtures that hand them out live in tests/conftest.py; a test that needs the classes imports them
(`from fakes import TinyBert`) instead of writing its own.
"""

from __future__ import annotations

import math

import torch
from transformers import BertConfig, BertForMaskedLM

from harness.models import DecodingModel
from tasks.base import Example, Task
from tasks.rewards import per_item
from trainers.estimators import RolloutBatch

PAD, MASK, EOS = 0, 1, 2
LETTERS = "abcdefghijklm"  # ids 3..15
V = 3 + len(LETTERS)


class TinyBert(DecodingModel):
    """A DiffusionModel-like adapter around a 2-layer BertForMaskedLM; char-level tokens."""

    def __init__(self, seed=0, image=False):
        torch.manual_seed(seed)
        cfg = BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)  # dropout 0.1: the loop must turn it off
        self.module = BertForMaskedLM(cfg)
        self.mask_id, self.pad_id, self.eos_id = MASK, PAD, (None if image else EOS)
        self.image_token_range = (3, V) if image else None
        self.device, self.name, self.tokenizer = torch.device("cpu"), "tiny-bert", None
        self.poison = False

    def logits(self, input_ids, attention_mask=None):
        am = None if attention_mask is None else attention_mask.long()
        out = self.module(input_ids=input_ids, attention_mask=am).logits
        return out * math.nan if self.poison else out

    def encode_prompts(self, prompts):
        rows = [[3 + LETTERS.index(c) for c in p] for p in prompts]
        P = max(len(r) for r in rows)
        ids = torch.tensor([[PAD] * (P - len(r)) + r for r in rows])
        return ids, ids != PAD

    def decode_completion(self, ids):
        out = []
        for t in ids.tolist():
            if t == EOS and self.eos_id is not None:
                break
            if t >= 3:
                out.append(LETTERS[t - 3])
        return "".join(out)


class ToyTask(Task):
    """Reward = fraction of completion characters equal to the reference letter."""

    name, kind = "toy", "text"
    gen_defaults = {"gen_length": 8, "block_length": 4, "steps": 4}

    def extract(self, completion):
        return completion

    def verify(self, completion, reference):
        return completion.count(reference) * 2 >= max(len(completion), 1)

    default_rewards = {"match": 1.0}

    def reward_functions(self):
        return {"match": per_item("match", lambda ex, c, k: c.count(ex.reference) / max(len(c), 1),
                                  "fraction of characters equal to the reference letter")}


class ToyImageTask(ToyTask):
    name, kind = "toy-image", "image"
    gen_defaults = {"sampler": "maskgit", "gen_length": 8, "block_length": 8, "steps": 4}


EXAMPLES = [Example(id=i, prompt=p, reference=r) for i, (p, r) in
            enumerate([("abc", "a"), ("bcd", "b"), ("cde", "c"), ("def", "d"), ("efg", "e"), ("fgh", "f")])]

# tiny budget: 2 steps x 2 prompts x 3 completions, 2 inner updates
TINY = dict(steps=2, prompts_per_step=2, num_generations=3, lr=1e-3, temperature=1.0, eval_every=0)


def weights(model):
    """Every parameter of a model adapter's module, flattened and copied: compare before/after training."""
    return torch.cat([p.detach().flatten().clone() for p in model.module.parameters()])


def uneven_batch(B=12, P=5, L=8, seed=0):
    """B rows with left-padded prompts of 1..P real tokens (the first half's longest is 3, so a process that
    holds only those rows pads to 3, not P), completions valid for 3..8 tokens and rows with different
    numbers of distinct commit steps (tracerl's examples)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([1, 2, 3, 2, 3, 1, 5, 4, 5, 3, 2, 4])[:B]  # (B,) real prompt tokens
    pmask = torch.arange(P)[None, :] >= (P - lengths)[:, None]  # (B, P) left padding
    prompt = torch.where(pmask, torch.randint(3, V, (B, P), generator=g), torch.zeros(B, P, dtype=torch.long))
    valid = torch.arange(L)[None, :] < torch.randint(3, L + 1, (B, 1), generator=g)  # (B, L)
    commit = torch.randint(0, 8, (B, L), generator=g) % torch.randint(1, 9, (B, 1), generator=g)  # (B, L)
    return RolloutBatch(prompt_ids=prompt, prompt_mask=pmask, completion_ids=torch.randint(3, V, (B, L), generator=g),
                        valid=valid, commit_step=commit, mask_id=MASK, block_length=4, seed=7)


def split_rows(b: RolloutBatch, rows: slice) -> RolloutBatch:
    """What a process holding `rows` of the step gets: those rows, padded to their own longest prompt,
    with their global identities."""
    pm = b.prompt_mask[rows]
    P = int(pm.sum(1).max())
    return RolloutBatch(prompt_ids=b.prompt_ids[rows, -P:], prompt_mask=pm[:, -P:],
                        completion_ids=b.completion_ids[rows], valid=b.valid[rows], commit_step=b.commit_step[rows],
                        mask_id=b.mask_id, kind=b.kind, block_length=b.block_length, seed=b.seed,
                        row_ids=torch.arange(b.B)[rows])


def make_tiny_clip(folder) -> str:
    """A randomly initialised tiny transformers CLIP (model, byte-level tokenizer, image processor) saved to
    `folder`, built here from configs: nothing is downloaded. Returns the folder."""
    import json
    from pathlib import Path

    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTextConfig,
        CLIPTokenizer,
        CLIPVisionConfig,
    )
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    eos, bos = vocab["<|endoftext|>"], vocab["<|startoftext|>"]
    text = CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, max_position_embeddings=77, projection_dim=16,
                          eos_token_id=eos, bos_token_id=bos, pad_token_id=eos)
    vision = CLIPVisionConfig(image_size=32, patch_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                              num_attention_heads=2, projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16)).save_pretrained(folder)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tok).save_pretrained(folder)
    return str(folder)


def write_random_roformer(folder, task: str = "arith", layers: int = 1) -> None:
    """A randomly initialised RoFormer (the tiny model's class, hidden 32, seed 0) with `task`'s tokenizer, saved
    where `harness.models.load_hf` reads it (config.json, weights, a tokenizer naming [MASK] and [EOS]): load it
    as `--model hf:<folder>`, or put it at `models.tiny_model_path(task)` to stand in for `--model tiny`."""
    import transformers

    from harness.tokenizer import build_tokenizer
    from tasks import get_task

    t = get_task(task)
    exs = t.load(split="train")[:2000] + t.load(split="test")
    tok = build_tokenizer([t.format_prompt(e) for e in exs] + [e.solution for e in exs],
                          multi=getattr(t, "tiny_tokens", ()))
    config = transformers.RoFormerConfig(
        vocab_size=len(tok), embedding_size=32, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=256, type_vocab_size=1, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, pad_token_id=tok.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = transformers.RoFormerForMaskedLM(config)
    module.save_pretrained(folder)
    tok.save_pretrained(folder)
