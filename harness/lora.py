"""Training at scale on one model: LoRA adapters (peft), the reference policy of a LoRA model, gradient
checkpointing and bf16 autocast. Everything here wraps `DiffusionModel.module` from the outside; the
model code (LLaDA's, Dream's, transformers' own) is never modified.

* `apply_lora(model, r=..., alpha=..., dropout=..., targets=...)` wraps the module in a `peft.PeftModel`
  whose only trainable parameters are the adapters. Default targets per family (`default_targets`):
  LLaDA/MMaDA `q_proj k_proj v_proj attn_out ff_proj up_proj ff_out` inside the transformer blocks (LLaDA's
  output head is also called `ff_out`: it is excluded), Dream (Qwen2) `q_proj k_proj v_proj o_proj
  gate_proj up_proj down_proj`, everything else (the embedded RoFormer, BERT-likes) every linear layer
  but the output head (peft's `all-linear`).
* `reference_policy(module)`: for a LoRA model, the base model itself run under peft's
  `disable_adapter()` (no copy: the frozen weights are shared); otherwise a frozen deep copy.
* `enable_gradient_checkpointing(module)`: recomputes each transformer block in the backward pass
  (`torch.utils.checkpoint`, non-reentrant). Done here rather than with transformers'
  `gradient_checkpointing_enable` because that one acts only in train mode, and the RL loop runs the
  policy in eval mode (dropout off, so the first inner update's ratio is exactly 1); LLaDA's own code has
  its own switch, Dream's transformers'; wrapping the blocks works the same on all of them.
* `use_autocast(model, dtype)`: every forward of the adapter (`logits`) under `torch.autocast`, so
  rollouts, old, reference and current log-probs and evaluations all use the same precision.
* `lora_dropout_active(module)`: the adapters' dropout is on only inside this context (the loop's
  gradient forwards); rollouts, old/reference log-probs and evaluations run without it.
"""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path

import torch

from harness.seeds import derive_seed

LLADA_TARGETS = ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")
DREAM_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraError(ValueError):
    """Bad LoRA settings or a model peft cannot wrap; one line."""


def default_targets(family: str) -> str | list[str]:
    """peft `target_modules` for a model family (see the module docstring)."""
    if family in ("llada", "mmada"):
        # a regex: the names inside the blocks only (`transformer.ff_out` is LLaDA's output head)
        return r".*blocks\.\d+\.(" + "|".join(LLADA_TARGETS) + r")$"
    if family == "dream":
        return list(DREAM_TARGETS)
    return "all-linear"


def parse_targets(targets: str | None, family: str):
    """`--lora-targets`: None = the family default; `all-linear`; or comma-separated module names."""
    if targets is None or not str(targets).strip():
        return default_targets(family)
    text = str(targets).strip()
    if text == "all-linear":
        return text
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise LoraError(f"--lora-targets {targets!r}: name modules, comma-separated (e.g. q_proj,v_proj)")
    return names


def is_peft(module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(module, PeftModel)


def _require_peft():
    try:
        import peft
    except ImportError:
        raise LoraError("LoRA needs peft, which is not installed: pip install 'peft>=0.13'") from None
    return peft


def apply_lora(model, *, r: int, alpha: float | None = None, dropout: float = 0.0,
               targets: str | None = None, seed: int = 0) -> dict:
    """Wrap `model.module` in a LoRA PeftModel (only the adapters train); returns what was done.

    peft draws the A matrices from torch's global generator; here that draw is seeded by `seed` (and the
    caller's generator state restored), so a run is reproducible and every process starts identical."""
    peft = _require_peft()
    if r < 1:
        raise LoraError(f"--lora-r {r} must be >= 1")
    if not 0.0 <= dropout < 1.0:
        raise LoraError(f"--lora-dropout {dropout} must be in [0, 1)")
    if is_peft(model.module):
        raise LoraError(f"{model.name} already carries a LoRA adapter; train it further without --lora-r, "
                        "or pass its base model")
    module = model.module
    target_modules = parse_targets(targets, getattr(model, "family", "generic"))
    head = _output_head_names(module)
    kwargs = {}
    if head and target_modules != "all-linear":
        kwargs["exclude_modules"] = head
    cfg = peft.LoraConfig(r=int(r), lora_alpha=float(alpha if alpha is not None else r), lora_dropout=float(dropout),
                          target_modules=target_modules, bias="none", **kwargs)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "lora-init"))
            wrapped = peft.get_peft_model(module, cfg)
    except ValueError as e:
        text = " ".join(str(e).split())[:200]
        raise LoraError(f"--lora-targets {targets or 'default'}: {text}; module names of {model.name}: "
                        f"{', '.join(linear_names(module)[:12])}") from None
    wrapped.eval()
    model.module = wrapped
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    total = sum(p.numel() for p in wrapped.parameters())
    return {"r": int(r), "alpha": float(cfg.lora_alpha), "dropout": float(dropout),
            "targets": target_modules if isinstance(target_modules, str) else list(target_modules),
            "trainable_params": trainable, "total_params": total}


def linear_names(module: torch.nn.Module) -> list[str]:
    """The distinct leaf names of the linear layers (what `--lora-targets` may name)."""
    seen: list[str] = []
    for name, m in module.named_modules():
        if isinstance(m, torch.nn.Linear):
            leaf = name.rsplit(".", 1)[-1]
            if leaf not in seen:
                seen.append(leaf)
    return seen


def _output_head_names(module: torch.nn.Module) -> list[str]:
    get = getattr(module, "get_output_embeddings", None)
    try:
        head = get() if callable(get) else None
    except (AttributeError, NotImplementedError):
        head = None
    if head is None:
        return []
    return [name for name, m in module.named_modules() if m is head]


class AdapterDisabled(torch.nn.Module):
    """The base model of a PeftModel: calls run under `disable_adapter()`. Shares every weight."""

    def __init__(self, peft_model):
        super().__init__()
        self.peft_model = peft_model

    def forward(self, *args, **kwargs):
        with self.peft_model.disable_adapter():
            return self.peft_model(*args, **kwargs)


def reference_policy(module: torch.nn.Module) -> torch.nn.Module:
    """The frozen initial policy: the adapter-disabled base of a LoRA model, else a frozen copy."""
    if is_peft(module):
        return AdapterDisabled(module)
    return copy.deepcopy(module).eval().requires_grad_(False)


@contextlib.contextmanager
def lora_dropout_active(module: torch.nn.Module):
    """Turn the LoRA dropout layers on for the forwards inside (the policy stays in eval mode otherwise)."""
    drops = [m for name, m in module.named_modules() if "lora_dropout" in name and isinstance(m, torch.nn.Dropout)
             and m.p > 0] if is_peft(module) else []
    for m in drops:
        m.train()
    try:
        yield
    finally:
        for m in drops:
            m.eval()


def block_list(module: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The transformer's repeated blocks: the longest ModuleList whose entries share one class."""
    best = None
    for m in module.modules():
        if isinstance(m, torch.nn.ModuleList) and len(m) > 0 and len({type(b) for b in m}) == 1:
            if best is None or len(m) > len(best):
                best = m
    return best


def enable_gradient_checkpointing(module: torch.nn.Module) -> int:
    """Recompute every block's activations in the backward pass; returns how many blocks are wrapped."""
    from torch.utils.checkpoint import checkpoint

    blocks = block_list(module)
    if blocks is None:
        raise LoraError("--gradient-checkpointing: found no repeated transformer blocks in this model")
    for block in blocks:
        if getattr(block, "_harness_checkpointed", False):
            continue
        inner = block.forward

        def forward(*args, _inner=inner, **kwargs):
            if torch.is_grad_enabled():
                return checkpoint(_inner, *args, use_reentrant=False, **kwargs)
            return _inner(*args, **kwargs)

        block.forward = forward
        block._harness_checkpointed = True
    return len(blocks)


def autocast_dtype(mode: str, device) -> torch.dtype | None:
    """`--mixed-precision`: auto = bf16 on a CUDA device that supports it, else none; bf16; no."""
    if mode == "no":
        return None
    if mode == "bf16":
        return torch.bfloat16
    if mode == "auto":
        dev = torch.device(device)
        if dev.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    raise LoraError(f"--mixed-precision {mode!r}: choose auto, bf16 or no")


def use_autocast(model, dtype: torch.dtype | None) -> None:
    """Run every `model.logits` call under torch.autocast(dtype) on the model's device type."""
    if dtype is None:
        return
    plain = model.logits

    def logits(input_ids, attention_mask=None):
        with torch.autocast(device_type=model.device.type, dtype=dtype):
            out = plain(input_ids, attention_mask)
        return out

    model.logits = logits
    model.autocast = str(dtype).removeprefix("torch.")


# ---- loading an exported adapter ------------------------------------------------------------------------
def adapter_base(folder: Path) -> str:
    """The base model an adapter folder names (adapter_config.json's base_model_name_or_path)."""
    try:
        cfg = json.loads((folder / "adapter_config.json").read_text())
    except (OSError, ValueError) as e:
        raise LoraError(f"{folder}/adapter_config.json cannot be read: {e}") from None
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise LoraError(f"{folder}/adapter_config.json names no base model (base_model_name_or_path)")
    return str(base)


def attach_adapter(model, folder: Path) -> None:
    """Load the adapter in `folder` onto `model.module` (frozen, un-merged: the numbers of training)."""
    peft = _require_peft()
    model.module = peft.PeftModel.from_pretrained(model.module, str(folder), is_trainable=False).eval()
