"""Crash-safe training: `kill -9` mid-run, then `harness run --resume`, ends exactly where an uninterrupted
run ends; damaged checkpoints and a diverging loss stop with a clear message and never yield a result.

No pretrained cache: a random one-layer RoFormer (hidden 32) with the arith tokenizer is written to a tmp
folder and loaded as `--model hf:<folder>`. Runs are real `python -m harness.cli run` subprocesses on CPU
with one thread (bit-for-bit determinism), 8 RL steps of 2 prompts x 2 completions, a checkpoint every
step, 20 test problems, no intermediate evaluation. A random model scores 0 reward, so the updates come
from the KL term and weight decay at lr 1e-2; that is enough to move every weight, and the final
checkpoints of the two runs are compared tensor by tensor (optimizer state included).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fakes import write_random_roformer

REPO = Path(__file__).resolve().parents[1]
STEPS = 8
SETTINGS = ["prompts_per_step=2", "num_generations=2", "mu=2", "eval_every=0", "lr=0.01"]
TIMING = {"step_time_s"}  # the only curve columns allowed to differ between two runs


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("resume")
    model_dir = root / "model"
    write_random_roformer(model_dir)
    e = dict(os.environ, HARNESS_HOME=str(root / "home"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
             PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    e.pop("HARNESS_DEBUG", None)
    return {"root": root, "model": model_dir, "env": e}


def _argv(env: dict, out: Path, *extra: str) -> list[str]:
    argv = ["run", "--task", "arith", "--method", "maskgrpo", "--model", f"hf:{env['model']}", "--steps",
            str(STEPS), "--limit", "20", "--checkpoint-every", "1", "--out", str(out), "--no-progress",
            "--device", "cpu"]
    for s in SETTINGS:
        argv += ["--set", s]
    return argv + list(extra)


def _code(preamble: str = "") -> str:
    return ("import sys, torch; torch.set_num_threads(1)\n" + preamble +
            "\nfrom harness.cli import main\nsys.exit(main(sys.argv[1:]))")


def _popen(env: dict, argv: list[str], preamble: str = "", **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _code(preamble), *argv], env=env["env"], cwd=env["root"],
                            text=True, **kw)


def _run(env: dict, argv: list[str], preamble: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _code(preamble), *argv], env=env["env"], cwd=env["root"],
                          capture_output=True, text=True, timeout=timeout)


def _ckpt(out: Path) -> dict:
    return torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)


def _curve(out: Path) -> list[dict]:
    import csv

    with open(out / "curve.csv") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def _assert_no_half_written_file(out: Path) -> None:
    """Every file a reader would take as good parses completely; temporary files start with a dot."""
    for p in out.rglob("*"):
        if p.is_dir() or p.name.startswith("."):
            continue
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".jsonl":
            [json.loads(line) for line in p.read_text().splitlines()]
        elif p.suffix == ".pt":
            assert isinstance(torch.load(p, map_location="cpu", weights_only=False)["step"], int)


def _flat(x, prefix=""):
    """Nested dicts/lists of tensors -> {path: tensor-or-value} for an exact comparison."""
    if isinstance(x, dict):
        return {k: v for key in x for k, v in _flat(x[key], f"{prefix}/{key}").items()}
    if isinstance(x, (list, tuple)):
        return {k: v for i, item in enumerate(x) for k, v in _flat(item, f"{prefix}/{i}").items()}
    return {prefix: x}


def test_kill_9_mid_training_then_resume_matches_an_uninterrupted_run(env, monkeypatch, capsys):
    ref, crash = env["root"] / "ref", env["root"] / "crash"
    # the uninterrupted run and, alongside it (one thread each), the same run SIGKILLed (whole process group)
    # once a checkpoint of step >= 2 is on disk; a short pause after each save (it changes no number) keeps
    # that run from finishing before the kill on a busy machine
    reference = _popen(env, _argv(env, ref), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pause = ("import time, trainers.checkpoint as C\n_save = C.save\n"
             "C.save = lambda *a, **k: (_save(*a, **k), time.sleep(0.25))[0]")
    proc = _popen(env, _argv(env, crash), pause, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                  start_new_session=True)
    killed_at, deadline = None, time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            path = crash / "checkpoints" / "last.pt"
            if path.exists():
                step = _ckpt(crash)["step"]
                if step >= 2:
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed_at = step
                    break
            time.sleep(0.01)
    finally:
        if proc.poll() is None and killed_at is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert killed_at is not None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
    _, err = reference.communicate(timeout=120)
    assert reference.returncode == 0, err[-2000:]
    assert proc.returncode == -signal.SIGKILL
    assert not (crash / "summary.json").exists() and not (crash / "curve.csv").exists()
    assert not (crash / "samples.jsonl").exists()
    assert (crash / "base_eval.json").exists()
    _assert_no_half_written_file(crash)
    assert 2 <= _ckpt(crash)["step"] < STEPS

    # without --resume the unfinished run is not silently restarted or mixed in
    rc, err = _main(env, _argv(env, crash), monkeypatch, capsys)
    assert rc == 2 and "holds an unfinished run; pass --resume to continue it" in err and "--overwrite" in err

    resumed = _run(env, _argv(env, crash, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = (json.loads((d / "summary.json").read_text()) for d in (ref, crash))
    for key in ("metrics", "base", "final", "ci95", "gain", "gain_ci95", "n", "nfe", "eval_nfe", "config"):
        assert a[key] == b[key], key
    assert {k: v for k, v in a["train"].items() if k != "train_wall_time_s"} == \
        {k: v for k, v in b["train"].items() if k != "train_wall_time_s"}
    assert b["train"]["steps"] == STEPS
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["final"] == a["final"]
    assert _curve(ref) == _curve(crash) and len(_curve(ref)) == STEPS
    assert (ref / "samples.jsonl").read_text() == (crash / "samples.jsonl").read_text()

    # the trained weights and the optimizer state are bit-identical, and training did move the weights
    ca, cb = _ckpt(ref), _ckpt(crash)
    assert ca["step"] == cb["step"] == STEPS
    fa, fb = _flat({"model": ca["model"], "optimizer": ca["optimizer"]}), \
        _flat({"model": cb["model"], "optimizer": cb["optimizer"]})
    assert fa.keys() == fb.keys()
    for k in fa:
        if isinstance(fa[k], torch.Tensor):
            assert torch.equal(fa[k], fb[k]), k
        else:
            assert fa[k] == fb[k], k
    from safetensors.torch import load_file

    initial = load_file(str(env["model"] / "model.safetensors"))
    moved = [k for k, v in ca["model"].items() if k in initial and not torch.equal(v, initial[k])]
    assert len(moved) > len(ca["model"]) // 2


def _unfinished_copy(env: dict, name: str) -> Path:
    """A run folder as a crash leaves it: the reference run minus its final results."""
    src = env["root"] / "ref"
    if not (src / "checkpoints" / "last.pt").exists():
        done = _run(env, _argv(env, src))
        assert done.returncode == 0, done.stderr[-2000:]
    dst = env["root"] / name
    shutil.copytree(src, dst)
    for f in ("summary.json", "curve.csv", "samples.jsonl"):
        (dst / f).unlink()
    return dst


def _main(env: dict, argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """`harness ...` in this process (cheap when it stops before generating): exit code and stderr."""
    from harness.cli import main

    monkeypatch.setenv("HARNESS_HOME", env["env"]["HARNESS_HOME"])
    capsys.readouterr()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine may be shared: no oversubscription
    try:
        rc = main(argv)
    finally:
        torch.set_num_threads(threads)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_resume_from_a_damaged_checkpoint_is_a_one_line_error_and_writes_no_result(env, damage, monkeypatch,
                                                                                   capsys):
    out = _unfinished_copy(env, f"damaged-{damage}")
    path = out / "checkpoints" / "last.pt"
    data = path.read_bytes()
    path.write_bytes({"truncated": data[:len(data) // 2], "empty": b"", "garbage": b"not a checkpoint\n" * 50}[damage])
    before = path.read_bytes()
    rc, stderr = _main(env, _argv(env, out, "--resume"), monkeypatch, capsys)
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("Loading weights")]
    assert rc == 2 and len(lines) == 1, stderr[-2000:]
    assert "last.pt" in lines[0] and "damaged" in lines[0] and "--overwrite" in lines[0], lines[0]
    assert not (out / "summary.json").exists()  # never a result from a checkpoint that could not be read
    assert path.read_bytes() == before  # the evidence is left for the user
    if damage == "truncated":  # the advice works: --overwrite starts over (here a 1-step run) and finishes
        argv = _argv(env, out, "--overwrite")
        argv[argv.index("--steps") + 1] = "1"
        rc, stderr = _main(env, argv, monkeypatch, capsys)
        assert rc == 0, stderr[-2000:]
        assert _ckpt(out)["step"] == 1 and json.loads((out / "summary.json").read_text())["train"]["steps"] == 1


def test_resume_with_other_test_problems_recomputes_the_base_evaluation(env, monkeypatch, capsys):
    """The saved base evaluation is reused only for the same model, seed, decoder and test problems."""
    out = _unfinished_copy(env, "other-limit")
    argv = _argv(env, out, "--resume")
    argv[argv.index("--limit") + 1] = "7"
    rc, stderr = _main(env, argv, monkeypatch, capsys)
    assert rc == 0, stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 7
    assert len((out / "base_samples.jsonl").read_text().splitlines()) == 7
    assert json.loads((out / "base_eval.json").read_text())["n"] == 7


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(env):
    out = env["root"] / "diverge"
    # advantages become NaN from step 3 on: the loss of step 3 is non-finite
    preamble = ("import trainers.loop as L\n_orig = L._Run.update\n"
                "def update(self, step, j, batch, views, old, ref, A, stats, *rest):\n"
                "    return _orig(self, step, j, batch, views, old, ref, A * float('nan') if step >= 3 else A, stats,"
                " *rest)\n"
                "L._Run.update = update")
    r = _run(env, _argv(env, out), preamble=preamble)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert "non-finite loss at step 3" in last and "last good checkpoint" in last and "step 2" in last, last
    assert not (out / "summary.json").exists() and not (out / "curve.csv").exists()
    ck = _ckpt(out)
    assert ck["step"] == 2 and [row["step"] for row in ck["state"]["curve"]] == [1, 2]
    assert all(torch.isfinite(v).all() for v in ck["model"].values())
    _assert_no_half_written_file(out)


def test_a_redirected_log_gets_a_progress_line_every_10th_step_and_the_last(env):
    # stderr is a pipe, not a terminal: no tqdm bars, but the trainer's plain lines still come, thinned out
    steps = 12
    argv = [a for a in _argv(env, env["root"] / "log") if a != "--no-progress"]
    argv[argv.index("--steps") + 1] = str(steps)
    r = _run(env, argv)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("step ")]
    assert [ln.split()[1] for ln in lines] == ["10/12", "12/12"]
    assert "reward" in lines[0] and "kl" in lines[0]


def test_curve_end_points_on_a_subset_come_from_the_base_and_final_evaluations(env, tmp_path):
    """With a learning curve on the first 8 of 20 test problems, steps 0 and 4 are not decoded again: they
    are the first 8 problems of the base and final evaluations (samples files), step 2 is decoded."""
    out = tmp_path / "subset"
    argv = _argv(env, out, "--set", "eval_every=2", "--set", "eval_limit=8")
    argv[argv.index("--steps") + 1] = "4"
    r = _run(env, argv)
    assert r.returncode == 0, r.stderr[-2000:]
    curve = {int(row["step"]): row for row in _curve(out)}
    assert sorted(curve) == [0, 1, 2, 3, 4]

    def first8(name: str) -> float:
        rows = [json.loads(line) for line in (out / name).read_text().splitlines()]
        assert len(rows) == 20
        return sum(bool(row["verdict"]) for row in rows[:8]) / 8

    assert float(curve[0]["eval_accuracy"]) == first8("base_samples.jsonl")
    assert float(curve[4]["eval_accuracy"]) == first8("samples.jsonl")
    assert curve[2]["eval_accuracy"] != "" and curve[1]["eval_accuracy"] == curve[3]["eval_accuracy"] == ""


def test_prefix_metrics_score_only_the_first_k_problems():
    from harness.evaluation import EvalOutput
    from harness.experiment import _prefix_metrics
    from tasks import get_task

    task = get_task("arith")
    exs = task.load(split="test", limit=4)
    # right, wrong, right, right: the first two score 1/2, all four 3/4 (the evaluation's own metrics)
    comps = [exs[0].solution, "\\boxed{-1}", exs[2].solution, exs[3].solution]
    scored = task.score_many(comps, exs)
    assert [s.verdict for s in scored] == [True, False, True, True]  # from the verifier, not set by hand
    metrics, ci95 = task.metrics(scored, exs)
    assert metrics["accuracy"] == 0.75
    ev = EvalOutput(scored=scored, metrics=metrics, ci95=ci95, n=4, n_samples=1)
    assert _prefix_metrics(task, ev, exs, 2)["accuracy"] == 0.5
    assert _prefix_metrics(task, ev, exs, 3)["accuracy"] == 2 / 3
    assert _prefix_metrics(task, ev, exs, 1)["accuracy"] == 1.0
    assert _prefix_metrics(task, ev, exs, 4) == metrics  # all problems: the evaluation's own metrics
