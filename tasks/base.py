"""The task framework: examples, the `Task` interface, reward records, data loading and the registry.

A task is one file that subclasses `Task`. It owns:
  * its examples (`Example`: id, prompt, reference, gold solution),
  * its prompt template (`format_prompt`),
  * answer extraction (`extract`) and a pure verifier (`verify` -> True / False / None),
  * its check of one completion (`check` -> `Check(verdict, extracted, extra, facts)`), which runs the
    verifier once and keeps what reward functions read,
  * the reward functions it offers (`reward_functions`) and their default weights (`default_rewards`):
    a run may choose others (`use_rewards`; tasks/rewards.py), and
  * its metrics (`metrics` over the scored samples), from the verifier's verdicts, never from rewards.

`verify` returns None when a completion cannot be scored (for example a code runner failure that is
not the program's fault); None is counted separately and never silently becomes a zero.

Data: `load(data=...)` takes a local file (jsonl or json) or a hub id (`hf://owner/name[:config]`, or a
bare `owner/name`), loaded with `datasets`; offline, the error says which `--data FILE` to pass.
A task declares the fields its rows need (`fields`, `optional_fields`: name -> type), and `load` checks
every row against them before `to_example`, wherever the rows came from. Bad data is a one-line
`DataError` naming the file and line (jsonl), the row (json array, hub split) and the field, and listing
the fields the task expects.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, get_args, get_origin

from harness.registry import Registry
from tasks.rewards import RewardFn, Rewards, check_choice, parse_models, parse_weights


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
    terms: dict[str, float] = field(default_factory=dict)  # weighted reward terms, summing to `total`


@dataclass
class Check:
    """The verifier's run on one completion: the verdict and what `samples.jsonl` shows of it (`extracted`,
    `extra`), plus `facts` that the task's reward functions read (not saved), e.g. the fraction of tests
    passed, so that rewards never run the program or the parser a second time."""

    verdict: bool | None
    extracted: Any = None
    extra: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)


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
    # fields every data row must have, name -> type (a type, a tuple of types, or `list[str]`); checked by
    # `load` before `to_example`, so `to_example` may index them freely
    fields: ClassVar[dict[str, Any]] = {}
    optional_fields: ClassVar[dict[str, Any]] = {}  # checked only when present and not null
    # scorers run in parallel by `harness eval`/`run` and the RL loop (code tasks run programs: 4); 0 = serial
    scoring_workers: ClassVar[int] = 0
    # ---- RL: the task's own TrainConfig values (the same for every method), e.g. arith's {"oversample": 4}
    rl_defaults: ClassVar[dict[str, Any]] = {}
    # ---- the embedded `tiny` model (harness/pretrain.py); only embedded tasks set these
    pretrain_steps: ClassVar[int | None] = None  # the fixed optimizer steps of `harness pretrain` (no time cap)
    pretrain_config: ClassVar[dict[str, Any]] = {}  # PretrainConfig fields of its own (shapes: a lower lr)

    def pretrain_examples(self) -> int | None:
        """How many train examples `harness pretrain` reads, where that is known without loading them (None:
        not known cheaply); a cached tiny model pretrained on another count is stale."""
        return None
    tiny_tokens: ClassVar[tuple[str, ...]] = ()  # strings the tiny tokenizer keeps as one token each
    # ---- rewards (tasks/rewards.py): name -> weight of the reward functions a run uses unless it chooses
    # (`harness run --reward NAME=W,...`); the defaults reproduce each task's reward of before issue 22
    default_rewards: ClassVar[dict[str, float]] = {}
    _rewards: Rewards | None = None  # set by `use_rewards` (per instance)
    # ---- optional abilities (the methods below say what they do when a task lacks them)
    supports_fewshot: ClassVar[bool] = False  # `set_fewshot` works: `harness eval --num-fewshot K`
    reads_prediction_folders: ClassVar[bool] = False  # `predictions_from_folder` works: `harness score` on a folder

    # ---- data -------------------------------------------------------------------------------
    def load(self, data: str | None = None, split: str = "test", limit: int | None = None) -> list[Example]:
        records = load_records(data, default_hub=self.hub_id, split=self.hub_split, hint=self.default_data_hint,
                               task=self.name)
        return self.examples_from(records, limit)

    def examples_from(self, records: Sequence[Any], limit: int | None = None) -> list[Example]:
        """Check every row against `fields`, then `to_example`; any problem is a DataError naming the row."""
        if not isinstance(records, Records):
            records = Records(records, source="data")
        if not records:
            raise DataError(f"{records.source}: no rows; expected {self.name} rows with {self.describe_fields()}")
        examples, seen = [], {}
        for i, record in enumerate(records):
            where = records.where(i)
            check_record(record, self.fields, self.optional_fields, where, self.name, self.describe_fields())
            try:
                ex = self.to_example(record, i)
            except KeyError as e:
                raise DataError(f"{where}: missing field {e.args[0]!r}; {self.name} rows need "
                                f"{self.describe_fields()}") from None
            except (TypeError, ValueError, AttributeError) as e:  # DataError included
                raise DataError(f"{where}: {_one_line(e)}") from None
            key = str(ex.id)
            if key in seen:
                raise DataError(f"{where}: id {ex.id!r} already used by {records.where(seen[key])}; "
                                "every row needs its own id")
            seen[key] = i
            examples.append(ex)
        return examples[:limit] if limit else examples

    @classmethod
    def describe_fields(cls) -> str:
        """`question (string), answer (string)`: the field list error messages show."""
        req = ", ".join(f"{k} ({_type_name(t)})" for k, t in cls.fields.items()) or "the task's fields"
        opt = ", ".join(f"{k} ({_type_name(t)})" for k, t in cls.optional_fields.items())
        return f"{req}; optional: {opt}" if opt else req

    def to_example(self, record: dict, index: int) -> Example:
        raise NotImplementedError

    # ---- prompting and scoring --------------------------------------------------------------
    def format_prompt(self, example: Example) -> str:
        return example.prompt

    def extract(self, completion: str) -> Any:
        raise NotImplementedError

    def verify(self, completion: str, reference: Any) -> bool | None:
        raise NotImplementedError

    def check(self, completion: Any, example: Example) -> Check:
        """Run the verifier on one completion (default: `verify` and `extract`)."""
        return Check(self.verify(completion, example.reference), self.extract(completion))

    def check_many(self, completions: Sequence[Any], examples: Sequence[Example], workers: int = 0) -> list[Check]:
        """`check` on every pair; `workers` > 1 runs them in parallel (code tasks run programs)."""
        if workers and workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                return list(pool.map(self.check, completions, examples))
        return [self.check(c, e) for c, e in zip(completions, examples)]

    # ---- rewards --------------------------------------------------------------------------------
    def reward_functions(self) -> dict[str, RewardFn]:
        """Every reward this task offers, by name (`harness run --reward NAME=WEIGHT,...` chooses)."""
        return {}

    def use_rewards(self, weights: Any = None, models: Any = None, device: str = "cpu") -> Rewards:
        """Score with these rewards from now on: `weights` as `{name: w}` or `"a=1,b=0.5"` (empty or None =
        `default_rewards`), `models` as `{name: local path}` for model-backed rewards (loaded here)."""
        w = parse_weights(weights) or dict(self.default_rewards)
        self._rewards = Rewards(self.name, self.reward_functions(), w, parse_models(models), device)
        return self._rewards

    def check_rewards(self, weights: Any = None, models: Any = None) -> None:
        """The checks of `use_rewards` that load nothing: names, weights, model paths (one-line errors)."""
        w = parse_weights(weights) or dict(self.default_rewards)
        check_choice(self.name, self.reward_functions(), w, parse_models(models))

    @property
    def rewards(self) -> Rewards:
        """The rewards in use (the defaults until `use_rewards` chooses others)."""
        if self._rewards is None:
            self.use_rewards()
        return self._rewards

    def reward(self, completion: Any, example: Example) -> RewardOutput:
        """The reward of one completion (the same path as `score`)."""
        s = self.score(completion, example)
        return RewardOutput(total=s.reward, success=s.verdict, terms=s.terms)

    # ---- optional abilities -------------------------------------------------------------------
    def set_fewshot(self, examples: Sequence[Example]) -> None:
        """Put these solved problems in front of every prompt (tasks with `supports_fewshot`)."""
        raise ValueError(f"few-shot prompts are not supported by task {self.name!r}")

    def predictions_from_folder(self, folder: str | Path) -> list[dict]:
        """Prediction rows {"id", "completion"} from a folder of outputs (tasks with `reads_prediction_folders`)."""
        raise ValueError(f"task {self.name!r} takes predictions as a jsonl file, not a folder")

    def to_image(self, completion: Any):
        """A PIL picture of a completion for the run's image sheet (image tasks), None when it has none."""
        return None

    def codebook_tokens(self) -> list[str]:
        """The image codebook's tokens, in id order (image tasks that the tiny model is pretrained for)."""
        raise ValueError(f"image task {self.name!r} has no codebook_tokens(); the tiny model needs its codebook")

    # raw (unweighted) reward values go into each row's `extra["rewards"]` (tasks whose metrics are rewards)
    records_raw_rewards: ClassVar[bool] = False

    def score(self, completion: Any, example: Example) -> Scored:
        return self.score_many([completion], [example])[0]

    def score_many(self, completions: Sequence[Any], examples: Sequence[Example], workers: int = 0) -> list[Scored]:
        """Check every pair (`check_many`), then apply the rewards in use: one `Scored` per completion."""
        checks = self.check_many(completions, examples, workers)
        values = self.rewards(examples, completions, checks)
        out = []
        for c, ex, ch, (total, terms, raw) in zip(completions, examples, checks, values):
            extra = {**ch.extra, "rewards": raw} if self.records_raw_rewards else ch.extra
            out.append(Scored(id=ex.id, completion=c if isinstance(c, str) else f"<{type(c).__name__}>",
                              extracted=ch.extracted, verdict=ch.verdict, reward=total, terms=terms, extra=extra))
        return out

    def score_report(self, scored: Sequence[Scored]) -> dict:
        """Task-specific counts for the summary's `report` (e.g. the math task's check statuses)."""
        return {}

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


def get_task(name: str, **options) -> Task:
    """The task registered as `name`, built with `options` (e.g. geneval's detector_path)."""
    return TASKS.get(name)(**options)


# ---- data loading --------------------------------------------------------------------------------
class Records(list):
    """Data rows plus where they came from, so that an error can name the file and line of a row."""

    def __init__(self, rows=(), source: str = "data", lines: list[int] | None = None):
        super().__init__(rows)
        self.source = source  # a path, or "hf://owner/name:config (split test)"
        self.lines = lines  # 1-based line of each row in a jsonl file; None for json arrays and the hub

    def where(self, i: int) -> str:
        if self.lines is not None and i < len(self.lines):
            return f"{self.source}:{self.lines[i]}"
        return f"{self.source} row {i} (0-based)"


_JSON_NAMES = {str: "string", int: "integer", float: "number", bool: "true/false", list: "list", dict: "object",
               type(None): "null"}


def _type_name(t: Any) -> str:
    if isinstance(t, tuple):
        return " or ".join(_type_name(x) for x in t)
    if get_origin(t) is list:
        (inner,) = get_args(t)
        return f"list of {_type_name(inner)}s"
    return _JSON_NAMES.get(t, getattr(t, "__name__", str(t)))


def _is_a(value: Any, t: Any) -> bool:
    """JSON-minded isinstance: `list[str]` checks the items, a bool is not an integer, an int is a float."""
    if isinstance(t, tuple):
        return any(_is_a(value, x) for x in t)
    if get_origin(t) is list:
        (inner,) = get_args(t)
        return isinstance(value, list) and all(_is_a(v, inner) for v in value)
    if isinstance(value, bool) and t is not bool:
        return False
    if t is float:
        return isinstance(value, (int, float))
    return isinstance(value, t)


def _show(value: Any) -> str:
    try:
        text = repr(value)
    except RecursionError:
        return "(nested too deeply to show)"
    return text if len(text) <= 40 else text[:37] + "..."


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def check_record(record: Any, fields: dict, optional: dict, where: str, task: str, expected: str) -> None:
    """Raise DataError unless `record` is an object with every field of `fields` of the right type."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object with {expected}, got {_type_name(type(record))} "
                        f"{_show(record)}")
    missing = [k for k in fields if k not in record]
    if missing:
        raise DataError(f"{where}: missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
                        f"{task} rows need {expected}")
    for spec, required in ((fields, True), (optional, False)):
        for k, t in spec.items():
            if not required and record.get(k) is None:
                continue
            if not _is_a(record[k], t):
                raise DataError(f"{where}: field {k!r} is {_type_name(type(record[k]))} {_show(record[k])}, "
                                f"expected {_type_name(t)}; {task} rows need {expected}")


def check_regular_file(p: Path, what: str) -> None:
    """DataError unless `p` is a regular file (checked without opening it: a FIFO would block,
    /dev/zero would never end)."""
    if not p.exists():
        raise DataError(f"{what} not found: {p}")
    if p.is_dir():
        raise DataError(f"{p} is a folder; pass a jsonl or json file")
    if not p.is_file():
        raise DataError(f"{p} is not a regular file (a device, FIFO or socket); pass a jsonl or json file")


def read_text(p: Path, expected: str) -> str:
    """The UTF-8 text of a regular file, a byte-order mark dropped; DataError otherwise."""
    try:
        return p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not UTF-8 text (byte {e.start}); {expected}") from None
    except MemoryError:
        raise DataError(f"{p}: too large to read into memory; {expected}") from None


def parse_json(text: str) -> Any:
    """json.loads, with too deep nesting (a RecursionError in the decoder) as a JSONDecodeError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None


def read_local(path: str | os.PathLike) -> Records:
    """Rows of a .jsonl file (one object per line) or a .json file (an array, or {"data": [...]})."""
    p = Path(path)
    check_regular_file(p, "data file")
    text = read_text(p, "expected a jsonl or json data file")
    if not text.strip():
        raise DataError(f"{p}: the file is empty; expected JSON lines (one object per line) or a JSON array")
    if p.suffix != ".jsonl":
        try:
            obj = parse_json(text)
        except json.JSONDecodeError as e:
            if not _first_line_is_object(text):  # a broken JSON document, not JSON lines
                raise DataError(f"{p}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from None
        else:
            return _whole_json_rows(p, obj, text)
    rows, lines = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(parse_json(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{p}:{n}: not valid JSON ({e.msg}, column {e.colno}); "
                                "expected one JSON object per line") from None
            lines.append(n)
    return Records(rows, source=str(p), lines=lines)


def _first_line_is_object(text: str) -> bool:
    first = next(line for line in text.splitlines() if line.strip())
    try:
        return isinstance(parse_json(first), dict)
    except json.JSONDecodeError:
        return False


def _whole_json_rows(p: Path, obj: Any, text: str) -> Records:
    if isinstance(obj, list):
        return Records(obj, source=str(p))
    if isinstance(obj, dict):
        for key in ("data", "rows", "examples"):
            if isinstance(obj.get(key), list):
                return Records(obj[key], source=f"{p} ({key})")
        if len([line for line in text.splitlines() if line.strip()]) == 1:  # JSON lines with one row
            line = next(n for n, t in enumerate(text.splitlines(), 1) if t.strip())
            return Records([obj], source=str(p), lines=[line])
        raise DataError(f"{p}: a JSON object with keys {', '.join(list(obj)[:6])}; expected a JSON array of "
                        "objects, {\"data\": [...]}, or JSON lines (one object per line)")
    raise DataError(f"{p}: a single JSON {_type_name(type(obj))}; expected a JSON array of objects or JSON "
                    "lines (one object per line)")


def load_records(data: str | None, default_hub: str | None, split: str, hint: str, task: str) -> Records:
    """Local path if it exists, else a hub id through `datasets` (only when asked for, or the task default)."""
    if data and (Path(data).exists() or data.endswith((".json", ".jsonl"))):
        return read_local(data)
    hub = data.removeprefix("hf://") if data else default_hub
    if not hub:
        raise DataError(f"task {task!r} needs --data FILE (jsonl or json){_hint(hint)}")
    name, _, config = hub.partition(":")
    from harness.environment import hub_offline_reason

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
    return Records((dict(r) for r in ds), source=f"hf://{hub} (split {split})")


def _hint(hint: str) -> str:
    return f", e.g. --data {hint}" if hint else ""
