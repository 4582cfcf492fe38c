"""Model-backed image rewards on the reward interface (tasks/rewards.py): CLIP score and ImageReward.

Every image task (shapes, geneval, image-prompts) offers them next to its GenEval reward:

    harness run --task shapes --method maskgrpo --reward geneval=1.0,clip=0.1 --reward-model clip=/models/clip
    harness score --task image-prompts --data ../shared/data/image_prompts/dpg_bench.jsonl \
        --predictions outputs/ --reward clip=1.0 --reward-model clip=/models/clip-vit-large-patch14

  * `clip`: torchmetrics' CLIPScore (max(100 cos(image, prompt), 0)) divided by 100, so it sits on the
    0..1 scale of GenEval's reward; the model is a transformers CLIP folder (config.json, weights, the
    tokenizer and preprocessor files, e.g. a download of openai/clip-vit-large-patch14), loaded with
    `local_files_only` and handed to CLIPScore as a callable (CLIPScore's own string argument only accepts
    a few hub names). Prompts longer than the text encoder's context are truncated to it.
  * `imagereward`: the ImageReward model (Xu et al., 2023) through its own package (`pip install
    image-reward`); the path is ImageReward.pt with med_config.json beside it (the package's BLIP text
    encoder also needs bert-base-uncased's tokenizer in the local Hugging Face cache). Raw score, roughly
    -2..2.

A completion becomes a picture with the task's `to_image` (a shapes grid is rendered; an image path is
opened); one that is not a picture scores 0. Weights never leave the machine: a missing path or package is
a one-line error before any work.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.rewards import RewardError, RewardFn

CLIP_MODEL = ("a transformers CLIP folder with config.json, weights, tokenizer and preprocessor files, e.g. a "
              "download of openai/clip-vit-large-patch14")
IMAGEREWARD_MODEL = "ImageReward.pt with med_config.json beside it"


def image_reward_functions(to_image: Callable[[Any], Any]) -> dict[str, RewardFn]:
    """The model-backed image rewards, turning completions into pictures with `to_image`."""
    return {
        "clip": RewardFn("clip", "CLIP score / 100 of the image and its prompt (torchmetrics CLIPScore), 0..1",
                         load=lambda path, device: clip_scorer(path, device, to_image), model=CLIP_MODEL),
        "imagereward": RewardFn("imagereward", "ImageReward's score of the image for its prompt (package "
                                "image-reward)", load=lambda path, device: imagereward_scorer(path, device, to_image),
                                model=IMAGEREWARD_MODEL, requires=("ImageReward", "image-reward")),
    }


def _device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def clip_scorer(path: str | Path, device: str | None, to_image: Callable[[Any], Any]):
    """(examples, completions, checks) -> CLIP score / 100 of each picture with its example's prompt."""
    p = Path(path)
    if not (p / "config.json").is_file():
        raise RewardError(f"--reward-model clip={p}: no config.json there; pass {CLIP_MODEL}")
    import torch
    from torchmetrics.multimodal.clip_score import CLIPScore
    from torchvision.transforms.functional import pil_to_tensor
    from transformers import CLIPModel, CLIPProcessor

    def build():
        model = CLIPModel.from_pretrained(p, local_files_only=True)
        processor = CLIPProcessor.from_pretrained(p, local_files_only=True)
        # long prompts (DPG-Bench) are cut to the text encoder's context instead of failing
        processor.tokenizer.model_max_length = model.config.text_config.max_position_embeddings
        return model, processor

    try:
        metric = CLIPScore(model_name_or_path=build).to(_device(device))
    except OSError as e:
        raise RewardError(f"--reward-model clip={p}: cannot load a CLIP model there ({' '.join(str(e).split())[:200]})"
                          ) from None
    metric.model.eval()
    processor = metric.processor

    def score(examples, completions, checks) -> list[float]:
        out = []
        for ex, c in zip(examples, completions):
            image = to_image(c)
            if image is None:
                out.append(0.0)
                continue
            with torch.no_grad():
                value = metric(pil_to_tensor(image.convert("RGB")).to(metric.device), _fit(processor, ex.prompt))
            metric.reset()
            out.append(float(value) / 100.0)
        return out

    return score


def _fit(processor, prompt: str) -> str:
    """The prompt cut to what the CLIP text encoder takes (CLIPScore does not truncate)."""
    tok = processor.tokenizer
    limit = tok.model_max_length
    ids = tok(prompt, truncation=True, max_length=limit)["input_ids"]
    if len(tok(prompt)["input_ids"]) <= limit:
        return prompt
    return tok.decode(ids, skip_special_tokens=True)


def imagereward_scorer(path: str | Path, device: str | None, to_image: Callable[[Any], Any]):
    """(examples, completions, checks) -> ImageReward's score of each picture for its prompt."""
    try:
        import ImageReward as RM
    except ImportError:
        raise RewardError("the imagereward reward needs its package: pip install image-reward") from None

    p = Path(path)
    med = p.with_name("med_config.json")
    if not p.is_file() or not med.is_file():
        raise RewardError(f"--reward-model imagereward={p}: pass {IMAGEREWARD_MODEL} (else the package downloads)")
    model = RM.load(str(p), device=_device(device), med_config=str(med))

    def score(examples, completions, checks) -> list[float]:
        out = []
        for ex, c in zip(examples, completions):
            image = to_image(c)
            out.append(0.0 if image is None else float(model.score(ex.prompt, image.convert("RGB"))))
        return out

    return score
