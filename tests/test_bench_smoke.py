"""Smoke run of the prepared GPU benchmark (benchmarks/bench_gpu_cache.py) on its CPU --tiny-shape path."""

import importlib.util
import json
from pathlib import Path


def load(name):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_cache_benchmark_tiny_shape_prints_json(capsys):
    doc = load("bench_gpu_cache").main(["--tiny-shape", "--gen-length", "16", "--block-length", "8", "--steps", "8",
                                         "--batch-sizes", "1"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == doc
    assert doc["device"] == "cpu" and doc["tiny_shape"]
    assert [r["cache"] for r in doc["rows"]] == ["none", "prefix", "dual"]
    assert {r["nfe"] for r in doc["rows"]} == {8}
    assert all(r["tokens_per_s"] > 0 for r in doc["rows"])


def test_rl_fast_gain_interval_is_students_t_over_seeds():
    t_interval = load("rl_fast_gain").t_interval
    # by hand: mean 2, sample sd 1, t(0.975, 2 df) = 4.303, half width 4.303 / sqrt(3) = 2.4843
    mean, lo, hi = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and abs(lo - (2 - 2.4843)) < 1e-3 and abs(hi - (2 + 2.4843)) < 1e-3
    assert t_interval([0.5]) == (0.5, 0.5, 0.5)  # one seed: no interval


def test_rl_fast_gain_resume_runs_only_the_missing_pairs(tmp_path, monkeypatch, capsys):
    mod = load("rl_fast_gain")
    calls = []

    def fake_run(args, seed, variant, sets, out):
        calls.append((seed, variant))
        return {"seed": seed, "variant": variant, "set": sets, "step_s": 2.0 if variant == "fast" else 4.0,
                "base": 0.1, "final": 0.1, "gain": 0.01 * seed, "gain_ci95": [0.0, 0.0]}

    monkeypatch.setattr(mod, "run_one", fake_run)
    path = tmp_path / "gain.json"
    fast = ["rollout_threshold=0.9", "rollout_cache=dual"]
    seed0 = [{"seed": 0, "variant": v, "set": [], "step_s": 8.0 if v == "today" else 2.0, "base": 0.1, "final": 0.1,
              "gain": 0.02, "gain_ci95": [0.0, 0.0]} for v in ("today", "fast")]
    path.write_text(json.dumps({"summary": {"task": "arith", "method": "maskgrpo", "fast_set": fast}, "runs": seed0}))
    monkeypatch.setattr("sys.argv", ["rl_fast_gain.py", "--seeds", "0,1", "--resume", "--json", str(path),
                                     "--out", str(tmp_path / "runs")])
    mod.main()
    assert calls == [(1, "today"), (1, "fast")]  # seed 0 kept from the file
    doc = json.loads(path.read_text())
    assert [(r["seed"], r["variant"]) for r in doc["runs"]] == [(0, "today"), (0, "fast"), (1, "today"), (1, "fast")]
    assert doc["summary"]["speedup_per_step_by_seed"] == {"0": 4.0, "1": 2.0}
    assert doc["summary"]["speedup_per_step"] == 3.0  # mean today (8 + 4) / 2 = 6 over mean fast (2 + 2) / 2 = 2
    # a file of another benchmark is never mixed in
    path.write_text(json.dumps({"summary": {"task": "arith", "method": "wd1", "fast_set": fast}, "runs": seed0}))
    import pytest

    with pytest.raises(SystemExit, match="another benchmark"):
        mod.main()


def test_shapes_variants_pretrains_and_scores_on_validation_only(tmp_path, capsys):
    rows = load("shapes_variants").main(["--variant", 'tiny={"hidden": 16, "layers": 1, "heads": 2, "ffn": 32}',
                                         "--steps", "2", "--seeds", "0", "--cfg-scales", "0,1", "--limit", "6",
                                         "--out", str(tmp_path)])
    assert [(r["variant"], r["cfg_scale"], r["steps"]) for r in rows] == [("tiny", 0.0, 2), ("tiny", 1.0, 2)]
    assert json.loads((tmp_path / "results.json").read_text()) == rows
    for w in ("0", "1"):
        summary = json.loads((tmp_path / "evals" / f"tiny_cfg{w}_s0" / "summary.json").read_text())
        assert summary["config"]["split"] == "validation" and summary["n"] == 6
        assert summary["decode"]["cfg_scale"] == float(w)
    assert "| tiny | 1 |" in capsys.readouterr().out
