"""The embedded model's tokenizer: word-level, one token per digit, built locally with `tokenizers`.

    tok = build_tokenizer(texts)          # a transformers PreTrainedTokenizerFast
    tok.save_pretrained(folder)           # loads back with AutoTokenizer, like any hub tokenizer

Pieces: a space is written `▁` and glued to the word after it (`▁apples`); a word is letters and `_`;
every digit, punctuation mark and newline is its own piece; a space before a digit or a symbol is a
lone `▁`. A few markup strings (`<reasoning>`, `\\boxed{`, a code fence, and whatever the task adds,
such as a four-space indent) are single tokens, matched longest first. Decoding concatenates the pieces and turns `▁` back into a space, so decode(encode(text)) ==
text for any text whose words are in the vocabulary (others become [UNK]).

One token per digit lets a small model learn column arithmetic; a whole-word vocabulary keeps the
sequences short (a GSM8K-style problem is ~40 tokens instead of ~150 characters).

Id layout: 0 [PAD], 1 [UNK], 2 [MASK], 3 [EOS], then the pieces of the corpus, most frequent first.
Image codebook tokens (MMaDA-style, one vocabulary) are not reserved: an 8192-row codebook would be ten
times the text vocabulary and slow every softmax. A multimodal tiny model appends them after the text
ids (`add_tokens` + `resize_token_embeddings`) and records `image_token_range` in its config.json,
which `harness.models` reads.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

SPECIALS = ("[PAD]", "[UNK]", "[MASK]", "[EOS]")
SPACE = "\u2581"  # "▁"
PIECE_PATTERN = rf"{SPACE}?[A-Za-z_]+|{SPACE}|\d|[^{SPACE}A-Za-z_\d]"
_PIECE_RE = re.compile(PIECE_PATTERN)
# every digit and printable ASCII symbol is always in the vocabulary, seen in the corpus or not
_ALWAYS = [str(d) for d in range(10)] + [SPACE, "\n"] + [
    c for c in (chr(i) for i in range(33, 127)) if not (c.isalnum() or c == "_")]


# frequent markup, one token each (as a BPE merge would make it): the answer scaffolding of gsm8k/arith
# and the code fence of mbpp/minicode; a task adds its own (`Task.tiny_tokens`)
MULTI_PIECES = ("<reasoning>", "</reasoning>", "<answer>", "</answer>", "\\boxed{", "```python", "```")


def pieces(text: str) -> list[str]:
    """The pieces `text` splits into (the same split the built tokenizer applies)."""
    return _PIECE_RE.findall(text.replace(" ", SPACE))


def build_tokenizer(texts: Iterable[str], min_count: int = 1, multi: Iterable[str] = ()):
    """A word-level PreTrainedTokenizerFast whose vocabulary is every piece of `texts` seen >= min_count
    times, plus MULTI_PIECES and the `multi` strings as single tokens (matched in the raw text first)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    counts: Counter = Counter()
    for t in texts:
        counts.update(pieces(t))
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for p in _ALWAYS:
        vocab.setdefault(p, len(vocab))
    for p, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if c >= min_count:
            vocab.setdefault(p, len(vocab))

    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Replace(" ", SPACE)
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(PIECE_PATTERN), behavior="isolated")
    tok.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.Fuse()])
    extra = list(dict.fromkeys([*MULTI_PIECES, *multi]))
    tok.add_tokens([AddedToken(m, normalized=False, special=False) for m in extra])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   mask_token="[MASK]", eos_token="[EOS]", clean_up_tokenization_spaces=False,
                                   model_max_length=1024)
