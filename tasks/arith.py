"""arith: GSM8K-format arithmetic word problems, generated from a seed (the embedded sibling of gsm8k).

    harness pretrain --task arith && harness eval --task arith --model tiny
    harness eval --task arith --model gold --split train --limit 100

Each problem is a one- to three-step story about a person and some objects ("Chloe has 3 jars with 9
eggs in each. She loses 10. She picks 2 more. How many eggs does Chloe have now?"); every amount stays
within 0..99 and divisions are exact. The worked solution has one line per step with zero-padded
two-digit numbers, each step continuing from the previous result:

    03*09=27
    -10=17
    +02=19

and the answer, a plain integer, in `\\boxed{}`, so the gsm8k verifier, extraction and reward score arith
unchanged. Why this format (measured with the tiny model, see harness/pretrain.py): a fixed width puts
every digit at a fixed offset in its line (a prototype went from 33% to 50% with zero padding); not
repeating the running total makes each intermediate result appear once, so it must be computed rather
than copied from the next line. Three amounts in four that are added or taken away are round (10-40):
in a few CPU minutes the model learns the tens of a sum long before the units table (after 3000 steps
it got the tens digit of a two-digit sum right 75% of the time and the units digit at chance), so fully
random amounts left base accuracy near 10%; the other quarter keeps full two-digit sums in the test.

Splits: `test` (2000 problems), `train` (20000) and `validation` (1000, for choosing RL settings) come
from fixed generator seeds; questions are unique within a split and no test question appears in the
others (generation skips any such question; checked in tests/test_embedded_tasks.py). `--data FILE` loads a saved file of
GSM8K rows `{question, answer}` instead (`records(split)` gives the rows to save).

Departure from gsm8k: the prompt is the question alone, without gsm8k's instruction line (16 tokens, a
third of an arith prompt, on every training step of the CPU model); the embedded model learns the format
from its training data. A chat model evaluated on arith is therefore not told the format.
"""

from __future__ import annotations

import random
from dataclasses import replace
from functools import lru_cache

from tasks.base import TASKS, Example
from tasks.gsm8k import GSM8K

SPLIT_SIZES = {"test": 2000, "train": 20000, "validation": 1000}
SPLIT_SEEDS = {"test": 1_000_003, "train": 2_000_003, "validation": 3_000_003}  # fixed: the splits are part of the benchmark
MAX_VALUE = 99  # two digits, the width of the worked solution

PROMPT_TEMPLATE = "{question}"

NAMES = [("Mia", "she"), ("Tom", "he"), ("Ava", "she"), ("Leo", "he"), ("Zoe", "she"), ("Sam", "he"),
         ("Lily", "she"), ("Ben", "he"), ("Emma", "she"), ("Jack", "he"), ("Nora", "she"), ("Max", "he"),
         ("Ella", "she"), ("Noah", "he"), ("Ruby", "she"), ("Liam", "he"), ("Chloe", "she"), ("Owen", "he"),
         ("Grace", "she"), ("Finn", "he"), ("Ivy", "she"), ("Luke", "he"), ("Anna", "she"), ("Ryan", "he")]
OBJECTS = ["apples", "pencils", "stickers", "marbles", "cookies", "books", "cards", "shells", "stamps", "coins",
           "eggs", "flowers", "toys", "candies", "beads", "rocks", "balloons", "oranges", "buttons", "crayons"]
CONTAINERS = ["boxes", "bags", "packs", "baskets", "jars", "trays"]
ADD_VERBS = ["buys {b} more", "finds {b} more", "gets {b} more", "picks {b} more", "wins {b} more"]
SUB_VERBS = ["gives {b} to {friend}", "sells {b}", "loses {b}", "gives away {b}", "uses {b}"]
TIMES = {2: "doubles", 3: "triples"}
PARTS = {2: "half", 3: "a third", 4: "a quarter", 5: "a fifth"}
ROUND_SHARE = 0.75  # share of round amounts (10, 20, 30, 40) among the amounts added or taken away


def _line(x: int, op: str, y: int, z: int, first: bool) -> str:
    """`07+15=22` for the first step; later steps continue from the previous result: `*02=44`."""
    return f"{x:02d}{op}{y:02d}={z:02d}" if first else f"{op}{y:02d}={z:02d}"


def make_problem(rng: random.Random) -> dict:
    """One GSM8K row `{question, answer}`: a story of 1-3 arithmetic steps with its worked solution."""
    name, pron = rng.choice(NAMES)
    friend = rng.choice([n for n, _ in NAMES if n != name])
    obj = rng.choice(OBJECTS)
    n_steps = rng.randint(1, 3)
    sentences, lines = [], []
    together = False
    # the starting amount: a plain count, containers times items each (one step), or two people's
    # amounts added up (two steps)
    start = rng.random()
    if n_steps >= 2 and start < 0.3:
        k, each = rng.randint(2, 6), rng.randint(2, 15)
        x = k * each
        sentences.append(f"{name} has {k} {rng.choice(CONTAINERS)} with {each} {obj} in each.")
        lines.append(_line(k, "*", each, x, first=True))
        question = f"How many {obj} does {name} have now?"
    elif n_steps >= 2 and start < 0.5:
        a, b = rng.randint(2, 40), rng.randint(1, 19)
        x = a + (a + b)
        sentences.append(f"{name} has {a} {obj}. {friend} has {b} more than {name}.")
        lines += [_line(a, "+", b, a + b, first=True), _line(a + b, "+", a, x, first=False)]
        question = f"How many {obj} do they have together?"
        together = True
    else:
        x = rng.randint(2, 60)
        sentences.append(f"{name} has {x} {obj}.")
        question = f"How many {obj} does {name} have now?"
    subject = "They" if together else pron.capitalize()
    for _ in range(n_steps - len(lines)):
        x = _step(rng, x, subject, friend, sentences, lines, plural=together)
    return {"question": " ".join(sentences + [question]), "answer": "\n".join(lines) + f"\n#### {x}"}


def _step(rng, x: int, subject: str, friend: str, sentences: list, lines: list, plural: bool) -> int:
    """Append one operation on the current amount `x` (sentence and solution line); return the new amount."""
    options = (["add"] if x < MAX_VALUE else []) + (["sub"] if x >= 2 else [])
    options += ["mul"] if x * 2 <= MAX_VALUE else []  # (add and sub need room for at least 1)
    options += ["div"] if any(x % k == 0 for k in PARTS) and x >= 4 else []
    op = rng.choice(options)
    if op == "add":
        b = _amount(rng, MAX_VALUE - x)
        sentences.append(f"{subject} {_verb(rng.choice(ADD_VERBS), plural).format(b=b)}.")
        lines.append(_line(x, "+", b, x + b, first=not lines))
        return x + b
    if op == "sub":
        b = _amount(rng, x - 1)
        sentences.append(f"{subject} {_verb(rng.choice(SUB_VERBS), plural).format(b=b, friend=friend)}.")
        lines.append(_line(x, "-", b, x - b, first=not lines))
        return x - b
    if op == "mul":
        k = rng.choice([k for k in TIMES if x * k <= MAX_VALUE])
        sentences.append(f"{subject} {_verb(TIMES[k], plural)} them.")
        lines.append(_line(x, "*", k, x * k, first=not lines))
        return x * k
    k = rng.choice([k for k in PARTS if x % k == 0])
    sentences.append(f"{subject} {_verb('keeps', plural)} {PARTS[k]} of them.")
    lines.append(_line(x, "/", k, x // k, first=not lines))
    return x // k


def _amount(rng, most: int) -> int:
    """An amount to add or take away, at most `most` (>= 1): a round 10-40 three times in four (the units
    digit carries over, so a line is one small addition of tens), else any 1-40 (a full two-digit sum)."""
    round_ones = [b for b in (10, 20, 30, 40) if b <= most]
    if round_ones and rng.random() < ROUND_SHARE:
        return rng.choice(round_ones)
    return rng.randint(1, min(40, most))


def _verb(phrase: str, plural: bool) -> str:
    """Third person singular -> plural for "they" ("buys" -> "buy", "gives away" -> "give away")."""
    if not plural:
        return phrase
    first, _, rest = phrase.partition(" ")
    return f"{first[:-1]} {rest}".rstrip()


@lru_cache(maxsize=4)
def _split_records(split: str) -> tuple[dict, ...]:
    if split not in SPLIT_SIZES:
        raise ValueError(f"arith has splits {', '.join(SPLIT_SIZES)}, not {split!r}")
    # train excludes test; validation (for choosing RL settings, never the test split) excludes both
    exclude = {r["question"] for r in _split_records("test")} if split != "test" else set()
    if split == "validation":
        exclude |= {r["question"] for r in _split_records("train")}
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
    # what the tiny model is trained for: completions fit in 32 tokens (the longest, a three-step
    # solution, is 27 with its scaffolding). Two tokens per step: on 500 test problems the tiny model
    # scored 27.4% with 16 steps and 28.0% with 32 (block 8, 16 or 32 alike), at half the eval time
    gen_defaults = {"gen_length": 32, "block_length": 16, "steps": 16}
    # the tiny model's tokenizer writes the fixed scaffolding of wrap_solution as three tokens
    tiny_tokens = ("<reasoning>\n", "\n</reasoning>\n<answer>\n\\boxed{", "}\n</answer>")
    # `harness pretrain` budget: 2400 steps of batch 32, cut at 280 s on a slow or busy machine
    # (2400 steps took 232 s on 2 idle cores)
    pretrain_steps = 2400
    # RL (every method alike): roll out 4 x 8 prompts per step and train on the 8 groups with mixed rewards
    # first (DAPO's dynamic sampling, capped). Without it 60% of the groups had equal rewards and 100 steps
    # left validation accuracy flat or lower; with it +2.5 points [+0.5, +4.5] (docs/RL_SETTINGS.md)
    rl_defaults = {"oversample": 4}

    def load(self, data: str | None = None, split: str = "test", limit: int | None = None) -> list[Example]:
        if data:
            return super().load(data, split=split, limit=limit)
        rows = _split_records(split)[:limit] if limit else _split_records(split)
        return [replace(self.to_example(dict(r), i), id=f"{split}-{i}") for i, r in enumerate(rows)]

    def format_prompt(self, example: Example) -> str:
        return PROMPT_TEMPLATE.format(question=example.prompt)
