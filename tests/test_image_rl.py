"""Image RL pieces: the tiny shapes model's codebook, contact sheets, a visual
rollout through the loop, and the GenEval detector flags of the CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tasks import get_task
from tasks.shapes import CODEBOOK_SIZE, GRID, codebook_tokens, grid_to_text


@pytest.fixture(scope="module")
def shapes_model(tmp_path_factory):
    """A few pretraining steps of the grid model shapes uses: enough to have the files and ids, not a good model."""
    from harness.models import load_hf
    from harness.pretrain import PretrainConfig, pretrain

    out = tmp_path_factory.mktemp("tiny-shapes")
    pretrain("shapes", steps=3, seconds=None, out=out, progress=False,
             config=PretrainConfig(hidden=32, layers=1, heads=2, ffn=64, batch_size=4, warmup_steps=1, grid=GRID))
    return out, load_hf(str(out))


def test_tiny_shapes_model_records_its_codebook_range(shapes_model):
    folder, model = shapes_model
    lo, hi = model.image_token_range
    assert hi - lo == CODEBOOK_SIZE
    assert model.tokenizer.convert_ids_to_tokens(list(range(lo, hi))) == codebook_tokens()
    info = json.loads((folder / "pretrain.json").read_text())
    assert info["image_token_range"] == [lo, hi] and info["cond_dropout"] == 0.1
    # a reference image is exactly 256 codebook ids and decodes back to the same grid
    grid = np.arange(GRID * GRID).reshape(GRID, GRID) % CODEBOOK_SIZE
    ids = model.tokenizer(grid_to_text(grid), add_special_tokens=False)["input_ids"]
    assert len(ids) == GRID * GRID and all(lo <= i < hi for i in ids)
    from tasks.shapes import to_grid

    assert (to_grid(model.decode_completion(torch.tensor(ids))) == grid).all()


@pytest.mark.parametrize("sampler", ["emerge", "maskgit"])
def test_visual_rollouts_with_cfg_stay_in_the_codebook_and_train(shapes_model, sampler):
    from trainers.loop import TrainConfig, train

    _, model = shapes_model
    task = get_task("shapes")
    train_ex = task.load(split="train", limit=12)
    before = [p.detach().clone() for p in model.module.parameters()]
    cfg = TrainConfig(steps=1, prompts_per_step=2, num_generations=2, lr=1e-3, eval_every=0, sampler=sampler,
                      diffusion_steps=4, cfg_scale=1.5, temperature=1.0, method_overrides={"mu": 2})
    res = train(model, task, "maskgrpo", train_ex, cfg=cfg, seed=0, progress=False)
    row = res.curve[-1]
    assert row["nfe"] == 4 * 2  # 4 steps, CFG doubles every call
    assert res.config["sampler"] == sampler and res.config["cfg_scale"] == 1.5
    assert np.isfinite(row["loss"])
    changed = any(not torch.equal(a, p) for a, p in zip(before, model.module.parameters()))
    assert changed or row["reward"] in (0.0, 1.0)  # equal rewards in every group give no gradient


def test_rollout_images_are_codebook_tokens_only(shapes_model):
    from harness.sampling import DecodeConfig, generate

    _, model = shapes_model
    ids, attn = model.encode_prompts(["a photo of a red square", "a photo of two rings"])
    for sampler in ("emerge", "maskgit"):
        out = generate(model, ids, attn, DecodeConfig(sampler, gen_length=GRID * GRID, steps=4, temperature=1.0,
                                                      cfg_scale=2.0), seeds=[0, 1], token_range=model.image_token_range)
        lo, hi = model.image_token_range
        comp = out.completion_ids
        assert ((comp >= lo) & (comp < hi)).all()
        assert out.nfe == 8


def test_image_sheet_shows_reference_before_and_after(tmp_path):
    from harness.pictures import image_sheet

    task = get_task("shapes")
    examples = task.load(split="test", limit=12)
    blank = grid_to_text(np.zeros((GRID, GRID), dtype=int))
    before = task.score_many([blank] * len(examples), examples)
    after = task.score_many([ex.solution for ex in examples], examples)
    path = image_sheet(task, examples, {"before RL": before, "after RL": after}, tmp_path / "images.png",
                       per_tag=1, tile=64)
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape[0] == 22 + 6 * (64 + 6) + 6  # one row per tag
    # the "after" column holds the references: coloured cells; the "before" column is blank white
    x_before = 300 + 6 + (64 + 6)
    x_after = 300 + 6 + 2 * (64 + 6)
    first = slice(22, 22 + 64)
    assert (img[first, x_before:x_before + 64] == 255).all()
    assert (img[first, x_after:x_after + 64] != 255).any()
    # frames: red around the failing blank, green around the passing reference
    assert tuple(img[22 - 2, x_before + 10]) == (200, 40, 40)
    assert tuple(img[22 - 2, x_after + 10]) == (40, 160, 60)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=120)


def test_detector_flags_are_for_geneval_only():
    r = _cli("score", "--task", "shapes", "--predictions", __file__, "--detector-path", "/nowhere")
    assert r.returncode == 2
    assert "apply to --task geneval" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_geneval_without_weights_names_the_flag(tmp_path):
    folder = tmp_path / "preds" / "00000" / "samples"
    folder.mkdir(parents=True)
    (tmp_path / "preds" / "00000" / "metadata.jsonl").write_text(
        json.dumps({"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a photo of a cat"}))
    Image.new("RGB", (32, 32)).save(folder / "0000.png")
    r = _cli("score", "--task", "geneval", "--predictions", str(tmp_path / "preds"),
             "--data", str(tmp_path / "preds" / "00000" / "metadata.jsonl"), "--out", str(tmp_path / "out"),
             "--detector-path", str(tmp_path / "missing"))
    assert r.returncode == 2
    assert "--detector-path" in r.stderr and len(r.stderr.strip().splitlines()) == 1
