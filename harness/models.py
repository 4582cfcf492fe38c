"""Model adapters (DESIGN.md section 3). INTERFACE STUB - being implemented."""

from __future__ import annotations

import torch


class DiffusionModel:
    """The one narrow interface every masked diffusion model is used through."""

    module: torch.nn.Module
    tokenizer: object
    mask_id: int
    pad_id: int
    eos_id: int | None
    image_token_range: tuple[int, int] | None  # [lo, hi) ids of the image codebook, multimodal only
    device: torch.device
    name: str

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) ids -> (B, L, V) float logits at every position (Dream's shift already undone)."""
        raise NotImplementedError

    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids (B, P) and attention mask (B, P) (chat template applied if the model has one)."""
        raise NotImplementedError

    def decode_completion(self, ids: torch.Tensor) -> str:
        """(L,) completion ids -> text, cut at the first EOS, masks and pads dropped."""
        raise NotImplementedError


def load_model(spec: str, task: str | None = None, device: str = "cpu", dtype: str = "auto"):
    raise NotImplementedError
