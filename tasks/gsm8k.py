"""GSM8K: grade-school word problems with a numeric answer (Cobbe et al., 2021).

    harness eval --task gsm8k --model gold --data ../shared/data/gsm8k_test.jsonl

Data: rows `{question, answer}` where `answer` is a worked solution ending in `#### N` (hub
`openai/gsm8k`, config `main`); the example id is the 0-based row index.

Answer extraction (both are reported; `accuracy` is the strict one):
  * strict   = the number in the last `\\boxed{}`, else the number after the last `####`;
  * flexible = strict, else the last number anywhere in the completion.
Numbers are compared exactly (`1,234` = `1234`, `$18.00` = `18`; no float tolerance).

Rewards (tasks/rewards.py; each 1 or 0): `format` when the completion has `<reasoning>...</reasoning>`
followed by `<answer>...</answer>`, `integer` when the strict answer is an integer, `correct` when the
strict answer equals the reference. Default weights (DESIGN section 6, after d1's GSM8K reward): format
0.5, integer 0.5, correct 2.0 (`--reward format=0.5,integer=0.5,correct=2.0`). `success` is the strict verdict.
Deliberate departure from d1: the format check is lenient about whitespace and newlines (d1 has a strict
and a soft variant), and the answer is read from `\\boxed{}` rather than from the answer tags.

Subclasses (the embedded `arith` task) reuse everything by overriding `to_example`/`load`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from tasks.base import TASKS, Check, DataError, Example, Scored, Task, first_sample_per_id
from tasks.extract import canonical_number, first_number, last_boxed, last_number, numbers_equal, parse_number
from tasks.rewards import RewardFn, per_item

FORMAT_RE = re.compile(r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>", re.DOTALL)
_CALCULATOR_RE = re.compile(r"<<[^<>]*>>")  # GSM8K's calculator annotations: "= <<9*2=18>>18"

PROMPT_TEMPLATE = (
    "{question}\n\n"
    "Reason step by step inside <reasoning> </reasoning> tags, then write the final answer inside "
    "<answer> </answer> tags as \\boxed{{N}}, where N is a number."
)

FORMAT_REWARD, INTEGER_REWARD, CORRECT_REWARD = 0.5, 0.5, 2.0


def strict_answer(completion: str) -> str | None:
    """The number in the last `\\boxed{}`, else after the last `####`; canonical string or None.

    A boxed content that is not a single number (`\\boxed{18 eggs}`, `\\boxed{x = 5}`) gives its last number.
    """
    boxed = last_boxed(completion)
    if boxed is not None:
        value = canonical_number(boxed)
        return value if value is not None else last_number(boxed)
    if "####" in completion:
        return first_number(completion.rsplit("####", 1)[1].split("\n", 1)[0])
    return None


def flexible_answer(completion: str) -> str | None:
    """The strict answer, else the last number in the completion."""
    s = strict_answer(completion)
    return s if s is not None else last_number(completion)


def has_format(completion: str) -> bool:
    return FORMAT_RE.search(completion) is not None


def wrap_solution(reasoning: str, answer: str) -> str:
    """A completion in the requested format: reasoning in tags, then `\\boxed{answer}` in answer tags."""
    return f"<reasoning>\n{reasoning.strip()}\n</reasoning>\n<answer>\n\\boxed{{{answer}}}\n</answer>"


@TASKS.register("gsm8k")
class GSM8K(Task):
    name = "gsm8k"
    primary_metric = "accuracy"
    hub_id = "openai/gsm8k:main"
    default_data_hint = "../shared/data/gsm8k_test.jsonl"
    gen_defaults = {"gen_length": 256, "block_length": 32, "steps": 128}
    fields = {"question": str, "answer": str}
    default_rewards = {"format": FORMAT_REWARD, "integer": INTEGER_REWARD, "correct": CORRECT_REWARD}

    def to_example(self, record: dict, index: int) -> Example:
        worked, _, final = record["answer"].rpartition("####")
        answer = canonical_number(final.strip())
        if answer is None:
            raise DataError(f"field 'answer' must end in '#### N' with N a number, got {record['answer'][-60:]!r}")
        reasoning = _CALCULATOR_RE.sub("", worked)
        return Example(id=index, prompt=record["question"], reference=answer,
                       solution=wrap_solution(reasoning, answer), meta={"worked": record["answer"]})

    # few-shot examples (`harness eval --num-fewshot K --fewshot-data train.jsonl`): base models are
    # evaluated on GSM8K with K solved problems in front (the LLaDA paper's base-model table uses 4)
    shots: tuple = ()

    supports_fewshot = True

    def set_fewshot(self, examples: Sequence[Example]) -> None:
        """Prompt with these solved problems first, in lm-eval's GSM8K format (`Question: ...\nAnswer: ...`
        with GSM8K's worked solution ending in `#### N`, read by the strict extraction)."""
        self.shots = tuple(examples)

    def format_prompt(self, example: Example) -> str:
        if not self.shots:
            return PROMPT_TEMPLATE.format(question=example.prompt)
        shots = "".join(f"Question: {ex.prompt}\nAnswer: {ex.meta.get('worked') or ex.solution}\n\n"
                        for ex in self.shots)
        return f"{shots}Question: {example.prompt}\nAnswer:"

    def extract(self, completion: str) -> str | None:
        return strict_answer(completion)

    def verify(self, completion: str, reference: Any) -> bool:
        return numbers_equal(strict_answer(completion), str(reference))

    def verify_flexible(self, completion: str, reference: Any) -> bool:
        return numbers_equal(flexible_answer(completion), str(reference))

    def check(self, completion: str, example: Example) -> Check:
        answer = strict_answer(completion)
        value = parse_number(answer)
        return Check(numbers_equal(answer, str(example.reference)), answer,
                     extra={"extracted_flexible": flexible_answer(completion),
                            "verdict_flexible": self.verify_flexible(completion, example.reference)},
                     facts={"integer": value is not None and value.denominator == 1})

    def reward_functions(self) -> dict[str, RewardFn]:
        return {
            "format": per_item("format", lambda ex, c, k: float(has_format(c)),
                               "1 when the completion has <reasoning>...</reasoning> then <answer>...</answer>"),
            "integer": per_item("integer", lambda ex, c, k: float(k.facts["integer"]),
                                "1 when the strict answer is an integer"),
            "correct": per_item("correct", lambda ex, c, k: float(bool(k.verdict)),
                                "1 when the strict answer equals the reference"),
        }

    def metrics(self, scored: Sequence[Scored], examples: Sequence[Example]) -> tuple[dict, dict]:
        """accuracy (= strict), accuracy_strict and accuracy_flexible over problems (first sample each),
        each with a Wilson 95% interval."""
        from tasks.metrics import accuracy_with_ci

        first = list(first_sample_per_id(scored).values())
        strict, ci_strict = accuracy_with_ci([s.verdict for s in first])
        flexible, ci_flexible = accuracy_with_ci([s.extra.get("verdict_flexible") for s in first])
        metrics = {"accuracy": strict, "accuracy_strict": strict, "accuracy_flexible": flexible}
        ci95 = {"accuracy": ci_strict, "accuracy_strict": ci_strict, "accuracy_flexible": ci_flexible}
        return metrics, ci95
