"""Collate result files into leaderboards: per task `<task>.csv`, `<task>.md` and `<task>.png`, an index
`README.md`, and the separate table of published numbers (`published.md`, `published.csv`).

Run: `harness leaderboard [--results DIR] [--out DIR]`, which calls `build_leaderboards` and prints its
report. Inputs are `DIR/**/summary.json` (+ `curve.csv` beside each RL run) only (DESIGN.md section 7).

Rows. One per (task, model, recipe, method): a row never mixes recipes (`--recipe equal|paper`,
trainers/recipes.py; a summary without `recipe`, written before recipes existed, is `equal`). RL rows come from `kind == "run"` summaries; `kind == "eval"`
summaries (and runs whose method is null or "none") become base-only rows (`method` = "none") whose
base score is the mean of `metrics[primary_metric]`. Other kinds (e.g. "score") are listed as ignored.
Every number is a mean over the seeds of the row; the gain is the summary's `gain` (primary metric).
Eval NFE is the summary's `eval_nfe` where present (a run's `nfe` counts base + final + training), else
its `nfe`; train NFE and the rollout budget come from `train`; wall time is the whole run's.

Protocols. A summary's `protocol` (tasks/protocols.py; absent = `harness`, as in every result written
before protocols existed) decides its table: `harness` results go to `<task>.*`, results scored by
another protocol to `<task>@<protocol>` (file `<task>_<protocol>.*`), so no table mixes scoring rules.

Gain CI. With n >= 2 seeds: mean of the per-seed gains ± t(0.975, n-1) · sd(ddof=1) / sqrt(n), i.e. the
spread between seeds (`ci_kind` = "seeds_t"). With one seed there is no spread to measure, so the row
shows that run's own paired-bootstrap `gain_ci95` over test problems (`ci_kind` = "bootstrap_1seed");
the two are not the same quantity and the column says which one a row has.
`gain_vs_diffu_grpo` = the row's mean gain / diffu-grpo's mean gain for the same (task, model, recipe,
rollout budget), both taken over the seeds the two rows share (a row with seeds 0,1,2 against a diffu-grpo
row with seeds 0,1 is compared on seeds 0 and 1 only: seeds draw the same base evaluation and prompt
order, so a ratio over different seed sets would mix seed luck into it); `ratio_seeds` names those seeds.
Empty where diffu-grpo has no row, the two share no seed, or diffu-grpo's gain over them is 0.
`ratio_note` says when diffu-grpo's own gain interval includes 0 (the markdown marks the ratio with †): a
ratio to a gain that cannot be told from zero is noise. `hardware` is what the wall time was measured on:
the GPU's name for runs whose `device` was a CUDA device (older summaries without `device`: a GPU named in
their `hardware`), else "CPU"; a row whose seeds ran on different machines lists each.

`model` is the summary's model name, followed by `@` and the first 8 hex digits of its `model_sha256`
where the summary records one (the tiny model, local folders): two different pretrained `tiny` models are
two rows, never one; summaries written before the field existed show the bare name.

Failures. A summary that cannot be read (corrupt JSON, wrong schema_version, a field the leaderboard
shows is missing or not a finite number) or a second run of the same (task, model, method, seed) is
skipped and reported by name; a run whose curve cannot be read keeps its row, loses its plot line and is
reported as a warning. The rest of the leaderboard still builds.

Determinism. Rows are sorted, numbers have fixed formats, and no dates, absolute paths or timestamps go
into CSV or markdown, so regenerating from the same files gives byte-identical text. Plots are drawn on
a bare Agg `Figure` (no pyplot, no global state) with the PNG "Software" tag removed, so they are also
stable for one matplotlib version.

Leaves out: files of a task that no longer has results are not deleted (the output folder also holds this
package's code, so nothing is removed that this call did not write).
"""

from __future__ import annotations

import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.results import ResultError, atomic_write_bytes, atomic_write_text, read_summary
from leaderboards import published

# t(0.975, df) for df = 1..30 (scipy.stats.t.ppf, 6 decimals); beyond 30 a Cornish-Fisher expansion.
_T975 = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157,
         2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922,
         2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831,
         2.048407, 2.045230, 2.042272)
_Z975 = 1.959963984540054
BASELINE_METHOD = "diffu-grpo"
DEFAULT_PROTOCOL = "harness"
BASE_ONLY = "none"

# CSV columns in order, each with its format: "score" 4 decimals, "count" integer (1 decimal if the mean
# over seeds is not whole), "time" 1 decimal, "text" as is.
COLUMNS: dict[str, str] = {
    "model": "text", "recipe": "text", "method": "text", "metric": "text", "n_seeds": "count", "seeds": "text",
    "base_score": "score", "final_score": "score", "gain": "score", "gain_ci_lo": "score",
    "gain_ci_hi": "score", "ci_kind": "text", "gain_vs_diffu_grpo": "score", "ratio_seeds": "text",
    "ratio_note": "text",
    "rollout_budget": "count",
    "train_nfe": "count", "eval_nfe": "count", "wall_time_s": "time", "hardware": "text", "n_problems": "text",
    "gen_length": "text", "runs": "text",
}


@dataclass(frozen=True)
class Problem:
    path: str  # the file, relative to the results folder (posix separators)
    reason: str


@dataclass
class Report:
    """What a build did; `as_dict` is what `build_leaderboards` returns."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)  # files not used at all
    warnings: list[Problem] = field(default_factory=list)  # files used in part (e.g. unreadable curve)
    ignored: list[Problem] = field(default_factory=list)  # valid results that are not leaderboard rows
    tasks: list[str] = field(default_factory=list)

    def as_dict(self, results_dir: Path) -> dict[str, list[str]]:
        """JSON-ready; each problem is "RESULTS/<run>/<file>: reason" with the results folder as given."""
        def named(problems: list[Problem]) -> list[str]:
            return [f"{results_dir / p.path}: {p.reason}" for p in problems]

        return {"tasks": list(self.tasks), "written": [str(p) for p in self.written],
                "skipped": named(self.skipped), "warnings": named(self.warnings), "ignored": named(self.ignored)}


class _Skip(Exception):
    """A summary that has what read_summary checks but not what a leaderboard row needs."""


def t_quantile_975(df: int) -> float:
    """Two-sided 95% Student-t quantile with `df` degrees of freedom."""
    if df < 1:
        raise ValueError(f"t quantile needs df >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z, v = _Z975, float(df)  # Cornish-Fisher; error < 1e-6 for df > 30
    return (z + (z**3 + z) / (4 * v) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3))


# ---- reading ---------------------------------------------------------------------------------------------
def _get(obj: dict, *keys: str) -> Any:
    cur: Any = obj
    for k in keys:
        if not isinstance(cur, dict) or k not in cur:
            raise _Skip(f"missing field {'.'.join(keys)}")
        cur = cur[k]
    return cur


def _finite(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _Skip(f"field {name} is {v!r}, expected a finite number")
    return float(v)


def _num(obj: dict, *keys: str) -> float:
    return _finite(_get(obj, *keys), ".".join(keys))


def _text(obj: dict, key: str) -> str:
    v = _get(obj, key)
    if not isinstance(v, str) or not v:
        raise _Skip(f"field {key} is {v!r}, expected a non-empty string")
    return v


def _hardware(s: dict) -> str:
    """What a run's wall time was measured on: the GPU's name when the model ran on one, else "CPU".

    Runs record the torch device they used (`device`); older ones only the machine (`hardware`), so a
    GPU named there is taken to be the one they ran on."""
    hw = s.get("hardware") if isinstance(s.get("hardware"), dict) else {}
    gpu, device = hw.get("gpu"), s.get("device")
    on_gpu = device.startswith("cuda") if isinstance(device, str) else bool(gpu)
    return str(gpu or "GPU") if on_gpu else "CPU"


def _record(s: dict, run: str) -> dict | None:
    """One summary as a flat record; None for kinds that are not leaderboard rows. Raises _Skip."""
    kind = _get(s, "kind")
    method = s.get("method")
    if kind not in ("run", "eval"):
        return None
    base_only = kind == "eval" or method in (None, BASE_ONLY)
    pm = _text(s, "primary_metric")
    decode = s.get("decode") if isinstance(s.get("decode"), dict) else {}
    protocol = s.get("protocol", DEFAULT_PROTOCOL)  # results written before protocols existed: the harness's
    if not isinstance(protocol, str) or not protocol:
        raise _Skip(f"field protocol is {protocol!r}, expected a non-empty string")
    task = _text(s, "task")
    if protocol != DEFAULT_PROTOCOL:  # a table of its own: a leaderboard never mixes scoring protocols
        task = f"{task}@{protocol}"
    model = _text(s, "model")
    sha = s.get("model_sha256")  # the weights' identity: two different "tiny" models are two experiments
    if isinstance(sha, str) and sha:
        model = f"{model}@{sha[:8]}"
    rec = {"task": task, "model": model, "metric": pm, "run": run,
           "base_only": base_only, "n_problems": s.get("n"), "gen_length": decode.get("gen_length"),
           "eval_nfe": _num(s, "eval_nfe") if "eval_nfe" in s else _num(s, "nfe"),
           "wall_time_s": _num(s, "wall_time_s"), "hardware": _hardware(s)}
    if base_only:
        seed = s.get("seed")
        return rec | {"method": BASE_ONLY, "recipe": "", "seed": seed if isinstance(seed, int) else None,
                      "base": _num(s, "metrics", pm)}
    seed = _get(s, "seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise _Skip(f"field seed is {seed!r}, expected an integer")
    ci = _get(s, "gain_ci95")
    if not isinstance(ci, list) or len(ci) != 2:
        raise _Skip(f"field gain_ci95 is {ci!r}, expected [lo, hi]")
    ci_lo, ci_hi = _finite(ci[0], "gain_ci95[0]"), _finite(ci[1], "gain_ci95[1]")
    recipe = s.get("recipe") or (s.get("config") or {}).get("recipe") or "equal"  # before recipes: equal
    if not isinstance(recipe, str):
        raise _Skip(f"field recipe is {recipe!r}, expected a string")
    return rec | {"method": _text(s, "method"), "recipe": recipe, "seed": seed, "base": _num(s, "base", pm),
                  "final": _num(s, "final", pm), "gain": _num(s, "gain"), "ci_lo": ci_lo, "ci_hi": ci_hi,
                  "rollout_budget": _num(s, "train", "rollout_budget"),
                  "train_nfe": _num(s, "train", "train_nfe")}


def load_records(results_dir: Path, report: Report) -> list[dict]:
    """Every usable summary under `results_dir` as a record; problems go into `report`."""
    records, seen = [], {}
    for path in sorted(results_dir.rglob("summary.json")):
        rel = path.relative_to(results_dir).as_posix()
        run = path.parent.relative_to(results_dir).as_posix()
        try:
            rec = _record(read_summary(path), run)
        except ResultError as e:
            report.skipped.append(Problem(rel, str(e).removeprefix(f"{path}: ")))
            continue
        except _Skip as e:
            report.skipped.append(Problem(rel, str(e)))
            continue
        if rec is None:
            report.ignored.append(Problem(rel, "kind is not 'run' or 'eval'; not a leaderboard row"))
            continue
        if not rec["base_only"]:
            key = (rec["task"], rec["model"], rec["recipe"], rec["method"], rec["rollout_budget"], rec["seed"])
            if key in seen:
                report.skipped.append(Problem(rel, f"same task, model, recipe, method, rollout budget and seed as "
                                                   f"{seen[key]}"))
                continue
            seen[key] = rel
        records.append(rec)
    return records


# ---- aggregation -----------------------------------------------------------------------------------------
def _distinct(values) -> str:
    """The distinct values of a column, joined: one value when the seeds agree, visible when they don't."""
    out = set()
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        out.add(str(int(v)) if isinstance(v, float) and v.is_integer() else str(v))
    return ";".join(sorted(out, key=lambda x: (len(x), x)))


def _row(group: pd.DataFrame) -> dict:
    """One leaderboard row from the records of one (task, model, method); numbers unformatted."""
    group = group.sort_values(["seed", "run"], na_position="last")
    n = len(group)
    row = {"model": group["model"].iloc[0], "recipe": group["recipe"].iloc[0], "method": group["method"].iloc[0],
           "metric": _distinct(group["metric"]), "n_seeds": n,
           "seeds": ";".join(str(int(s)) for s in group["seed"].dropna()),
           "base_score": group["base"].mean(), "eval_nfe": group["eval_nfe"].mean(),
           "wall_time_s": group["wall_time_s"].mean(), "hardware": _distinct(group["hardware"]),
           "n_problems": _distinct(group["n_problems"]),
           "gen_length": _distinct(group["gen_length"]), "runs": ";".join(group["run"])}
    if group["base_only"].iloc[0]:
        return row
    gains = group["gain"].to_numpy(dtype=float)
    mean = float(gains.mean())
    if n >= 2:
        half = t_quantile_975(n - 1) * float(gains.std(ddof=1)) / math.sqrt(n)
        lo, hi, ci_kind = mean - half, mean + half, "seeds_t"
    else:
        lo, hi, ci_kind = float(group["ci_lo"].iloc[0]), float(group["ci_hi"].iloc[0]), "bootstrap_1seed"
    return row | {"final_score": group["final"].mean(), "gain": mean, "gain_ci_lo": lo, "gain_ci_hi": hi,
                  "ci_kind": ci_kind, "rollout_budget": group["rollout_budget"].mean(),
                  "train_nfe": group["train_nfe"].mean(),
                  "_seed_gains": {int(s): float(g) for s, g in zip(group["seed"], gains) if pd.notna(s)}}


def task_table(records: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard of one task: sorted rows, numbers unformatted (NaN where a cell is empty)."""
    # runs at different rollout budgets are different experiments: one row each, never averaged together,
    # and a row's gain is compared with diffu-GRPO's at the same budget only
    records = records.assign(_budget=records["rollout_budget"].fillna(-1) if "rollout_budget" in records else -1)
    records = records.assign(recipe=records["recipe"].fillna("") if "recipe" in records else "")
    rows = [_row(g) for _, g in records.groupby(["model", "recipe", "method", "_budget"], sort=True)]
    seed_gains = pd.Series([r.get("_seed_gains") for r in rows], dtype=object)
    table = pd.DataFrame(rows).reindex(columns=list(COLUMNS))
    table["ratio_seeds"] = table["ratio_seeds"].astype(object)
    table["ratio_note"] = table["ratio_note"].astype(object)
    for idx in table.groupby(["model", "recipe", table["rollout_budget"].fillna(-1)]).groups.values():
        ref = [i for i in idx if table.loc[i, "method"] == BASELINE_METHOD and seed_gains[i]]
        if len(ref) != 1:
            continue
        base = seed_gains[ref[0]]
        # a baseline gain that its own interval cannot tell from zero makes any ratio to it noise
        unsure = table.loc[ref[0], "gain_ci_lo"] <= 0 <= table.loc[ref[0], "gain_ci_hi"]
        for i in idx:
            mine = seed_gains[i]
            common = sorted(set(mine or {}) & set(base))
            if not common:
                continue
            ref_gain = sum(base[s] for s in common) / len(common)
            if ref_gain != 0:
                table.loc[i, "gain_vs_diffu_grpo"] = sum(mine[s] for s in common) / len(common) / ref_gain
                table.loc[i, "ratio_seeds"] = ";".join(str(s) for s in common)
                if unsure:
                    table.loc[i, "ratio_note"] = "diffu-grpo gain CI includes 0"
    # base-only rows first, then by gain (best first), then by name; ties are broken by the name
    table["_base"] = table["method"] != BASE_ONLY
    table["_neg_gain"] = -table["gain"].astype(float)
    table["_neg_budget"] = -table["rollout_budget"].astype(float)  # the largest budget first
    table = table.sort_values(["model", "_base", "recipe", "_neg_budget", "_neg_gain", "method"], na_position="last",
                              kind="stable")
    return table.drop(columns=["_base", "_neg_budget", "_neg_gain"]).reset_index(drop=True)


def _fmt(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if kind == "text":
        return str(value)
    value = float(value)
    if kind == "count":
        return str(int(value)) if value.is_integer() else f"{value:.1f}"
    text = f"{value:.1f}" if kind == "time" else f"{value:.4f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # never "-0.0000"


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({c: [_fmt(v, k) for v in table[c]] for c, k in COLUMNS.items()}, dtype=object)


# ---- writing ---------------------------------------------------------------------------------------------
def _slug(task: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]", "_", task)
    return f"{slug}_task" if slug in ("README", "published") else slug


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


MD_COLUMNS = (("model", "model"), ("recipe", "recipe"), ("method", "method"), ("metric", "metric"), ("n_seeds", "seeds"),
              ("base_score", "base"), ("final_score", "final"), ("gain", "gain"), ("_ci", "gain 95% CI"),
              ("ci_kind", "CI kind"), ("gain_vs_diffu_grpo", "gain ÷ diffu-GRPO"), ("ratio_seeds", "÷ on seeds"),
              ("rollout_budget", "rollout budget"), ("train_nfe", "train NFE"), ("eval_nfe", "eval NFE"),
              ("wall_time_s", "wall time (s)"), ("hardware", "on"), ("n_problems", "test problems"),
              ("gen_length", "gen. length"))


def render_markdown(task: str, cells: pd.DataFrame, plot: str | None,
                    pictures: list[tuple[str, str]] = ()) -> str:
    lines = [f"# Leaderboard: {task}", "",
             "Measured by this harness; regenerated by `harness leaderboard` from the result files (do not "
             "edit). Published numbers are in [published.md](published.md), never in this table.", "",
             "| " + " | ".join(h for _, h in MD_COLUMNS) + " |", "|" + "---|" * len(MD_COLUMNS)]
    for _, r in cells.iterrows():
        ci = f"[{r['gain_ci_lo']}, {r['gain_ci_hi']}]" if r["gain_ci_lo"] else ""
        ratio = r["gain_vs_diffu_grpo"] + (" †" if r["ratio_note"] else "")
        cell = {"_ci": ci, "gain_vs_diffu_grpo": ratio}
        lines.append("| " + " | ".join(_md_cell(cell.get(c, r.get(c))) for c, _ in MD_COLUMNS) + " |")
    lines += ["", "Scores are the primary metric, a mean over seeds; gain = final - base. CI kind `seeds_t`: "
              "mean of per-seed gains ± Student t (n-1 df) 95% interval over seeds; `bootstrap_1seed`: one "
              "seed, so the run's own paired-bootstrap 95% interval over test problems. Gain ÷ diffu-GRPO: "
              "this row's mean gain over diffu-grpo's for the same model and rollout budget, both over the seeds the "
              "two rows share (÷ on seeds); † where diffu-GRPO's own gain interval includes 0, so the ratio is "
              "noise, not a ranking. Rollout budget = the most completions "
              "training may generate (steps x prompts x oversample x G; dynamic sampling may decode fewer). "
              "Method `none`: the model evaluated without RL. On: what the wall time was measured on (the "
              "GPU's name, or CPU).",
              "", f"Machine-readable copy, with the run ids of every row: [{_slug(task)}.csv]({_slug(task)}.csv)."]
    if plot:
        lines += ["", f"![{task}: training curves]({plot})"]
    if pictures:  # image runs: prompts with the reference, the image before RL and after
        lines += ["", "Pictures (prompt, reference, before RL, after RL; green frame = passes): "
                  + ", ".join(f"[{name}]({link})" for name, link in pictures) + "."]
    return "\n".join(lines) + "\n"


def render_readme(tasks: list[tuple[str, int, int, bool]], report: Report) -> str:
    lines = ["# Leaderboards", "",
             "Regenerated by `harness leaderboard` from `results/*/summary.json` and `curve.csv` only; do "
             "not edit by hand.", "", "## Measured by this harness", ""]
    if tasks:
        lines += ["| task | rows | result files | table | data | plot |", "|---|---|---|---|---|---|"]
        for task, n_rows, n_runs, has_plot in tasks:
            s = _slug(task)
            plot = f"[{s}.png]({s}.png)" if has_plot else ""
            lines.append(f"| {_md_cell(task)} | {n_rows} | {n_runs} | [{s}.md]({s}.md) | [{s}.csv]({s}.csv) "
                         f"| {plot} |")
    else:
        lines.append("No usable results.")
    lines += ["", "## Reported elsewhere", "",
              f"[published.md](published.md): numbers reported by {published.SOURCE}, not measured here.", ""]
    for title, problems in (("Skipped result files", report.skipped), ("Warnings", report.warnings),
                            ("Ignored result files", report.ignored)):
        if problems:
            lines += [f"## {title}", ""] + [f"- `{p.path}`: {_md_cell(p.reason)}" for p in problems] + [""]
    return "\n".join(lines)


# ---- curves and plots ------------------------------------------------------------------------------------
def _read_curve(path: Path, rel: str, report: Report) -> pd.DataFrame | None:
    if not path.exists():
        report.warnings.append(Problem(rel, "no curve.csv; the run is left out of the plot"))
        return None
    try:
        curve = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        report.warnings.append(Problem(rel, f"unreadable curve.csv ({type(e).__name__}); left out of the plot"))
        return None
    if "step" not in curve.columns:
        report.warnings.append(Problem(rel, "curve.csv has no step column; left out of the plot"))
        return None
    return curve.apply(pd.to_numeric, errors="coerce")


def curve_band(curves: list[pd.DataFrame], y: str) -> pd.DataFrame:
    """Per step over seeds: mean, min and max of `y` (steps where no seed has a value are dropped)."""
    long = pd.concat([c[["step", y]] for c in curves], ignore_index=True).dropna()
    band = long.groupby("step")[y].agg(["mean", "min", "max", "count"]).reset_index()
    return band.sort_values("step", kind="stable").reset_index(drop=True)


def plot_task(task: str, runs: pd.DataFrame, curves: dict[str, pd.DataFrame], report: Report) -> bytes | None:
    """One PNG per task: `eval_<metric>` (or reward) against step, a line per (model, method, rollout budget), min-max band."""
    metrics = set(runs["metric"])
    loaded = [c for c in curves.values() if c is not None]
    ev = f"eval_{next(iter(metrics))}" if len(metrics) == 1 else None
    y = ev if ev and loaded and all(ev in c and c[ev].notna().any() for c in loaded) else "reward"
    lines = []
    runs = runs.assign(recipe=runs["recipe"].fillna("") if "recipe" in runs else "")
    several = runs.groupby(["model", "recipe", "method"])["rollout_budget"].nunique().gt(1).any()
    recipes = runs["recipe"].nunique() > 1
    for (model, recipe, method, budget), g in runs.groupby(["model", "recipe", "method", "rollout_budget"], sort=True,
                                                            dropna=False):
        usable = []
        for run in g["run"]:
            c = curves.get(run)
            if c is not None and y in c and c[y].notna().any():
                usable.append(c)
            elif c is not None:
                report.warnings.append(Problem(f"{run}/curve.csv", f"no {y} values; left out of the plot"))
        if usable:
            label = f"{model} / {method}" + (f" [{recipe}]" if recipes else "") + \
                (f" ({budget:.0f} rollouts)" if several else "")
            lines.append((label, curve_band(usable, y)))
    if not lines:
        return None
    from matplotlib.figure import Figure  # heavy; only when there is something to draw

    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    ax = fig.add_subplot()
    for i, (label, band) in enumerate(lines):
        ax.plot(band["step"], band["mean"], color=f"C{i % 10}", marker="o", markersize=3, label=label)
        ax.fill_between(band["step"], band["min"], band["max"], color=f"C{i % 10}", alpha=0.2, linewidth=0)
    ax.set(xlabel="step", ylabel=y, title=f"{task}: {y} (mean over seeds; band = min-max)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


# ---- entry point -----------------------------------------------------------------------------------------
def build_leaderboards(results_dir: str | os.PathLike = "results",
                       out_dir: str | os.PathLike = "leaderboards") -> dict[str, list[str]]:
    """Rebuild every leaderboard in `out_dir` from the result files under `results_dir`.

    Returns {"tasks", "written", "skipped", "warnings", "ignored"}: lists of strings, each problem naming
    its file and the reason. Prints nothing. Raises FileNotFoundError when `results_dir` does not exist.
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results folder {results_dir} does not exist; pass --results DIR")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report()
    records = pd.DataFrame(load_records(results_dir, report))
    index = []
    for task in sorted(set(records["task"])) if len(records) else []:
        runs = records[records["task"] == task]
        slug = _slug(task)
        cells = format_table(task_table(runs))
        rl = runs[~runs["base_only"]]
        curves = {r: _read_curve(results_dir / r / "curve.csv", f"{r}/curve.csv", report) for r in rl["run"]}
        png = plot_task(task, rl, curves, report) if len(rl) else None
        _write(out_dir / f"{slug}.csv", cells.to_csv(index=False, lineterminator="\n"), report)
        pictures = [(r, Path(os.path.relpath(results_dir / r / "images.png", out_dir)).as_posix())
                    for r in sorted(rl["run"]) if (results_dir / r / "images.png").is_file()]
        _write(out_dir / f"{slug}.md", render_markdown(task, cells, f"{slug}.png" if png else None, pictures),
               report)
        if png:
            atomic_write_bytes(out_dir / f"{slug}.png", png)
            report.written.append(out_dir / f"{slug}.png")
        index.append((task, len(cells), len(runs), png is not None))
        report.tasks.append(task)
    _write(out_dir / "published.md", published.render_markdown(), report)
    _write(out_dir / "published.csv", published.render_csv(), report)
    _write(out_dir / "README.md", render_readme(index, report), report)
    return report.as_dict(results_dir)


def _write(path: Path, text: str, report: Report) -> None:
    atomic_write_text(path, text)
    report.written.append(path)
