"""Paths and seeds shared by every part of the harness."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def harness_home() -> Path:
    """Cache root for pretrained embedded models: `$HARNESS_HOME`, default `~/.cache/harness`."""
    return Path(os.environ.get("HARNESS_HOME") or Path.home() / ".cache" / "harness")


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from (seed, step, prompt, sample, ...): independent of batch layout and of
    Python's hash randomisation, so every rollout can be reproduced on its own."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
