"""Where the harness keeps its cache and whether the Hugging Face hub can be reached (every layer may use it)."""

from __future__ import annotations

import os
from pathlib import Path


def harness_home() -> Path:
    """Cache root for pretrained embedded models: `$HARNESS_HOME`, default `~/.cache/harness`."""
    return Path(os.environ.get("HARNESS_HOME") or Path.home() / ".cache" / "harness")


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
