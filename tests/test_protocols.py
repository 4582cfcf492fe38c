"""Scoring protocols (issue 23): d1's rules reproduce d1's parser row by row on its published generations,
lm-eval's filters, several protocols in one run, the disagreement list, and leaderboards per protocol."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.cli import main
from tasks.protocols import (
    d1_gsm8k_answer,
    d1_gsm8k_reference,
    d1_math_answer,
    hendrycks_equiv,
    parse_protocols,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HARNESS_SHARED_DATA", ROOT.parent / "shared" / "data"))
D1 = DATA / "published_generations" / "d1_llada8b_instruct"
needs_d1 = pytest.mark.skipif(not (D1 / "math500_instruct_256_128_0_generations.json").exists(),
                              reason="d1's published generations not present")
FROZEN = json.loads((ROOT / "tests" / "data" / "d1_parser_verdicts.json").read_text())


def _score(tmp_path, task, data, protocol, capsys, name="out"):
    out = tmp_path / name
    assert main(["score", "--task", task, "--predictions", str(D1), "--data", str(DATA / data),
                 "--protocol", protocol, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return summary, rows, out, captured


@needs_d1
@pytest.mark.parametrize("task,data,percent", [("math", "math500_test.jsonl", 0.324),
                                               ("gsm8k", "gsm8k_test.jsonl", 863 / 1130)])
def test_d1_protocol_gives_d1_parsers_verdicts_row_by_row(tmp_path, capsys, task, data, percent):
    summary, rows, out, captured = _score(tmp_path, task, data, "d1", capsys)
    assert summary["protocol"] == "d1" and summary["metrics"]["accuracy"] == pytest.approx(percent)
    assert f"accuracy={percent:.4f}" in captured.err
    assert summary["report"]["predictions_format"]["format"] == "d1"  # d1's own JSON, matched by question
    want = FROZEN[task]
    assert len(rows) == want["n"]
    got = sorted(r["id"] for r in rows if r["extra"]["protocols"]["d1"]["verdict"])
    assert got == sorted(want["true_ids"]) and len(got) == want["n_true"]


@needs_d1
def test_default_protocol_reports_its_own_figure_and_lists_disagreements(tmp_path, capsys):
    summary, rows, out, captured = _score(tmp_path, "math", "math500_test.jsonl", "harness,d1", capsys)
    assert summary["protocol"] == "harness"
    assert summary["metrics"]["accuracy"] == pytest.approx(0.352)  # math-verify: 176 of 500
    assert summary["metrics_by_protocol"]["d1"]["metrics"]["accuracy"] == pytest.approx(0.324)
    assert summary["report"]["protocol_disagreements"]["d1"] == 14  # accepted by math-verify, not by d1
    dis = [json.loads(line) for line in (out / "disagreements.jsonl").read_text().splitlines()]
    d1_vs_harness = [d for d in dis if d["verdicts"]["d1"] != d["verdicts"]["harness"]]
    assert len(d1_vs_harness) == 14 and all(d["verdicts"]["harness"] for d in d1_vs_harness)
    assert "disagreements.jsonl" in captured.err


def test_d1_rules_on_small_cases():
    assert d1_gsm8k_answer("so \\boxed{1,234}") == 1.0  # d1 reads the first number of a non-float box
    assert d1_gsm8k_answer("\\boxed{...} <answer>x = 18 dollars</answer>") == 18.0
    assert d1_gsm8k_answer("\\boxed{12} and \\boxed{13}") == 12.0  # the first box, not the last
    assert d1_gsm8k_reference("-3") is None and d1_gsm8k_reference("1234") == 1234.0
    assert d1_math_answer("x \\boxed{\\frac{1}{2}} y") == "\\frac{1}{2}"
    assert d1_math_answer("no box <answer> 7 </answer>") == "no box <answer> 7 </answer>"  # whole text
    assert d1_math_answer("\\boxed{7") is None  # an unclosed box and no answer tags: nothing
    assert hendrycks_equiv("\\dfrac{1}{2}", "0.5") and hendrycks_equiv("\\frac12", "\\frac{1}{2}")
    assert not hendrycks_equiv("\\frac{3}{24}", "\\frac{1}{8}") and not hendrycks_equiv("15.975", "\\frac{639}{40}")
    assert hendrycks_equiv("x = 5", "5") and hendrycks_equiv("10\\%", "10")
    assert not hendrycks_equiv("x/2", "\\frac{x}{2}")  # normalisation fails on x/2: raw strings compared


def test_lm_eval_gsm8k_filters():
    from tasks import get_task
    from tasks.base import Example, Scored
    from tasks.protocols import row_verdicts

    comps = ["work... #### 1,234.", "the answer is \\boxed{72}", "#### 5 then 6"]
    refs = ["1234", "72", "6"]
    scored = [Scored(id=i, completion=c, extracted=None, verdict=None, reward=0.0, terms={}) for i, c in enumerate(comps)]
    got = row_verdicts("lm-eval", get_task("gsm8k").name, scored, [Example(id=i, prompt="", reference=r)
                                                                    for i, r in enumerate(refs)])
    assert [g["verdict"] for g in got] == [True, False, False]  # strict: the first "#### N"
    assert [g["verdict_flexible"] for g in got] == [True, True, True]  # flexible: the last number


@pytest.mark.parametrize("argv,needle", [
    (["--task", "math", "--protocol", "paper"], "unknown protocol 'paper'"),
    (["--task", "mbpp", "--protocol", "d1"], "protocol 'harness' only"),
])
def test_bad_protocol_is_a_one_line_error(tmp_path, capsys, argv, needle):
    pred = tmp_path / "p.jsonl"
    pred.write_text('{"id": 1, "completion": "x"}\n')
    assert main(["score", *argv, "--predictions", str(pred), "--data", str(pred)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert parse_protocols("harness, d1,harness", "math") == ["harness", "d1"]


@pytest.mark.skipif(not (DATA / "math500_test.jsonl").exists(), reason="../shared/data not present")
def test_leaderboards_keep_protocols_apart_and_read_old_results_as_harness(tmp_path, capsys):
    from leaderboards.collate import build_leaderboards

    results = tmp_path / "results"
    for name, protocol in (("old", None), ("d1", "d1")):
        argv = ["eval", "--task", "math", "--model", "gold", "--limit", "3", "--data", str(DATA / "math500_test.jsonl"),
                "--out", str(results / name)]
        assert main(argv + (["--protocol", protocol] if protocol else [])) == 0
    old = results / "old" / "summary.json"
    summary = json.loads(old.read_text())
    assert summary["protocol"] == "harness"
    del summary["protocol"]  # as written before protocols existed
    old.write_text(json.dumps(summary))
    report = build_leaderboards(results, tmp_path / "boards")
    assert sorted(report["tasks"]) == ["math", "math@d1"]
    assert (tmp_path / "boards" / "math.csv").exists() and (tmp_path / "boards" / "math_d1.csv").exists()
