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
