"""Tests for the generated tasks tasks/arith.py and tasks/minicode.py: determinism, disjoint splits,
gold solutions that their own verifiers accept, and gold completions that fit the decoding length."""

import ast
import functools
import json
import operator
import random
import re

import pytest

from tasks import arith, get_task, minicode


@pytest.fixture(scope="module")
def arith_splits():
    task = get_task("arith")
    return task, task.load(split="train"), task.load(split="test")


@pytest.fixture(scope="module")
def minicode_splits():
    task = get_task("minicode")
    return task, task.load(split="train"), task.load(split="test")


# ---- arith ------------------------------------------------------------------------------------------
def test_arith_splits_have_their_sizes_and_share_no_question(arith_splits):
    _, train, test = arith_splits
    assert len(test) >= 2000 and len(train) >= 20000
    test_q = [e.prompt for e in test]
    train_q = {e.prompt for e in train}
    assert len(set(test_q)) == len(test_q) and len(train_q) == len(train)  # unique within a split
    assert not train_q & set(test_q)  # a prototype had 31% of test questions in train
    assert len({e.id for e in train} | {e.id for e in test}) == len(train) + len(test)


def test_arith_generation_is_deterministic_under_its_seed():
    assert arith.generate(50, seed=7) == arith.generate(50, seed=7)
    assert arith.generate(50, seed=7) != arith.generate(50, seed=8)
    first = arith.make_problem(random.Random(3))
    assert first == arith.make_problem(random.Random(3))


def test_arith_gold_solutions_score_full_marks_with_the_gsm8k_verifier(arith_splits):
    task, train, test = arith_splits
    for ex in test + train[:2000]:
        assert task.verify(ex.solution, ex.reference), ex
        assert task.reward(ex.solution, ex).total == 3.0  # format 0.5 + integer 0.5 + correct 2
        assert ex.reference.isdigit()  # a plain non-negative integer in \boxed{}


def test_arith_worked_lines_are_zero_padded_chained_and_true(arith_splits):
    _, _, test = arith_splits
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a // b}
    for ex in test:
        lines = ex.solution.split("<reasoning>\n")[1].split("\n</reasoning>")[0].split("\n")
        assert 1 <= len(lines) <= 3
        value = int(lines[0][:2])  # "07+15=22": the first line names its left operand
        for i, line in enumerate(lines):
            body = line if i else line[2:]  # later lines continue from the previous result: "*02=44"
            op, b, result = body[0], body[1:3], body[4:]
            assert body[3] == "=" and len(b) == len(result) == 2 and b.isdigit() and result.isdigit()
            value = ops[op](value, int(b))
            assert value == int(result) and 0 <= value <= 99
        assert value == int(ex.reference)


def test_arith_loads_a_saved_gsm8k_format_file(tmp_path):
    task = get_task("arith")
    path = tmp_path / "arith_test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in arith.records("test")[:20]))
    from_file = task.load(str(path))
    generated = task.load(split="test", limit=20)
    assert [e.prompt for e in from_file] == [e.prompt for e in generated]
    assert [e.reference for e in from_file] == [e.reference for e in generated]
    assert [e.solution for e in from_file] == [e.solution for e in generated]


def test_unknown_split_is_a_clear_error():
    with pytest.raises(ValueError, match="test, train"):
        get_task("arith").load(split="dev")


# ---- minicode ---------------------------------------------------------------------------------------
def test_minicode_splits_share_no_specification(minicode_splits):
    _, train, test = minicode_splits
    assert len(test) >= 500 and len(train) >= 5000
    train_specs = {e.prompt for e in train}
    assert len(train_specs) == len(train) and len({e.prompt for e in test}) == len(test)
    assert not train_specs & {e.prompt for e in test}
    assert all(minicode.split_of(e.prompt) == "test" for e in test)


def test_minicode_generation_is_deterministic_under_its_seed():
    assert minicode.generate(30, seed=5) == minicode.generate(30, seed=5)
    assert minicode.generate(30, seed=5) != minicode.generate(30, seed=6)


# The expected value of every assert, recomputed from the *specification text* by rules written here,
# independently of the template bodies that generated it (which also produced the expected values, so
# running the reference against its own asserts could not fail).
SPEC_RULES = [  # (spec pattern with the argument names removed, function of (args, constants))
    (r"returns \w+ plus (\d+)$", lambda a, k: a[0] + k[0]),
    (r"returns \w+ minus (\d+)$", lambda a, k: a[0] - k[0]),
    (r"returns \w+ times (\d+)$", lambda a, k: a[0] * k[0]),
    (r"returns \w+ times (\d+) plus (\d+)$", lambda a, k: a[0] * k[0] + k[1]),
    (r"returns \w+ plus (\d+), times (\d+)$", lambda a, k: (a[0] + k[0]) * k[1]),
    (r"returns the remainder of \w+ divided by (\d+)$", lambda a, k: a[0] % k[0]),
    (r"returns \w+ divided by (\d+), rounded down$", lambda a, k: a[0] // k[0]),
    (r"returns the square of \w+$", lambda a, k: a[0] ** 2),
    (r"returns True if \w+ is even$", lambda a, k: a[0] % 2 == 0),
    (r"returns True if \w+ is odd$", lambda a, k: a[0] % 2 != 0),
    (r"returns True if \w+ is divisible by (\d+)$", lambda a, k: a[0] % k[0] == 0),
    (r"returns True if \w+ is greater than (\d+)$", lambda a, k: a[0] > k[0]),
    (r"returns the sum of \w+ and \w+$", lambda a, k: a[0] + a[1]),
    (r"returns the product of \w+ and \w+$", lambda a, k: a[0] * a[1]),
    (r"returns the larger of \w+ and \w+$", lambda a, k: a[0] if a[0] >= a[1] else a[1]),
    (r"returns the absolute difference of \w+ and \w+$", lambda a, k: a[0] - a[1] if a[0] > a[1] else a[1] - a[0]),
    (r"returns the largest number in the list \w+$", lambda a, k: sorted(a[0])[-1]),
    (r"returns the smallest number in the list \w+$", lambda a, k: sorted(a[0])[0]),
    (r"returns the sum of the list \w+$", lambda a, k: functools.reduce(operator.add, a[0], 0)),
    (r"returns the number of items in the list \w+$", lambda a, k: sum(1 for _ in a[0])),
    (r"returns the first item of the list \w+$", lambda a, k: next(iter(a[0]))),
    (r"returns the last item of the list \w+$", lambda a, k: list(reversed(a[0]))[0]),
    (r"returns the numbers in the list \w+ that are greater than (\d+)$", lambda a, k: list(filter(lambda v: v > k[0], a[0]))),
    (r"returns how many numbers in the list \w+ are greater than (\d+)$", lambda a, k: sum(v > k[0] for v in a[0])),
    (r"returns the list \w+ with (\d+) added to each number$", lambda a, k: list(map(lambda v: v + k[0], a[0]))),
    (r"returns the list \w+ with each number multiplied by (\d+)$", lambda a, k: list(map(lambda v: v * k[0], a[0]))),
    (r"returns the string \w+ reversed$", lambda a, k: "".join(reversed(a[0]))),
    (r"returns the string \w+ in upper case$", lambda a, k: "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c
                                                                  for c in a[0])),
    (r"returns how many times the letter '(\w)' appears in the string \w+$", lambda a, k: sum(c == k[0] for c in a[0])),
    (r"returns True if the string \w+ starts with the letter '(\w)'$", lambda a, k: a[0][:1] == k[0]),
    (r"returns True if the letter '(\w)' is in the string \w+$", lambda a, k: any(c == k[0] for c in a[0])),
    (r"returns the string \w+ repeated (\d+) times$", lambda a, k: "".join(a[0] for _ in range(k[0]))),
]


def spec_answer(spec: str, args: tuple):
    body = re.fullmatch(r"Write a function \w+ that (.*)\.", spec).group(1)
    matches = [(rule, m) for pattern, rule in SPEC_RULES for m in [re.fullmatch(pattern, body)] if m]
    assert len(matches) == 1, (spec, len(matches))
    rule, m = matches[0]
    consts = [int(g) if g.isdigit() else g for g in m.groups()]
    return rule(args, consts)


def test_every_minicode_assert_expects_what_its_specification_says(minicode_splits):
    _, train, test = minicode_splits
    for ex in train + test:
        assert len(ex.reference["tests"]) == 3
        for t in ex.reference["tests"]:
            call, expected = ast.parse(t).body[0].test.left, ast.parse(t).body[0].test.comparators[0]
            args = tuple(ast.literal_eval(a) for a in call.args)
            assert spec_answer(ex.prompt, args) == ast.literal_eval(expected), (ex.prompt, t)


def test_the_specification_check_catches_a_wrong_expected_value():
    assert spec_answer("Write a function f that returns x times 7 plus 3.", (2,)) == 17
    assert spec_answer("Write a function f that returns x times 7 plus 3.", (2,)) != 2 * 7


def test_minicode_tests_tell_constant_answers_apart(minicode_splits):
    _, train, test = minicode_splits
    # a predicate whose three asserts all expect False would pass `return False`
    same = [e for e in train + test if len({t.rsplit("==", 1)[1] for t in e.reference["tests"]}) == 1]
    assert len(same) / len(train + test) < 0.02


def test_minicode_gold_passes_the_mbpp_verifier_in_the_sandbox(minicode_splits):
    task, _, test = minicode_splits
    sample = test[:: len(test) // 24][:24]
    scored = task.score_many([e.solution for e in sample], sample)
    assert all(s.verdict for s in scored), [s.extra for s in scored if not s.verdict]
    wrong = "```python\ndef nothing():\n    return None\n```"
    assert task.verify(wrong, test[0].reference) is False


# ---- both --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["arith", "minicode"])
def test_gold_completions_fit_the_decoding_length_in_the_tiny_tokenizer(name, request):
    from harness.tokenizer import build_tokenizer

    task, train, test = request.getfixturevalue(f"{name}_splits")
    examples = test + train[:3000]
    tok = build_tokenizer([task.format_prompt(e) for e in examples] + [e.solution for e in examples],
                          multi=task.tiny_tokens)
    g = task.gen_defaults
    assert g["gen_length"] % g["block_length"] == 0 and g["steps"] % (g["gen_length"] // g["block_length"]) == 0
    longest = max(len(tok(e.solution)["input_ids"]) for e in examples)
    assert longest < g["gen_length"]  # room for at least one EOS
    assert all(tok.decode(tok(e.solution)["input_ids"]) == e.solution for e in test)
