"""Behaviour of the code runner (harness/sandbox.py) on honest programs: what real tests need must pass.

Hostile programs are in tests/test_sandbox_hostile.py.
"""

import importlib.util

import pytest

from harness.sandbox import run_many, run_tests


def run(program, tests, **kw):
    return run_tests(program, tests, **{"timeout": 5.0, **kw})


def test_correct_program_passes_every_assert():
    r = run("def add(a, b):\n    return a + b\n", ["assert add(1, 2) == 3", "assert add(0, 0) == 0"])
    assert r.status == "ok" and r.passed == [True, True] and r.error is None


def test_wrong_answer_fails_only_that_test_and_says_which():
    r = run("def add(a, b):\n    return a - b\n", ["assert add(1, 0) == 1", "assert add(1, 2) == 3"])
    assert r.status == "ok" and r.passed == [True, False]
    assert r.error.startswith("test 1: AssertionError")


def test_program_that_fails_to_load_fails_every_test_with_its_error():
    r = run("def add(a, b) return a\n", ["assert add(1, 2) == 3", "assert True"])
    assert r.status == "ok" and r.passed == [False, False]
    assert "SyntaxError" in r.error


def test_plain_values_of_every_builtin_type_compare_as_natively():
    program = ("def f(k):\n    return {'tuple': (1, 'a'), 'set': {1, 2}, 'frozenset': frozenset({3}),\n"
               "        'dict': {(1, 2): [3.5, None]}, 'bytes': b'\\x00x', 'complex': 1 + 2j, 'bool': True,\n"
               "        'nan': float('nan'), 'big': 10**30, 'range': range(0, 6, 2), 'bytearray': bytearray(b'ab')}[k]\n")
    tests = ["assert f('tuple') == (1, 'a')", "assert f('set') == {2, 1}", "assert f('frozenset') == {3}",
             "assert f('dict') == {(1, 2): [3.5, None]}", "assert f('bytes') == b'\\x00x'",
             "assert f('complex') == 1 + 2j", "assert f('bool') is True", "assert f('nan') != f('nan')",
             "assert f('big') == 10**30", "assert list(f('range')) == [0, 2, 4]",
             "assert f('bytearray') == b'ab'", "assert f('tuple') != [1, 'a']"]
    assert run(program, tests).passed == [True] * len(tests)


def test_subclasses_of_builtins_come_back_as_their_plain_values():
    program = ("import collections\nP = collections.namedtuple('P', 'x y')\n"
               "def counts(s):\n    return collections.Counter(s)\n"
               "def point():\n    return P(1, 2)\n"
               "def table():\n    return collections.defaultdict(list, {'a': [1]})\n")
    tests = ["assert counts('abca') == {'a': 2, 'b': 1, 'c': 1}", "assert point() == (1, 2)",
             "assert table() == {'a': [1]}", "assert type(counts('a')) is dict"]
    assert run(program, tests).passed == [True] * 4


def test_iterators_and_views_are_materialised_for_list_and_sorted():
    program = ("def gen(n):\n    for i in range(n):\n        yield i * i\n"
               "def pairs(d):\n    return map(tuple, d.items())\n"
               "def keys(d):\n    return d.keys()\n")
    tests = ["assert list(gen(4)) == [0, 1, 4, 9]", "assert sorted(pairs({'b': 2, 'a': 1})) == [('a', 1), ('b', 2)]",
             "assert keys({1: 2, 3: 4}) == {1, 3}", "assert gen(2) != [0, 1]"]
    assert run(program, tests).passed == [True] * 4


def test_modules_the_tests_use_come_from_trusted_test_setup_never_from_the_program():
    # MBPP tests often call math.isclose with no test_imports, relying on the solution's `import math`:
    # the task passes the reference solution's imports as test_setup (tasks/mbpp.py)
    program = "import math\ndef area(r):\n    return math.pi * r * r\n"
    test = ["assert math.isclose(area(2), 12.566370614359172, rel_tol=1e-9)"]
    assert run(program, test, test_setup="import math").passed == [True]
    r = run(program, test)  # the program's own `math` is not the tests' to use
    assert r.passed == [False] and "NameError" in r.error


def test_setup_imports_are_visible_to_program_and_tests():
    r = run("def root(x):\n    return sqrt(x)\n", ["assert isclose(root(4.0), 2.0)"],
            setup="from math import sqrt, isclose")
    assert r.passed == [True]


def test_exceptions_raised_by_the_program_can_be_expected_by_a_test():
    program = "def inv(x):\n    if x == 0:\n        raise ValueError('zero')\n    return 1 / x\n"
    test = "try:\n    inv(0)\nexcept ValueError:\n    pass\nelse:\n    raise AssertionError('no error')\n"
    assert run(program, [test, "assert inv(2) == 0.5"]).passed == [True, True]


def test_program_objects_can_be_passed_back_to_the_program_but_never_compare_equal():
    program = ("class Pair:\n    def __init__(self, a, b):\n        self.a, self.b = a, b\n"
               "def longest(pairs, n):\n    return max(p.b - p.a for p in pairs[:n])\n"
               "def same(p):\n    return p\n")
    tests = ["assert longest([Pair(5, 24), Pair(15, 25), Pair(27, 40)], 3) == 19",
             "p = Pair(1, 2)\nassert same(p) is p", "assert same(Pair(1, 2)) != Pair(1, 2)"]
    assert run(program, tests).passed == [True, True, True]


def test_truth_value_of_a_non_plain_result_is_kept():
    # MBPP 737: check_str returns an re.Match, tested with `assert check_str(...)`
    program = "import re\ndef check_str(s):\n    return re.search('^[aeiou]', s)\n"
    tests = ["assert check_str('annie')", "assert not check_str('dawood')", "assert check_str('a') != True"]
    assert run(program, tests).passed == [True, True, True]


def test_keyword_arguments_and_state_shared_between_tests():
    program = "def scale(x, *, by=2):\n    return x * by\n"
    assert run(program, ["y = scale(3, by=4)", "assert y == 12 and scale(1) == 2"]).passed == [True, True]


def test_program_function_named_like_a_builtin_is_reachable_only_as_a_declared_entry_point():
    # MBPP 126: `def sum(a, b)` tested as `assert sum(10, 15) == 6`; the task declares `sum` (its
    # reference defines it), so the tests resolve it to the program, and resolve nothing else to it
    program = "def sum(a, b):\n    return a + b - 19\ndef len(x):\n    return 5\n"
    tests = ["assert sum(10, 15) == 6", "assert len([sum]) == 1"]
    assert run(program, tests, names=["sum"]).passed == [True, True]
    assert run(program, tests).passed == [False, True]  # undeclared: the builtins stay


def test_declared_entry_point_missing_from_the_program_is_not_taken_from_trusted_code():
    # a HumanEval prompt, run as trusted test_setup, defines the entry point as a docstring-only stub
    stub = 'def f(x):\n    """Return None."""\n'
    r = run("def g(x):\n    return None\n", ["assert f(1) is None"], test_setup=stub, names=["f"])
    assert r.passed == [False] and "NameError" in r.error


def test_main_guard_of_the_program_is_not_run():
    program = "def f():\n    return 1\nif __name__ == '__main__':\n    print(f(int(input())))\n"
    assert run(program, ["assert f() == 1"]).passed == [True]


def test_humaneval_style_check_block_with_loops_and_helpers():
    program = ("def encode(s):\n    return ''.join(chr(ord(c) + 1) for c in s)\n"
               "def decode(s):\n    return ''.join(chr(ord(c) - 1) for c in s)\n")
    test = ("import random\n\ndef check(candidate):\n    rng = random.Random(0)\n    for _ in range(50):\n"
            "        s = ''.join(rng.choice('abc') for _ in range(8))\n"
            "        assert candidate(encode(s)) == s\n\ncheck(decode)\n")
    assert run(program, [test]).passed == [True]


@pytest.mark.skipif(importlib.util.find_spec("numpy") is None, reason="numpy not installed")
def test_numpy_results_come_back_as_plain_values():
    program = "import numpy as np\ndef f():\n    return np.arange(3) * 2\ndef g():\n    return np.int64(7)\n"
    assert run(program, ["assert list(f()) == [0, 2, 4]", "assert g() == 7"]).passed == [True, True]


@pytest.mark.parametrize("kw", [{"setup": "import no_such_module_xyz"}, {"test_setup": "def broken(:"},
                                {"tests": ["assert f() == 1", "assert f( == 1"]}])
def test_broken_trusted_code_is_a_bad_test_decided_before_the_program_runs(kw, tmp_path):
    marker = tmp_path / "ran"  # under the caller's tmp: if the program ran with a host view, it would exist
    program = f"open({str(marker)!r}, 'w').close()\ndef f():\n    return 1\n"
    r = run(program, **{"tests": ["assert f() == 1"], **kw})
    assert r.status == "bad_test" and not any(r.passed), r
    assert "trusted test code failed" in r.error and not marker.exists()


def test_infinite_loop_times_out_keeping_results_of_earlier_tests():
    program = "def f(x):\n    while x:\n        pass\n    return 0\n"
    r = run(program, ["assert f(0) == 0", "assert f(1) == 0"], timeout=1.0)
    assert r.status == "timeout" and r.passed == [True, False] and r.duration_s < 3.0


def test_no_tests_gives_no_results():
    assert run("x = 1\n", []).passed == []


def test_run_many_keeps_job_order():
    jobs = [{"program": f"def f():\n    return {i}\n", "tests": [f"assert f() == {i}"]} for i in range(4)]
    jobs[2]["tests"] = ["assert f() == -1"]
    assert [r.passed for r in run_many(jobs, workers=2)] == [[True], [True], [False], [True]]


def _base_python_with_numpy():
    """The interpreter this venv was made from, when numpy is installed in its own site-packages (the
    layout of a CI machine that installs straight into a pyenv or system Python)."""
    import os
    import subprocess
    import sys
    base = os.path.join(sys.base_prefix, "bin", "python3")
    if sys.prefix == sys.base_prefix or not os.path.exists(base):
        return None
    ok = subprocess.run([base, "-c", "import numpy"], capture_output=True).returncode == 0
    return base if ok else None


@pytest.mark.skipif(_base_python_with_numpy() is None, reason="no base interpreter with numpy in its own site-packages")
def test_numpy_in_the_interpreters_own_site_packages_is_allowed_read_only(tmp_path):
    """Regression: with numpy in the interpreter's own (masked, read-only) site-packages, making numpy's
    mount point inside the mask failed with EROFS and every program was a sandbox_error (CI, stop 25)."""
    import json
    import os
    import subprocess
    script = tmp_path / "probe.py"
    script.write_text(
        "import json, sysconfig\nfrom harness.sandbox import run_tests\n"
        "sp = sysconfig.get_paths()['purelib']\n"
        "prog = 'import numpy as np\\ndef f(x):\\n    return int(np.int64(x) + 1)\\n'\n"
        "prog += 'def w(p):\\n    try:\\n        open(p, \"w\")\\n    except OSError as e:\\n        return e.errno\\n'\n"
        "prog += 'import os\\ndef ls(p):\\n    return sorted(os.listdir(p))\\n'\n"
        "r = run_tests(prog, ['assert f(1) == 2', f'assert w({sp + \"/x\"!r}) == 30',\n"
        "                     f'assert w({sp + \"/numpy/x\"!r}) == 30',\n"
        "                     f'assert [n for n in ls({sp!r}) if not n.startswith(\"numpy\")] == []'], timeout=10.0)\n"
        "print(json.dumps([r.status, r.passed, r.error]))\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([_base_python_with_numpy(), str(script)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": root}, timeout=120)
    status, passed, error = json.loads(out.stdout.strip().splitlines()[-1])
    assert (status, passed) == ("ok", [True, True, True, True]), error
