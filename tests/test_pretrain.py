"""Tests for harness/pretrain.py: the masked diffusion loss, the schedule, and a short real run."""

import json
import math

import pytest
import torch

from harness.pretrain import PretrainConfig, _collate, _lr, diffusion_loss, pretrain


class Recorder:
    """A model whose logits are uniform over V ids; it keeps the noisy input it was given."""

    def __init__(self, vocab=6):
        self.vocab, self.inputs = vocab, []

    def logits(self, ids, attention_mask=None):
        self.inputs.append(ids.clone())
        return torch.zeros(*ids.shape, self.vocab, requires_grad=True)


def test_collate_left_pads_prompts_and_marks_the_completion():
    ids, attn, loss_mask = _collate([[4, 5], [4]], torch.tensor([[1, 3], [1, 3]]), pad_id=0)
    assert ids.tolist() == [[4, 5, 1, 3], [0, 4, 1, 3]]
    assert attn.tolist() == [[True] * 4, [False, True, True, True]]
    assert loss_mask.tolist() == [[False, False, True, True]] * 2


def test_diffusion_loss_never_masks_the_prompt_and_weights_by_one_over_t():
    ids, attn, loss_mask = _collate([[4, 5, 4]] * 64, torch.full((64, 8), 3), pad_id=0)
    model = Recorder(vocab=6)
    loss = diffusion_loss(model, ids, attn, loss_mask, mask_id=2, eps=1e-3, gen=torch.Generator().manual_seed(0))
    noisy = model.inputs[0]
    assert torch.equal(noisy[:, :3], ids[:, :3])  # prompt intact
    masked = noisy[:, 3:] == 2
    assert masked.any() and not masked.all()
    # uniform logits: every masked token costs log(6); E[#masked / t] = L per row, so the loss is
    # about log(6) (sum over rows of n_masked/t * log 6, divided by B * L)
    assert loss.item() == pytest.approx(math.log(6), rel=0.25)


def test_lr_warms_up_then_decays_to_the_floor():
    cfg = PretrainConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert _lr(0, 0.0, cfg) == pytest.approx(1e-4)
    assert _lr(9, 0.05, cfg) == pytest.approx(1e-3)
    assert _lr(10, 0.0, cfg) == pytest.approx(1e-3)
    assert _lr(500, 0.5, cfg) == pytest.approx(0.55e-3)
    assert _lr(1000, 1.0, cfg) == pytest.approx(1e-4)


def test_pretrain_threads_are_half_the_available_cores_and_never_zero():
    from harness.pretrain import pretrain_threads

    assert [pretrain_threads(n) for n in (1, 2, 3, 4, 16)] == [1, 1, 1, 2, 8]


def test_available_cores_honours_affinity(monkeypatch):
    import os

    from harness.pretrain import available_cores

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert 1 <= available_cores() <= 3


def test_pretrain_refuses_a_time_budget(tmp_path):
    with pytest.raises(ValueError, match="not a time budget"):
        pretrain("arith", steps=2, seconds=10.0, progress=False, out=tmp_path / "x")


def test_a_short_pretrain_lowers_the_loss_and_loads_through_the_hf_path(tmp_path):
    from harness.models import load_model

    cfg = PretrainConfig(hidden=32, layers=1, heads=2, ffn=64, batch_size=32, warmup_steps=5, lr=3e-3)
    out = pretrain("arith", steps=60, seed=0, progress=False, out=tmp_path / "tiny-arith", config=cfg)
    info = json.loads((out / "pretrain.json").read_text())
    assert info["steps"] == 60 and info["final_loss"] < info["first_loss"] - 0.5
    model = load_model(f"hf:{out}")
    ids, attn = model.encode_prompts(["Mia has 3 apples. How many apples does Mia have now?"])
    assert model.logits(ids, attn).shape == (*ids.shape, len(model.tokenizer))
    assert model.mask_id == model.tokenizer.mask_token_id


def test_cond_dropout_hides_whole_prompts_of_about_that_share_of_rows_and_never_padding():
    # two prompt lengths so that left padding exists: rows with [4, 5, 4] and rows with [4]
    prompts = [[4, 5, 4], [4]] * 500
    ids, attn, loss_mask = _collate(prompts, torch.full((1000, 4), 3), pad_id=0)
    model = Recorder()
    diffusion_loss(model, ids, attn, loss_mask, mask_id=2, eps=1e-3, gen=torch.Generator().manual_seed(0),
                   cond_dropout=0.25)
    noisy = model.inputs[0]
    prompt = attn & ~loss_mask  # (B, S) real prompt tokens
    hidden = (noisy == 2) & prompt
    per_row = hidden.sum(1)
    # a row's prompt is hidden entirely or not at all
    assert torch.equal(per_row[per_row > 0], prompt.sum(1)[per_row > 0])
    share = (per_row > 0).float().mean().item()
    assert 0.20 < share < 0.30  # 1000 rows, p = 0.25: SE ~ 0.014
    assert (noisy[~attn] == 0).all()  # padding stays padding


def test_no_cond_dropout_by_default_keeps_every_prompt():
    ids, attn, loss_mask = _collate([[4, 5, 4]] * 64, torch.full((64, 8), 3), pad_id=0)
    model = Recorder()
    diffusion_loss(model, ids, attn, loss_mask, mask_id=2, eps=1e-3, gen=torch.Generator().manual_seed(0))
    assert torch.equal(model.inputs[0][:, :3], ids[:, :3])


def test_cosine_schedule_masks_mostly_high_ratios_and_averages_over_masked_tokens():
    # 1000 rows of 64 completion tokens; t = cos(pi/2 u) with u stratified over [0, 1):
    # E[t] = 2/pi = 0.637 (linear: 0.5), and P(t > 0.5) = P(u < 2/3) = 2/3 (linear: 1/2)
    ids, attn, loss_mask = _collate([[4, 5]] * 1000, torch.full((1000, 64), 3), pad_id=0)
    model = Recorder(vocab=6)
    loss = diffusion_loss(model, ids, attn, loss_mask, mask_id=2, eps=1e-3, gen=torch.Generator().manual_seed(0),
                          schedule="cosine")
    frac = (model.inputs[0][:, 2:] == 2).float().mean(1)  # (B,) mask fraction per row ~ t
    assert frac.mean().item() == pytest.approx(2 / math.pi, abs=0.02)
    assert (frac > 0.5).float().mean().item() == pytest.approx(2 / 3, abs=0.04)
    assert torch.equal(model.inputs[0][:, :2], ids[:, :2])  # prompt intact
    # no 1/t: uniform logits cost exactly log(6) per masked token, and the loss is their mean
    assert loss.item() == pytest.approx(math.log(6), rel=1e-5)
    with pytest.raises(ValueError, match="linear or cosine"):
        diffusion_loss(model, ids, attn, loss_mask, mask_id=2, eps=1e-3, gen=torch.Generator(), schedule="cos")


def test_a_task_sets_its_own_pretrain_fields_unless_the_caller_passes_a_config(tmp_path):
    # shapes asks for the grid model, lr 2e-3, batch 64 (tasks/shapes.py); a config passed in wins
    out = pretrain("shapes", steps=2, seconds=None, seed=0, progress=False, out=tmp_path / "s")
    info = json.loads((out / "pretrain.json").read_text())
    assert info["config"]["lr"] == 2e-3 and info["config"]["grid"] == 10 and info["mask_schedule"] == "cosine"
    cfg = PretrainConfig(hidden=32, layers=1, heads=2, ffn=64, lr=1e-3)
    out = pretrain("shapes", steps=2, seconds=None, seed=0, progress=False, out=tmp_path / "c", config=cfg)
    assert json.loads((out / "pretrain.json").read_text())["config"]["lr"] == 1e-3


def test_two_processes_pretrain_bitwise_the_same_weights(tmp_path):
    """Determinism across processes (not two calls in one process): same seed and steps, same bytes."""
    import hashlib
    import os
    import subprocess
    import sys

    code = ("import sys; from harness.pretrain import PretrainConfig, pretrain; "
            "cfg = PretrainConfig(hidden=32, layers=1, heads=2, ffn=64, batch_size=16, warmup_steps=2); "
            "pretrain('arith', steps=12, seed=3, progress=False, out=sys.argv[1], config=cfg)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    digests = []
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], check=True, env=env, timeout=600)
        digests.append(hashlib.sha256((tmp_path / name / "model.safetensors").read_bytes()).hexdigest())
        info = json.loads((tmp_path / name / "pretrain.json").read_text())
        assert info["steps"] == 12 and info["torch_threads"] >= 1
    assert digests[0] == digests[1]


def test_a_cached_model_made_with_other_settings_is_pretrained_anew(tmp_path, monkeypatch):
    # the cache is keyed by task name only, so a changed recipe (a task's pretrain_config or step count)
    # must be noticed from the cached pretrain.json, not silently served
    import json
    from dataclasses import asdict

    from harness import models
    from harness import pretrain as pt
    from tasks import get_task

    monkeypatch.setenv("HARNESS_HOME", str(tmp_path))
    task = get_task("shapes")
    folder = models.tiny_model_path("shapes")
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "tokenizer.json").write_text("{}")
    current = asdict(pt.PretrainConfig(**task.pretrain_config))
    info = {"steps": task.pretrain_steps, "config": current}
    (folder / "pretrain.json").write_text(json.dumps(info))
    assert pt.stale_reason(task) is None
    # a file written before a field existed: the field's default is what that model has
    old = {k: v for k, v in current.items() if k != "grid_block"}
    (folder / "pretrain.json").write_text(json.dumps({**info, "config": old}))
    assert current["grid_block"] == "pre_ln"  # shapes ships pre-LN; an old file means post-LN, so it is stale
    assert "grid_block 'post_ln' -> 'pre_ln'" in pt.stale_reason(task)
    (folder / "pretrain.json").write_text(json.dumps({"steps": 7, "config": {**current, "lr": 0.5}}))
    why = pt.stale_reason(task)
    assert why.startswith(f"steps 7 -> {task.pretrain_steps}") and f"lr 0.5 -> {current['lr']!r}" in why
    # the same settings on another number of reference layouts (shapes: 4,096 a tag x 6 tags now)
    (folder / "pretrain.json").write_text(json.dumps({**info, "train_examples": 6144}))
    assert pt.stale_reason(task) == "train examples 6144 -> 24576"
    (folder / "pretrain.json").write_text(json.dumps({**info, "train_examples": 24576}))
    assert pt.stale_reason(task) is None
    (folder / "pretrain.json").write_text(json.dumps({"steps": 7, "config": {**current, "lr": 0.5}}))
    calls = []
    monkeypatch.setattr(pt, "pretrain", lambda name, **kw: calls.append(name))
    monkeypatch.setattr(models, "load_model", lambda spec, task=None, **kw: (spec, task))
    assert pt.load_model_for(task, "tiny", device="cpu") == ("tiny", "shapes") and calls == ["shapes"]
    (folder / "pretrain.json").write_text(json.dumps(info))
    calls.clear()
    pt.load_model_for(task, "tiny", device="cpu")
    assert calls == []
