"""Scoring protocols: the same completions scored by the rules of the harness, of the d1 paper, or of
lm-eval, so that a figure can be compared with a published table (issue 23).

A protocol is answer extraction + equivalence only; the prompt and decoding are the run's own.

* `harness` (the default): the task's own verifier (GSM8K strict/flexible with exact numbers; MATH
  with math-verify through the checking pool).
* `d1`: the rules of d1's published evaluation (dllm-reasoning/d1, `eval/parse_and_get_acc.py`),
  written here from their behaviour and checked row by row against their parser on their published
  LLaDA-8B-Instruct generations (76.37% GSM8K on 1,130 rows, 32.4% MATH500; tests/test_protocols.py).
  GSM8K: the first `\\boxed{...}` (no nested braces, same line) that holds a number — the whole content as
  a float, else its first number; without one, the `<answer>...</answer>` text as a float, else its last
  number; correct when equal as floats to the reference read as d1 reads GSM8K's `#### N` (digits, commas
  and a decimal part after an optional `$`: a negative reference is never matched, as in d1). MATH500:
  the last `\\boxed{}` (or `\\boxed ` up to a `$`, or `\\fbox{}` kept whole, or the whole completion when
  there is no box), `<answer>` text when that is empty or unbalanced, compared with the Hendrycks MATH
  string normalisation (`hendrycks_equiv`): no symbolic algebra, so `\\frac{3}{24}` is not `\\frac{1}{8}`.
* `lm-eval`: lm-eval's own functions (a declared dependency, version in every result's provenance).
  GSM8K: its `gsm8k` task's filters — strict-match `#### (-?[0-9.,]+)` first match, flexible-extract the
  last match of `(-?[$0-9.,]{2,})|(-?[0-9]+)` — and its `exact_match` (ignore case, drop `,`, `$`, a
  trailing `.`). MATH500: its `hendrycks_math500` task's `process_results` (the text between the first and
  last `$` if there are two, else the whole completion, against the solution's last box, Hendrycks
  normalisation).

Tasks without alternative rules have only `harness`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tasks.base import DataError, Example, Scored, first_sample_per_id

DEFAULT = "harness"
ALL = ("harness", "d1", "lm-eval")
_BY_TASK = {"gsm8k": ALL, "math": ALL}


def available(task_name: str) -> tuple[str, ...]:
    return _BY_TASK.get(task_name, (DEFAULT,))


def parse_protocols(text: str | None, task_name: str) -> list[str]:
    """`"harness,d1"` -> ["harness", "d1"] (the first is the result's protocol); ValueError when unknown."""
    names = [p.strip() for p in (text or DEFAULT).split(",") if p.strip()]
    if not names:
        raise ValueError(f"--protocol needs a name: one or more of {', '.join(ALL)}, comma-separated")
    for p in names:
        if p not in ALL:
            raise ValueError(f"unknown protocol {p!r}; valid protocols: {', '.join(ALL)}")
        if p not in available(task_name):
            raise ValueError(f"task {task_name!r} is scored by protocol {DEFAULT!r} only, not {p!r}")
    return list(dict.fromkeys(names))


# ---- d1 ---------------------------------------------------------------------------------------------------
_D1_BOX = re.compile(r"\\boxed{(.*?)}")
_D1_NUMBER = re.compile(r"-?\d+\.?\d*")
_D1_ANSWER_TAGS = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_D1_GSM_GOLD = re.compile(r"####\s*\$?([\d,]+(?:\.\d+)?)")


def _d1_float(text: str, which: int) -> float | None:
    try:
        return float(text)
    except ValueError:
        numbers = _D1_NUMBER.findall(text)
        return float(numbers[which]) if numbers else None


def d1_gsm8k_answer(completion: str) -> float | None:
    for content in _D1_BOX.findall(completion):
        content = content.strip()
        if not content or re.fullmatch(r"\.+", content):
            continue
        value = _d1_float(content, 0)
        if value is not None:
            return value
    m = _D1_ANSWER_TAGS.search(completion)
    if m and m.group(1).strip():
        return _d1_float(m.group(1).strip(), -1)
    return None


def d1_gsm8k_reference(reference: str) -> float | None:
    m = _D1_GSM_GOLD.search(f"#### {reference}")
    return float(m.group(1).replace(",", "")) if m else None


def _d1_last_box(text: str) -> str | None:
    if "\\boxed " in text:
        return "\\boxed " + text.split("\\boxed ")[-1].split("$")[0]
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
        if start < 0:
            return text
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
    return None


def d1_math_answer(completion: str) -> str | None:
    box = _d1_last_box(completion)
    if box is None:
        answer = None
    elif box.startswith("\\boxed "):
        answer = box[len("\\boxed "):]
    elif box.startswith("\\boxed{") and box.endswith("}"):
        answer = box[len("\\boxed{"):-1]
    else:
        answer = box
    if not answer:
        m = _D1_ANSWER_TAGS.search(completion)
        if m:
            answer = m.group(1).strip()
    return answer


# ---- the Hendrycks MATH string normalisation (d1's is_equiv) ------------------------------------------------
def _units_off(s: str) -> str:
    if "\\text{ " not in s:
        return s
    parts = s.split("\\text{ ")
    if len(parts) != 2:
        raise ValueError("more than one unit")
    return parts[0]


def _sqrt_braced(s: str) -> str:
    if "\\sqrt" not in s:
        return s
    head, *rest = s.split("\\sqrt")
    out = head
    for part in rest:
        out += "\\sqrt" + (part if part[0] == "{" else "{" + part[0] + "}" + part[1:])  # IndexError on "\\sqrt" at end
    return out


def _fracs_braced(s: str) -> str:
    head, *rest = s.split("\\frac")
    out = head
    for part in rest:
        out += "\\frac"
        if part[0] == "{":  # IndexError on "\\frac" at the end, as in the original
            out += part
            continue
        if len(part) < 2:
            return s
        a, b, tail = part[0], part[1], part[2:]
        out += "{" + a + "}" + (b + tail if b == "{" else "{" + b + "}" + tail)
    return out


def _slash_to_frac(s: str) -> str:
    parts = s.split("/")
    if len(parts) != 2:
        return s
    a, b = int(parts[0]), int(parts[1])  # ValueError propagates: the caller falls back to raw equality
    return f"\\frac{{{a}}}{{{b}}}" if s == f"{a}/{b}" else s


def hendrycks_normalize(s: str) -> str:
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac").replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "")
    s = _units_off(s)
    s = s.replace("\\%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        s = sides[1]
    s = _sqrt_braced(s).replace(" ", "")
    s = _fracs_braced(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _slash_to_frac(s)


def hendrycks_equiv(a: str | None, b: str | None) -> bool:
    """Equal after the normalisation; when it fails on either side, equal as raw strings (as the original)."""
    if a is None or b is None:
        return a is None and b is None
    try:
        return hendrycks_normalize(a) == hendrycks_normalize(b)
    except Exception:  # noqa: BLE001 - the original falls back on any failure
        return a == b


# ---- lm-eval --------------------------------------------------------------------------------------------------
_LM_STRICT, _LM_FLEXIBLE = r"#### (\-?[0-9\.\,]+)", r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
_LM_IGNORE = [",", "\\$", "(?s).*#### ", "\\.$"]


def _lm_gsm8k(completions: Sequence[str], references: Sequence[str]) -> list[dict]:
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter

    strict = [r[0] for r in RegexFilter(_LM_STRICT, group_select=0).apply([[c] for c in completions], [])]
    flexible = [r[0] for r in RegexFilter(_LM_FLEXIBLE, group_select=-1).apply([[c] for c in completions], [])]

    def match(pred: str, ref: str) -> bool:
        return bool(exact_match_hf_evaluate([pred], [ref], regexes_to_ignore=_LM_IGNORE, ignore_case=True,
                                            ignore_punctuation=False)["exact_match"])

    return [{"verdict": match(s, ref), "extracted": s, "verdict_flexible": match(f, ref), "extracted_flexible": f}
            for s, f, ref in zip(strict, flexible, references)]


def _lm_math(completions: Sequence[str], examples: Sequence[Example]) -> list[dict]:
    from lm_eval.tasks.hendrycks_math.utils import process_results

    out = []
    for c, ex in zip(completions, examples):
        solution = ex.solution or f"\\boxed{{{ex.reference}}}"
        dollars = [i for i, ch in enumerate(c) if ch == "$"]
        extracted = c if len(dollars) <= 1 else c[dollars[0] + 1:dollars[-1]]
        out.append({"verdict": bool(process_results({"solution": solution}, [c])["exact_match"]),
                    "extracted": extracted})
    return out


# ---- applying protocols to scored rows ----------------------------------------------------------------------
def row_verdicts(protocol: str, task_name: str, scored: Sequence[Scored], owners: Sequence[Example]) -> list[dict]:
    """Per row {"verdict", "extracted"[, "verdict_flexible", "extracted_flexible"]} under `protocol`."""
    completions = [s.completion for s in scored]
    if protocol == DEFAULT:
        out = []
        for s in scored:
            row = {"verdict": s.verdict, "extracted": s.extracted}
            if "verdict_flexible" in s.extra:
                row |= {"verdict_flexible": s.extra["verdict_flexible"],
                        "extracted_flexible": s.extra.get("extracted_flexible")}
            out.append(row)
        return out
    if protocol == "d1" and task_name == "gsm8k":
        out = []
        for c, ex in zip(completions, owners):
            got, gold = d1_gsm8k_answer(c), d1_gsm8k_reference(str(ex.reference))
            out.append({"verdict": got is not None and got == gold, "extracted": got})
        return out
    if protocol == "d1" and task_name == "math":
        answers = [d1_math_answer(c) for c in completions]
        return [{"verdict": a is not None and hendrycks_equiv(a, str(ex.reference)),
                 "extracted": a if a is None or len(a) <= 200 else a[:200] + "..."}
                for a, ex in zip(answers, owners)]
    if protocol == "lm-eval" and task_name == "gsm8k":
        return _lm_gsm8k(completions, [str(ex.reference) for ex in owners])
    if protocol == "lm-eval" and task_name == "math":
        return _lm_math(completions, owners)
    raise ValueError(f"task {task_name!r} has no protocol {protocol!r}")


def _metrics(rows: list[dict], scored: Sequence[Scored]) -> tuple[dict, dict]:
    from tasks.metrics import accuracy_with_ci

    firsts = {id(s) for s in first_sample_per_id(scored).values()}
    picked = [r for r, s in zip(rows, scored) if id(s) in firsts]
    acc, ci = accuracy_with_ci([r["verdict"] for r in picked])
    metrics, ci95 = {"accuracy": acc}, {"accuracy": ci}
    if picked and "verdict_flexible" in picked[0]:
        flex, ci_flex = accuracy_with_ci([r["verdict_flexible"] for r in picked])
        metrics |= {"accuracy_strict": acc, "accuracy_flexible": flex}
        ci95 |= {"accuracy_strict": ci, "accuracy_flexible": ci_flex}
    return metrics, ci95


def apply_protocols(task, scored: list[Scored], owners: Sequence[Example], requested: Sequence[str],
                    metrics: dict, ci95: dict) -> tuple[dict, dict, dict, list[dict]]:
    """Score `scored` under every protocol the task has; returns (metrics, ci95, by_protocol, disagreements).

    `metrics`/`ci95` are those of the first requested protocol (the result's protocol); `by_protocol` holds
    the metrics of every requested one; each row's `extra["protocols"]` gets the other protocols' verdicts;
    `disagreements` lists the rows where any protocol's verdict differs from the first requested one's.
    """
    primary = requested[0]
    verdicts = {p: row_verdicts(p, task.name, scored, owners) for p in available(task.name)}
    by_protocol = {}
    for p in requested:
        by_protocol[p] = dict(zip(("metrics", "ci95"), (metrics, ci95) if p == DEFAULT else _metrics(verdicts[p], scored)))
    disagreements = []
    for k, s in enumerate(scored):
        if len(verdicts) > 1:
            s.extra["protocols"] = {p: {"verdict": v[k]["verdict"], "extracted": v[k]["extracted"]}
                                    for p, v in verdicts.items() if p != DEFAULT}
        if any(v[k]["verdict"] != verdicts[primary][k]["verdict"] for v in verdicts.values()):
            disagreements.append({"id": s.id, "reference": str(owners[k].reference),
                                  "verdicts": {p: v[k]["verdict"] for p, v in verdicts.items()},
                                  "extracted": {p: v[k]["extracted"] for p, v in verdicts.items()},
                                  "completion": s.completion})
    return by_protocol[primary]["metrics"], by_protocol[primary]["ci95"], by_protocol, disagreements


# ---- other systems' published generations --------------------------------------------------------------------
def _is_d1_layout(obj: Any) -> bool:
    return (isinstance(obj, dict) and isinstance(obj.get("generations"), list) and bool(obj["generations"])
            and all(isinstance(g, dict) and "question" in g and "generations" in g for g in obj["generations"]))


def d1_predictions(path: str | Path, examples: Sequence[Example]) -> tuple[list[dict], dict] | None:
    """Rows `{"id", "completion"}` from d1's published JSON layout (`{"generations": [{"question",
    "generations", "ground_truth"}], ...}`): one file, or a folder of them. Rows are matched to `examples`
    by question text (exact, else with whitespace collapsed); files of another benchmark (no question
    matches) are skipped. Returns None when `path` is not in d1's layout, else (rows, report)."""
    p = Path(path)
    files = sorted(p.glob("*.json")) if p.is_dir() else [p] if p.suffix == ".json" else []
    shards = []
    for f in files:
        try:
            obj = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if _is_d1_layout(obj):
            shards.append((f, obj["generations"]))
    if not shards:
        return None

    def squash(text: str) -> str:
        return " ".join(str(text).split())

    exact = {ex.prompt: ex for ex in examples}
    loose = {squash(ex.prompt): ex for ex in examples}
    rows, used, skipped, unmatched = [], [], [], 0
    for f, gens in shards:
        got = []
        for g in gens:
            ex = exact.get(g["question"]) or loose.get(squash(g["question"]))
            if ex is None or not isinstance(g["generations"], str):
                unmatched += 1
                continue
            got.append({"id": ex.id, "completion": g["generations"]})
        if got:
            rows += got
            used.append(f.name)
        else:
            unmatched -= len(gens)
            skipped.append(f.name)
    if not rows:
        raise DataError(f"{p}: d1-layout generations, but no question matches the data's "
                        f"({len(skipped)} file(s) of another benchmark?)")
    return rows, {"format": "d1", "files": used, "files_skipped": skipped, "unmatched_questions": unmatched}
