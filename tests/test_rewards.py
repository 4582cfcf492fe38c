"""The one reward interface (issue 22): named reward functions with weights, the defaults that reproduce each
task's reward, the image rewards on it (CLIP through torchmetrics, ImageReward), the image-prompt bundles,
and `--reward` / `--reward-model` through the run spec, the CLI and a run's summary."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from fakes import make_tiny_clip

from harness.run_spec import RunSpec
from tasks import get_task
from tasks.base import Example
from tasks.rewards import RewardError, parse_models, parse_weights
from tasks.shapes import GRID, grid_to_text

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT.parent / "shared" / "data" / "image_prompts"
FORMATTED = "<reasoning>\nthink\n</reasoning>\n<answer>\n\\boxed{%s}\n</answer>"
RED_SQUARE = {"tag": "colors", "include": [{"class": "square", "count": 1, "color": "red"}],
              "prompt": "a photo of a red square"}


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("clip"))


# ---- the interface -----------------------------------------------------------------------------------
def test_parse_weights_and_models_keep_order_and_reject_malformed_pairs():
    assert list(parse_weights("correct=1.0,format=0.1")) == ["correct", "format"]
    assert parse_models(["clip=/a", "imagereward=/b.pt"]) == {"clip": "/a", "imagereward": "/b.pt"}
    for bad in ("correct", "correct=x", "a=1,a=2", "=1"):
        with pytest.raises(RewardError):
            parse_weights(bad)


def test_every_task_default_is_a_choice_of_its_own_rewards():
    import tasks

    for name in tasks.TASKS.names():
        t = get_task(name)
        assert t.default_rewards and set(t.default_rewards) <= set(t.reward_functions()), name


def test_chosen_weights_multiply_the_named_terms_and_the_verdict_stays_the_verifiers():
    gsm = get_task("gsm8k")
    ex = Example(id=0, prompt="", reference="18")
    default = gsm.reward(FORMATTED % "18", ex)
    assert default.terms == {"format": 0.5, "integer": 0.5, "correct": 2.0} and default.total == 3.0
    gsm.use_rewards("correct=1.0,format=0.1")
    r = gsm.reward(FORMATTED % "18", ex)
    assert r.terms == {"correct": 1.0, "format": pytest.approx(0.1)} and r.total == pytest.approx(1.1)
    wrong = gsm.reward(FORMATTED % "17", ex)
    assert wrong.success is False and wrong.total == pytest.approx(0.1)
    # the metric is the verifier's accuracy, whatever the reward
    scored = gsm.score_many([FORMATTED % "18", FORMATTED % "17"], [ex, ex])
    assert gsm.metrics(scored, [ex])[0]["accuracy"] == 1.0


def test_unknown_reward_is_a_one_line_error_listing_the_tasks_rewards():
    with pytest.raises(RewardError, match="available: format, integer, correct"):
        get_task("arith").use_rewards("corect=1")
    r = _cli("run", "--task", "arith", "--method", "none", "--model", "gold", "--reward", "corect=1.0")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "not a reward of task 'arith'; available: format, integer, correct" in r.stderr


def test_model_backed_reward_without_weights_or_package_fails_before_any_work(monkeypatch):
    shapes = get_task("shapes")
    with pytest.raises(RewardError, match="--reward-model clip=PATH"):
        shapes.check_rewards("geneval=1,clip=0.1")
    with pytest.raises(RewardError, match="no such file"):
        shapes.check_rewards("clip=1", {"clip": "/nowhere/clip"})
    monkeypatch.setitem(sys.modules, "ImageReward", None)  # import fails as if not installed
    with pytest.raises(RewardError, match="pip install image-reward"):
        shapes.check_rewards("imagereward=1", {"imagereward": __file__})
    r = _cli("run", "--task", "shapes", "--method", "maskgrpo", "--reward", "geneval=1.0,clip=0.1")
    assert r.returncode == 2 and "--reward-model clip=PATH" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ---- image rewards -------------------------------------------------------------------------------------
def test_clip_reward_is_torchmetrics_clip_score_over_100_from_a_local_folder(tiny_clip):
    import torch
    from transformers import CLIPModel, CLIPProcessor

    shapes = get_task("shapes")
    shapes.use_rewards("geneval=1.0,clip=0.5", {"clip": tiny_clip})
    exs = shapes.load(limit=6)
    comps = [ex.solution for ex in exs]
    scored = shapes.score_many(comps, exs)
    # independent: the same model through transformers, max(cos, 0) of the rendered grid and the prompt
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    proc = CLIPProcessor.from_pretrained(tiny_clip)
    for s, ex, c in zip(scored, exs, comps):
        image = shapes.to_image(c)
        with torch.no_grad():
            inp = proc(text=[ex.prompt], images=[image], return_tensors="pt", padding=True)
            i, t = model.get_image_features(pixel_values=inp["pixel_values"]), model.get_text_features(
                input_ids=inp["input_ids"], attention_mask=inp["attention_mask"])
            cos = torch.nn.functional.cosine_similarity(i, t).clamp(min=0).item()
        assert s.terms["clip"] == pytest.approx(0.5 * cos, abs=1e-5)
        assert s.terms["geneval"] == 1.0 and s.reward == pytest.approx(1.0 + 0.5 * cos, abs=1e-5)
    assert any(s.terms["clip"] > 0 for s in scored)


def test_imagereward_reward_calls_the_package_with_local_weights(monkeypatch, tmp_path):
    (tmp_path / "ImageReward.pt").write_bytes(b"")
    (tmp_path / "med_config.json").write_text("{}")
    loaded = {}

    class Model:
        def score(self, prompt, image):
            return 0.1 * len(prompt)

    def load(path, device, med_config):
        loaded.update(path=path, med_config=med_config)
        return Model()

    monkeypatch.setitem(sys.modules, "ImageReward", types.SimpleNamespace(load=load))
    shapes = get_task("shapes")
    shapes.use_rewards("imagereward=2.0", {"imagereward": str(tmp_path / "ImageReward.pt")})
    ex = Example(id=0, prompt="abcd", reference=RED_SQUARE)
    g = np.zeros((GRID, GRID), dtype=int)
    assert shapes.reward(grid_to_text(g), ex).terms == {"imagereward": pytest.approx(2.0 * 0.4)}
    assert loaded["med_config"].endswith("med_config.json")


# ---- image prompt bundles --------------------------------------------------------------------------------
@pytest.mark.parametrize("name, n, with_metadata", [("geneval_metadata_long.jsonl", 553, True),
                                                    ("dpg_bench.jsonl", 1065, False),
                                                    ("hpsv2_eval.jsonl", 3200, False),
                                                    ("imagereward_benchmark_prompts.json", 100, False)])
def test_image_prompt_bundles_load_by_path(name, n, with_metadata):
    if not (PROMPTS / name).is_file():
        pytest.skip(f"{PROMPTS / name} is not on this machine")
    exs = get_task("image-prompts").load(str(PROMPTS / name))
    assert len(exs) == n and [e.id for e in exs[:3]] == [0, 1, 2]
    assert all((e.reference is not None) == with_metadata for e in exs)


def test_image_prompts_score_a_folder_with_geneval_rules_and_clip(tmp_path, tiny_clip):
    """Shapes-world GenEval prompts (the exact detector applies) and a prompt without metadata, scored from a
    folder of PNGs in GenEval's layout by `harness score`."""
    from tasks.shapes import render

    good = np.zeros((GRID, GRID), dtype=int)
    good[3:5, 3:5] = 1  # a red square
    rows = [RED_SQUARE, {**RED_SQUARE, "include": [{"class": "square", "count": 1, "color": "blue"}],
                         "prompt": "a photo of a blue square"}, {"prompt": "a cat", "item_id": "x1"}]
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for i in range(3):
        (tmp_path / "out" / f"{i:05d}" / "samples").mkdir(parents=True)
        render(good).save(tmp_path / "out" / f"{i:05d}" / "samples" / "0000.png")
    r = _cli("score", "--task", "image-prompts", "--data", str(data), "--predictions", str(tmp_path / "out"),
             "--reward", "clip=1.0", "--reward-model", f"clip={tiny_clip}", "--out", str(tmp_path / "res"))
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["metrics"]["colors"] == 0.5 and summary["metrics"]["overall"] == 0.5  # GenEval rows only
    assert 0.0 <= summary["metrics"]["reward_clip"] <= 1.0
    samples = [json.loads(line) for line in (tmp_path / "res" / "samples.jsonl").read_text().splitlines()]
    assert [s["verdict"] for s in samples] == [True, False, None]
    assert all(set(s["terms"]) == {"clip"} and "clip" in s["extra"]["rewards"] for s in samples)
    # the default reward (geneval) on a prompt without metadata: one line naming what to choose instead
    r = _cli("score", "--task", "image-prompts", "--data", str(data), "--predictions", str(tmp_path / "out"),
             "--out", str(tmp_path / "res2"))
    assert r.returncode == 2 and "needs GenEval metadata" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ---- run spec and a run ------------------------------------------------------------------------------------
def test_run_spec_records_rewards_and_reads_them_from_a_file(tmp_path):
    f = tmp_path / "spec.json"
    f.write_text(json.dumps({"task": "shapes", "method": "maskgrpo", "rewards": "geneval=1.0,clip=0.1",
                             "reward_models": {"clip": "/m/clip"}}))
    spec = RunSpec.from_file(f)
    assert spec.rewards == {"geneval": 1.0, "clip": 0.1} and spec.reward_models == {"clip": "/m/clip"}
    assert spec.record()["rewards"] == {"geneval": 1.0, "clip": 0.1}


def test_a_shapes_run_with_geneval_and_clip_records_both_terms(tmp_path, tiny_clip, one_thread):
    """`harness run --task shapes --method maskgrpo --reward geneval=1.0,clip=0.1` end to end, with a tiny
    shapes model (3 pretraining steps) and a randomly initialised tiny CLIP from a local folder."""
    from harness.cli import main
    from harness.pretrain import PretrainConfig, pretrain

    model = tmp_path / "tiny-shapes"
    pretrain("shapes", steps=3, seconds=None, out=model, progress=False,
             config=PretrainConfig(hidden=32, layers=1, heads=2, ffn=64, batch_size=4, warmup_steps=1))
    out = tmp_path / "run"
    assert main(["run", "--task", "shapes", "--method", "maskgrpo", "--model", f"hf:{model}", "--steps", "2",
                 "--limit", "6", "--reward", "geneval=1.0,clip=0.1", "--reward-model", f"clip={tiny_clip}",
                 "--set", "prompts_per_step=2", "--set", "num_generations=2", "--set", "diffusion_steps=4",
                 "--set", "mu=1", "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rewards"]["weights"] == {"geneval": 1.0, "clip": 0.1}
    assert set(summary["rewards"]["terms_per_step"]) == {"geneval", "clip"}
    assert all(len(v) == 2 for v in summary["rewards"]["terms_per_step"].values())
    header = (out / "curve.csv").read_text().splitlines()[0].split(",")
    assert "reward_geneval" in header and "reward_clip" in header
    assert summary["primary_metric"] == "overall" and "overall" in summary["final"]
    assert summary["run_spec"]["rewards"] == {"geneval": 1.0, "clip": 0.1}
