"""Tests for the generated tasks tasks/arith.py and tasks/minicode.py: determinism, disjoint splits,
gold solutions that their own verifiers accept, and gold completions that fit the decoding length."""

import json
import random

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
        assert task.reward(ex.solution, ex.reference).total == 3.0  # format 0.5 + integer 0.5 + correct 2
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


def test_every_minicode_reference_passes_its_own_asserts(minicode_splits):
    _, train, test = minicode_splits
    for ex in train + test:  # in-process: these are our own template programs and tests
        code = ex.solution.removeprefix("```python\n").removesuffix("\n```")
        env: dict = {}
        exec(code, env)  # noqa: S102
        for t in ex.reference["tests"]:
            exec(t, env)  # noqa: S102
        assert len(ex.reference["tests"]) == 3


def test_minicode_tests_tell_constant_answers_apart(minicode_splits):
    _, train, test = minicode_splits
    # a predicate whose three asserts all expect False would pass `return False`
    same = [e for e in train + test if len({t.rsplit("==", 1)[1] for t in e.reference["tests"]}) == 1]
    assert len(same) / len(train + test) < 0.02


def test_minicode_gold_passes_the_mbpp_verifier_in_the_sandbox(minicode_splits):
    task, _, test = minicode_splits
    sample = test[:: len(test) // 8][:8]
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
