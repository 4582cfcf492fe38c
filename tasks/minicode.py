"""minicode: MBPP-format Python function tasks generated from templates (the embedded sibling of mbpp).

    harness pretrain --task minicode && harness eval --task minicode --model tiny

Each task is a one-line specification, a function name and three assert tests, like an MBPP row
`{task_id, prompt, code, test_imports, test_list}`: "Write a function `scale_up` that returns x times 7
plus 3." with `assert scale_up(2) == 17`. Families cover arithmetic on one or two numbers, predicates,
list reductions and filters, and string operations; most take a constant (a number, a letter) from the
specification, and some compose two operations, so solving a test task means reading its spec, not
recalling a training task. Expected values come from running the reference, so every reference passes
its own tests (checked in tests/test_embedded_tasks.py through the sandbox, as the verifier runs it).

Splits: `test` (500 tasks) and `train` (8000) from fixed seeds; specifications are unique within a
split, and a specification belongs to one side only, chosen by a stable hash of its text (`split_of`),
so no test spec appears in train. Function names, argument names and constants come from pools shared
by both splits, so every identifier of a test task was seen in training. (Code can repeat across
splits when two phrasings give one body, e.g. `x * 2` from "times 2" and a spec with another name.)
`--data FILE` loads a saved MBPP-format file instead (`records(split)` gives the rows).

Scoring is mbpp's: the first python block of the completion runs in the sandbox against the asserts.
Departure from mbpp: the prompt is the spec and the first test, without mbpp's instruction line, to
keep the CPU model's sequences short (the embedded model learns the fenced format from its data).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace
from functools import lru_cache

from tasks.base import TASKS, Example
from tasks.mbpp import MBPP

SPLIT_SIZES = {"test": 500, "train": 8000}
TEST_SHARE = 5  # a spec belongs to the test side iff its stable hash is 0 modulo this
SPLIT_SEEDS = {"test": 3_000_017, "train": 4_000_037}

PROMPT_TEMPLATE = "{spec}\n{test}"

WORDS = ["apple", "banana", "cherry", "river", "stone", "garden", "python", "window", "yellow", "summer",
         "planet", "silver", "orange", "pencil", "rocket", "island", "butter", "candle", "dragon", "forest"]

# family -> (names, argument kind, spec, body); {k}/{m} are small ints, {c} a letter; {a} the argument name
# kinds: "int" one integer x, "int2" two integers, "list" a list of ints, "str" a string
FAMILIES: dict[str, tuple[list[str], str, str, str]] = {
    "add": (["add_const", "plus_k", "increase", "shift_up"], "int", "returns {a} plus {k}", "{a} + {k}"),
    "sub": (["sub_const", "minus_k", "decrease", "shift_down"], "int", "returns {a} minus {k}", "{a} - {k}"),
    "mul": (["scale", "times_k", "multiply", "grow"], "int", "returns {a} times {k}", "{a} * {k}"),
    "lin": (["scale_up", "affine", "linear", "transform"], "int", "returns {a} times {k} plus {m}",
            "{a} * {k} + {m}"),
    "lin2": (["offset_scale", "shift_mul", "adjust", "convert"], "int", "returns {a} plus {m}, times {k}",
             "({a} + {m}) * {k}"),
    "mod": (["remainder", "mod_k", "leftover", "cycle"], "int", "returns the remainder of {a} divided by {k}",
            "{a} % {k}"),
    "fdiv": (["floor_div", "div_k", "share", "groups"], "int", "returns {a} divided by {k}, rounded down",
             "{a} // {k}"),
    "square": (["square", "sq", "power_two", "self_mul"], "int", "returns the square of {a}", "{a} * {a}"),
    "even": (["is_even", "even", "check_even", "has_pair"], "int", "returns True if {a} is even", "{a} % 2 == 0"),
    "odd": (["is_odd", "odd", "check_odd", "not_even"], "int", "returns True if {a} is odd", "{a} % 2 == 1"),
    "divby": (["divisible", "is_multiple", "check_div", "divides"], "int",
              "returns True if {a} is divisible by {k}", "{a} % {k} == 0"),
    "gt": (["greater", "above", "is_big", "exceeds"], "int", "returns True if {a} is greater than {k}",
           "{a} > {k}"),
    "add2": (["add_two", "total", "combine", "sum_pair"], "int2", "returns the sum of {a} and {b}", "{a} + {b}"),
    "mul2": (["product", "mul_two", "times", "area"], "int2", "returns the product of {a} and {b}", "{a} * {b}"),
    "max2": (["bigger", "max_two", "larger", "top"], "int2", "returns the larger of {a} and {b}", "max({a}, {b})"),
    "diff2": (["distance", "gap", "abs_diff", "spread"], "int2", "returns the absolute difference of {a} and {b}",
              "abs({a} - {b})"),
    "maxl": (["max_item", "largest", "biggest", "peak"], "list", "returns the largest number in the list {a}",
             "max({a})"),
    "minl": (["min_item", "smallest", "lowest", "bottom"], "list", "returns the smallest number in the list {a}",
             "min({a})"),
    "suml": (["sum_list", "list_total", "add_all", "accumulate"], "list", "returns the sum of the list {a}",
             "sum({a})"),
    "lenl": (["count_items", "size", "length", "how_many"], "list", "returns the number of items in the list {a}",
             "len({a})"),
    "first": (["first", "head", "front", "get_first"], "list", "returns the first item of the list {a}", "{a}[0]"),
    "last": (["last", "tail_item", "back", "get_last"], "list", "returns the last item of the list {a}", "{a}[-1]"),
    "filt": (["keep_big", "filter_gt", "select", "above_k"], "list",
             "returns the numbers in the list {a} that are greater than {k}", "[v for v in {a} if v > {k}]"),
    "cntgt": (["count_big", "count_gt", "num_above", "tally"], "list",
              "returns how many numbers in the list {a} are greater than {k}", "len([v for v in {a} if v > {k}])"),
    "mapadd": (["add_each", "bump_all", "shift_list", "raise_all"], "list",
               "returns the list {a} with {k} added to each number", "[v + {k} for v in {a}]"),
    "mapmul": (["scale_each", "mul_all", "scale_list", "double_all"], "list",
               "returns the list {a} with each number multiplied by {k}", "[v * {k} for v in {a}]"),
    "rev": (["reverse", "flip", "backwards", "mirror"], "str", "returns the string {a} reversed", "{a}[::-1]"),
    "upper": (["shout", "to_upper", "caps", "loud"], "str", "returns the string {a} in upper case", "{a}.upper()"),
    "count": (["count_char", "letter_count", "occurrences", "freq"], "str",
              "returns how many times the letter '{c}' appears in the string {a}", "{a}.count('{c}')"),
    "starts": (["starts_with", "begins", "prefix_is", "opens_with"], "str",
               "returns True if the string {a} starts with the letter '{c}'", "{a}.startswith('{c}')"),
    "has": (["contains", "has_letter", "includes", "uses"], "str",
            "returns True if the letter '{c}' is in the string {a}", "'{c}' in {a}"),
    "rep": (["repeat", "echo", "copies", "multiply_str"], "str", "returns the string {a} repeated {k} times",
            "{a} * {k}"),
}
ARG_NAMES = {"int": ["x", "n", "num", "value"], "int2": [("a", "b"), ("x", "y"), ("m", "n"), ("p", "q")],
             "list": ["lst", "nums", "items", "values"], "str": ["s", "text", "word", "string"]}


def make_task(rng: random.Random) -> dict:
    """One MBPP-format row: spec, reference code and three asserts whose values come from the reference."""
    family = rng.choice(sorted(FAMILIES))
    names, kind, spec, body = FAMILIES[family]
    name = rng.choice(names)
    k, m = rng.randint(2, 30), rng.randint(1, 30)
    # a letter of some test word (for `starts`, the first letter of one), so predicates can be True
    word = rng.choice(WORDS)
    c = word[0] if family == "starts" else rng.choice(word)
    if kind == "int2":
        a, b = rng.choice(ARG_NAMES[kind])
        params = f"{a}, {b}"
    else:
        a, b = rng.choice(ARG_NAMES[kind]), None
        params = a
    fill = {"a": a, "b": b, "k": k, "m": m, "c": c}
    code = f"def {name}({params}):\n    return {body.format(**fill)}"
    prompt = f"Write a function {name} that {spec.format(**fill)}."
    namespace: dict = {}
    exec(code, namespace)  # trusted: our own template
    fn = namespace[name]
    for _ in range(50):  # redraw inputs until the expected values differ (when the function allows it)
        inputs = _inputs(kind, rng, k, c)
        if len({repr(fn(*args)) for args in inputs}) > 1:
            break
    tests = [f"assert {name}({', '.join(map(repr, args))}) == {fn(*args)!r}" for args in inputs]
    return {"prompt": prompt, "code": code, "test_imports": [], "test_list": tests, "family": family}


def _inputs(kind: str, rng: random.Random, k: int, c: str) -> list[tuple]:
    """Three distinct argument tuples (the caller redraws them until the expected values differ)."""
    out: list[tuple] = []
    while len(out) < 3:
        if kind == "int":
            args = (rng.randint(0, 30),)
        elif kind == "int2":
            args = (rng.randint(0, 20), rng.randint(0, 20))
        elif kind == "list":
            args = ([rng.randint(0, 2 * k + 5) for _ in range(rng.randint(1, 5))],)
        else:
            # words that start with or contain the letter, so counts and predicates are not always 0 / False
            pools = [[v for v in WORDS if v.startswith(c)], [v for v in WORDS if c in v], WORDS]
            pool = rng.choice([p for p in pools if p])
            args = (rng.choice(pool),)
        if args not in out:
            out.append(args)
    return out


def split_of(spec: str) -> str:
    """`test` or `train`: a fixed function of the specification text (a stable hash), so the splits are
    disjoint by construction, and families without a constant (few distinct specs) appear in both
    splits with different names or arguments."""
    digest = hashlib.sha256(spec.encode()).digest()
    return "test" if int.from_bytes(digest[:4], "little") % TEST_SHARE == 0 else "train"


@lru_cache(maxsize=4)
def _split_records(split: str) -> tuple[dict, ...]:
    if split not in SPLIT_SIZES:
        raise ValueError(f"minicode has splits {', '.join(SPLIT_SIZES)}, not {split!r}")
    return tuple(generate(SPLIT_SIZES[split], SPLIT_SEEDS[split], side=split))


def generate(n: int, seed: int, side: str | None = None, max_draws: int = 1_000_000) -> list[dict]:
    """`n` tasks from `seed` with distinct specs and distinct code, only from `side` (test | train) if given."""
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: list[dict] = []
    for _ in range(max_draws):
        if len(rows) == n:
            return rows
        row = make_task(rng)
        if row["prompt"] in seen or row["code"] in seen or (side and split_of(row["prompt"]) != side):
            continue
        seen |= {row["prompt"], row["code"]}
        rows.append(row)
    raise RuntimeError(f"only {len(rows)} distinct minicode tasks after {max_draws} draws; widen the templates")


def records(split: str = "test") -> list[dict]:
    """MBPP-format rows of a generated split (task_id included), to save as a `--data` file."""
    return [{"task_id": f"{split}-{i}", **r} for i, r in enumerate(_split_records(split))]


@TASKS.register("minicode")
class MiniCode(MBPP):
    name = "minicode"
    hub_id = None
    default_data_hint = ""
    embedded = True
    # the tiny model's decoding: the longest reference is 26 tokens. Two tokens per step: pass@1 of the
    # tiny model on the test split was 27.4% with 16 steps and 26.8% with 32, at half the time
    gen_defaults = {"gen_length": 32, "block_length": 32, "steps": 16}
    tiny_tokens = ("```python\n", "\n```", "\n    return")
    # `harness pretrain` budget: 2000 steps of batch 32, cut at 280 s on a slow or busy machine
    # (pass@1 rises steeply with steps: 2% after 800, 55% after 2000)
    pretrain_steps = 2000

    def load(self, data: str | None = None, split: str = "test", limit: int | None = None) -> list[Example]:
        if data:
            return super().load(data, split=split, limit=limit)
        rows = records(split)
        rows = rows[:limit] if limit else rows
        return [replace(self.to_example(r, i), meta={"family": r["family"]}) for i, r in enumerate(rows)]

    def format_prompt(self, example: Example) -> str:
        return PROMPT_TEMPLATE.format(spec=example.prompt, test=example.reference["tests"][0])
