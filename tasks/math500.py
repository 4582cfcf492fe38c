"""MATH500: competition mathematics with a LaTeX final answer (Hendrycks et al., 2021; the 500-problem
subset of Lightman et al., 2023).

    harness eval --task math --model gold --data ../shared/data/math500_test.jsonl

Data: rows `{problem, solution, answer, subject, level, unique_id}` (hub `HuggingFaceH4/MATH-500`); the
example id is `unique_id`; the gold completion is the dataset's worked solution (it ends in a box).

Extraction: the content of the last `\\boxed{}` (nested braces), `\\fbox{}` as a fallback. Equivalence:
the `math-verify` library, with both sides wrapped back in `\\boxed{}` so that its LaTeX parser reads
them (`\\frac{14}{3}` = `14/3`, `90^\\circ` = `90`, `\\text{Evelyn}` = `Evelyn`, tuples, sets, intervals).

Checking that cannot stall (issue 24): the policy writes the answers this parses, and some LaTeX costs
sympy minutes (`9^{9^{9^{9}}}`, `(x+1)^{100000}`). Every check here — `verify`, `reward`, `score_many`,
`math_equal`, from any thread — goes through `tasks/math_check.py`: cheap string screens first (length,
bracket depth, exponent towers, huge exponents, factorials and sum bounds), then a pool of worker
processes that import only math-verify, with a hard per-answer deadline counted in the worker's CPU
time (default 0.5 s; `MDRL_MATH_DEADLINE_S`, or `get_task("math", deadline_s=...)`). A worker that
passes it is killed and replaced. Each scored row records the check's status in `extra["check"]`
(`equal`, `not_equal`, `no_answer`, `timeout`, `error`; the reason in `extra["check_reason"]`), the
summary counts them (`report.math_check`), and a timed-out or screened answer counts as not equal.
On the 500 MATH500 gold answers, their worked solutions and d1's published LLaDA generations the
verdicts are those of the former in-process scorer (tests/test_math_check.py).

Rewards (tasks/rewards.py; each 1 or 0): `correct` when equivalent, `format` when a boxed answer is present;
default weights (DESIGN section 6): correct 2.0, format 0.5.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from tasks import math_check
from tasks.base import TASKS, Check, Example, Scored, Task
from tasks.extract import last_boxed
from tasks.rewards import RewardFn, per_item

CORRECT_REWARD, FORMAT_REWARD = 2.0, 0.5

PROMPT_TEMPLATE = (
    "{problem}\n\n"
    "Reason step by step, then put your final answer within \\boxed{{}}."
)


def math_equal(answer: str | None, reference: str, deadline_s: float | None = None) -> bool:
    """True when the extracted answer and the reference are mathematically equivalent (math-verify).

    Both are parsed as the content of a `\\boxed{}`; an answer math-verify cannot parse is not equal
    (math-verify returns an empty parse, which never verifies), nor is one that is screened out or
    passes the deadline (see the module docstring; `math_check.check` gives the reason).
    """
    return math_check.check(answer, str(reference), deadline_s).equal


@TASKS.register("math")
class MATH500(Task):
    name = "math"
    primary_metric = "accuracy"
    hub_id = "HuggingFaceH4/MATH-500"
    default_data_hint = "../shared/data/math500_test.jsonl"
    gen_defaults = {"gen_length": 256, "block_length": 32, "steps": 128}
    fields = {"problem": str, "solution": str, "answer": str}
    optional_fields = {"unique_id": (str, int), "subject": str, "level": (int, str)}
    default_rewards = {"correct": CORRECT_REWARD, "format": FORMAT_REWARD}

    def __init__(self, deadline_s: float | None = None):
        if deadline_s is not None and not (0 < float(deadline_s) < float("inf")):
            raise ValueError(f"deadline_s must be a positive number of seconds, got {deadline_s!r}")
        # read (and checked) once, when the task is built: a bad MDRL_MATH_DEADLINE_S fails before any work
        self.deadline_s = math_check.deadline_from_env() if deadline_s is None else float(deadline_s)

    def to_example(self, record: dict, index: int) -> Example:
        return Example(id=record.get("unique_id", index), prompt=record["problem"], reference=record["answer"],
                       solution=record["solution"],
                       meta={k: record[k] for k in ("subject", "level") if k in record})

    def format_prompt(self, example: Example) -> str:
        return PROMPT_TEMPLATE.format(problem=example.prompt)

    def extract(self, completion: str) -> str | None:
        return last_boxed(completion)

    def verify(self, completion: str, reference: Any) -> bool:
        return math_equal(last_boxed(completion), str(reference), self.deadline_s)

    def check(self, completion: str, example: Example) -> Check:
        return self.check_many([completion], [example])[0]

    def check_many(self, completions: Sequence[str], examples: Sequence[Example], workers: int = 0) -> list[Check]:
        """All checks in one batch through the worker pool (see the module docstring); `workers` is unused."""
        answers = [last_boxed(c) for c in completions]
        checks = math_check.check_many([(a, str(ex.reference)) for a, ex in zip(answers, examples)],
                                       self.deadline_s)
        out = []
        for answer, check in zip(answers, checks):
            extra = {"check": check.status}
            if check.reason:
                extra["check_reason"] = check.reason
            out.append(Check(check.equal, answer, extra=extra))
        return out

    def reward_functions(self) -> dict[str, RewardFn]:
        return {"correct": per_item("correct", lambda ex, c, k: float(bool(k.verdict)),
                                    "1 when the boxed answer is equivalent to the reference (math-verify)"),
                "format": per_item("format", lambda ex, c, k: float(k.extracted is not None),
                                   "1 when the completion has a \\boxed{} answer")}

    def score_report(self, scored: Sequence[Scored]) -> dict:
        """How each answer's check ended, over all scored rows (`timeout` includes screened answers)."""
        counts = Counter(s.extra.get("check") for s in scored)
        return {"math_check": {k: counts.get(k, 0) for k in math_check.STATUSES}}
