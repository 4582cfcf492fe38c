"""The method registry: a method is a config dataclass plus three small functions the one RL loop calls.

    advantages(rewards (N, G), cfg) -> (N, G)
    views(j, batch: RolloutBatch, cfg, generator) -> list[MaskedView]      # inner iteration j of mu
    loss(LossInputs, cfg) -> LossOutput                                    # default: grpo.grpo_loss

Each method file registers one `Method` in `METHODS` at import (`register(Method(...))`); importing the
`trainers` package finds and imports every such file (`harness.registry.discover`): a new method is one file,
self-contained (its config, advantages, views, loss, and every helper only it uses).
`none` (evaluate only) is handled by the CLI and is deliberately not a method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch

from harness.registry import Registry
from trainers.estimators import MaskedView, RolloutBatch
from trainers.grpo import LossInputs, LossOutput, MethodConfig, grpo_loss


def no_sampler_preference(kind: str) -> str | None:
    return None


@dataclass(frozen=True)
class Method:
    name: str
    config_cls: type[MethodConfig]
    advantages: Callable[[torch.Tensor, Any], torch.Tensor]
    views: Callable[[int, RolloutBatch, Any, torch.Generator], list[MaskedView]]
    loss: Callable[[LossInputs, Any], LossOutput] = grpo_loss
    uses_old_policy: bool = True  # False: no importance ratio, so old log-probs are never computed
    rollout_sampler: Callable[[str], str | None] = no_sampler_preference  # task kind -> preferred decoder
    summary: str = ""

    def make_config(self, **overrides: Any) -> MethodConfig:
        """The method's config with overrides; an unknown field is an error that lists the valid ones."""
        valid = [f.name for f in fields(self.config_cls)]
        unknown = sorted(set(overrides) - set(valid))
        if unknown:
            raise ValueError(f"unknown {self.name} setting(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
        return self.config_cls(**overrides)


METHODS: Registry[Method] = Registry("method")


def register(method: Method) -> Method:
    return METHODS.register(method.name)(method)


METHOD_MARKER = "register(Method("  # what discovery looks for in a file of trainers/


def get_method(name: str) -> Method:
    """The registered method `name` (every method file of trainers/ is discovered and imported first)."""
    from harness.registry import discover

    discover("trainers", METHOD_MARKER)
    return METHODS.get(name)
