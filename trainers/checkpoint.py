"""Training checkpoints: trainable weights, optimizer, scheduler, step and the curve so far.

One file, `<out_dir>/checkpoints/last.pt`, written to a temporary file in the same folder, synced and
renamed into place, so a crash mid-write (even `kill -9`) leaves the previous checkpoint intact; leftover
`.last.pt.*.tmp` files are never read. A `last.pt` that cannot be read all the same (truncated or damaged
outside the harness) is refused with a `CheckpointError`, never skipped: resuming from step 0 instead
would hide the damage, so the user decides (`--overwrite` starts over; the file is left as evidence).
Only parameters that train are saved (for a LoRA model, just the adapters): the frozen rest comes from
loading the model again. No RNG state is saved because the loop draws nothing from global RNGs: every
random choice is derived from (seed, step, ...), so a resumed run continues exactly as an uninterrupted
one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = 1
# fields a resumed run may change: they do not alter what a step computes
RESUMABLE = {"steps", "eval_every", "eval_limit", "checkpoint_every", "log_every", "micro_batch_size",
             "rollout_batch_size", "reward_workers"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the one-line message names the file and what to do."""


def checkpoint_path(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / "checkpoints" / "last.pt"


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    names = {n for n, p in module.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items() if k in names}


def save(path: Path, *, module, optimizer, scheduler, step: int, state: dict[str, Any], config: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "step": step, "model": trainable_state(module),
               "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
               "state": state, "config": config}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        with open(tmp, "rb") as f:  # on disk before the rename, so the rename never exposes a partial file
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path, *, module, optimizer, scheduler, config: dict) -> tuple[int, dict[str, Any]]:
    """Restore into module/optimizer/scheduler; returns (step, state). Refuses a different experiment."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated zip, garbage, unpickling error: whatever torch raises
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise CheckpointError(f"{path} is damaged and cannot be resumed from ({type(e).__name__}: {reason}); "
                              "pass --overwrite to start the run over, or another --out") from None
    keys = ("format", "step", "model", "optimizer", "scheduler", "state", "config")
    if not isinstance(payload, dict) or any(k not in payload for k in keys):
        raise CheckpointError(f"{path} is damaged or not a harness checkpoint (expected the keys "
                              f"{', '.join(keys)}); pass --overwrite to start the run over, or another --out")
    if payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {payload.get('format')!r}, expected {FORMAT}; "
                              "start a fresh run (--overwrite, or another --out)")
    saved = payload["config"]
    diff = sorted(k for k in set(saved) | set(config) if k not in RESUMABLE and saved.get(k) != config.get(k))
    if diff:
        details = "; ".join(f"{k}: saved {saved.get(k)!r}, now {config.get(k)!r}" for k in diff)
        raise ValueError(f"{path} was written by a different configuration ({details}); resume with the same "
                         "settings or start a fresh run in another --out folder")
    missing = set(trainable_state(module)) - set(payload["model"])
    if missing:
        raise ValueError(f"{path}: checkpoint lacks trainable weights {sorted(missing)[:3]}...; "
                         "was it written for another model?")
    module.load_state_dict(payload["model"], strict=False)
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    return int(payload["step"]), payload["state"]
