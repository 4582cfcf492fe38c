"""arith: GSM8K-format arithmetic word problems, generated from a seed (the embedded sibling of gsm8k).

    harness pretrain --task arith && harness eval --task arith --model tiny
    harness eval --task arith --model gold --split train --limit 100

Each problem is a one- to three-step story about a person and some objects ("Mia has 23 pencils.
She buys 14 more. Then the number of pencils doubles. How many pencils does Mia have now?") with small
non-negative integers (every intermediate value below 1000, divisions exact). The worked solution is
one line per step with zero-padded three-digit numbers (`023+014=037`, `037*002=074`): a fixed width
puts every digit in the same place, which a small model learns much faster (a prototype went from 33%
to 50% greedy accuracy with it). The final answer in `\\boxed{}` is a plain integer, so the gsm8k
verifier, extraction and reward score arith unchanged.

Splits: `test` (2000 problems) and `train` (20000) come from fixed generator seeds; questions are
unique within a split and no test question appears in train (checked by text, and generation skips
any train question that is a test question). `--data FILE` loads a saved file of GSM8K rows
`{question, answer}` instead (`records(split)` gives the rows to save).

Departure from gsm8k: the prompt asks for the format in one short line instead of gsm8k's long
instruction, to keep the sequences of the CPU model short; a chat model is still told the format.
"""

from __future__ import annotations

import random
from dataclasses import replace
from functools import lru_cache

from tasks.base import TASKS, Example
from tasks.gsm8k import GSM8K

SPLIT_SIZES = {"test": 2000, "train": 20000}
SPLIT_SEEDS = {"test": 1_000_003, "train": 2_000_003}  # fixed: the splits are part of the benchmark
MAX_VALUE = 999  # three digits, the width of the worked solution

PROMPT_TEMPLATE = "{question}\nAnswer as <reasoning> steps </reasoning> <answer> \\boxed{{N}} </answer>."

NAMES = [("Mia", "she"), ("Tom", "he"), ("Ava", "she"), ("Leo", "he"), ("Zoe", "she"), ("Sam", "he"),
         ("Lily", "she"), ("Ben", "he"), ("Emma", "she"), ("Jack", "he"), ("Nora", "she"), ("Max", "he"),
         ("Ella", "she"), ("Noah", "he"), ("Ruby", "she"), ("Liam", "he"), ("Chloe", "she"), ("Owen", "he"),
         ("Grace", "she"), ("Finn", "he"), ("Ivy", "she"), ("Luke", "he"), ("Anna", "she"), ("Ryan", "he")]
OBJECTS = ["apples", "pencils", "stickers", "marbles", "cookies", "books", "cards", "shells", "stamps", "coins",
           "eggs", "flowers", "toys", "candies", "beads", "rocks", "balloons", "oranges", "buttons", "crayons"]
CONTAINERS = ["boxes", "bags", "packs", "baskets", "jars", "trays"]
ADD_VERBS = ["buys {b} more", "finds {b} more", "gets {b} more", "picks {b} more", "wins {b} more"]
SUB_VERBS = ["gives {b} to {friend}", "sells {b}", "loses {b}", "gives away {b}", "uses {b}"]
TIMES = {2: "doubles", 3: "triples", 4: "quadruples"}


def _fmt(x: int) -> str:
    return f"{x:03d}"


def _line(x: int, op: str, y: int, z: int) -> str:
    return f"{_fmt(x)}{op}{_fmt(y)}={_fmt(z)}"


def make_problem(rng: random.Random) -> dict:
    """One GSM8K row `{question, answer}`: a story of 1-3 arithmetic steps with its worked solution."""
    name, pron = rng.choice(NAMES)
    friend = rng.choice([n for n, _ in NAMES if n != name])
    obj = rng.choice(OBJECTS)
    Pron = pron.capitalize()
    n_steps = rng.randint(1, 3)
    sentences, lines = [], []

    # the starting amount: a plain count, or containers times items each (one step already)
    if n_steps >= 2 and rng.random() < 0.3:
        k, each = rng.randint(2, 9), rng.randint(2, 30)
        x = k * each
        sentences.append(f"{name} has {k} {rng.choice(CONTAINERS)} with {each} {obj} in each.")
        lines.append(_line(k, "*", each, x))
    elif n_steps >= 2 and rng.random() < 0.25:
        a, b = rng.randint(2, 99), rng.randint(1, 60)
        x = a + (a + b)
        sentences.append(f"{name} has {a} {obj}. {friend} has {b} more {obj} than {name}.")
        lines += [_line(a, "+", b, a + b), _line(a, "+", a + b, x)]
        question = f"How many {obj} do {name} and {friend} have together?"
        return _row(sentences, lines, x, question, n_steps_left=n_steps - 2, rng=rng, obj=obj, pron=pron,
                    friend=friend, together=True)
    else:
        x = rng.randint(2, 99)
        sentences.append(f"{name} has {x} {obj}.")
    question = f"How many {obj} does {name} have now?"
    return _row(sentences, lines, x, question, n_steps_left=n_steps - len(lines), rng=rng, obj=obj,
                pron=Pron, friend=friend)


def _row(sentences, lines, x, question, *, n_steps_left, rng, obj, pron, friend, together=False) -> dict:
    subject = "They" if together else pron.capitalize()
    for _ in range(n_steps_left):
        options = (["add"] if x < MAX_VALUE else []) + (["sub"] if x >= 2 else [])
        options += ["mul"] if x * 2 <= MAX_VALUE else []
        options += ["div"] if any(x % k == 0 for k in (2, 3, 4, 5)) and x >= 4 else []
        op = rng.choice(options)
        if op == "add":
            b = rng.randint(1, min(99, MAX_VALUE - x))
            sentences.append(f"{subject} {_verb(rng.choice(ADD_VERBS), together).format(b=b, friend=friend)}.")
            lines.append(_line(x, "+", b, x + b))
            x += b
        elif op == "sub":
            b = rng.randint(1, min(99, x - 1))
            sentences.append(f"{subject} {_verb(rng.choice(SUB_VERBS), together).format(b=b, friend=friend)}.")
            lines.append(_line(x, "-", b, x - b))
            x -= b
        elif op == "mul":
            k = rng.choice([k for k in TIMES if x * k <= MAX_VALUE])
            sentences.append(f"Then the number of {obj} {TIMES[k]}.")
            lines.append(_line(x, "*", k, x * k))
            x *= k
        else:
            k = rng.choice([k for k in (2, 3, 4, 5) if x % k == 0])
            sentences.append(f"{subject} {'split' if together else 'splits'} the {obj} into {k} equal groups "
                             f"and {'keep' if together else 'keeps'} one group.")
            lines.append(_line(x, "/", k, x // k))
            x //= k
    return {"question": " ".join(sentences + [question]), "answer": "\n".join(lines) + f"\n#### {x}"}


def _verb(phrase: str, together: bool) -> str:
    """Third person singular -> plural for "they" ("buys" -> "buy", "gives away" -> "give away")."""
    if not together:
        return phrase
    first, _, rest = phrase.partition(" ")
    return f"{first[:-1]} {rest}"


@lru_cache(maxsize=4)
def _split_records(split: str) -> tuple[dict, ...]:
    if split not in SPLIT_SIZES:
        raise ValueError(f"arith has splits {', '.join(SPLIT_SIZES)}, not {split!r}")
    exclude = {r["question"] for r in _split_records("test")} if split == "train" else set()
    return tuple(generate(SPLIT_SIZES[split], SPLIT_SEEDS[split], exclude=exclude))


def generate(n: int, seed: int, exclude: set[str] = frozenset()) -> list[dict]:
    """`n` distinct problems from `seed`, none of whose question text is in `exclude`."""
    rng = random.Random(seed)
    seen, rows = set(exclude), []
    while len(rows) < n:
        row = make_problem(rng)
        if row["question"] not in seen:
            seen.add(row["question"])
            rows.append(row)
    return rows


def records(split: str = "test") -> list[dict]:
    """The GSM8K-format rows of a generated split (to save as a `--data` file)."""
    return [dict(r) for r in _split_records(split)]


@TASKS.register("arith")
class Arith(GSM8K):
    name = "arith"
    hub_id = None
    default_data_hint = ""
    embedded = True
    # what the tiny model is trained for: completions fit in 48 tokens (the longest, a three-step
    # solution, is 42 with its scaffolding); 2 tokens per step keeps a 2000-problem eval near 1 CPU minute
    gen_defaults = {"gen_length": 48, "block_length": 16, "steps": 24}
    # the tiny model's tokenizer writes the fixed scaffolding of wrap_solution as three tokens
    tiny_tokens = ("<reasoning>\n", "\n</reasoning>\n<answer>\n\\boxed{", "}\n</answer>")
    pretrain_seconds = 240.0  # `harness pretrain` budget on 2 CPU cores

    def load(self, data: str | None = None, split: str = "test", limit: int | None = None) -> list[Example]:
        if data:
            return super().load(data, split=split, limit=limit)
        rows = _split_records(split)[:limit] if limit else _split_records(split)
        return [replace(self.to_example(dict(r), i), id=f"{split}-{i}") for i, r in enumerate(rows)]

    def format_prompt(self, example: Example) -> str:
        return PROMPT_TEMPLATE.format(question=example.prompt)
