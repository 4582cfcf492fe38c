"""`shapes`: GenEval-format prompts over a 10x10 grid world of coloured shapes, scored exactly.

    harness eval --task shapes --model gold        # every reference image scores 1

An image is a 10x10 grid of codebook tokens, one per cell: token 0 is the background and token 1 + i is
colour COLORS[i] (9 tokens, ids 0..8). As text, a cell holding token k is written `<img{k}>`, 100 of them
row-major with nothing between (`codebook_tokens()` lists the 9 strings for a tokenizer). An object is a 4-connected component of one
colour; its class is its cell pattern (SHAPES, any of the four rotations), its box is its cell extent.
References keep a one-cell gap around every object, so the detector recovers exactly what was drawn and
GenEval's rules (tasks/geneval.py) apply unchanged. `render` draws a grid at 12 px per cell for people;
`grid_from_image` reads such a PNG back, so GenEval's image-folder layout works too.

Prompts follow GenEval's six tags, clause format and templates ("a photo of three squares", "a photo of
a bar left of a square", "a photo of a red square and a blue ring"); like GenEval's, counting prompts
name no colour. Six classes and eight colours give 6 / 30 / 18 / 48 / 120 / 1680 prompts per tag. Each
tag's prompts are split once by a seeded shuffle, a quarter (rounded up) test-only, so train and test
never share a prompt. Examples cycle through their split's prompts, each with its own
seeded reference layout. `validation` holds train prompts (with layouts of its own): settings are chosen
on it, never on the test prompts.

Leaves out: object sizes, overlaps and occlusion, distractor objects in references, black and white.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.seeds import derive_seed
from tasks.base import TASKS, Check, DataError, Example, Scored, Task
from tasks.geneval_rules import (
    RELATIONS,
    TAGS,
    Detection,
    Verdict,
    evaluate,
    open_image,
    read_folder,
    relative_position,
    summarize,
)
from tasks.image_rewards import image_reward_functions
from tasks.rewards import RewardFn, per_item

GRID = 10  # cells per side: room for four 3x3 shapes with gaps; 100 tokens per image, so the tiny model
# learns to draw in the 5-minute pretraining budget (a 16x16 grid, 256 tokens, learned only the background)
CELL_PX = 12  # pixels per cell when rendered
COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")  # GenEval's names; token 1 + i
CODEBOOK_SIZE = 1 + len(COLORS)  # background + one token per colour
PALETTE = np.array([(255, 255, 255), (220, 40, 40), (245, 140, 20), (240, 220, 30), (40, 170, 60),
                    (40, 90, 220), (140, 60, 190), (245, 130, 190), (130, 80, 40)], dtype=np.uint8)  # (9, 3)
SHAPES = {  # canonical patterns; detection accepts every rotation
    "square": ("##", "##"),
    "bar": ("###",),
    "corner": ("#.", "##"),
    "tee": ("###", ".#."),
    "cross": (".#.", "###", ".#."),
    "ring": ("###", "#.#", "###"),
}
PLURALS = {"square": "squares", "bar": "bars", "corner": "corners", "tee": "tees", "cross": "crosses", "ring": "rings"}
NUMBERS = {2: "two", 3: "three", 4: "four"}
TEST_FRACTION = 0.25  # of each tag's prompts, held out for the test split
TOKEN_RE = re.compile(r"<img(\d+)>")


# ---- shapes and grids --------------------------------------------------------------------------------
def _cells(pattern: Sequence[str]) -> frozenset[tuple[int, int]]:
    return frozenset((r, c) for r, row in enumerate(pattern) for c, ch in enumerate(row) if ch == "#")


def _normalise(cells) -> frozenset[tuple[int, int]]:
    r0, c0 = min(r for r, _ in cells), min(c for _, c in cells)
    return frozenset((r - r0, c - c0) for r, c in cells)


def rotations(name: str) -> list[frozenset[tuple[int, int]]]:
    """The distinct rotations of a shape, each normalised to start at (0, 0)."""
    out, cells = [], _cells(SHAPES[name])
    for _ in range(4):
        cells = _normalise({(c, -r) for r, c in cells})
        if cells not in out:
            out.append(cells)
    return out


PATTERNS = {p: name for name in SHAPES for p in rotations(name)}  # cell pattern -> class


def codebook_tokens() -> list[str]:
    return [f"<img{k}>" for k in range(CODEBOOK_SIZE)]


def grid_to_text(grid: np.ndarray) -> str:
    return "".join(f"<img{int(k)}>" for k in np.asarray(grid).reshape(-1))


def text_to_grid(text: str) -> np.ndarray | None:
    """GRID*GRID `<imgK>` tokens (anything between them ignored) -> (GRID, GRID) grid; None if malformed."""
    ks = [int(k) for k in TOKEN_RE.findall(text)]
    if len(ks) != GRID * GRID or max(ks) >= CODEBOOK_SIZE:
        return None
    return np.array(ks, dtype=np.int64).reshape(GRID, GRID)


def render(grid: np.ndarray, cell_px: int = CELL_PX):
    from PIL import Image

    rgb = PALETTE[np.asarray(grid)]  # (GRID, GRID, 3)
    return Image.fromarray(rgb.repeat(cell_px, axis=0).repeat(cell_px, axis=1))


def grid_from_image(image) -> np.ndarray:
    """The nearest palette colour at each cell centre (any image size)."""
    arr = np.asarray(image.convert("RGB"), dtype=np.int64)  # (H, W, 3)
    ys = ((np.arange(GRID) + 0.5) * arr.shape[0] / GRID).astype(int)
    xs = ((np.arange(GRID) + 0.5) * arr.shape[1] / GRID).astype(int)
    centres = arr[ys][:, xs]  # (GRID, GRID, 3)
    dist = ((centres[:, :, None, :] - PALETTE[None, None].astype(np.int64)) ** 2).sum(-1)  # (GRID, GRID, 9)
    return dist.argmin(-1)


def to_grid(image: Any) -> np.ndarray | None:
    """A grid from a grid, GRID*GRID ids, a token string, a rendered PIL image or a path to one; None if malformed."""
    if isinstance(image, (str, Path)) and Path(image).suffix.lower() == ".png" and Path(image).is_file():
        image = open_image(image)
    if isinstance(image, str):
        return text_to_grid(image)
    if hasattr(image, "convert"):
        return grid_from_image(image)
    arr = np.asarray(image)
    if arr.size != GRID * GRID or arr.min() < 0 or arr.max() >= CODEBOOK_SIZE:
        return None
    return arr.reshape(GRID, GRID).astype(np.int64)


def is_shapes_input(x: Any) -> bool:
    return isinstance(x, np.ndarray) or (isinstance(x, str) and "<img" in x)


def names_only_shapes(metadata: dict) -> bool:
    classes = [c["class"] for key in ("include", "exclude") for c in metadata.get(key, [])]
    return bool(classes) and all(c in SHAPES for c in classes)


def detect_grid(grid: np.ndarray) -> list[Detection]:
    """Exact detection: each 4-connected one-colour component whose pattern is a known shape, score 1."""
    seen = np.zeros_like(grid, dtype=bool)
    dets = []
    for r, c in zip(*np.nonzero(grid)):
        if seen[r, c]:
            continue
        tok, comp, stack = grid[r, c], [], [(r, c)]
        seen[r, c] = True
        while stack:
            y, x = stack.pop()
            comp.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < grid.shape[0] and 0 <= nx < grid.shape[1] and not seen[ny, nx] and grid[ny, nx] == tok:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        label = PATTERNS.get(_normalise(comp))
        if label is not None:
            ys, xs = [p[0] for p in comp], [p[1] for p in comp]
            box = (float(min(xs)), float(min(ys)), float(max(xs) + 1), float(max(ys) + 1))
            dets.append(Detection(label, 1.0, box, COLORS[int(tok) - 1]))
    return dets


class ShapesDetector:
    """The GenEval `Detector` of the shapes world: exact, colours included."""

    def detect(self, image: Any) -> list[Detection]:
        grid = to_grid(image)
        return [] if grid is None else detect_grid(grid)


# ---- prompts -----------------------------------------------------------------------------------------
def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def prompt_universe(tag: str) -> list[dict]:
    """Every prompt of a tag, as GenEval metadata, in a fixed order."""
    names = list(SHAPES)
    pairs = [(a, b) for a in names for b in names if a != b]
    out = []
    if tag == "single_object":
        out = [([{"class": n, "count": 1}], None, f"a photo of {_a(n)}") for n in names]
    elif tag == "two_object":
        out = [([{"class": a, "count": 1}, {"class": b, "count": 1}], None, f"a photo of {_a(a)} and {_a(b)}")
               for a, b in pairs]
    elif tag == "counting":
        out = [([{"class": n, "count": k}], [{"class": n, "count": k + 1}], f"a photo of {NUMBERS[k]} {PLURALS[n]}")
               for n in names for k in NUMBERS]
    elif tag == "colors":
        out = [([{"class": n, "count": 1, "color": c}], None, f"a photo of {_a(c)} {n}") for n in names for c in COLORS]
    elif tag == "position":  # "A <rel> B": clause 0 is B, the reference
        out = [([{"class": b, "count": 1}, {"class": a, "count": 1, "position": [rel, 0]}], None,
                f"a photo of {_a(a)} {rel} {_a(b)}") for a, b in pairs for rel in RELATIONS]
    elif tag == "color_attr":
        out = [([{"class": a, "count": 1, "color": ca}, {"class": b, "count": 1, "color": cb}], None,
                f"a photo of {_a(ca)} {a} and {_a(cb)} {b}")
               for a, b in pairs for ca in COLORS for cb in COLORS if ca != cb]
    else:
        raise ValueError(f"unknown GenEval tag {tag!r}; tags: {', '.join(TAGS)}")
    return [{"tag": tag, "include": inc, **({"exclude": exc} if exc else {}), "prompt": p} for inc, exc, p in out]


def split_prompts(tag: str, split: str, seed: int) -> list[dict]:
    u = prompt_universe(tag)
    order = np.random.default_rng(derive_seed(seed, "shapes-split", tag)).permutation(len(u))
    n_test = math.ceil(TEST_FRACTION * len(u))
    return [u[i] for i in (order[:n_test] if split == "test" else order[n_test:])]


# ---- reference images --------------------------------------------------------------------------------
def draw_reference(metadata: dict, rng: np.random.Generator, tries: int = 100) -> np.ndarray:
    """A grid that satisfies the metadata: exactly the included objects, a one-cell gap around each."""
    for _ in range(tries):
        grid = _try_draw(metadata, rng)
        if grid is not None:
            return grid
    raise RuntimeError(f"could not lay out {metadata['prompt']!r}")


def _try_draw(metadata: dict, rng: np.random.Generator) -> np.ndarray | None:
    grid = np.zeros((GRID, GRID), dtype=np.int64)
    reserved = np.zeros((GRID, GRID), dtype=bool)  # object boxes grown by one cell
    boxes: list[list[tuple]] = []
    for clause in metadata["include"]:
        boxes.append([])
        for _ in range(clause["count"]):
            shapes = rotations(clause["class"])
            cells = sorted(shapes[rng.integers(len(shapes))])
            h, w = max(r for r, _ in cells) + 1, max(c for _, c in cells) + 1
            color = clause.get("color") or COLORS[rng.integers(len(COLORS))]
            for _ in range(200):
                r0, c0 = int(rng.integers(GRID - h + 1)), int(rng.integers(GRID - w + 1))
                box = (c0, r0, c0 + w, r0 + h)
                if reserved[r0:r0 + h, c0:c0 + w].any():
                    continue
                if "position" in clause:
                    rel, target = clause["position"]
                    if not all(rel in relative_position(box, b) for b in boxes[target]):
                        continue
                break
            else:
                return None
            for r, c in cells:
                grid[r0 + r, c0 + c] = 1 + COLORS.index(color)
            reserved[max(r0 - 1, 0):r0 + h + 1, max(c0 - 1, 0):c0 + w + 1] = True
            boxes[-1].append(box)
    return grid


def build_examples(split: str, per_tag: int, seed: int) -> list[Example]:
    """`per_tag` examples of each tag, interleaved tag by tag (so `--limit` keeps a mix)."""
    prompts = {tag: split_prompts(tag, split, seed) for tag in TAGS}
    rows = []
    for i in range(per_tag):
        for tag in TAGS:
            meta = prompts[tag][i % len(prompts[tag])]
            grid = draw_reference(meta, np.random.default_rng(derive_seed(seed, "shapes", split, tag, i)))
            if not evaluate(meta, detect_grid(grid)).correct:  # a guarantee, checked
                raise RuntimeError(f"reference for {meta['prompt']!r} does not satisfy it")
            rows.append((meta, grid))
    return [Example(id=k, prompt=m["prompt"], reference=m, solution=grid_to_text(g), meta={"tag": m["tag"]})
            for k, (m, g) in enumerate(rows)]


# ---- the task ----------------------------------------------------------------------------------------
@TASKS.register("shapes")
class ShapesTask(Task):
    name = "shapes"
    kind = "image"
    primary_metric = "overall"
    embedded = True
    # images are sampled (temperature 1, per-problem seeds), as GenEval samples its images: MaskGIT's and
    # greedy decoding's confidence order commits the dominant background first and ends in a blank grid
    # classifier-free guidance 1 (the model is pretrained with 10% of prompts hidden): on the validation
    # prompts 0.177 against 0.101 without (docs/RL_SETTINGS.md, "Image task")
    gen_defaults = {"sampler": "emerge", "gen_length": GRID * GRID, "block_length": GRID * GRID, "steps": 16,
                    "temperature": 1.0, "cfg_scale": 1.0}
    seed = 0  # the one seed the prompt split and every reference layout derive from
    codebook_tokens = staticmethod(codebook_tokens)  # the image vocabulary, ids 0..8 as `<img0>`..`<img8>`
    tiny_tokens = tuple(codebook_tokens())  # one token each in the tiny model's tokenizer
    # The tiny model with a 2-D grid (harness/grid_model.py): row/column embeddings on the cells and a 3x3
    # depthwise convolution before each layer; without them 10 minutes of pretraining never drew shapes
    # the rules accept (overall 0.03-0.08). Pre-LayerNorm layers and learned positions (no rotary): on the
    # validation prompts 0.101 without guidance and 0.177 with CFG 1, against 0.060 for RoFormer's
    # post-LayerNorm layers (docs/RL_SETTINGS.md compares the variants). Peak rate 2e-3 and batch 64 as in
    # the prototype of DESIGN.md section 6 (3e-3 collapsed to 0.008). 1,200 steps on 4 x as many reference
    # layouts as before (4,096 a tag): on the validation prompts 0.259 (mean of 3 sampling seeds) against 0.158
    # for 1,000 steps on 1,024 a tag (docs/RL_SETTINGS.md); about 10 minutes on one thread.
    pretrain_steps = 1200
    pretrain_config = {"grid": GRID, "lr": 2e-3, "batch_size": 64, "grid_block": "pre_ln", "grid_positions": "learned"}
    # examples per tag in each split (train: many layouts per prompt; validation: train prompts, for choosing settings)
    per_tag = {"train": 4096, "validation": 32, "test": 32}
    # rewards: GenEval's verdict, plus half the fraction of clauses satisfied as partial credit
    # (`--reward geneval=1.0,clauses=0` for the pure 1/0 reward)
    default_rewards = {"geneval": 1.0, "clauses": 0.5}

    def pretrain_examples(self) -> int:
        return self.per_tag["train"] * len(TAGS)

    def load(self, data: str | None = None, split: str = "test", limit: int | None = None) -> list[Example]:
        if data:
            raise DataError("shapes is generated from a seed; it takes no --data")
        if split not in self.per_tag:
            raise DataError(f"shapes has splits {', '.join(self.per_tag)}, not {split!r}")
        n = self.per_tag[split] if not limit else min(self.per_tag[split], math.ceil(limit / len(TAGS)))
        examples = build_examples(split, n, self.seed)
        return examples[:limit] if limit else examples

    def extract(self, completion: Any) -> list[str] | None:
        """What the detector sees, e.g. ["red square at (3,4)-(5,6)"]; None for an unreadable grid."""
        grid = to_grid(completion)
        if grid is None:
            return None
        return [f"{d.color} {d.label} at ({d.box[0]:.0f},{d.box[1]:.0f})-({d.box[2]:.0f},{d.box[3]:.0f})"
                for d in detect_grid(grid)]

    def judge(self, completion: Any, reference: dict) -> Verdict:
        return evaluate(reference, ShapesDetector().detect(completion))

    def verify(self, completion: Any, reference: dict) -> bool:
        return self.judge(completion, reference).correct

    def check(self, completion: Any, example: Example) -> Check:
        v = self.judge(completion, example.reference)
        return Check(v.correct, self.extract(completion), extra={"tag": example.reference["tag"],
                                                                 "reasons": list(v.reasons)},
                     facts={"clauses": v.clause_fraction})

    def reward_functions(self) -> dict[str, RewardFn]:
        """`geneval` (1 when the grid satisfies its prompt), `clauses` (the fraction of the prompt's clauses
        satisfied), and `clip`, `imagereward` on the rendered grid (tasks/image_rewards.py)."""
        return {"geneval": per_item("geneval", lambda ex, c, k: float(bool(k.verdict)),
                                    "1 when the grid satisfies the prompt (GenEval's rules, exact detector)"),
                "clauses": per_item("clauses", lambda ex, c, k: k.facts["clauses"],
                                    "the fraction of the prompt's GenEval clauses satisfied (0..1)"),
                **image_reward_functions(self.to_image)}

    def metrics(self, scored: Sequence[Scored], examples: Sequence[Example]) -> tuple[dict, dict]:
        tag = {str(ex.id): ex.reference["tag"] for ex in examples}
        return summarize([tag[str(s.id)] for s in scored], [s.verdict for s in scored])

    def to_image(self, completion: Any):
        """The picture of a completion (PIL, 8 px per cell), or None for an unreadable grid."""
        grid = to_grid(completion)
        return None if grid is None else render(grid)

    reads_prediction_folders = True

    def predictions_from_folder(self, folder: str | Path) -> list[dict]:
        """GenEval's output layout of rendered grids; folder number = example id of the test split."""
        return [{"id": index, "completion": str(p)} for index, _, samples in read_folder(folder) for p in samples]
