"""Stable seeds: every random draw in the harness (decoding rows, rollouts, masks, data) derives its seed here."""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from (seed, step, prompt, sample, ...): independent of batch layout and of
    Python's hash randomisation, so every rollout can be reproduced on its own."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
