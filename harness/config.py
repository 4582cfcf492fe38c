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


def hub_offline_reason(timeout: float = 3.0) -> str | None:
    """Why the Hugging Face hub cannot be reached, or None if it can.

    A quick DNS + TCP probe before `datasets`/`transformers` try (and retry for ~25 s) on a closed
    network. `HF_HUB_OFFLINE=1` is respected: then only the local cache is used and this returns None.
    """
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return None
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return f"{host} unreachable: {e.strerror or e}"
