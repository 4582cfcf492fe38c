"""MATH500: competition mathematics with a LaTeX final answer (Hendrycks et al., 2021; the 500-problem
subset of Lightman et al., 2023).

    harness eval --task math --model gold --data ../shared/data/math500_test.jsonl

Data: rows `{problem, solution, answer, subject, level, unique_id}` (hub `HuggingFaceH4/MATH-500`); the
example id is `unique_id`; the gold completion is the dataset's worked solution (it ends in a box).

Extraction: the content of the last `\\boxed{}` (nested braces), `\\fbox{}` as a fallback. Equivalence:
the `math-verify` library, with both sides wrapped back in `\\boxed{}` so that its LaTeX parser reads
them (`\\frac{14}{3}` = `14/3`, `90^\\circ` = `90`, `\\text{Evelyn}` = `Evelyn`, tuples, sets, intervals).

Timeouts: math-verify guards sympy with `signal.alarm`, which only works in the main thread; called from
any other thread (a thread pool, an async server) it would raise. There we pass `parsing_timeout=None`
and `timeout_seconds=None`: no guard, so a pathological expression could run long. `score_many` keeps
the work in the calling thread for that reason.

Reward (DESIGN section 6): `correct` 2.0 when equivalent, `format` 0.5 when a boxed answer is present.
"""

from __future__ import annotations

import threading
from typing import Any

from tasks.base import TASKS, Example, RewardOutput, Task
from tasks.extract import last_boxed

CORRECT_REWARD, FORMAT_REWARD = 2.0, 0.5
MATH_TIMEOUT_S = 5  # math-verify's own per-call limit, in the main thread only

PROMPT_TEMPLATE = (
    "{problem}\n\n"
    "Reason step by step, then put your final answer within \\boxed{{}}."
)


def _timeout() -> int | None:
    return MATH_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def math_equal(answer: str | None, reference: str) -> bool:
    """True when the extracted answer and the reference are mathematically equivalent (math-verify).

    Both are parsed as the content of a `\\boxed{}`; an answer math-verify cannot parse is not equal
    (math-verify returns an empty parse, which never verifies).
    """
    if answer is None or not answer.strip():
        return False
    try:
        from math_verify import parse, verify
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ImportError("the math task needs `math-verify`: pip install math-verify") from e
    t = _timeout()
    gold = parse(f"\\boxed{{{reference}}}", parsing_timeout=t)
    pred = parse(f"\\boxed{{{answer}}}", parsing_timeout=t)
    if not gold or not pred:
        return False
    return bool(verify(gold, pred, timeout_seconds=t))


@TASKS.register("math")
class MATH500(Task):
    name = "math"
    primary_metric = "accuracy"
    hub_id = "HuggingFaceH4/MATH-500"
    default_data_hint = "../shared/data/math500_test.jsonl"
    gen_defaults = {"gen_length": 256, "block_length": 32, "steps": 128}
    fields = {"problem": str, "solution": str, "answer": str}
    optional_fields = {"unique_id": (str, int), "subject": str, "level": (int, str)}

    def to_example(self, record: dict, index: int) -> Example:
        return Example(id=record.get("unique_id", index), prompt=record["problem"], reference=record["answer"],
                       solution=record["solution"],
                       meta={k: record[k] for k in ("subject", "level") if k in record})

    def format_prompt(self, example: Example) -> str:
        return PROMPT_TEMPLATE.format(problem=example.prompt)

    def extract(self, completion: str) -> str | None:
        return last_boxed(completion)

    def verify(self, completion: str, reference: Any) -> bool:
        return math_equal(last_boxed(completion), str(reference))

    def reward(self, completion: str, reference: Any) -> RewardOutput:
        answer = last_boxed(completion)
        correct = math_equal(answer, str(reference))
        terms = {"correct": CORRECT_REWARD if correct else 0.0,
                 "format": FORMAT_REWARD if answer is not None else 0.0}
        return RewardOutput(total=sum(terms.values()), success=correct, terms=terms)

    def score_many(self, completions, examples, workers: int = 0):
        # in the calling thread, where math-verify's signal-based timeout works (see the docstring)
        return super().score_many(completions, examples, workers=0)
