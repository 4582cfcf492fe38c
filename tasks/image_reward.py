"""Rewards for (prompt, image) pairs, and their weighted combination for text-to-image RL.

    reward = CombinedReward([(1.0, GenevalReward()), (0.5, ClipScore("/models/clip-vit-l-14"))])
    outs = reward(prompts, images, references)   # list[RewardOutput]: total, success, terms per part

Parts (each `name` + `__call__(prompts, images, references) -> list[float]`, batched):
  * `GenevalReward`: 1/0 by GenEval's rules (tasks/geneval.py); references are GenEval metadata. Shapes
    grids use the exact detector; real images need a detector (see `Mask2FormerDetector`).
  * `ClipScore`: max(cos(image, prompt), 0) with an open_clip model from a local path (`--clip-path`),
    i.e. torchmetrics' CLIPScore divided by 100, so that it sits on the same 0..1 scale as GenEval.
  * `ImageRewardScore`: the ImageReward model (Xu et al., 2023) if the `image-reward` package is installed.
Weights never leave the machine: a missing path is a one-line error naming the flag to pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from tasks import shapes
from tasks.base import RewardOutput
from tasks.geneval import CLIP_WHAT, load_open_clip, score_image  # noqa: F401 (load_open_clip: re-exported)
from tasks.geneval_rules import Detector, MissingWeightsError, open_image, require_path


class RewardFn(Protocol):
    name: str

    def __call__(self, prompts: Sequence[str], images: Sequence[Any], references: Sequence[Any]) -> list[float]: ...


class GenevalReward:
    """1.0 when the image satisfies its GenEval metadata, else 0.0."""

    name = "geneval"

    def __init__(self, detector: Detector | None = None):
        self.detector = detector

    def __call__(self, prompts, images, references) -> list[float]:
        return [float(score_image(im, ref, self.detector).correct) for im, ref in zip(images, references)]


class ClipScore:
    """max(cosine(image embedding, prompt embedding), 0) with a local open_clip model."""

    name = "clip"

    def __init__(self, clip_path: str | Path | None, arch: str = "ViT-L-14", device: str | None = None):
        import torch

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.preprocess, self.tokenizer = load_open_clip(clip_path, arch, self.device, flag="--clip-path")

    def __call__(self, prompts, images, references=None) -> list[float]:
        import torch

        with torch.no_grad():
            img = self.model.encode_image(torch.stack([self.preprocess(_rgb(im)) for im in images]).to(self.device))
            txt = self.model.encode_text(self.tokenizer(list(prompts)).to(self.device))  # (B, D) both
            cos = torch.nn.functional.cosine_similarity(img.float(), txt.float(), dim=-1)  # (B,)
        return cos.clamp(min=0).tolist()


class ImageRewardScore:
    """The ImageReward model through its own package; `path` is ImageReward.pt with med_config.json beside it
    (the package's BLIP text encoder also needs bert-base-uncased's tokenizer in the local HF cache)."""

    name = "image_reward"

    def __init__(self, path: str | Path | None, device: str | None = None):
        try:
            import ImageReward as RM
        except ImportError:
            raise ImportError("the ImageReward reward needs its package: pip install image-reward") from None
        p = Path(require_path(path, "--image-reward-path", "ImageReward.pt, with med_config.json beside it"))
        med = p.with_name("med_config.json")
        if not med.is_file():
            raise MissingWeightsError(f"--image-reward-path {p}: med_config.json must sit beside it (else it is downloaded)")
        import torch

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = RM.load(str(p), device=device, med_config=str(med))

    def __call__(self, prompts, images, references=None) -> list[float]:
        return [float(self.model.score(p, _rgb(im))) for p, im in zip(prompts, images)]


class CombinedReward:
    """total = sum_i w_i * r_i; terms = {name_i: w_i * r_i}; success = the verdict of the part named
    `success_from` (GenEval's, when present), else None."""

    def __init__(self, parts: Sequence[tuple[float, RewardFn]], success_from: str = "geneval"):
        names = [fn.name for _, fn in parts]
        if len(set(names)) != len(names):
            raise ValueError(f"reward parts need distinct names, got {names}")
        self.parts = list(parts)
        self.success_from = success_from if success_from in names else None

    def __call__(self, prompts, images, references) -> list[RewardOutput]:
        values = {fn.name: (w, fn(prompts, images, references)) for w, fn in self.parts}
        outs = []
        for i in range(len(images)):
            terms = {name: w * vals[i] for name, (w, vals) in values.items()}
            success = bool(values[self.success_from][1][i] > 0.5) if self.success_from else None
            outs.append(RewardOutput(total=sum(terms.values()), success=success, terms=terms))
        return outs


def _rgb(image):
    """A PIL image from a PIL image, a path, or a shapes-world grid / token string (rendered)."""
    if isinstance(image, (str, Path)) and Path(image).is_file():
        return open_image(image)
    if hasattr(image, "convert"):
        return image.convert("RGB")
    grid = shapes.to_grid(image)
    if grid is None:
        raise ValueError("not an image: expected a PIL image, an image path or a shapes token grid")
    return shapes.render(grid)
