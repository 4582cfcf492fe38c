"""Decoders for masked diffusion models (DESIGN.md section 4). INTERFACE STUB - being implemented."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DecodeConfig:
    sampler: str = "low_confidence"  # low_confidence | emerge | maskgit
    gen_length: int = 256
    block_length: int = 32
    steps: int = 128
    temperature: float = 0.0
    remasking: str = "low_confidence"  # low_confidence | random (low_confidence sampler only)
    cfg_scale: float = 0.0


@dataclass
class GenerationOutput:
    sequences: torch.Tensor  # (B, P + L) prompt followed by the generated completion
    prompt_length: int  # P
    commit_step: torch.Tensor  # (B, L) long: the step (0-based) at which each completion token was committed
    nfe: int  # number of model calls (forward passes over the batch), CFG counted as 2 per step

    @property
    def completion_ids(self) -> torch.Tensor:  # (B, L)
        return self.sequences[:, self.prompt_length:]


def generate(model, prompt_ids, attention_mask, cfg: DecodeConfig, seeds=None, token_range=None) -> GenerationOutput:
    raise NotImplementedError
