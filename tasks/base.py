"""The task framework: examples, the `Task` interface, reward records, data loading and the registry.

A task is one file that subclasses `Task`. It owns:
  * its examples (`Example`: id, prompt, reference, gold solution),
  * its prompt template (`format_prompt`),
  * answer extraction (`extract`) and a pure verifier (`verify` -> True / False / None),
  * its reward (`reward` -> `RewardOutput(total, success, terms)`), which reuses the verifier, and
  * its metrics (`metrics` over the scored samples).

`verify` returns None when a completion cannot be scored (for example a code runner failure that is
not the program's fault); None is counted separately and never silently becomes a zero.

Data: `load(data=...)` takes a local file (jsonl or json) or a hub id (`hf://owner/name[:config]`, or a
bare `owner/name`), loaded with `datasets`; offline, the error says which `--data FILE` to pass.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from harness.registry import Registry


class DataError(ValueError):
    """Bad or unreachable data; the message says what to pass instead."""


@dataclass(frozen=True)
class Example:
    id: Any  # the dataset's own id where it has one, else the 0-based row index
    prompt: str  # the raw problem text (the task's template turns it into model input)
    reference: Any  # what the verifier compares against (an answer string, tests, GenEval metadata)
    solution: str = ""  # a gold completion: scoring it must give success
    meta: dict = field(default_factory=dict)


@dataclass
class RewardOutput:
    total: float
    success: bool | None  # the verifier's verdict; None = cannot be scored
    terms: dict[str, float] = field(default_factory=dict)  # named shaping terms, summing to `total`


@dataclass
class Scored:
    """One completion after scoring: what `samples.jsonl` holds, one row each."""

    id: Any
    completion: str
    extracted: Any
    verdict: bool | None
    reward: float
    terms: dict[str, float]
    extra: dict = field(default_factory=dict)  # e.g. gsm8k's flexible verdict, a code runner's status

    def to_json(self) -> dict:
        return asdict(self)


class Task:
    """Base class. Subclasses set the class attributes and implement the abstract methods."""

    name: ClassVar[str]
    kind: ClassVar[str] = "text"  # text | code | image
    primary_metric: ClassVar[str] = "accuracy"
    hub_id: ClassVar[str | None] = None  # default hub dataset (loaded only when the user asks)
    hub_split: ClassVar[str] = "test"
    default_data_hint: ClassVar[str] = ""  # a local file that works offline, for error messages
    embedded: ClassVar[bool] = False  # generated locally (no data file needed)
    # decoder defaults for `harness eval` on this task (overridable from the CLI)
    gen_defaults: ClassVar[dict] = {"gen_length": 256, "block_length": 32, "steps": 128}

    # ---- data -------------------------------------------------------------------------------
    def load(self, data: str | None = None, split: str = "test", limit: int | None = None) -> list[Example]:
        records = load_records(data, default_hub=self.hub_id, split=self.hub_split, hint=self.default_data_hint,
                               task=self.name)
        examples = [self.to_example(r, i) for i, r in enumerate(records)]
        return examples[:limit] if limit else examples

    def to_example(self, record: dict, index: int) -> Example:
        raise NotImplementedError

    # ---- prompting and scoring --------------------------------------------------------------
    def format_prompt(self, example: Example) -> str:
        return example.prompt

    def extract(self, completion: str) -> Any:
        raise NotImplementedError

    def verify(self, completion: str, reference: Any) -> bool | None:
        raise NotImplementedError

    def reward(self, completion: str, reference: Any) -> RewardOutput:
        raise NotImplementedError

    def score(self, completion: str, example: Example) -> Scored:
        r = self.reward(completion, example.reference)
        return Scored(id=example.id, completion=completion, extracted=self.extract(completion),
                      verdict=r.success, reward=r.total, terms=r.terms)

    def score_many(self, completions: Sequence[str], examples: Sequence[Example], workers: int = 0) -> list[Scored]:
        """Score pairs; tasks whose verifier runs programs pass `workers` > 1 to run them in parallel."""
        if workers and workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                return list(pool.map(self.score, completions, examples))
        return [self.score(c, e) for c, e in zip(completions, examples)]

    def metrics(self, scored: Sequence[Scored], examples: Sequence[Example]) -> tuple[dict, dict]:
        """(metrics, ci95): the default is accuracy over problems, first sample per problem."""
        from tasks.metrics import accuracy_with_ci

        first = first_sample_per_id(scored)
        acc, ci = accuracy_with_ci([s.verdict for s in first.values()])
        return {"accuracy": acc}, {"accuracy": ci}


def first_sample_per_id(scored: Sequence[Scored]) -> dict[Any, Scored]:
    out: dict[Any, Scored] = {}
    for s in scored:
        out.setdefault(s.id, s)
    return out


TASKS: Registry[type[Task]] = Registry("task")


def get_task(name: str) -> Task:
    return TASKS.get(name)()


# ---- data loading --------------------------------------------------------------------------------
def read_local(path: str | os.PathLike) -> list[dict]:
    """Rows of a .jsonl file (one object per line) or a .json file (an array, or {"data": [...]})."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file not found: {p}")
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".jsonl" or (not text.lstrip().startswith("[") and not text.lstrip().startswith("{\n")):
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{p}:{n}: not valid JSON ({e.msg}); expected one object per line") from None
        return rows
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{p}: not valid JSON ({e.msg})") from None
    if isinstance(obj, dict):
        for key in ("data", "rows", "examples"):
            if isinstance(obj.get(key), list):
                return obj[key]
        raise DataError(f"{p}: expected a JSON array of objects or {{'data': [...]}}")
    return obj


def load_records(data: str | None, default_hub: str | None, split: str, hint: str, task: str) -> list[dict]:
    """Local path if it exists, else a hub id through `datasets` (only when asked for, or the task default)."""
    if data and (Path(data).exists() or data.endswith((".json", ".jsonl"))):
        return read_local(data)
    hub = data.removeprefix("hf://") if data else default_hub
    if not hub:
        raise DataError(f"task {task!r} needs --data FILE (jsonl or json){_hint(hint)}")
    name, _, config = hub.partition(":")
    from harness.config import hub_offline_reason

    reason = hub_offline_reason()
    if reason:
        raise DataError(f"cannot load {hub!r}: the Hugging Face hub is not reachable ({reason}); "
                        f"pass a local file with --data FILE{_hint(hint)}")
    try:
        import datasets

        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as e:  # offline, unknown id, no such split...
        raise DataError(
            f"could not load {hub!r} from the Hugging Face hub ({type(e).__name__}); "
            f"pass a local file with --data FILE{_hint(hint)}"
        ) from None
    return [dict(r) for r in ds]


def _hint(hint: str) -> str:
    return f", e.g. --data {hint}" if hint else ""
