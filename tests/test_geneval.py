"""GenEval's rules on hand-made detections, the folder layout, the task, and the real-detector plumbing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tasks.geneval import (
    TAGS,
    Detection,
    GenevalTask,
    Mask2FormerDetector,
    MissingWeightsError,
    evaluate,
    relative_position,
    score_folder,
    summarize,
)
from tasks.shapes import GRID

DATA = Path(os.environ.get("HARNESS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def data_file(name: str) -> Path:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} not found (set HARNESS_SHARED_DATA to the folder with the benchmark files)")
    return path


def det(label, score=0.95, box=(0, 0, 10, 10), color=None):
    return Detection(label, score, box, color)


def at(x, y, label="dog", size=10, **kw):
    """A size x size box centred at (x, y)."""
    return det(label, box=(x - size / 2, y - size / 2, x + size / 2, y + size / 2), **kw)


SINGLE = {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"}
TWO = {"tag": "two_object", "include": [{"class": "bench", "count": 1}, {"class": "cow", "count": 1}]}
COUNT = {"tag": "counting", "include": [{"class": "clock", "count": 2}], "exclude": [{"class": "clock", "count": 3}]}
COLOR = {"tag": "colors", "include": [{"class": "fire hydrant", "count": 1, "color": "blue"}]}
POSITION = {"tag": "position", "include": [{"class": "teddy bear", "count": 1},
                                           {"class": "dog", "count": 1, "position": ["right of", 0]}]}
COLOR_ATTR = {"tag": "color_attr", "include": [{"class": "wine glass", "count": 1, "color": "purple"},
                                               {"class": "apple", "count": 1, "color": "black"}]}


# ---- single_object / two_object: "at least count" above 0.3 ------------------------------------------------
def test_single_object_passes_with_one_detection_above_threshold():
    assert evaluate(SINGLE, [det("bench", 0.31)]).correct


def test_single_object_fails_when_the_only_detection_is_below_threshold():
    v = evaluate(SINGLE, [det("bench", 0.3), det("cow", 0.99)])  # 0.3 is not > 0.3
    assert not v.correct and v.reasons == ("expected bench>=1, found 0",)


def test_non_counting_prompts_accept_more_objects_than_asked():
    assert evaluate(SINGLE, [det("bench"), det("bench"), det("bench")]).correct


def test_two_object_needs_both_classes():
    assert evaluate(TWO, [det("bench"), det("cow", 0.4)]).correct
    v = evaluate(TWO, [det("bench"), det("horse")])
    assert not v.correct and v.clauses == (True, False)


# ---- counting: 0.9 threshold, exact through the exclude clause ----------------------------------------------
def test_counting_passes_with_exactly_the_count():
    assert evaluate(COUNT, [det("clock"), det("clock")]).correct


def test_counting_fails_when_too_few():
    assert not evaluate(COUNT, [det("clock")]).correct


def test_counting_fails_when_too_many_through_the_exclude_clause():
    v = evaluate(COUNT, [det("clock")] * 3)
    assert not v.correct and v.clauses == (True, False) and v.reasons == ("expected clock<3, found 3",)


def test_counting_uses_the_090_threshold_for_every_detection():
    # a third clock at 0.5 is ignored (would make "too many" at 0.3) ...
    assert evaluate(COUNT, [det("clock", 0.95), det("clock", 0.95), det("clock", 0.5)]).correct
    # ... and two clocks at 0.5 do not count, although they would for any other tag
    assert not evaluate(COUNT, [det("clock", 0.5), det("clock", 0.5)]).correct
    assert evaluate({**COUNT, "tag": "two_object"}, [det("clock", 0.5), det("clock", 0.5)]).correct


def test_at_most_16_detections_per_class_are_kept():
    meta = {"tag": "single_object", "include": [], "exclude": [{"class": "bird", "count": 17}]}
    assert evaluate(meta, [det("bird")] * 20).correct  # 20 found, 16 kept, 16 < 17


# ---- colors: the top `count` instances, by confidence ---------------------------------------------------------
def test_colors_pass_and_fail_on_the_colour():
    assert evaluate(COLOR, [det("fire hydrant", color="blue")]).correct
    v = evaluate(COLOR, [det("fire hydrant", color="red")])
    assert not v.correct and "blue fire hydrant" in v.reasons[0]


def test_colors_look_only_at_the_most_confident_instance():
    red_top = [det("fire hydrant", 0.9, color="red"), det("fire hydrant", 0.5, color="blue")]
    blue_top = [det("fire hydrant", 0.5, color="red"), det("fire hydrant", 0.9, color="blue")]
    assert not evaluate(COLOR, red_top).correct
    assert evaluate(COLOR, blue_top).correct


def test_colour_classifier_is_called_with_the_top_instances_and_class_only():
    calls = []

    def color_of(dets, cls):
        calls.append(([d.score for d in dets], cls))
        return ["blue"] * len(dets)

    dets = [det("fire hydrant", 0.4), det("fire hydrant", 0.8), det("cow", 0.9)]
    assert evaluate(COLOR, dets, color_of).correct
    assert calls == [([0.8], "fire hydrant")]


def test_colour_clause_without_colours_or_classifier_is_an_error():
    with pytest.raises(ValueError, match="colour"):
        evaluate(COLOR, [det("fire hydrant")])


def test_color_attr_needs_both_colours():
    good = [det("wine glass", color="purple"), det("apple", color="black")]
    assert evaluate(COLOR_ATTR, good).correct
    v = evaluate(COLOR_ATTR, [det("wine glass", color="purple"), det("apple", color="red")])
    assert not v.correct and v.clauses == (True, False)


# ---- position --------------------------------------------------------------------------------------------------
def test_relative_position_by_hand():
    # centres 30 apart in x, 10 in y, both boxes 10x10: margin 0.1*(10+10)=2 per axis -> shrunk (28, 8);
    # |offset| = sqrt(900+100) = 31.62; 28/31.62 = 0.885 > 0.5 -> right of; 8/31.62 = 0.253 -> not below
    assert relative_position((25, 5, 35, 15), (-5, -5, 5, 5)) == {"right of"}
    assert relative_position((-5, -5, 5, 5), (25, 5, 35, 15)) == {"left of"}
    # diagonal at 45 degrees: shrunk (18, 18) / 28.28 = 0.636 on both axes -> two relations
    assert relative_position((15, 15, 25, 25), (-5, -5, 5, 5)) == {"right of", "below"}
    # centres 1.5 apart and boxes 10 wide: the offset is inside the 2-unit margin -> no relation
    assert relative_position((1.5, 0, 11.5, 10), (0, 0, 10, 10)) == set()


def test_relative_position_margin_scales_with_box_size():
    # centres 30 apart; 100-wide boxes make the margin 0.1*(100+100) = 20 -> shrunk 10/30 = 0.33: nothing
    assert relative_position((-20, 0, 80, 100), (-50, 0, 50, 100)) == set()
    # offset 1 in y as well -> shrunk y is 0 (margin 20): only the x component decides: 10/30.02 < 0.5
    assert relative_position((-20, 1, 80, 101), (-50, 0, 50, 100)) == set()


def test_position_passes_when_right_of_the_reference():
    assert evaluate(POSITION, [at(10, 50, "teddy bear"), at(60, 50, "dog")]).correct


def test_position_fails_on_the_wrong_side():
    v = evaluate(POSITION, [at(60, 50, "teddy bear"), at(10, 50, "dog")])
    assert not v.correct and v.reasons == ("expected dog right of teddy bear",)


def test_position_fails_when_the_reference_object_is_missing():
    v = evaluate(POSITION, [at(60, 50, "dog")])
    assert not v.correct and v.clauses == (False, False)


def test_position_fails_when_stacked_vertically():
    assert not evaluate(POSITION, [at(50, 10, "teddy bear"), at(52, 60, "dog")]).correct


# ---- exclude ---------------------------------------------------------------------------------------------------
def test_excluded_class_present_fails():
    meta = {"tag": "single_object", "include": [{"class": "cat", "count": 1}], "exclude": [{"class": "dog", "count": 1}]}
    assert evaluate(meta, [det("cat"), det("dog", 0.2)]).correct  # below threshold: not present
    assert not evaluate(meta, [det("cat"), det("dog", 0.5)]).correct


# ---- metrics ---------------------------------------------------------------------------------------------------
def test_overall_is_the_unweighted_mean_over_tags():
    # colors 3/4 = 0.75 (4 images), position 0/1 = 0 (1 image): overall (0.75 + 0) / 2 = 0.375, not 3/5
    m, ci = summarize(["colors"] * 4 + ["position"], [True, True, True, False, False])
    assert m == {"overall": 0.375, "colors": 0.75, "position": 0.0}
    assert 0 <= ci["overall"][0] < 0.375 < ci["overall"][1] <= 1


def test_unscorable_verdicts_are_left_out_of_metrics():
    m, _ = summarize(["colors", "colors", "counting"], [True, None, None])
    assert m == {"overall": 1.0, "colors": 1.0}


# ---- the task and GenEval's folder layout ------------------------------------------------------------------------
def test_task_loads_the_real_metadata_with_row_index_ids():
    ex = GenevalTask().load(str(data_file("geneval_metadata.jsonl")))
    assert len(ex) == 553 and [e.id for e in ex[:3]] == [0, 1, 2]
    assert {e.reference["tag"] for e in ex} == set(TAGS)
    assert ex[0].prompt == ex[0].reference["prompt"]


def test_task_verifies_shapes_grids_and_rendered_images():
    from tasks import shapes

    meta = {"tag": "colors", "include": [{"class": "square", "count": 1, "color": "red"}], "prompt": "a photo of a red square"}
    grid = np.zeros((GRID, GRID), dtype=int)
    grid[2:4, 2:4] = 1  # token 1 = red
    task = GenevalTask()
    assert task.verify(shapes.grid_to_text(grid), meta) is True
    assert task.verify(shapes.render(grid), meta) is True
    grid[2:4, 2:4] = 5  # blue
    assert task.verify(grid, meta) is False


def test_real_images_without_a_detector_say_which_flag_to_pass():
    from PIL import Image

    with pytest.raises(MissingWeightsError, match="--detector-path"):
        GenevalTask().verify(Image.new("RGB", (32, 32)), SINGLE)
    with pytest.raises(MissingWeightsError, match="--detector-path /nope"):
        Mask2FormerDetector("/nope", "/nope")


def _write_folder(root: Path, items):
    from tasks import shapes

    for i, (meta, grids) in enumerate(items):
        sub = root / f"{i:05d}"
        (sub / "samples").mkdir(parents=True)
        (sub / "metadata.jsonl").write_text(json.dumps(meta))
        for j, g in enumerate(grids):
            shapes.render(g).save(sub / "samples" / f"{j:04d}.png")


def test_score_folder_reads_genevals_layout(tmp_path):
    red, blank = np.zeros((GRID, GRID), dtype=int), np.zeros((GRID, GRID), dtype=int)
    red[5:7, 5:7] = 1
    colors = {"tag": "colors", "include": [{"class": "square", "count": 1, "color": "red"}], "prompt": "a photo of a red square"}
    count = {"tag": "counting", "include": [{"class": "square", "count": 2}], "exclude": [{"class": "square", "count": 3}],
             "prompt": "a photo of two squares"}
    _write_folder(tmp_path, [(colors, [red, blank]), (count, [red])])
    rows, metrics, _ = score_folder(tmp_path)
    assert [(r["index"], r["sample"], r["correct"]) for r in rows] == [(0, "0000.png", True), (0, "0001.png", False),
                                                                     (1, "0000.png", False)]
    assert metrics == {"overall": 0.25, "colors": 0.5, "counting": 0.0}  # (1/2 + 0/1) / 2
    preds = GenevalTask().predictions_from_folder(tmp_path)
    assert [p["id"] for p in preds] == [0, 0, 1] and preds[0]["completion"].endswith("00000/samples/0000.png")


# ---- real-image detector plumbing, random tiny weights -----------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory):
    pytest.importorskip("open_clip")
    import open_clip
    import torch
    from transformers import (
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        Mask2FormerImageProcessor,
        SwinConfig,
    )

    root = tmp_path_factory.mktemp("weights")
    clip_cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
                "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (root / "clip").mkdir()
    (root / "clip" / "open_clip_config.json").write_text(json.dumps({"model_cfg": clip_cfg}))
    torch.manual_seed(0)
    torch.save(open_clip.CLIP(**clip_cfg).state_dict(), root / "clip" / "open_clip_pytorch_model.bin")

    names = [n.strip() for n in data_file("geneval_object_names.txt").read_text().splitlines()]
    names[names.index("computer mouse")] = "mouse"  # transformers' COCO spelling, mapped back by the detector
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1] * 4, num_heads=[1] * 4, window_size=4,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = Mask2FormerConfig(backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32,
                            encoder_feedforward_dim=32, encoder_layers=1, decoder_layers=2, num_attention_heads=2,
                            dim_feedforward=32, num_queries=8, id2label=dict(enumerate(names)),
                            label2id={n: i for i, n in enumerate(names)})
    Mask2FormerForUniversalSegmentation(cfg).save_pretrained(root / "m2f")
    Mask2FormerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(root / "m2f")
    # min_score 0: random weights score every query near 1/81, and the plumbing should still see them
    return Mask2FormerDetector(root / "m2f", root / "clip", device="cpu", min_score=0.0), root


def test_mask2former_detector_returns_detections_in_geneval_vocabulary(tiny_detector):
    from PIL import Image

    detector, _ = tiny_detector
    names = set(data_file("geneval_object_names.txt").read_text().split("\n"))
    image = Image.fromarray((np.random.default_rng(0).random((48, 80, 3)) * 255).astype("uint8"))
    dets = detector.detect(image)
    assert dets and all(d.label in names for d in dets)
    for d in dets:
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 48 and d.mask.shape == (48, 80) and d.color is None
    colours = detector.colors(image, dets[:3], dets[0].label)
    assert len(colours) == 3 and set(colours) <= {"red", "orange", "yellow", "green", "blue", "purple", "pink",
                                                   "brown", "black", "white"}


def test_real_detector_colours_feed_the_rules_and_the_task_builds_it_from_paths(tiny_detector):
    from PIL import Image

    detector, root = tiny_detector
    image = Image.new("RGB", (64, 64), "blue")
    dets = detector.detect(image)
    top = max(dets, key=lambda d: d.score)
    colour = detector.colors(image, [top], top.label)[0]
    meta = {"tag": "colors", "include": [{"class": top.label, "count": 1, "color": colour}]}
    color_of = lambda ds, cls: detector.colors(image, ds, cls)  # noqa: E731
    # random weights score ~1/81, so lower the threshold to reach the colour check
    assert evaluate(meta, dets, color_of, threshold=0.0).correct
    other = next(c for c in ("red", "green") if c != colour)
    assert not evaluate({"tag": "colors", "include": [{**meta["include"][0], "color": other}]}, dets, color_of,
                        threshold=0.0).correct
    # at GenEval's 0.3 none of those detections counts: the task says False, not an error
    assert GenevalTask(detector=detector).verify(image, meta) is False
    built = GenevalTask(detector_path=str(root / "m2f"), clip_path=str(root / "clip"), device="cpu").detector()
    assert isinstance(built, Mask2FormerDetector)
