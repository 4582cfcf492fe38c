"""The leaderboard built from the hand-written result files in tests/data/leaderboard/results.

Fixture runs (model "tiny"; every number below is in the fixture files):
  gsm8k diffu-grpo seeds 0,1,2: base .50 .50 .50, final .55 .60 .65, gain .05 .10 .15, rollout budget 600,
        train NFE 1000 1000 1000, eval NFE 256, wall 10 11 12 s, curves with eval_accuracy at steps 0 and 2
  gsm8k maskgrpo   seeds 0,1,2: base .48 .50 .52, final .68 .70 .75, gain .20 .20 .23, rollout budget 600,
        train NFE 1000 1000 1300, eval NFE 256, wall 10 12 14 s
  (runs carry `nfe` = base + final + train NFE, as `harness run` writes it, and `eval_nfe` = 256)
  gsm8k eval (kind "eval") seeds 0,1: accuracy .49 .51, eval NFE 256, wall 2 3 s
  gsm8k kind "score": ignored
  mbpp maskgrpo seed 0 (pass@1): base .30, final .40, gain .10, gain_ci95 [.02, .18], budget 120,
        train NFE 2000, eval NFE 128, wall 30.5 s, no curve.csv
  bad-corrupt (truncated JSON), bad-schema (schema_version 2), bad-missing-gain (no "gain"): skipped
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest

from leaderboards import build_leaderboards
from leaderboards.collate import curve_band, t_quantile_975
from leaderboards.published import render_csv

RESULTS = Path(__file__).parent / "data" / "leaderboard" / "results"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("leaderboards")
    return out, build_leaderboards(RESULTS, out)


def problems(lines: list[str], results: Path = RESULTS) -> dict[str, str]:
    """{"<run>/<file>": reason} from the report's "RESULTS/<run>/<file>: reason" lines."""
    out = {}
    for line in lines:
        path, _, reason = line.partition(": ")
        out[Path(path).relative_to(results).as_posix()] = reason
    return out


def rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return {r["method"]: r for r in csv.DictReader(f)}


def test_bad_result_files_are_skipped_by_name_and_the_rest_builds(built):
    out, report = built
    reasons = problems(report["skipped"])
    assert sorted(reasons) == ["bad-corrupt/summary.json", "bad-missing-gain/summary.json",
                               "bad-schema/summary.json"]
    assert "corrupt JSON" in reasons["bad-corrupt/summary.json"]
    assert "schema_version 2" in reasons["bad-schema/summary.json"]
    assert reasons["bad-missing-gain/summary.json"] == "missing field gain"
    assert list(problems(report["ignored"])) == ["gsm8k-tiny-score/summary.json"]
    assert list(problems(report["warnings"])) == ["mbpp-tiny-maskgrpo-s0/curve.csv"]
    assert report["tasks"] == ["gsm8k", "mbpp"]
    for name in ("gsm8k.csv", "gsm8k.md", "gsm8k.png", "mbpp.csv", "mbpp.md", "published.md", "README.md"):
        assert str(out / name) in report["written"] and (out / name).exists()
    json.dumps(report)  # the CLI prints it as JSON
    assert not (out / "mbpp.png").exists()  # its only run has no curve


def test_gsm8k_rows_match_hand_computed_means_cis_gains_and_ratios(built):
    out, _ = built
    table = rows(out / "gsm8k.csv")
    # base-only first, then by mean gain (maskgrpo .21 > diffu-grpo .10)
    assert list(table) == ["none", "maskgrpo", "diffu-grpo"]
    dg = table["diffu-grpo"]
    # gains .05 .10 .15: mean .10; sd = sqrt((.05² + 0 + .05²) / 2) = .05; se = .05 / sqrt(3) = .0288675;
    # t(.975, 2) = 4.302653 -> half width .1242069 -> [-.0242069, .2242069]
    assert (dg["base_score"], dg["final_score"], dg["gain"]) == ("0.5000", "0.6000", "0.1000")
    assert (dg["gain_ci_lo"], dg["gain_ci_hi"], dg["ci_kind"]) == ("-0.0242", "0.2242", "seeds_t")
    assert dg["gain_vs_diffu_grpo"] == "1.0000"
    # budget 600; train NFE 1000; eval NFE 256 (eval_nfe, not the total nfe 1512); wall (10 + 11 + 12) / 3 = 11.0
    assert (dg["rollout_budget"], dg["train_nfe"], dg["eval_nfe"], dg["wall_time_s"]) == ("600", "1000", "256",
                                                                                          "11.0")
    assert (dg["n_seeds"], dg["seeds"], dg["n_problems"], dg["gen_length"]) == ("3", "0;1;2", "50", "64")
    mg = table["maskgrpo"]
    # base (.48 + .50 + .52) / 3 = .50; final (.68 + .70 + .75) / 3 = .71; gains .20 .20 .23: mean .21;
    # deviations -.01 -.01 .02 -> sd = sqrt(.0006 / 2) = .0173205; se = .01; half = 4.302653 * .01 = .0430265
    # -> [.1669735, .2530265]; ratio .21 / .10 = 2.1
    assert (mg["base_score"], mg["final_score"], mg["gain"]) == ("0.5000", "0.7100", "0.2100")
    assert (mg["gain_ci_lo"], mg["gain_ci_hi"], mg["ci_kind"]) == ("0.1670", "0.2530", "seeds_t")
    assert mg["gain_vs_diffu_grpo"] == "2.1000"
    # train NFE (1000 + 1000 + 1300) / 3 = 1100; wall (10 + 12 + 14) / 3 = 12.0
    assert (mg["rollout_budget"], mg["train_nfe"], mg["eval_nfe"], mg["wall_time_s"]) == ("600", "1100", "256",
                                                                                          "12.0")
    assert mg["runs"] == "gsm8k-tiny-maskgrpo-s0;gsm8k-tiny-maskgrpo-s1;gsm8k-tiny-maskgrpo-s2"


def test_eval_summaries_give_a_base_only_row(built):
    out, _ = built
    base = rows(out / "gsm8k.csv")["none"]
    # accuracy (.49 + .51) / 2 = .50; wall (2 + 3) / 2 = 2.5; nothing RL-related is filled in
    assert (base["base_score"], base["n_seeds"], base["seeds"], base["wall_time_s"]) == ("0.5000", "2", "0;1",
                                                                                          "2.5")
    assert base["eval_nfe"] == "256"
    for col in ("final_score", "gain", "gain_ci_lo", "gain_ci_hi", "ci_kind", "gain_vs_diffu_grpo",
                "rollout_budget", "train_nfe"):
        assert base[col] == ""


def test_single_seed_row_uses_the_runs_bootstrap_ci_and_no_ratio_without_diffu_grpo(built):
    out, _ = built
    (mg,) = rows(out / "mbpp.csv").values()
    assert (mg["metric"], mg["base_score"], mg["final_score"], mg["gain"]) == ("pass@1", "0.3000", "0.4000",
                                                                               "0.1000")
    assert (mg["gain_ci_lo"], mg["gain_ci_hi"], mg["ci_kind"]) == ("0.0200", "0.1800", "bootstrap_1seed")
    assert mg["gain_vs_diffu_grpo"] == ""  # no diffu-grpo run on mbpp
    assert (mg["rollout_budget"], mg["train_nfe"], mg["eval_nfe"], mg["wall_time_s"]) == ("120", "2000", "128",
                                                                                          "30.5")


def test_markdown_shows_the_same_numbers_and_links_the_plot(built):
    out, _ = built
    md = (out / "gsm8k.md").read_text(encoding="utf-8")
    assert ("| tiny | equal | maskgrpo | accuracy | 3 | 0.5000 | 0.7100 | 0.2100 | [0.1670, 0.2530] | seeds_t | 2.1000 † "
            "| 0;1;2 | 600 | 1100 | 256 | 12.0 | CPU | 50 | 64 |") in md
    assert "| tiny | equal | diffu-grpo | accuracy | 3 | 0.5000 | 0.6000 | 0.1000 | [-0.0242, 0.2242] |" in md
    assert "![gsm8k: training curves](gsm8k.png)" in md
    assert "published.md" in md and "84.7" not in md  # published numbers never enter measured tables


def test_regenerating_gives_byte_identical_files(built, tmp_path):
    out, _ = built
    again = build_leaderboards(RESULTS, tmp_path)
    names = sorted(Path(p).name for p in again["written"])
    assert names == sorted(p.name for p in out.iterdir())
    for name in names:
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_published_table_is_labelled_and_separate(built):
    out, _ = built
    md = (out / "published.md").read_text(encoding="utf-8")
    assert md.startswith("# Published numbers (reported elsewhere, not measured here)")
    assert "Reported by the MaskGRPO paper, not measured by this harness" in md
    # gains: GSM8K 84.7 - 76.7 = 8.0 and 79.8 - 76.7 = 3.1 -> 8.0 / 3.1 = 2.58; MATH500 5.2 / 2.0 = 2.60;
    # MBPP 6.4 / 3.1 = 2.06; GenEval (.81 - .56) / (.63 - .56) = .25 / .07 = 3.57
    for line in ("| GSM8K | LLaDA-8B-Instruct | 256 | % | maskgrpo | 76.7 | 84.7 | +8.0 | 2.58 | diffu-grpo |",
                 "| GSM8K | LLaDA-8B-Instruct | 256 | % | diffu-grpo | 76.7 | 79.8 | +3.1 | 1.00 | diffu-grpo |",
                 "| MATH500 | LLaDA-8B-Instruct | 256 | % | maskgrpo | 32.4 | 37.6 | +5.2 | 2.60 | diffu-grpo |",
                 "| MATH500 | LLaDA-8B-Instruct | 256 | % | diffu-grpo | 32.4 | 34.4 | +2.0 | 1.00 | diffu-grpo |",
                 "| MBPP | LLaDA-8B-Instruct | 256 | % | maskgrpo | 39.0 | 45.4 | +6.4 | 2.06 | diffu-grpo |",
                 "| MBPP | LLaDA-8B-Instruct | 256 | % | diffu-grpo | 39.0 | 42.1 | +3.1 | 1.00 | diffu-grpo |",
                 "| GenEval | MMaDA |  | 0-1 | maskgrpo | 0.56 | 0.81 | +0.25 | 3.57 | unigrpo |",
                 "| GenEval | MMaDA |  | 0-1 | unigrpo | 0.56 | 0.63 | +0.07 | 1.00 | unigrpo |"):
        assert line in md
    assert (out / "published.csv").read_text(encoding="utf-8") == render_csv()
    assert all(r["source"] == "reported by the MaskGRPO paper (not measured here)"
               for r in csv.DictReader(render_csv().splitlines()))


def test_readme_links_every_task_and_lists_skipped_files(built):
    out, _ = built
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "| gsm8k | 3 | 8 | [gsm8k.md](gsm8k.md) | [gsm8k.csv](gsm8k.csv) | [gsm8k.png](gsm8k.png) |" in readme
    assert "| mbpp | 1 | 1 | [mbpp.md](mbpp.md) | [mbpp.csv](mbpp.csv) |  |" in readme
    assert "[published.md](published.md)" in readme
    assert "- `bad-missing-gain/summary.json`: missing field gain" in readme
    assert "`bad-corrupt/summary.json`" in readme and "`bad-schema/summary.json`" in readme
    assert "- `mbpp-tiny-maskgrpo-s0/curve.csv`: no curve.csv" in readme


def test_curve_band_is_mean_min_max_over_seeds_at_each_evaluated_step():
    import pandas as pd

    curves = [pd.read_csv(RESULTS / f"gsm8k-tiny-maskgrpo-s{s}" / "curve.csv") for s in range(3)]
    band = curve_band(curves, "eval_accuracy")
    # step 0: .48 .50 .52 -> mean .50; step 1 has no evaluation; step 2: .68 .70 .75 -> mean .71
    assert band["step"].tolist() == [0, 2]
    assert band["mean"].tolist() == pytest.approx([0.50, 0.71])
    assert band["min"].tolist() == pytest.approx([0.48, 0.68])
    assert band["max"].tolist() == pytest.approx([0.52, 0.75])
    # reward has a value at every step: step 1 rewards .6 .6 .7 -> mean .6333
    assert curve_band(curves, "reward")["mean"].tolist() == pytest.approx([0.4, 1.9 / 3, 2.5 / 3])


def test_t_quantiles():
    assert t_quantile_975(2) == 4.302653
    assert t_quantile_975(30) == 2.042272
    assert abs(t_quantile_975(1000) - 1.962339) < 1e-6
    with pytest.raises(ValueError):
        t_quantile_975(0)
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 5, 29, 31, 45, 120):
        assert math.isclose(t_quantile_975(df), float(stats.t.ppf(0.975, df)), abs_tol=2e-6)


def _copy_results(tmp_path: Path) -> Path:
    dst = tmp_path / "results"
    shutil.copytree(RESULTS, dst)
    return dst


def test_second_run_of_the_same_seed_is_skipped_by_name(tmp_path):
    results = _copy_results(tmp_path)
    shutil.copytree(results / "gsm8k-tiny-maskgrpo-s0", results / "zz-rerun")
    report = build_leaderboards(results, tmp_path / "out")
    reason = problems(report["skipped"], results)["zz-rerun/summary.json"]
    assert reason == "same task, model, recipe, method, rollout budget and seed as gsm8k-tiny-maskgrpo-s0/summary.json"
    assert rows(tmp_path / "out" / "gsm8k.csv")["maskgrpo"]["gain"] == "0.2100"  # unchanged


def test_runs_at_another_rollout_budget_get_their_own_row_and_no_ratio_across_budgets(tmp_path):
    results = _copy_results(tmp_path)
    path = shutil.copytree(results / "gsm8k-tiny-maskgrpo-s0", results / "gsm8k-tiny-maskgrpo-s0-long")
    summary = json.loads((path / "summary.json").read_text())
    summary["train"]["rollout_budget"], summary["gain"] = 1200, 0.30
    (path / "summary.json").write_text(json.dumps(summary))
    report = build_leaderboards(results, tmp_path / "out")
    assert all("/bad-" in line for line in report["skipped"])  # not a duplicate of seed 0
    with open(tmp_path / "out" / "gsm8k.csv", newline="", encoding="utf-8") as f:
        got = [(r["method"], r["rollout_budget"], r["n_seeds"], r["gain"], r["gain_vs_diffu_grpo"])
               for r in csv.DictReader(f)]
    # the 1200-rollout run is a row of its own (largest budget first), with no diffu-grpo run at 1200 to
    # compare with; the 600-rollout rows are unchanged: maskgrpo .21 / diffu-grpo .10 = 2.1
    assert got == [("none", "", "2", "", ""), ("maskgrpo", "1200", "1", "0.3000", ""),
                   ("maskgrpo", "600", "3", "0.2100", "2.1000"), ("diffu-grpo", "600", "3", "0.1000", "1.0000")]


def test_gain_ratio_is_empty_when_diffu_grpo_gain_is_zero(tmp_path):
    results = _copy_results(tmp_path)
    for seed in range(3):
        path = results / f"gsm8k-tiny-diffu-grpo-s{seed}" / "summary.json"
        summary = json.loads(path.read_text())
        summary["gain"] = 0.0
        path.write_text(json.dumps(summary))
    build_leaderboards(results, tmp_path / "out")
    table = rows(tmp_path / "out" / "gsm8k.csv")
    # gains 0 0 0: mean 0, sd 0 -> CI [0, 0]; no ratio for anyone
    assert (table["diffu-grpo"]["gain_ci_lo"], table["diffu-grpo"]["gain_ci_hi"]) == ("0.0000", "0.0000")
    assert table["diffu-grpo"]["gain_vs_diffu_grpo"] == table["maskgrpo"]["gain_vs_diffu_grpo"] == ""


def test_gain_ratio_is_taken_over_the_seeds_both_rows_share(tmp_path):
    results = _copy_results(tmp_path)
    shutil.rmtree(results / "gsm8k-tiny-diffu-grpo-s2")
    build_leaderboards(results, tmp_path / "out")
    table = rows(tmp_path / "out" / "gsm8k.csv")
    # diffu-grpo now has seeds 0, 1 (gains .05, .10: mean .075). maskgrpo keeps its 3-seed mean .21 in the
    # gain column, but its ratio uses seeds 0 and 1 only: (.20 + .20) / 2 / .075 = 2.6667 (not .21 / .075 = 2.8)
    assert table["maskgrpo"]["gain"] == "0.2100"
    assert (table["maskgrpo"]["gain_vs_diffu_grpo"], table["maskgrpo"]["ratio_seeds"]) == ("2.6667", "0;1")
    assert (table["diffu-grpo"]["gain_vs_diffu_grpo"], table["diffu-grpo"]["ratio_seeds"]) == ("1.0000", "0;1")


def test_no_gain_ratio_without_a_shared_seed(tmp_path):
    results = _copy_results(tmp_path)
    for seed in (0, 1):
        shutil.rmtree(results / f"gsm8k-tiny-maskgrpo-s{seed}")
    shutil.rmtree(results / "gsm8k-tiny-diffu-grpo-s2")
    build_leaderboards(results, tmp_path / "out")
    table = rows(tmp_path / "out" / "gsm8k.csv")
    assert table["maskgrpo"]["seeds"] == "2" and table["diffu-grpo"]["seeds"] == "0;1"
    assert table["maskgrpo"]["gain_vs_diffu_grpo"] == table["maskgrpo"]["ratio_seeds"] == ""


def test_a_field_that_is_not_a_number_is_reported(tmp_path):
    results = _copy_results(tmp_path)
    path = results / "mbpp-tiny-maskgrpo-s0" / "summary.json"
    summary = json.loads(path.read_text())
    summary["final"]["pass@1"] = None  # NaN is written as null
    path.write_text(json.dumps(summary))
    report = build_leaderboards(results, tmp_path / "out")
    reason = problems(report["skipped"], results)["mbpp-tiny-maskgrpo-s0/summary.json"]
    assert reason == "field final.pass@1 is None, expected a finite number"
    assert report["tasks"] == ["gsm8k"]


def test_missing_results_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--results"):
        build_leaderboards(tmp_path / "nope", tmp_path / "out")


def test_image_runs_link_their_pictures(tmp_path):
    results = _copy_results(tmp_path)
    (results / "mbpp-tiny-maskgrpo-s0" / "images.png").write_bytes(b"\x89PNG fixture")
    build_leaderboards(results, tmp_path / "out")
    md = (tmp_path / "out" / "mbpp.md").read_text()
    assert "[mbpp-tiny-maskgrpo-s0](../results/mbpp-tiny-maskgrpo-s0/images.png)" in md
    assert "Pictures" not in (tmp_path / "out" / "gsm8k.md").read_text()


def test_a_row_never_mixes_recipes_and_the_ratio_is_taken_within_a_recipe(tmp_path):
    """The same method and budget under `equal` (no recipe field: written before recipes) and `paper`
    are two rows; gain / diffu-GRPO's is computed within each recipe."""
    results = _copy_results(tmp_path)
    for name in sorted(p.name for p in results.iterdir() if (p / "summary.json").exists()):
        try:
            s = json.loads((results / name / "summary.json").read_text())
        except ValueError:
            continue  # the fixture's deliberately broken summaries
        if not isinstance(s, dict) or s.get("task") != "gsm8k" or s.get("kind") != "run" or \
                s.get("method") in (None, "none") or not isinstance(s.get("gain"), float):
            continue
        s["recipe"] = "paper"
        s["gain"] = s["gain"] * 2
        (results / f"{name}-paper").mkdir()
        (results / f"{name}-paper" / "summary.json").write_text(json.dumps(s))
    build_leaderboards(results, tmp_path / "out")
    import pandas as pd

    table = pd.read_csv(tmp_path / "out" / "gsm8k.csv", keep_default_na=False)
    mg = table[table["method"] == "maskgrpo"]
    assert sorted(mg["recipe"]) == ["equal", "paper"]
    assert all(len(set(r.split(";"))) == len(r.split(";")) for r in mg["runs"])
    paper_runs = mg[mg["recipe"] == "paper"]["runs"].iloc[0].split(";")
    assert all(r.endswith("-paper") for r in paper_runs)
    # both gains doubled, so the ratio to diffu-GRPO within the paper recipe equals equal's
    ratios = dict(zip(mg["recipe"], mg["gain_vs_diffu_grpo"]))
    assert float(ratios["paper"]) == pytest.approx(float(ratios["equal"]))


def test_runs_of_two_different_weights_under_one_model_name_are_never_one_row(tmp_path):
    """A summary records its weights' sha256 (`model_sha256`): the same method, recipe, budget and seeds made
    with another pretrained `tiny` are rows of their own, labelled tiny@<first 8 hex digits>; summaries
    written before the field existed keep the bare name."""
    results = _copy_results(tmp_path)
    copied = 0
    for name in sorted(p.name for p in results.iterdir() if (p / "summary.json").exists()):
        try:
            s = json.loads((results / name / "summary.json").read_text())
        except ValueError:
            continue
        if not isinstance(s, dict) or s.get("task") != "gsm8k" or s.get("method") != "maskgrpo":
            continue
        s["model_sha256"] = "abcdef0123456789" * 4
        (results / f"{name}-other").mkdir()
        (results / f"{name}-other" / "summary.json").write_text(json.dumps(s))
        copied += 1
    build_leaderboards(results, tmp_path / "out")
    import pandas as pd

    table = pd.read_csv(tmp_path / "out" / "gsm8k.csv", keep_default_na=False)
    mg = table[table["method"] == "maskgrpo"]
    assert copied and sorted(mg["model"]) == ["tiny", "tiny@abcdef01"]
    other = mg[mg["model"] == "tiny@abcdef01"]["runs"].iloc[0].split(";")
    # one row per seed, as for the original runs (a second run of a seed is skipped in both)
    assert sorted(other) == [f"gsm8k-tiny-maskgrpo-s{k}-other" for k in range(3)]


def test_a_ratio_to_a_baseline_gain_that_its_interval_cannot_tell_from_zero_is_flagged(tmp_path, built):
    out, _ = built
    table = rows(out / "gsm8k.csv")
    # diffu-grpo gains .05 .10 .15: mean .10, sd .05, half-width 4.3027 * .05 / sqrt(3) = .1242 -> [-.024, .224]
    assert (table["diffu-grpo"]["gain_ci_lo"], table["diffu-grpo"]["gain_ci_hi"]) == ("-0.0242", "0.2242")
    assert table["maskgrpo"]["ratio_note"] == "diffu-grpo gain CI includes 0"
    assert "| 2.1000 † |" in (out / "gsm8k.md").read_text()  # .21 / .10
    results = _copy_results(tmp_path)
    for seed, gain in enumerate((0.10, 0.11, 0.12)):  # mean .11, sd .01: .11 +- 4.3027 * .01 / sqrt(3) = [.085, .135]
        path = results / f"gsm8k-tiny-diffu-grpo-s{seed}" / "summary.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | {"gain": gain}))
    build_leaderboards(results, tmp_path / "out")
    table = rows(tmp_path / "out" / "gsm8k.csv")
    assert (table["diffu-grpo"]["gain_ci_lo"], table["diffu-grpo"]["gain_ci_hi"]) == ("0.0852", "0.1348")
    assert table["maskgrpo"]["gain_vs_diffu_grpo"] == "1.9091" and table["maskgrpo"]["ratio_note"] == ""  # .21/.11
    assert "| 1.9091 |" in (tmp_path / "out" / "gsm8k.md").read_text()


def test_the_hardware_column_says_where_each_rows_wall_time_was_measured(tmp_path):
    results = _copy_results(tmp_path)
    gpu = {"cpu_count": 16, "gpu": "NVIDIA H200", "gpu_count": 1}
    edits = {"gsm8k-tiny-maskgrpo-s0": {"device": "cuda:0", "hardware": gpu},  # ran on the GPU
             "gsm8k-tiny-maskgrpo-s1": {"device": "cpu", "hardware": gpu},  # a GPU machine, but ran on the CPU
             "gsm8k-tiny-diffu-grpo-s0": {"hardware": gpu}}  # no device recorded: the machine's GPU
    for run, fields in edits.items():
        path = results / run / "summary.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | fields))
    build_leaderboards(results, tmp_path / "out")
    table = rows(tmp_path / "out" / "gsm8k.csv")
    assert table["maskgrpo"]["hardware"] == "CPU;NVIDIA H200"  # a row that mixes machines shows both
    assert table["diffu-grpo"]["hardware"] == "CPU;NVIDIA H200"
    assert rows(tmp_path / "out" / "mbpp.csv")["maskgrpo"]["hardware"] == "CPU"
