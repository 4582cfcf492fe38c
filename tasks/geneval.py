"""GenEval (Ghosh et al., 2023): its scoring rules as a library, pluggable detectors, and the `geneval` task.

    harness score --task geneval --data ../shared/data/geneval_metadata.jsonl --predictions OUTDIR

`OUTDIR` is GenEval's own output layout: `OUTDIR/<00000>/metadata.jsonl` (the prompt's metadata, one JSON
object) and `OUTDIR/<00000>/samples/<0000>.png`; the folder number is the 0-based row of the metadata file,
which is also the example id here.

The rules, restated from GenEval's `evaluation/evaluate_images.py` and `summary_scores.py`:
  * Detections of each class are sorted by confidence and kept when the score is > 0.3, or > 0.9 for every
    class when the prompt's tag is `counting`; at most 16 per class.
  * Each `include` clause takes the `count` most confident detections of its class and fails when there
    are fewer than `count` of them: "at least", not "exactly". Counting prompts are exact only because their
    metadata adds an `exclude` clause with `count + 1`.
  * `color`: those top `count` instances must all be classified as that colour (one of ten names).
  * `position: [relation, j]`: every top instance must stand in `relation` to every instance matched by
    include clause j; the check fails when clause j itself failed. Relations come from box centres with a
    margin of 0.1 x (sum of the two boxes' extents) per axis, and a direction counts when it holds more
    than half of the centre offset's length (`relative_position`). Note: the margin is relative to the
    objects' sizes, not to the image size.
  * An `exclude` clause fails when `count` or more detections of its class pass the threshold.
  * An image is correct when every clause holds. Per-tag score = mean over images of that tag; overall =
    unweighted mean over the tags present (six in GenEval).

Detectors plug in behind `Detector.detect(image) -> list[Detection]`. A detector may leave `color` as
None and offer `colors(image, detections, classname) -> list[str]`, which the rules call only for the
instances a colour clause inspects, as GenEval does. Two detectors exist: the exact one of the embedded
shapes world (tasks/shapes.py) and `Mask2FormerDetector`, GenEval's detector family (Mask2Former, COCO
instance segmentation) through transformers, with colour by zero-shot CLIP through open_clip.

Deliberate departures: GenEval's optional NMS is off in its defaults (max_overlap = 1.0) and is not
implemented; detections with an empty mask are dropped (GenEval would keep them with an empty box).
Per-tag CIs are Wilson intervals that treat several samples of one prompt as independent.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tasks import shapes
from tasks.base import TASKS, Check, DataError, Example, Scored, Task
from tasks.geneval_rules import (  # noqa: F401 (the rules are part of this module's interface)
    COLORS,
    COUNTING_THRESHOLD,
    IMAGE_SUFFIXES,
    MAX_OBJECTS,
    POSITION_MARGIN,
    RELATIONS,
    TAGS,
    THRESHOLD,
    ColorFn,
    Detection,
    Detector,
    MissingWeightsError,
    Verdict,
    evaluate,
    group_by_class,
    open_image,
    read_folder,
    relative_position,
    require_path,
    summarize,
)
from tasks.image_rewards import image_reward_functions
from tasks.rewards import RewardFn, per_item


def score_image(image: Any, metadata: dict, detector: Detector | None = None) -> Verdict:
    """Detect and apply the rules. Shapes-world grids, token strings and metadata that names only shapes
    classes use the exact shapes detector; anything else needs `detector`."""
    if isinstance(image, (str, Path)) and Path(image).suffix.lower() in IMAGE_SUFFIXES:
        image = open_image(image)
    if detector is None:
        if not (shapes.is_shapes_input(image) or shapes.names_only_shapes(metadata)):
            raise MissingWeightsError(
                "GenEval on real images needs a detector: pass --detector-path DIR (a Mask2Former COCO "
                "instance-segmentation folder, e.g. facebook/mask2former-swin-small-coco-instance) and --clip-path")
        detector = shapes.ShapesDetector()
    colors = getattr(detector, "colors", None)
    color_of = (lambda dets, cls: colors(image, dets, cls)) if colors else None
    return evaluate(metadata, detector.detect(image), color_of)


class Mask2FormerDetector:
    """GenEval's detector family: Mask2Former instance segmentation (GenEval uses the Swin-S COCO model;
    `facebook/mask2former-swin-small-coco-instance` is the same architecture and data) from a local folder,
    boxes from the masks, colours by zero-shot CLIP on the masked crop (background #999), as GenEval does."""

    # transformers' COCO label names -> GenEval's object names (same 80 classes, a few spelled differently)
    ALIASES = {"mouse": "computer mouse", "remote": "tv remote", "keyboard": "computer keyboard",
               "tvmonitor": "tv", "hair dryer": "hair drier", "motorbike": "motorcycle", "aeroplane": "airplane"}
    COLOR_TEMPLATES = ("a photo of a {c} {cls}", "a photo of a {c}-colored {cls}", "a photo of a {c} object")

    def __init__(self, detector_path: str | Path | None, clip_path: str | Path | None, *, clip_arch: str = "ViT-L-14",
                 device: str | None = None, min_score: float = THRESHOLD, bgcolor: str = "#999"):
        path = require_path(detector_path, "--detector-path", "a Mask2Former COCO instance-segmentation folder "
                            "(e.g. facebook/mask2former-swin-small-coco-instance)")
        self.clip_path = require_path(clip_path, "--clip-path", "an open_clip folder (open_clip_config.json + weights) "
                                      "or checkpoint file; GenEval uses ViT-L-14 (OpenAI)")
        import torch
        from transformers import AutoImageProcessor, AutoModelForUniversalSegmentation

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForUniversalSegmentation.from_pretrained(path, local_files_only=True).to(self.device).eval()
        self.labels = {int(i): self.ALIASES.get(n, n) for i, n in self.model.config.id2label.items()}
        self.clip_arch, self.min_score, self.bgcolor = clip_arch, min_score, bgcolor
        self._clip = None  # (model, preprocess, tokenizer), loaded when a colour is first asked for
        self._color_weights: dict[str, Any] = {}  # class name -> (D, 10) zero-shot classifier

    def detect(self, image) -> list[Detection]:
        import torch

        image = open_image(image) if isinstance(image, (str, Path)) else image.convert("RGB")
        inputs = self.processor(images=image, return_tensors="pt").to(self.device)
        with torch.no_grad():
            out = self.model(**inputs)
        res = self.processor.post_process_instance_segmentation(
            out, threshold=self.min_score, target_sizes=[image.size[::-1]], return_binary_maps=True)[0]
        if not res["segments_info"]:
            return []
        masks = res["segmentation"].bool().cpu().numpy()  # (N, H, W)
        dets = []
        for seg, m in zip(res["segments_info"], masks):
            ys, xs = m.any(axis=1).nonzero()[0], m.any(axis=0).nonzero()[0]
            if len(xs) == 0:
                continue
            box = (float(xs[0]), float(ys[0]), float(xs[-1] + 1), float(ys[-1] + 1))  # exclusive ends, like mmdet
            dets.append(Detection(self.labels[int(seg["label_id"])], float(seg["score"]), box, None, m))
        return dets

    def colors(self, image, detections: list[Detection], classname: str) -> list[str]:
        """GenEval's colour rule: mask the object onto a grey canvas, crop to its box, pick the colour whose
        averaged prompt embedding is nearest (prompts: COLOR_TEMPLATES)."""
        import torch
        from PIL import Image

        if not detections:
            return []
        model, preprocess, _ = self._load_clip()
        image = image.convert("RGB")
        blank = Image.new("RGB", image.size, self.bgcolor)
        crops = []
        for d in detections:
            im = image if d.mask is None else Image.composite(image, blank, Image.fromarray(d.mask.astype("uint8") * 255))
            crops.append(preprocess(im.crop(tuple(d.box))))
        with torch.no_grad():
            feats = model.encode_image(torch.stack(crops).to(self.device))  # (N, D)
            feats = feats / feats.norm(dim=-1, keepdim=True)
            pred = (feats @ self._color_classifier(classname)).argmax(dim=-1)  # (N,)
        return [COLORS[i] for i in pred.tolist()]

    def _load_clip(self):
        if self._clip is None:
            self._clip = load_open_clip(self.clip_path, self.clip_arch, self.device, flag="--clip-path")
        return self._clip

    def _color_classifier(self, classname: str):
        import torch

        if classname not in self._color_weights:
            model, _, tokenizer = self._load_clip()
            cols = []
            with torch.no_grad():
                for c in COLORS:
                    emb = model.encode_text(tokenizer([t.format(c=c, cls=classname) for t in self.COLOR_TEMPLATES])
                                            .to(self.device))  # (3, D)
                    emb = (emb / emb.norm(dim=-1, keepdim=True)).mean(dim=0)
                    cols.append(emb / emb.norm())
            self._color_weights[classname] = torch.stack(cols, dim=1)  # (D, 10)
        return self._color_weights[classname]


CLIP_WHAT = "an open_clip folder (open_clip_config.json + weights) or a checkpoint file for --clip-arch"


def load_open_clip(path: str | Path | None, arch: str = "ViT-L-14", device: str = "cpu", flag: str = "--clip-path"):
    """(model, preprocess, tokenizer) from a local folder in open_clip's layout, or a checkpoint file of `arch`."""
    p = Path(require_path(path, flag, CLIP_WHAT))
    if p.is_dir() and not (p / "open_clip_config.json").is_file():
        raise MissingWeightsError(f"{flag} {p}: no open_clip_config.json in the folder; pass {CLIP_WHAT}")
    if p.is_dir() and not any(any(p.glob(pat)) for pat in ("*.safetensors", "*.bin", "*.pth", "*.pt")):
        raise MissingWeightsError(f"{flag} {p}: no weights file in the folder; pass {CLIP_WHAT}")
    import open_clip

    if p.is_dir():
        name = f"local-dir:{p}"
        model, _, preprocess = open_clip.create_model_and_transforms(name, device=device)
        tokenizer = open_clip.get_tokenizer(name)
    else:
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=str(p), device=device)
        tokenizer = open_clip.get_tokenizer(arch)
    return model.eval(), preprocess, tokenizer


def score_folder(folder: str | Path, detector: Detector | None = None) -> tuple[list[dict], dict, dict]:
    """Score every sample of a GenEval output folder: (rows, metrics, ci95), one row per image."""
    rows = []
    for index, meta, samples in read_folder(folder):
        for path in samples:
            v = score_image(path, meta, detector)
            rows.append({"index": index, "sample": path.name, "tag": meta["tag"], "prompt": meta.get("prompt"),
                         "correct": v.correct, "reasons": list(v.reasons)})
    metrics, ci = summarize([r["tag"] for r in rows], [r["correct"] for r in rows])
    return rows, metrics, ci


# ---- the task -----------------------------------------------------------------------------------------
@TASKS.register("geneval")
class GenevalTask(Task):
    """GenEval prompts (--data geneval_metadata.jsonl; id = 0-based row). A completion is an image: a path,
    a PIL image, or a shapes-world token grid / token string."""

    name = "geneval"
    kind = "image"
    primary_metric = "overall"
    default_data_hint = "../shared/data/geneval_metadata.jsonl"
    fields = {"tag": str, "prompt": str, "include": list}
    optional_fields = {"exclude": list}
    default_rewards = {"geneval": 1.0}

    def __init__(self, detector: Detector | None = None, detector_path: str | None = None,
                 clip_path: str | None = None, device: str | None = None):
        self._detector = detector
        self.detector_path, self.clip_path, self.device = detector_path, clip_path, device

    def detector(self) -> Detector:
        if self._detector is None:
            self._detector = Mask2FormerDetector(self.detector_path, self.clip_path, device=self.device)
        return self._detector

    def to_example(self, record: dict, index: int) -> Example:
        if record.get("tag") not in TAGS:
            raise DataError(f"tag {record.get('tag')!r} is not one of GenEval's: {', '.join(TAGS)}")
        return Example(id=index, prompt=record["prompt"], reference=record, meta={"tag": record["tag"]})

    def extract(self, completion: Any) -> Any:
        return None  # detections are reported through `score`, not re-run here

    def judge(self, completion: Any, reference: dict) -> Verdict:
        if shapes.is_shapes_input(completion) or shapes.names_only_shapes(reference):
            return score_image(completion, reference, shapes.ShapesDetector())
        if isinstance(completion, str) and Path(completion).suffix.lower() not in IMAGE_SUFFIXES:
            return Verdict(False, (), ("the completion is neither an image nor a shapes token grid",))
        return score_image(completion, reference, self.detector())

    def verify(self, completion: Any, reference: dict) -> bool | None:
        return self.judge(completion, reference).correct

    def check(self, completion: Any, example: Example) -> Check:
        v = self.judge(completion, example.reference)
        return Check(v.correct, None, extra={"tag": example.reference["tag"], "reasons": list(v.reasons)},
                     facts={"clauses": v.clause_fraction})

    def reward_functions(self) -> dict[str, RewardFn]:
        """`geneval` (1 when the image satisfies its metadata by GenEval's rules), and `clip`, `imagereward`
        (tasks/image_rewards.py)."""
        return {"geneval": per_item("geneval", lambda ex, c, k: float(bool(k.verdict)),
                                    "1 when the image satisfies the prompt's GenEval metadata"),
                **image_reward_functions(self.to_image)}

    def metrics(self, scored: Sequence[Scored], examples: Sequence[Example]) -> tuple[dict, dict]:
        tag = {str(ex.id): ex.reference["tag"] for ex in examples}
        return summarize([tag[str(s.id)] for s in scored], [s.verdict for s in scored])

    def to_image(self, completion: Any):
        """A PIL image of a completion (an image path or PIL image, or a shapes grid), None if unreadable."""
        if shapes.is_shapes_input(completion):
            grid = shapes.to_grid(completion)
            return None if grid is None else shapes.render(grid)
        try:
            return completion if hasattr(completion, "convert") else open_image(completion)
        except (OSError, ValueError):
            return None

    reads_prediction_folders = True

    def predictions_from_folder(self, folder: str | Path) -> list[dict]:
        """GenEval's output folder -> prediction rows {"id", "completion": image path}, every sample."""
        return [{"id": index, "completion": str(p), "prompt": meta.get("prompt")}
                for index, meta, samples in read_folder(folder) for p in samples]
