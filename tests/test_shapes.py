"""The shapes world: exact detector, references that satisfy their prompts, disjoint splits, the task."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks import get_task
from tasks.base import Example
from tasks.geneval import TAGS, evaluate
from tasks.shapes import (
    CODEBOOK_SIZE,
    COLORS,
    GRID,
    SHAPES,
    ShapesTask,
    codebook_tokens,
    detect_grid,
    grid_to_text,
    prompt_universe,
    render,
    text_to_grid,
    to_grid,
)

DATA = Path(os.environ.get("HARNESS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="module")
def splits():
    task = ShapesTask()
    return {s: task.load(split=s) for s in ("train", "test")}


def _png_roundtrip(grid) -> Image.Image:
    buf = io.BytesIO()
    render(grid).save(buf, format="PNG")
    return Image.open(io.BytesIO(buf.getvalue()))


def test_codebook_is_background_plus_one_token_per_colour():
    assert CODEBOOK_SIZE == 9 and len(COLORS) == 8
    assert codebook_tokens() == [f"<img{k}>" for k in range(9)]


def test_detector_is_exact_on_a_hand_made_grid():
    g = np.zeros((16, 16), dtype=int)  # the detector takes any grid size
    g[1:3, 1:3] = 1  # red square, cells x 1..2, y 1..2
    g[5, 4:7] = 5  # blue horizontal bar
    g[9:12, 9] = 5  # blue vertical bar (a rotation)
    g[13, 1], g[14, 1], g[14, 2] = 3, 3, 3  # yellow corner
    dets = sorted((d.color, d.label, d.box) for d in detect_grid(g))
    assert dets == [("blue", "bar", (4.0, 5.0, 7.0, 6.0)), ("blue", "bar", (9.0, 9.0, 10.0, 12.0)),
                    ("red", "square", (1.0, 1.0, 3.0, 3.0)), ("yellow", "corner", (1.0, 13.0, 3.0, 15.0))]


def test_touching_same_colour_shapes_merge_into_an_unknown_blob():
    g = np.zeros((16, 16), dtype=int)  # the detector takes any grid size
    g[1:3, 1:3] = 1
    g[1:3, 3:5] = 1  # a second red square right beside the first: one 2x4 component, no class
    assert detect_grid(g) == []


def test_every_shape_is_recognised_in_every_rotation():
    from tasks.shapes import rotations

    for name in SHAPES:
        for cells in rotations(name):
            g = np.zeros((GRID, GRID), dtype=int)
            for r, c in cells:
                g[4 + r, 4 + c] = 2
            assert [d.label for d in detect_grid(g)] == [name]


def test_splits_share_no_prompt_and_cover_every_tag(splits):
    train = {json.dumps(e.reference, sort_keys=True) for e in splits["train"]}
    test = {json.dumps(e.reference, sort_keys=True) for e in splits["test"]}
    assert train and test and not train & test
    for s in splits.values():
        assert {e.reference["tag"] for e in s} == set(TAGS)
    assert len(splits["test"]) == 6 * 32 and len(splits["train"]) == 6 * 4096


def test_validation_holds_train_prompts_with_layouts_of_its_own(splits):
    val = ShapesTask().load(split="validation")
    assert len(val) == 6 * 32 and {e.reference["tag"] for e in val} == set(TAGS)
    prompts = {split: {e.prompt for e in rows} for split, rows in {**splits, "validation": val}.items()}
    assert prompts["validation"] <= prompts["train"] and not prompts["validation"] & prompts["test"]
    train_layouts = {(e.prompt, e.solution) for e in splits["train"]}
    assert sum((e.prompt, e.solution) in train_layouts for e in val) < len(val) // 4


def test_generation_is_deterministic(splits):
    again = ShapesTask().load(split="test")
    assert [e.solution for e in again] == [e.solution for e in splits["test"]]


def test_every_reference_scores_one_as_tokens_and_as_rendered_png(splits):
    task = ShapesTask()
    for split in ("train", "test"):
        for e in splits[split]:
            assert task.verify(e.solution, e.reference) is True
    for e in splits["test"]:  # through PNG bytes, as GenEval's folder layout stores them
        assert evaluate(e.reference, detect_grid(to_grid(_png_roundtrip(text_to_grid(e.solution))))).correct


def test_blank_and_malformed_images_score_zero(splits):
    task = ShapesTask()
    blank = grid_to_text(np.zeros((GRID, GRID), dtype=int))
    for e in splits["test"]:
        assert task.verify(blank, e.reference) is False
    assert task.verify("<img0>" * (GRID * GRID - 1), splits["test"][0].reference) is False  # one token short
    assert task.extract("not an image") is None


def test_wrong_images_score_zero(splits):
    task = ShapesTask()
    checked = set()
    for e in splits["test"]:
        tag, g = e.reference["tag"], text_to_grid(e.solution)
        if tag in ("colors", "color_attr"):  # shift every colour by one: no clause keeps its colour
            wrong = np.where(g > 0, g % 8 + 1, 0)
        elif tag == "counting":  # remove one object
            d = detect_grid(g)[0]
            wrong = g.copy()
            wrong[int(d.box[1]):int(d.box[3]), int(d.box[0]):int(d.box[2])] = 0
        elif tag == "position":  # mirror across the relation's axis
            rel = e.reference["include"][1]["position"][0]
            wrong = np.fliplr(g) if rel in ("left of", "right of") else np.flipud(g)
        else:  # single_object / two_object: keep the grid but ask for a class that is not drawn
            drawn = {d.label for d in detect_grid(g)}
            missing = next(n for n in SHAPES if n not in drawn)
            ref = {**e.reference, "include": [{"class": missing, "count": 1}]}
            assert task.verify(e.solution, ref) is False
            checked.add(tag)
            continue
        assert task.verify(grid_to_text(wrong), e.reference) is False, e.prompt
        checked.add(tag)
    assert checked == set(TAGS)


def test_counting_with_one_extra_object_scores_zero():
    meta = next(m for m in prompt_universe("counting") if m["include"][0]["count"] == 2)
    from tasks.shapes import rotations

    g = np.zeros((GRID, GRID), dtype=int)
    cls = meta["include"][0]["class"]
    for r0, c0 in ((0, 0), (0, 5), (5, 0)):  # three copies, 5 cells apart
        for r, c in rotations(cls)[0]:
            g[r0 + r, c0 + c] = 4
    assert ShapesTask().verify(g, meta) is False
    g[5:, :] = 0  # back to two
    assert ShapesTask().verify(g, meta) is True


def test_metadata_has_genevals_shape_for_every_tag():
    path = DATA / "geneval_metadata.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not found (set HARNESS_SHARED_DATA to the folder with the benchmark files)")
    real = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        real.setdefault(row["tag"], row)
    for tag in TAGS:
        ours = prompt_universe(tag)[0]
        assert sorted(ours) == sorted(real[tag])
        assert [sorted(c) for c in ours["include"]] == [sorted(c) for c in real[tag]["include"]]
        assert ours["prompt"].startswith("a photo of ")


def test_prompts_read_like_genevals():
    assert prompt_universe("counting")[0]["prompt"] == "a photo of two squares"
    assert any(m["prompt"] == "a photo of a red square and a blue ring" for m in prompt_universe("color_attr"))
    assert any(m["prompt"] == "a photo of a bar left of a square" for m in prompt_universe("position"))


def test_partial_credit_term_counts_satisfied_clauses():
    meta = {"tag": "two_object", "include": [{"class": "square", "count": 1}, {"class": "ring", "count": 1}]}
    g = np.zeros((GRID, GRID), dtype=int)
    g[1:3, 1:3] = 2  # only the square
    ex = Example(id=0, prompt="", reference=meta)
    out = ShapesTask().reward(grid_to_text(g), ex)
    # 1 of 2 clauses: geneval 0, clauses (default weight 0.5) 0.5 * 1/2 = 0.25
    assert (out.total, out.success, out.terms) == (0.25, False, {"geneval": 0.0, "clauses": 0.25})
    pure = ShapesTask()
    pure.use_rewards("geneval=1.0,clauses=0")
    assert pure.reward(grid_to_text(g), ex).total == 0.0


def test_gold_scores_full_marks_through_the_task_interface(splits):
    task = get_task("shapes")
    ex = splits["test"]
    scored = task.score_many([e.solution for e in ex], ex)
    metrics, ci = task.metrics(scored, ex)
    assert metrics == {"overall": 1.0, **{t: 1.0 for t in TAGS}}
    assert ci["overall"][0] > 0.97 and task.primary_metric == "overall" and task.kind == "image"
    assert scored[0].extracted and scored[0].extra["tag"] == ex[0].reference["tag"]


def test_limit_keeps_a_mix_of_tags():
    ex = ShapesTask().load(split="test", limit=6)
    assert [e.reference["tag"] for e in ex] == list(TAGS)


def test_predictions_folder_of_rendered_pngs(tmp_path, splits):
    ex = splits["test"][:3]
    for e in ex:
        (tmp_path / f"{e.id:05d}" / "samples").mkdir(parents=True)
        (tmp_path / f"{e.id:05d}" / "metadata.jsonl").write_text(json.dumps(e.reference))
        render(text_to_grid(e.solution)).save(tmp_path / f"{e.id:05d}" / "samples" / "0000.png")
    rows = ShapesTask().predictions_from_folder(tmp_path)
    task = ShapesTask()
    assert [task.verify(r["completion"], ex[r["id"]].reference) for r in rows] == [True] * 3
