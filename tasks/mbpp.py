"""MBPP (sanitized): short Python function tasks checked by assert tests (Austin et al., 2021).

    harness eval --task mbpp --model gold --data ../shared/data/mbpp_sanitized.json

Data: rows `{task_id, prompt, code, test_imports, test_list}` (hub `google-research-datasets/mbpp`,
config `sanitized`); the example id is `task_id`. The prompt shows the specification plus the first test,
as is common practice, so that the model knows the function's name and signature.

Code extraction: `tasks.extract.extract_code` (the first python/unlabelled markdown block, else the whole
completion). The program runs in `harness.sandbox.run_tests` with the row's `test_imports` as trusted setup
and each assert as one test.

Rewards (tasks/rewards.py): `tests` = fraction of the tests passed (0..1), `format` = 1 when the extracted
code parses as Python (so a syntactically valid attempt beats garbage even when every test fails); default
weights tests 1.0, format 0.1 (total <= 1.1).
`success` = every test passed; None when the sandbox itself failed (`status == "sandbox_error"`).
Metrics: pass@k (unbiased estimator) over problems; see `code_metrics`.
"""

from __future__ import annotations

import ast
import warnings
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from tasks.base import TASKS, Check, DataError, Example, Scored, Task
from tasks.extract import extract_code
from tasks.rewards import RewardFn, per_item

FORMAT_REWARD = 0.1
UNSCORABLE = ("sandbox_error", "bad_test")  # runner statuses that are not the program's fault
TIMEOUT_S = 10.0  # per program (all its tests); MBPP gold solutions take well under a second

PROMPT_TEMPLATE = (
    "{spec}\nYour code should pass this test:\n\n{test}\n\n"
    "Write the complete Python function in a ```python code block."
)


def parses(code: str) -> bool:
    """True when `code` is non-empty, syntactically valid Python (compile warnings such as invalid
    escape sequences are silenced: the program is only parsed here, never run)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(code)
    except (SyntaxError, ValueError):  # ValueError: source with null bytes
        return False
    return bool(code.strip())


def run_code_tests(program: str, tests: list[str], setup: str = "", timeout: float = TIMEOUT_S, *,
                   test_setup: str = "", names: list[str] | None = None) -> tuple[bool | None, float, dict]:
    """Run `program` against `tests` in the sandbox: (success or None, fraction passed, details).

    `test_setup` is trusted code for the tests only and `names` the program names the tests may
    resolve (see `harness.sandbox.run_tests`). An empty program is not run (every test fails).
    `details` records the runner's status and error for `Scored.extra`; a harness fault
    ("sandbox_error") or a broken test ("bad_test") leaves the sample unscorable (None).
    """
    if not program.strip():
        return False, 0.0, {"status": "empty"}
    from harness.sandbox import run_tests

    res = run_tests(program, tests, setup=setup, test_setup=test_setup, names=names, timeout=timeout)
    details = {"status": res.status, "error": res.error, "isolation": res.isolation}
    if res.status in UNSCORABLE:
        return None, 0.0, details
    n_passed = sum(bool(p) for p in res.passed)
    fraction = n_passed / len(tests) if tests else 0.0
    return (res.status == "ok" and n_passed == len(tests) and len(tests) > 0), fraction, details


def trusted_names(reference_code: str, tests: list[str], setup: str = "") -> tuple[list[str] | None, str]:
    """(names, test_setup) for the sandbox from the row's reference solution, never from the program.

    names: the reference's top-level functions and classes that the tests mention, the only program
    names the tests may resolve (MBPP 126's `def sum` included: the reference defines it too).
    test_setup: the reference's top-level imports of modules the tests use without importing them
    (MBPP tests call `math.isclose` relying on the solution's `import math`). None when the reference
    does not parse: then the sandbox binds the program's non-builtin names the tests mention.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. invalid escape sequences in the reference
        try:
            tree = ast.parse(reference_code)
        except (SyntaxError, ValueError):
            return None, ""
        mentioned = set()
        for test in tests:
            try:
                mentioned |= {n.id for n in ast.walk(ast.parse(test)) if type(n) is ast.Name}
            except (SyntaxError, ValueError):  # reported by the sandbox as a bad test
                pass
    defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    names = sorted(n for n in set(defined) if n in mentioned)
    imports = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound = {(a.asname or a.name).split(".")[0] for a in node.names}
            if bound & mentioned and "*" not in bound:
                imports.append(ast.unparse(node))
    return names or None, "\n".join(imports)


CODE_REWARDS = {"tests": 1.0, "format": FORMAT_REWARD}  # the default weights of the code tasks


def code_check(code: str, success: bool | None, fraction: float, details: dict) -> Check:
    """A code task's check: `extracted` is the program run, `extra` the runner's details."""
    return Check(success, code, extra=details, facts={"fraction": fraction, "parses": parses(code)})


def code_reward_functions() -> dict[str, RewardFn]:
    return {"tests": per_item("tests", lambda ex, c, k: k.facts["fraction"], "the fraction of tests passed (0..1)"),
            "format": per_item("format", lambda ex, c, k: float(k.facts["parses"]),
                               "1 when the extracted code parses as Python")}


def code_metrics(scored: Sequence[Scored], ks: Sequence[int] = (1, 5, 10, 100)) -> tuple[dict, dict]:
    """pass@k over problems with the unbiased estimator, k only where every problem has n >= k.

    Unscorable samples (verdict None) are left out of n. The CI of pass@1 is Wilson's on the verdicts
    when there is one sample per problem, else a normal interval over the per-problem pass@1 (c/n).
    """
    from tasks.metrics import accuracy_with_ci, mean_with_ci, pass_at_ks

    by_id: dict[Any, list[bool]] = defaultdict(list)
    for s in scored:
        if s.verdict is not None:
            by_id[s.id].append(bool(s.verdict))
    counts = [(len(v), sum(v)) for v in by_id.values()]
    if not counts:
        return {"pass@1": float("nan")}, {"pass@1": [float("nan"), float("nan")]}
    metrics = pass_at_ks(counts, ks)
    if all(n == 1 for n, _ in counts):
        _, ci = accuracy_with_ci([c == 1 for _, c in counts])
    else:
        _, ci = mean_with_ci([c / n for n, c in counts])
    return metrics, {"pass@1": ci}


@TASKS.register("mbpp")
class MBPP(Task):
    name = "mbpp"
    kind = "code"
    primary_metric = "pass@1"
    hub_id = "google-research-datasets/mbpp:sanitized"
    default_data_hint = "../shared/data/mbpp_sanitized.json"
    gen_defaults = {"gen_length": 256, "block_length": 32, "steps": 128}
    scoring_workers = 4  # programs scored in parallel by `score_many` (each runs in its own subprocess)
    fields = {"task_id": (int, str), "prompt": str, "code": str, "test_list": list[str]}
    optional_fields = {"test_imports": list[str]}
    default_rewards = CODE_REWARDS

    def to_example(self, record: dict, index: int) -> Example:
        if not record["test_list"]:
            raise DataError("field 'test_list' is empty; an MBPP row needs at least one assert test")
        setup = "\n".join(record.get("test_imports") or [])
        names, test_setup = trusted_names(record["code"], record["test_list"], setup)
        reference = {"tests": list(record["test_list"]), "setup": setup, "test_setup": test_setup, "names": names}
        return Example(id=record["task_id"], prompt=record["prompt"], reference=reference,
                       solution=f"```python\n{record['code'].strip()}\n```")

    def format_prompt(self, example: Example) -> str:
        return PROMPT_TEMPLATE.format(spec=example.prompt.strip(), test=example.reference["tests"][0])

    def extract(self, completion: str) -> str:
        return extract_code(completion)

    def verify(self, completion: str, reference: Any) -> bool | None:
        return self._run(extract_code(completion), reference)[0]

    @staticmethod
    def _run(code: str, ref: dict) -> tuple[bool | None, float, dict]:
        return run_code_tests(code, ref["tests"], setup=ref.get("setup", ""), test_setup=ref.get("test_setup", ""),
                              names=ref.get("names"))

    def check(self, completion: str, example: Example) -> Check:
        code = extract_code(completion)
        return code_check(code, *self._run(code, example.reference))

    def check_many(self, completions: Sequence[str], examples: Sequence[Example], workers: int = 0) -> list[Check]:
        return super().check_many(completions, examples, workers=workers or self.scoring_workers)

    def reward_functions(self) -> dict[str, RewardFn]:
        return code_reward_functions()

    def metrics(self, scored: Sequence[Scored], examples: Sequence[Example]) -> tuple[dict, dict]:
        return code_metrics(scored)
