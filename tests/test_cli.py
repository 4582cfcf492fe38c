"""The command line as a user meets it: errors, `score` on mixed predictions, gold evaluation."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main

DATA = Path(os.environ.get("HARNESS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_data = pytest.mark.skipif(not (DATA / "gsm8k_test.jsonl").exists(), reason="../shared/data not present")


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["eval", "--task", "nosuch", "--model", "gold"], "unknown task 'nosuch'; valid tasks:"),
        (["score", "--task", "gsm9k", "--predictions", "x.jsonl"], "valid tasks: "),
        (["run", "--task", "arith", "--method", "ppo"], "unknown method 'ppo'; valid methods:"),
        (["eval", "--task", "gsm8k", "--model", "gold", "--data", "/nonexistent/file.jsonl"], "not found"),
    ],
)
def test_bad_names_are_one_line_errors_with_exit_code_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_unknown_task_lists_the_real_tasks(capsys):
    main(["eval", "--task", "nosuch", "--model", "gold"])
    err = capsys.readouterr().err
    for name in ("gsm8k", "math", "mbpp", "humaneval"):
        assert name in err


def test_console_script_unknown_model_exits_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "eval", "--task", "gsm8k", "--model", "gpt-17",
                           "--data", str(DATA / "gsm8k_test.jsonl"), "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "gpt-17" in proc.stderr


def test_help_works_for_every_subcommand(capsys):
    for cmd in ("list", "pretrain", "eval", "score", "run", "compare", "leaderboard"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0


@needs_data
def test_score_mixed_predictions_counts_right_wrong_malformed_and_unknown(tmp_path, capsys):
    rows = [json.loads(line) for line in (DATA / "gsm8k_test.jsonl").read_text().splitlines()[:3]]
    gold0 = rows[0]["answer"].split("####")[-1].strip()  # 18
    gold1 = rows[1]["answer"].split("####")[-1].strip()  # 3
    pred = tmp_path / "p.jsonl"
    pred.write_text("\n".join([
        json.dumps({"id": 0, "completion": f"so the answer is \\boxed{{{gold0}}}"}),  # right
        json.dumps({"id": 1, "completion": "#### 999"}),  # wrong
        "{not json",  # malformed
        json.dumps({"id": 2}),  # malformed: no completion
        json.dumps({"id": 99999, "completion": "#### 1"}),  # unknown id
        json.dumps({"id": "1", "completion": f"#### {gold1}"}),  # second sample for id 1 (string id), right
    ]) + "\n")
    out_dir = tmp_path / "out"
    assert main(["score", "--task", "gsm8k", "--predictions", str(pred), "--data", str(DATA / "gsm8k_test.jsonl"),
                 "--out", str(out_dir)]) == 0
    cap = capsys.readouterr()
    summary = last_json(cap.out)
    # problems 0 and 1 scored; accuracy uses the first sample per problem: 0 right, 1 wrong -> 0.5
    assert summary["n"] == 2
    assert summary["metrics"]["accuracy"] == pytest.approx(0.5)
    assert summary["report"]["malformed_rows"] == 2
    assert summary["report"]["unknown_id_rows"] == 1
    assert summary["report"]["scored_rows"] == 3
    assert "malformed" in cap.err and "99999" in cap.err
    samples = [json.loads(line) for line in (out_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 and {s["verdict"] for s in samples} == {True, False}
    assert json.loads((out_dir / "summary.json").read_text())["schema_version"] == 1


@needs_data
@pytest.mark.parametrize("task,data,n", [("gsm8k", "gsm8k_test.jsonl", 50), ("math", "math500_test.jsonl", 50),
                                         ("mbpp", "mbpp_sanitized.json", 20), ("humaneval", None, 20)])
def test_eval_gold_scores_one(task, data, n, tmp_path, capsys):
    argv = ["eval", "--task", task, "--model", "gold", "--limit", str(n), "--out", str(tmp_path)]
    if data:
        argv += ["--data", str(DATA / data)]
    assert main(argv) == 0
    summary = last_json(capsys.readouterr().out)
    assert summary["task"] == task and summary["n"] == n
    primary = "pass@1" if task in ("mbpp", "humaneval") else "accuracy"
    assert summary["metrics"][primary] == 1.0


@needs_data
def test_offline_hub_id_says_which_data_to_pass(capsys):
    env_before = os.environ.get("HF_ENDPOINT")
    os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens on the discard port
    try:
        assert main(["eval", "--task", "gsm8k", "--model", "gold"]) == 2
    finally:
        if env_before is None:
            os.environ.pop("HF_ENDPOINT")
        else:
            os.environ["HF_ENDPOINT"] = env_before
    assert "--data" in capsys.readouterr().err
