"""Bad input meets a one-line error that names the file, line or value and says what to do instead.

Every error path: exit code 2, exactly one line on stderr, no traceback, raised before the expensive
work (data, model, generation), and the files already in the output folder are left as they were.
Fast: `--model gold` on a few real GSM8K rows copied into tmp files (the real data folder is found as
tests/test_cli.py finds it; the tests that need it skip without it).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.registry import Registry, UnknownNameError
from tasks import get_task
from tasks.base import DataError, Records

DATA = Path(os.environ.get("HARNESS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
LEADERBOARD_RESULTS = Path(__file__).parent / "data" / "leaderboard" / "results"
needs_data = pytest.mark.skipif(not (DATA / "gsm8k_test.jsonl").exists(), reason="../shared/data not present")

PRECIOUS = {"summary.json": '{"precious": "an earlier run"}\n', "samples.jsonl": '{"id": 0}\n'}


@pytest.fixture
def gsm(tmp_path) -> Path:
    """Three real GSM8K rows as a jsonl file."""
    if not (DATA / "gsm8k_test.jsonl").exists():
        pytest.skip("../shared/data not present")
    path = tmp_path / "gsm.jsonl"
    path.write_text("".join((DATA / "gsm8k_test.jsonl").read_text().splitlines(keepends=True)[:3]))
    return path


@pytest.fixture
def earlier_run(tmp_path) -> Path:
    """An output folder that already holds another run's results."""
    out = tmp_path / "earlier"
    out.mkdir()
    for name, text in PRECIOUS.items():
        (out / name).write_text(text)
    return out


def assert_untouched(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(PRECIOUS)
    for name, text in PRECIOUS.items():
        assert (folder / name).read_text() == text


def one_line_error(argv, capsys) -> str:
    """Run the CLI in-process; assert exit code 2 and one stderr line without traceback; return the line."""
    assert main([str(a) for a in argv]) == 2
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and err.startswith("harness ")
    return err


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def gsm_rows(gsm: Path, n: int = 2) -> str:
    return "".join(gsm.read_text().splitlines(keepends=True)[:n])


# ---- malformed data files ----------------------------------------------------------------------------
@needs_data
def test_bad_json_names_the_file_and_line(gsm, tmp_path, earlier_run, capsys):
    bad = write(tmp_path, "bad.jsonl", gsm_rows(gsm) + "\n" + '{"question": "x", "answer": \n')  # line 4
    err = one_line_error(["eval", "--task", "gsm8k", "--model", "gold", "--data", bad, "--out", earlier_run,
                          "--overwrite"], capsys)
    assert f"{bad}:4: not valid JSON" in err and "one JSON object per line" in err
    assert_untouched(earlier_run)


def test_broken_json_array_names_the_line(tmp_path):
    bad = write(tmp_path, "bad.json", '[\n  {"question": "q", "answer": "#### 1"},\n  {"question": "q" "answer"}\n]')
    with pytest.raises(DataError, match=r"bad\.json:3: not valid JSON"):
        get_task("gsm8k").load(str(bad))


@needs_data
def test_missing_field_names_file_line_field_and_the_fields_expected(gsm, tmp_path, earlier_run, capsys):
    bad = write(tmp_path, "missing.jsonl", gsm_rows(gsm) + json.dumps({"question": "How many?"}) + "\n")
    err = one_line_error(["eval", "--task", "gsm8k", "--model", "gold", "--data", bad, "--out", earlier_run,
                          "--overwrite"], capsys)
    assert f"{bad}:3: missing field answer" in err
    assert "gsm8k rows need question (string), answer (string)" in err
    assert_untouched(earlier_run)


@needs_data
def test_wrong_type_names_the_field_its_type_and_the_type_expected(gsm, tmp_path, capsys):
    bad = write(tmp_path, "typed.jsonl", json.dumps({"question": "q", "answer": 42}) + "\n" + gsm_rows(gsm))
    err = one_line_error(["eval", "--task", "gsm8k", "--model", "gold", "--data", bad, "--out", tmp_path / "o"],
                         capsys)
    assert f"{bad}:1: field 'answer' is integer 42, expected string" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("text,needle", [
    ("", "the file is empty"),
    ("\n  \n", "the file is empty"),
    ("42", "a single JSON integer; expected a JSON array of objects"),
    ('{"foo": 1,\n "bar": 2}', "a JSON object with keys foo, bar; expected a JSON array"),
    ("[]", "no rows; expected gsm8k rows with question (string), answer (string)"),
    ('[1, 2]', "row 0 (0-based): expected a JSON object with question (string), answer (string), got integer 1"),
])
def test_a_json_file_that_is_not_a_list_of_objects_says_what_it_is(text, needle, tmp_path):
    path = write(tmp_path, "data.json", text)
    with pytest.raises(DataError) as e:
        get_task("gsm8k").load(str(path))
    assert str(path) in str(e.value) and needle in str(e.value)


def test_jsonl_row_that_is_not_an_object_names_its_line(tmp_path):
    path = write(tmp_path, "rows.jsonl", '{"question": "q", "answer": "#### 1"}\n\n["q", "#### 2"]\n')
    with pytest.raises(DataError, match=r"rows\.jsonl:3: expected a JSON object .* got list"):
        get_task("gsm8k").load(str(path))


def test_non_utf8_file_is_named(tmp_path):
    path = write(tmp_path, "latin1.jsonl", '{"question": "caf\xe9", "answer": "#### 1"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.jsonl: not UTF-8 text"):
        get_task("gsm8k").load(str(path))


def test_gsm8k_answer_without_final_number_names_the_line(tmp_path):
    path = write(tmp_path, "g.jsonl", '{"question": "q", "answer": "#### 1"}\n{"question": "q", "answer": "no end"}\n')
    with pytest.raises(DataError, match=r"g\.jsonl:2: field 'answer' must end in '#### N'"):
        get_task("gsm8k").load(str(path))


MBPP_ROW = {"task_id": 2, "prompt": "Write add.", "code": "def add(a, b):\n    return a + b",
            "test_imports": [], "test_list": ["assert add(1, 2) == 3"]}


@pytest.mark.parametrize("change,needle", [
    ({"test_list": [1, 2]}, "field 'test_list' is list [1, 2], expected list of strings"),
    ({"test_list": []}, "field 'test_list' is empty"),
    ({"task_id": True}, "field 'task_id' is true/false True, expected integer or string"),
    ({"test_imports": "import math"}, "field 'test_imports' is string 'import math', expected list of strings"),
])
def test_mbpp_json_array_row_with_a_bad_field_names_the_row(change, needle, tmp_path):
    path = write(tmp_path, "mbpp.json", json.dumps([MBPP_ROW, {**MBPP_ROW, "task_id": 3, **change}]))
    with pytest.raises(DataError) as e:
        get_task("mbpp").load(str(path))
    assert f"{path} row 1 (0-based): {needle}" in str(e.value)


def test_duplicate_ids_name_both_rows(tmp_path):
    path = write(tmp_path, "mbpp.jsonl", json.dumps(MBPP_ROW) + "\n" + json.dumps(MBPP_ROW) + "\n")
    with pytest.raises(DataError, match=r"mbpp\.jsonl:2: id 2 already used by .*mbpp\.jsonl:1"):
        get_task("mbpp").load(str(path))


def test_math_and_humaneval_list_their_own_fields(tmp_path):
    path = write(tmp_path, "m.jsonl", json.dumps({"problem": "1+1?", "solution": "\\boxed{2}"}) + "\n")
    with pytest.raises(DataError, match=r"m\.jsonl:1: missing field answer; math rows need problem \(string\), "
                                        r"solution \(string\), answer \(string\); optional: unique_id"):
        get_task("math").load(str(path))
    path = write(tmp_path, "h.jsonl", json.dumps({"task_id": "T/0", "prompt": "def f():\n", "test": "",
                                                  "canonical_solution": "  return 1\n"}) + "\n")
    with pytest.raises(DataError, match=r"h\.jsonl:1: missing field entry_point; humaneval rows need task_id"):
        get_task("humaneval").load(str(path))


def test_hub_rows_are_checked_too_and_named_by_dataset_and_row():
    rows = Records([{"question": "q", "answer": "#### 1"}, {"question": "q"}], source="hf://openai/gsm8k:main "
                   "(split test)")
    with pytest.raises(DataError, match=r"hf://openai/gsm8k:main \(split test\) row 1 \(0-based\): missing field "
                                        "answer"):
        get_task("gsm8k").examples_from(rows)


# ---- misspelt names ------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,needle", [
    (["eval", "--task", "gsm9k", "--model", "gold"], "unknown task 'gsm9k'; did you mean 'gsm8k'? valid tasks:"),
    (["eval", "--task", "MATH", "--model", "gold"], "did you mean 'math'?"),
    (["eval", "--task", "gsm8k", "--model", "gld"], "unknown model 'gld'; did you mean 'gold'? valid models:"),
    (["eval", "--task", "gsm8k", "--model", "llada-8b-instrct"], "did you mean 'llada-8b-instruct'?"),
])
def test_misspelt_names_suggest_the_closest_valid_one(argv, needle, tmp_path, capsys):
    err = one_line_error(argv + ["--data", tmp_path / "never-read.jsonl", "--out", tmp_path / "o"], capsys)
    assert needle in err
    assert not (tmp_path / "o").exists()


def test_registry_suggests_only_close_names():
    reg: Registry[int] = Registry("method")
    for name in ("maskgrpo", "diffu-grpo", "unigrpo"):
        reg.register(name)(0)
    with pytest.raises(UnknownNameError) as e:
        reg.get("mask-grpo")
    assert str(e.value) == ("unknown method 'mask-grpo'; did you mean 'maskgrpo'? valid methods: diffu-grpo, "
                            "maskgrpo, unigrpo")
    with pytest.raises(UnknownNameError) as e:
        reg.get("ppo")
    assert "did you mean" not in str(e.value)


def test_misspelt_method_suggests_the_closest(tmp_path, capsys):
    pytest.importorskip("trainers.methods")
    err = one_line_error(["run", "--task", "arith", "--method", "mask-grpo", "--out", tmp_path / "o"], capsys)
    assert "unknown method 'mask-grpo'; did you mean 'maskgrpo'?" in err


# ---- invalid decoder settings ----------------------------------------------------------------------------
@pytest.mark.parametrize("flags,needle", [
    (["--gen-length", "100", "--block-length", "32"], "gen_length=100 is not a multiple of block_length=32"),
    (["--temperature", "-0.5"], "temperature=-0.5 must be >= 0"),
    (["--temperature", "nan"], "--temperature nan must be a finite number"),
    (["--gen-length", "64", "--block-length", "32", "--diffusion-steps", "33"], "steps=33 is not a multiple of"),
    (["--gen-length", "0"], "gen_length=0 must be a positive integer"),
    (["--threshold", "1.5"], "threshold=1.5 must lie in (0, 1]"),
    (["--threshold", "nan"], "threshold=nan must lie in (0, 1]"),
    (["--factor", "0"], "factor=0.0 must be a finite number > 0"),
    (["--threshold", "0.9", "--factor", "1"], "give threshold or factor, not both"),
    (["--cache", "dual", "--sampler", "emerge"], "apply to the low_confidence sampler only, not 'emerge'"),
    (["--threshold", "0.9", "--remasking", "random"], "use remasking=low_confidence"),
])
def test_invalid_decoder_settings_fail_before_data_or_model_are_loaded(flags, needle, tmp_path, earlier_run,
                                                                       capsys):
    # neither the data file nor the model exists: the decoder check must come first
    argv = ["eval", "--task", "gsm8k", "--model", "hf:/nonexistent/model", "--data", tmp_path / "none.jsonl",
            "--out", earlier_run, "--overwrite", *flags]
    assert needle in one_line_error(argv, capsys)
    assert_untouched(earlier_run)


@pytest.mark.parametrize("flag,value", [("--sampler", "greedy"), ("--cache", "full")])
def test_bad_choice_is_one_line_with_exit_code_2(flag, value, capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--task", "gsm8k", "--model", "gold", flag, value])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"invalid choice: '{value}'" in err and "--help" in err


@pytest.mark.parametrize("argv", [["--n-samples", "0"], ["--limit", "-1"], ["--batch-size", "0"]])
def test_non_positive_counts_are_refused(argv, tmp_path, capsys):
    err = one_line_error(["eval", "--task", "gsm8k", "--model", "gold", "--out", tmp_path / "o", *argv], capsys)
    assert argv[0] in err and "must be >= 1" in err


# ---- output folders ----------------------------------------------------------------------------------------
@needs_data
@pytest.mark.parametrize("out,needle", [
    ("/proc/harness-test/x", "cannot write to --out /proc/harness-test/x"),
    ("{data}", "is a file, not a folder"),
    ("{data}/sub", "cannot write to --out"),
])
def test_unwritable_out_fails_before_any_work(out, needle, gsm, capsys):
    out = out.format(data=gsm)
    before = gsm.read_text()
    err = one_line_error(["eval", "--task", "gsm8k", "--model", "gold", "--data", gsm, "--out", out], capsys)
    assert needle in err and "gsm8k: n=" not in err
    assert gsm.read_text() == before


@needs_data
@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_under_a_read_only_folder_is_refused(gsm, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        err = one_line_error(["eval", "--task", "gsm8k", "--model", "gold", "--data", gsm, "--out", ro / "x"],
                             capsys)
    finally:
        ro.chmod(0o755)
    assert f"cannot write to --out {ro / 'x'}" in err and "Permission denied" in err


@needs_data
@pytest.mark.parametrize("command", ["eval", "score"])
def test_out_with_another_runs_summary_is_refused_then_replaced_with_overwrite(command, gsm, tmp_path,
                                                                               earlier_run, capsys):
    if command == "eval":
        argv = ["eval", "--task", "gsm8k", "--model", "gold", "--data", gsm, "--out", earlier_run]
    else:
        pred = write(tmp_path, "p.jsonl", json.dumps({"id": 0, "completion": "#### 18"}) + "\n")
        argv = ["score", "--task", "gsm8k", "--predictions", pred, "--data", gsm, "--out", earlier_run]
    err = one_line_error(argv, capsys)
    assert f"--out {earlier_run} already holds summary.json, samples.jsonl from another run" in err
    assert "--overwrite" in err
    assert_untouched(earlier_run)

    assert main([str(a) for a in argv] + ["--overwrite"]) == 0
    assert json.loads((earlier_run / "summary.json").read_text())["kind"] == command


@needs_data
def test_run_refuses_a_finished_or_unfinished_run_folder_unless_told(gsm, tmp_path, earlier_run, capsys):
    argv = ["run", "--task", "gsm8k", "--method", "none", "--model", "gold", "--data", str(gsm), "--no-progress"]
    err = one_line_error(argv + ["--out", earlier_run], capsys)
    assert "already holds summary.json from another run" in err and "--resume" in err
    assert_untouched(earlier_run)

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "base_eval.json").write_text("{}")
    err = one_line_error(argv + ["--out", unfinished], capsys)
    assert "holds an unfinished run; pass --resume to continue it" in err
    assert (unfinished / "base_eval.json").read_text() == "{}"

    assert main(argv + ["--out", str(earlier_run), "--overwrite"]) == 0
    assert json.loads((earlier_run / "summary.json").read_text())["kind"] == "run"


# ---- predictions for `harness score` ------------------------------------------------------------------------
@needs_data
@pytest.mark.parametrize("name,content,needle", [
    ("missing.jsonl", None, "predictions not found"),
    ("empty.jsonl", "", "the file is empty; expected JSON lines"),
    ("array.json", '[{"id": 0, "completion": "#### 18"}]', "one JSON array; expected JSON lines"),
    ("table.csv", "id,completion\n0,18\n", "no line that is a JSON object"),
    ("binary.jsonl", b"\xff\xfe\x00garbage", "not UTF-8 text"),
    ("wrong-ids.jsonl", '{"id": "HumanEval/0", "completion": "#### 18"}\n',
     "none of its 1 rows can be scored: 1 with ids not in the data (e.g. HumanEval/0); ids must be the "
     "dataset's, e.g. 0, 1, 2"),
])
def test_unusable_predictions_file_is_named(name, content, needle, gsm, tmp_path, earlier_run, capsys):
    pred = tmp_path / name
    if content is not None:
        write(tmp_path, name, content)
    err = one_line_error(["score", "--task", "gsm8k", "--predictions", pred, "--data", gsm, "--out", earlier_run,
                          "--overwrite"], capsys)
    assert needle in err and str(pred) in err
    assert_untouched(earlier_run)


# ---- results folders for `harness leaderboard` ----------------------------------------------------------------
def test_leaderboard_names_corrupt_result_files_and_builds_the_rest(tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(LEADERBOARD_RESULTS, results)
    corrupt_before = (results / "bad-corrupt" / "summary.json").read_bytes()
    out = tmp_path / "boards"
    assert main(["leaderboard", "--results", str(results), "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert f"skipped {results / 'bad-corrupt' / 'summary.json'}: corrupt JSON" in cap.err
    assert str(results / "bad-schema" / "summary.json") in cap.err
    assert "Traceback" not in cap.err
    assert (out / "gsm8k.csv").exists() and (out / "mbpp.csv").exists()
    assert (results / "bad-corrupt" / "summary.json").read_bytes() == corrupt_before  # reported, never "fixed"


@pytest.mark.parametrize("results", ["missing", "a-file"])
def test_leaderboard_results_that_is_not_a_folder_is_one_line(results, tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    err = one_line_error(["leaderboard", "--results", tmp_path / results, "--out", tmp_path / "boards"], capsys)
    assert f"--results {tmp_path / results}" in err
    assert not (tmp_path / "boards").exists()


# ---- the console script -----------------------------------------------------------------------------------
def test_console_script_bad_data_is_one_line_exit_2_and_keeps_results(tmp_path, earlier_run):
    bad = write(tmp_path, "bad.jsonl", '{"question": "q", "answer": "#### 1"}\n{oops\n')
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "eval", "--task", "gsm8k", "--model", "gold",
                           "--data", str(bad), "--out", str(earlier_run), "--overwrite"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{bad}:2: not valid JSON" in err
    assert_untouched(earlier_run)


# ---- issue 18: inputs that used to crash or mislead `harness score` -------------------------------------------
DEEP = '{"id": 0, "completion": ' + "[" * 100_000 + "]" * 100_000 + "}\n"


def _special(tmp_path: Path, kind: str) -> Path:
    if kind == "fifo":  # opening it would block forever: it must be refused without being opened
        path = tmp_path / "pipe.jsonl"
        os.mkfifo(path)
        return path
    return Path("/dev/zero")  # reading it would never end


@needs_data
@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
@pytest.mark.parametrize("flag", ["--predictions", "--data"])
def test_a_file_that_is_not_a_regular_file_is_refused_without_reading_it(kind, flag, gsm, tmp_path, earlier_run,
                                                                          capsys):
    special = _special(tmp_path, kind)
    pred = write(tmp_path, "p.jsonl", '{"id": 0, "completion": "#### 18"}\n')
    files = {"--predictions": pred, "--data": gsm, flag: special}
    err = one_line_error(["score", "--task", "gsm8k", "--predictions", files["--predictions"], "--data",
                          files["--data"], "--out", earlier_run, "--overwrite"], capsys)
    assert f"{special} is not a regular file" in err
    assert_untouched(earlier_run)


@needs_data
def test_deeply_nested_json_is_a_named_line_not_a_traceback(gsm, tmp_path, earlier_run, capsys):
    deep_data = write(tmp_path, "deep.jsonl", gsm_rows(gsm, 1) + DEEP)
    pred = write(tmp_path, "p.jsonl", '{"id": 0, "completion": "#### 18"}\n')
    err = one_line_error(["score", "--task", "gsm8k", "--predictions", pred, "--data", deep_data, "--out",
                          earlier_run, "--overwrite"], capsys)
    assert f"{deep_data}:2: not valid JSON (nested too deeply" in err
    deep_pred = write(tmp_path, "deep-pred.jsonl", DEEP)
    err = one_line_error(["score", "--task", "gsm8k", "--predictions", deep_pred, "--data", gsm, "--out",
                          earlier_run, "--overwrite"], capsys)
    assert f"{deep_pred}: no line that is a JSON object" in err
    assert_untouched(earlier_run)
    mixed = write(tmp_path, "mixed-pred.jsonl", '{"id": 0, "completion": "#### 18"}\n' + DEEP)
    assert main(["score", "--task", "gsm8k", "--predictions", str(mixed), "--data", str(gsm), "--out",
                 str(tmp_path / "mixed")]) == 0
    assert f"({mixed} lines [2])" in capsys.readouterr().err


@needs_data
def test_bom_is_read_and_an_unparsable_line_is_named_by_file_and_line(gsm, tmp_path, capsys):
    data = write(tmp_path, "bom-data.jsonl", b"\xef\xbb\xbf" + gsm_rows(gsm, 2).encode())
    first = json.loads(gsm_rows(gsm, 1))
    good = json.dumps({"id": 0, "completion": first["answer"]})
    pred = write(tmp_path, "bom-pred.jsonl", b"\xef\xbb\xbf" + f"\n{good}\n{{oops\n".encode())
    out = tmp_path / "out"
    assert main(["score", "--task", "gsm8k", "--predictions", str(pred), "--data", str(data), "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert f"({pred} lines [3])" in cap.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["report"]["malformed_lines"] == [3] and summary["metrics"]["accuracy"] == 1.0


TOY_HE = {"task_id": "Toy/0", "prompt": "def inc(x):\n    \"\"\"x + 1\"\"\"\n", "canonical_solution": "    return x + 1\n",
          "test": "def check(candidate):\n    assert candidate(1) == 2\n", "entry_point": "inc"}


@pytest.mark.parametrize("row", [{"task_id": "Toy/0", "completion": "    return x + 1\n"},  # human-eval
                                 {"task_id": "Toy/0", "solution": "def inc(x):\n    return x + 1\n"}])  # EvalPlus
def test_predictions_in_the_field_names_of_human_eval_and_evalplus_are_scored(row, tmp_path, capsys):
    data = write(tmp_path, "he.jsonl", json.dumps(TOY_HE) + "\n")
    pred = write(tmp_path, "p.jsonl", json.dumps(row) + "\n")
    out = tmp_path / "out"
    assert main(["score", "--task", "humaneval", "--predictions", str(pred), "--data", str(data), "--out",
                 str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["metrics"]["pass@1"] == 1.0


def _mbpp_row(task_id, tests, imports=()):
    return {"task_id": task_id, "prompt": "p", "code": "def f(x):\n    return x", "test_imports": list(imports),
            "test_list": tests}


@pytest.mark.parametrize("bad", [_mbpp_row(1, ["assert f(1) == 1", "assert f(1 == 1"]),
                                 _mbpp_row(1, ["assert f(1) == 1"], ["import no_such_module_xyz"])])
def test_a_broken_data_test_is_not_blamed_on_the_program(bad, tmp_path, capsys):
    good = _mbpp_row(2, ["assert f(2) == 2"])
    pred = write(tmp_path, "p.jsonl", "".join(json.dumps({"id": i, "completion": "def f(x):\n    return x"}) + "\n"
                                              for i in (1, 2)))
    data = write(tmp_path, "mixed.jsonl", json.dumps(bad) + "\n" + json.dumps(good) + "\n")
    out = tmp_path / "mixed"
    assert main(["score", "--task", "mbpp", "--predictions", str(pred), "--data", str(data), "--out", str(out)]) == 0
    assert "1 row(s) could not be scored: 1 bad_test" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["report"]["unscorable_by_status"] == {"bad_test": 1} and summary["metrics"]["pass@1"] == 1.0
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["verdict"] for s in samples] == [None, True] and samples[0]["extra"]["status"] == "bad_test"

    only_bad = write(tmp_path, "bad.jsonl", json.dumps(bad) + "\n")
    out = tmp_path / "bad"
    pred = write(tmp_path, "p1.jsonl", json.dumps({"id": 1, "completion": "def f(x):\n    return x"}) + "\n")
    err = one_line_error(["score", "--task", "mbpp", "--predictions", pred, "--data", only_bad, "--out", out], capsys)
    assert "no prediction could be scored" in err and "bad_test" in err
    assert (out / "samples.jsonl").exists()  # written before the error: nothing is lost


def test_two_processes_probing_one_new_out_folder_at_once_both_pass(tmp_path):
    # the ranks of torchrun check --out together: one's mkdir may find the folder already made by the other,
    # and one's clean-up may remove it under the other's probe (CI saw "File exists" once)
    import threading

    from harness.results import check_out_dir

    for i in range(30):
        target = tmp_path / f"r{i}" / "run"
        errors: list[Exception] = []
        barrier = threading.Barrier(2)

        def probe(barrier=barrier, target=target, errors=errors):
            barrier.wait()
            try:
                check_out_dir(target)
            except Exception as e:  # noqa: BLE001 - collected for the assertion
                errors.append(e)

        threads = [threading.Thread(target=probe) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
