"""Basic behaviour of the code runner (harness/sandbox.py)."""

from harness.sandbox import run_many, run_tests


def test_correct_program_passes_every_assert():
    r = run_tests("def add(a, b):\n    return a + b\n", ["assert add(1, 2) == 3", "assert add(0, 0) == 0"])
    assert r.status == "ok" and r.passed == [True, True]


def test_wrong_answer_fails_only_that_test():
    r = run_tests("def add(a, b):\n    return a - b\n", ["assert add(1, 0) == 1", "assert add(1, 2) == 3"])
    assert r.status == "ok" and r.passed == [True, False]


def test_syntax_error_fails_all_tests():
    r = run_tests("def add(a, b) return a\n", ["assert add(1, 2) == 3"])
    assert r.passed == [False]


def test_setup_imports_are_visible_to_tests():
    r = run_tests("def root(x):\n    return x ** 0.5\n", ["assert math.isclose(root(4.0), 2.0)"],
                  setup="import math")
    assert r.passed == [True]


def test_infinite_loop_times_out():
    r = run_tests("while True:\n    pass\n", ["assert True"], timeout=1.0)
    assert r.status == "timeout" and r.passed == [False]


def test_run_many_keeps_job_order():
    jobs = [{"program": f"def f():\n    return {i}\n", "tests": [f"assert f() == {i}"]} for i in range(4)]
    assert [r.passed for r in run_many(jobs, workers=2)] == [[True]] * 4
