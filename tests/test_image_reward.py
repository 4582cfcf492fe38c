"""Image rewards: weighted combination, GenEval reward on shapes grids, CLIP score and ImageReward adapters."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from tasks.geneval import MissingWeightsError
from tasks.image_reward import ClipScore, CombinedReward, GenevalReward, ImageRewardScore, load_open_clip
from tasks.shapes import GRID, grid_to_text

RED_SQUARE = {"tag": "colors", "include": [{"class": "square", "count": 1, "color": "red"}],
              "prompt": "a photo of a red square"}


def _grids():
    good, bad = np.zeros((GRID, GRID), dtype=int), np.zeros((GRID, GRID), dtype=int)
    good[3:5, 3:5] = 1  # red square
    bad[3:5, 3:5] = 5  # blue square
    return good, bad


class Const:
    def __init__(self, name, values):
        self.name, self.values = name, values

    def __call__(self, prompts, images, references):
        return list(self.values)


def test_combined_reward_is_the_weighted_sum_with_named_terms():
    reward = CombinedReward([(1.0, Const("geneval", [1.0, 0.0])), (0.5, Const("clip", [0.3, 0.8]))])
    a, b = reward(["p", "q"], [None, None], [None, None])
    # a: 1.0*1.0 + 0.5*0.3 = 1.15 ; b: 1.0*0.0 + 0.5*0.8 = 0.4
    assert a.total == pytest.approx(1.15) and a.terms == pytest.approx({"geneval": 1.0, "clip": 0.15}) and a.success
    assert b.total == pytest.approx(0.4) and b.success is False


def test_combined_reward_without_geneval_has_no_verdict():
    (out,) = CombinedReward([(2.0, Const("clip", [0.25]))])(["p"], [None], [None])
    assert out.total == 0.5 and out.success is None


def test_combined_reward_rejects_duplicate_names():
    with pytest.raises(ValueError, match="distinct"):
        CombinedReward([(1.0, Const("clip", [0])), (1.0, Const("clip", [0]))])


def test_geneval_reward_on_shapes_grids_and_strings():
    good, bad = _grids()
    r = GenevalReward()
    assert r(["x"] * 3, [good, grid_to_text(bad), grid_to_text(good)], [RED_SQUARE] * 3) == [1.0, 0.0, 1.0]


def test_missing_clip_weights_name_the_flag(tmp_path):
    with pytest.raises(MissingWeightsError, match="--clip-path"):
        load_open_clip(None)
    with pytest.raises(MissingWeightsError, match="no open_clip_config.json"):
        load_open_clip(tmp_path)
    (tmp_path / "open_clip_config.json").write_text("{}")
    with pytest.raises(MissingWeightsError, match="no weights file"):
        load_open_clip(tmp_path)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import open_clip
    import torch

    d = tmp_path_factory.mktemp("clip")
    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    torch.manual_seed(0)
    torch.save(open_clip.CLIP(**cfg).state_dict(), d / "open_clip_pytorch_model.bin")
    return d


def test_clip_score_scores_images_and_shapes_grids_in_0_1(tiny_clip):
    from PIL import Image

    good, _ = _grids()
    score = ClipScore(tiny_clip, device="cpu")
    vals = score(["a photo of a red square", "a cat"], [good, Image.new("RGB", (40, 30), "blue")], [None, None])
    assert len(vals) == 2 and all(0.0 <= v <= 1.0 for v in vals)
    combined = CombinedReward([(1.0, GenevalReward()), (0.5, score)])
    (out,) = combined(["a photo of a red square"], [good], [RED_SQUARE])
    # geneval 1.0 * 1 + clip 0.5 * (the same CLIP value as above)
    assert out.success and out.terms["clip"] == pytest.approx(0.5 * vals[0], abs=1e-5)
    assert out.total == pytest.approx(1.0 + 0.5 * vals[0], abs=1e-5)


def test_image_reward_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ImageReward", None)  # import fails as if not installed
    with pytest.raises(ImportError, match="pip install image-reward"):
        ImageRewardScore("/x/ImageReward.pt")


def test_image_reward_adapter_calls_the_package(monkeypatch, tmp_path):
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
    with pytest.raises(MissingWeightsError, match="--image-reward-path"):
        ImageRewardScore(None)
    r = ImageRewardScore(tmp_path / "ImageReward.pt", device="cpu")
    good, _ = _grids()
    assert r(["ab", "abcd"], [good, good]) == pytest.approx([0.2, 0.4])
    assert loaded["med_config"].endswith("med_config.json")
