"""Numbers reported by the MaskGRPO paper, for the separate "published" table (DESIGN.md section 5).

None of these numbers is measured by this harness. They are written to `published.md` / `published.csv`
under a header that says so, and they never enter the measured per-task leaderboards. Gains and the
gain ratio are derived here from the reported scores (each gain rounded to the paper's precision first).
Units are the paper's: percent for the text benchmarks, a 0-1 score for GenEval; the measured tables
use fractions in [0, 1].
"""

from __future__ import annotations

import io
from dataclasses import dataclass

SOURCE = "the MaskGRPO paper"
HEADER_NOTE = (f"Reported by {SOURCE}, not measured by this harness. These rows are never mixed with the "
               "measured leaderboards; they are the claim the measured runs are checked against.")


@dataclass(frozen=True)
class Reported:
    benchmark: str
    model: str
    gen_length: int | None  # the generation length the paper evaluated at (None: not a text benchmark)
    unit: str  # "%" or "0-1"
    decimals: int  # the precision the paper reports
    base: float  # the base model's score
    scores: tuple[tuple[str, float], ...]  # (method, score after RL)
    baseline: str  # the method every gain ratio is taken against
    protocol: str  # the scoring rules behind the numbers (tasks/protocols.py names; see PROTOCOL_NOTES)


REPORTED: tuple[Reported, ...] = (
    Reported("GSM8K", "LLaDA-8B-Instruct", 256, "%", 1, 76.7, (("diffu-grpo", 79.8), ("maskgrpo", 84.7)),
             "diffu-grpo", "d1"),
    Reported("MATH500", "LLaDA-8B-Instruct", 256, "%", 1, 32.4, (("diffu-grpo", 34.4), ("maskgrpo", 37.6)),
             "diffu-grpo", "d1"),
    Reported("MBPP", "LLaDA-8B-Instruct", 256, "%", 1, 39.0, (("diffu-grpo", 42.1), ("maskgrpo", 45.4)),
             "diffu-grpo", "paper's own"),
    Reported("GenEval", "MMaDA", None, "0-1", 2, 0.56, (("unigrpo", 0.63), ("maskgrpo", 0.81)), "unigrpo",
             "geneval"),
)

COLUMNS = ("benchmark", "model", "gen_length", "unit", "method", "base_score", "reported_score", "gain",
           "gain_vs_baseline", "baseline", "protocol", "source")
PROTOCOL_NOTES = (
    "Protocol = the scoring rules behind a row. `d1`: d1's parser (dllm-reasoning/d1, eval/parse_and_get_acc.py), "
    "which gives the base scores 76.7 / 32.4 that MaskGRPO reports (its RL rows are taken to use the same rules); "
    "`harness score --protocol d1` reproduces that parser row by row on d1's published base-model generations "
    "(76.37% on its 1,130 GSM8K rows, 32.4% on MATH500). `geneval`: GenEval's own rules. `paper's own`: not identified, not reproduced here. Compare a "
    "measured row only with a published row of the same protocol.")


def published_rows() -> list[dict[str, str]]:
    """One row per (benchmark, method), every number already formatted."""
    rows = []
    for r in REPORTED:
        gains = {m: round(s - r.base, r.decimals) for m, s in r.scores}
        for method, score in r.scores:
            rows.append({
                "benchmark": r.benchmark, "model": r.model,
                "gen_length": "" if r.gen_length is None else str(r.gen_length), "unit": r.unit,
                "method": method, "base_score": f"{r.base:.{r.decimals}f}",
                "reported_score": f"{score:.{r.decimals}f}", "gain": f"{gains[method]:+.{r.decimals}f}",
                "gain_vs_baseline": f"{gains[method] / gains[r.baseline]:.2f}", "baseline": r.baseline,
                "protocol": r.protocol,
                "source": f"reported by {SOURCE} (not measured here)",
            })
    return rows


def render_csv() -> str:
    import csv

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(published_rows())
    return buf.getvalue()


def render_markdown() -> str:
    lines = [
        "# Published numbers (reported elsewhere, not measured here)", "",
        f"> {HEADER_NOTE}", "",
        "Gain = reported score - base score; gain ÷ baseline = this method's gain over the baseline "
        "method's gain on the same benchmark (1.00 for the baseline itself). Text benchmarks are in "
        "percent, GenEval in 0-1. Machine-readable copy: [published.csv](published.csv).", "",
        PROTOCOL_NOTES, "",
        "| benchmark | model | gen. length | unit | method | base (reported) | score (reported) | gain | "
        "gain ÷ baseline | baseline | protocol |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in published_rows():
        lines.append("| " + " | ".join(row[c] for c in COLUMNS[:-1]) + " |")
    return "\n".join(lines) + "\n"
