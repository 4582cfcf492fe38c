"""GenEval's scoring rules as a pure library (no detector, no task): metadata tags, the clause rules, the
position relation, the per-tag summary, and GenEval's output-folder layout.

tasks/geneval.py (the `geneval` task, real-image detectors) and tasks/shapes.py (the embedded shapes
world and its exact detector) both build on this module; it imports neither, so the three files form
no import circle. The rules are described in tasks/geneval.py's docstring.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tasks.base import DataError

TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
RELATIONS = ("left of", "right of", "above", "below")
THRESHOLD = 0.3  # detection confidence for every tag but counting
COUNTING_THRESHOLD = 0.9  # GenEval is stricter when the number of objects is what is asked
MAX_OBJECTS = 16  # per class
POSITION_MARGIN = 0.1  # fraction of the two boxes' summed extent that an offset must exceed
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class MissingWeightsError(DataError):
    """Model weights that are not there; one line naming the flag to pass. A DataError so that the CLI
    reports it like a missing data file (one line, exit code 2)."""


@dataclass(frozen=True)
class Detection:
    label: str  # class name, GenEval's vocabulary (or the shapes world's)
    score: float  # confidence in [0, 1]
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1), x1/y1 exclusive; pixels or grid cells
    color: str | None = None  # None: not classified yet (the detector's `colors` does it on demand)
    mask: Any = None  # optional (H, W) bool array, used to crop the object for colour classification


class Detector(Protocol):
    def detect(self, image: Any) -> list[Detection]: ...


ColorFn = Callable[[list[Detection], str], list[str]]  # (top instances, class name) -> colour names


@dataclass(frozen=True)
class Verdict:
    correct: bool
    clauses: tuple[bool, ...]  # include clauses in order, then exclude clauses: True = satisfied
    reasons: tuple[str, ...]  # one line per failed clause

    @property
    def clause_fraction(self) -> float:
        return sum(self.clauses) / len(self.clauses) if self.clauses else float(self.correct)


# ---- the rules ---------------------------------------------------------------------------------------
def group_by_class(detections: Sequence[Detection], tag: str, threshold: float = THRESHOLD,
                   counting_threshold: float = COUNTING_THRESHOLD, max_objects: int = MAX_OBJECTS
                   ) -> dict[str, list[Detection]]:
    """Class -> detections above the tag's threshold, most confident first, at most `max_objects`."""
    cut = counting_threshold if tag == "counting" else threshold
    groups: dict[str, list[Detection]] = {}
    for d in sorted(detections, key=lambda d: -d.score):
        if d.score > cut and len(groups.setdefault(d.label, [])) < max_objects:
            groups[d.label].append(d)
    return {k: v for k, v in groups.items() if v}


def relative_position(box_a: Sequence[float], box_b: Sequence[float], margin: float = POSITION_MARGIN) -> set[str]:
    """Relations of A to B ("left of", "right of", "above", "below"; y grows downwards).

    Per axis the centre offset is shrunk by margin x (extent of A + extent of B); a direction holds when
    the shrunk component exceeds half the length of the unshrunk offset vector. E.g. two 10-wide boxes
    whose centres are 30 apart horizontally and 10 apart vertically: shrunk offset (28, 8), length 31.6,
    so 0.885 > 0.5 -> "right of"/"left of", and 0.253 -> neither above nor below.
    """
    ax0, ay0, ax1, ay1 = box_a[:4]
    bx0, by0, bx1, by1 = box_b[:4]
    off = ((ax0 + ax1) / 2 - (bx0 + bx1) / 2, (ay0 + ay1) / 2 - (by0 + by1) / 2)
    extent = (abs(ax1 - ax0) + abs(bx1 - bx0), abs(ay1 - ay0) + abs(by1 - by0))
    shrunk = [math.copysign(max(abs(o) - margin * e, 0.0), o) for o, e in zip(off, extent)]
    if all(abs(s) < 1e-3 for s in shrunk):
        return set()
    norm = math.hypot(*off)
    dx, dy = shrunk[0] / norm, shrunk[1] / norm
    rel = set()
    if dx < -0.5:
        rel.add("left of")
    if dx > 0.5:
        rel.add("right of")
    if dy < -0.5:
        rel.add("above")
    if dy > 0.5:
        rel.add("below")
    return rel


def evaluate(metadata: dict, detections: Sequence[Detection], color_of: ColorFn | None = None, **thresholds) -> Verdict:
    """GenEval's verdict for one image's detections. `color_of` classifies instances whose `color` is None."""
    groups = group_by_class(detections, metadata.get("tag", ""), **thresholds)
    matched: list[list[Detection] | None] = []  # per include clause: its top instances, None if it failed
    ok_list: list[bool] = []
    reasons: list[str] = []
    for clause in metadata.get("include", []):
        cls, n = clause["class"], int(clause["count"])
        top = groups.get(cls, [])[:n]
        ok = len(top) >= n
        if not ok:
            reasons.append(f"expected {cls}>={n}, found {len(top)}")
        if ok and "color" in clause:
            colors = _colors(top, cls, color_of)
            hits = colors.count(clause["color"])
            if hits < n:
                ok = False
                reasons.append(f"expected {clause['color']} {cls}>={n}, found colours {colors}")
        if ok and "position" in clause:
            rel, target = clause["position"]
            if not 0 <= target < len(matched):
                raise ValueError(f"position clause of {cls!r} refers to include clause {target}, which is not before it")
            ok = _position_holds(top, matched[target], rel)
            if not ok:
                reasons.append(f"expected {cls} {rel} {metadata['include'][target]['class']}")
        matched.append(top if ok else None)
        ok_list.append(ok)
    for clause in metadata.get("exclude", []):
        cls, n = clause["class"], int(clause["count"])
        found = len(groups.get(cls, []))
        ok_list.append(found < n)
        if found >= n:
            reasons.append(f"expected {cls}<{n}, found {found}")
    return Verdict(correct=all(ok_list), clauses=tuple(ok_list), reasons=tuple(reasons))


def _colors(top: list[Detection], cls: str, color_of: ColorFn | None) -> list[str]:
    if all(d.color is not None for d in top):
        return [d.color for d in top]
    if color_of is None:
        raise ValueError(f"a colour clause needs colours for {cls!r}, but the detector gave none and no classifier")
    return list(color_of(top, cls))


def _position_holds(top: list[Detection], targets: list[Detection] | None, rel: str) -> bool:
    if targets is None:  # the reference clause failed: GenEval counts that as no target
        return False
    return all(rel in relative_position(a.box, b.box) for a in top for b in targets)


def summarize(tags: Sequence[str], verdicts: Sequence[bool | None]) -> tuple[dict, dict]:
    """(metrics, ci95): `overall` = unweighted mean of per-tag accuracies, plus one entry per tag present.

    Unscorable verdicts (None) are left out. Per-tag intervals are Wilson; overall's is Wilson at the
    effective sample size of a mean of T proportions, n_eff = T^2 / sum_t(1/n_t) (the total n when the
    tags are balanced), so that it stays inside [0, 1] and is not empty at 0% or 100%.
    """
    from tasks.metrics import accuracy_with_ci, wilson_interval

    by_tag: dict[str, list[bool]] = {}
    for t, v in zip(tags, verdicts):
        if v is not None:
            by_tag.setdefault(t, []).append(bool(v))
    if not by_tag:
        return {"overall": float("nan")}, {"overall": [float("nan"), float("nan")]}
    metrics, ci = {}, {}
    for tag in sorted(by_tag, key=lambda t: TAGS.index(t) if t in TAGS else len(TAGS)):
        metrics[tag], ci[tag] = accuracy_with_ci(by_tag[tag])
    overall = sum(metrics.values()) / len(metrics)
    n_eff = len(by_tag) ** 2 / sum(1 / len(v) for v in by_tag.values())
    return {"overall": overall, **metrics}, {"overall": wilson_interval(overall * n_eff, n_eff), **ci}


# ---- images and detectors ----------------------------------------------------------------------------
def open_image(path: str | Path):
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return ImageOps.exif_transpose(im).convert("RGB")


def require_path(path: str | Path | None, flag: str, what: str) -> str:
    if not path:
        raise MissingWeightsError(f"no weights given: pass {flag} PATH ({what}); nothing is downloaded")
    if not Path(path).exists():
        raise MissingWeightsError(f"{flag} {path}: not found; pass a local path ({what})")
    return str(path)


# ---- GenEval's output folder ------------------------------------------------------------------------
def read_folder(folder: str | Path) -> list[tuple[int, dict, list[Path]]]:
    """(index, metadata, sample paths) per numbered subfolder of a GenEval output folder, in index order."""
    root = Path(folder)
    items = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit()):
        meta_file = sub / "metadata.jsonl"
        if not meta_file.is_file():
            continue
        text = meta_file.read_text(encoding="utf-8").strip()
        try:
            meta = json.loads(text)
        except json.JSONDecodeError:
            meta = json.loads(text.splitlines()[0])
        samples = sorted(p for p in (sub / "samples").glob("*.png") if p.stem.isdigit())
        items.append((int(sub.name), meta, samples))
    if not items:
        raise DataError(f"no GenEval samples under {root}: expected {root}/00000/metadata.jsonl and "
                        f"{root}/00000/samples/0000.png")
    return items
