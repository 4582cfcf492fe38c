"""Metrics with their uncertainty: accuracy with a Wilson 95% interval, unbiased pass@k, and a paired
bootstrap CI for the difference between two scorings of the same problems (a run's gain)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054


def accuracy_with_ci(verdicts: Sequence[bool | None]) -> tuple[float, list[float]]:
    """Accuracy over scorable verdicts (None excluded) with the Wilson score 95% interval.

    Wilson rather than the normal approximation because it stays inside [0, 1] and behaves at 0% and
    100% (a gold run of 500 problems gives [0.9924, 1.0], not [1.0, 1.0]).
    """
    vals = [bool(v) for v in verdicts if v is not None]
    n = len(vals)
    if n == 0:
        return float("nan"), [float("nan"), float("nan")]
    p = sum(vals) / n
    return p, wilson_interval(sum(vals), n)


def wilson_interval(successes: int, n: int, z: float = Z95) -> list[float]:
    if n == 0:
        return [float("nan"), float("nan")]
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # exact ends at 0% and 100% (floating-point rounding would otherwise give 0.9999999999999999)
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return [lo, hi]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimator 1 - C(n-c, k) / C(n, k) (Chen et al., 2021), computed as a stable product."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_ks(counts: Sequence[tuple[int, int]], ks: Sequence[int] = (1, 5, 10, 100)) -> dict[str, float]:
    """Mean pass@k over problems given (n, c) per problem; k only where every problem has n >= k."""
    if not counts:
        return {}
    min_n = min(n for n, _ in counts)
    return {f"pass@{k}": float(np.mean([pass_at_k(n, c, k) for n, c in counts])) for k in ks if k <= min_n}


def mean_with_ci(values: Sequence[float]) -> tuple[float, list[float]]:
    """Mean with a normal-approximation 95% interval (t would be wider for tiny n; we report n too)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return float("nan"), [float("nan"), float("nan")]
    m = float(x.mean())
    if x.size == 1:
        return m, [float("nan"), float("nan")]
    half = Z95 * float(x.std(ddof=1)) / math.sqrt(x.size)
    return m, [m - half, m + half]


def paired_bootstrap_ci(
    before: Sequence[float], after: Sequence[float], n_boot: int = 10_000, seed: int = 0
) -> tuple[float, list[float]]:
    """Mean of (after - before) over the same problems, with a percentile paired-bootstrap 95% CI."""
    a, b = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if a.shape != b.shape:
        raise ValueError("paired bootstrap needs the same problems before and after")
    d = b - a
    if d.size == 0:
        return float("nan"), [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    means = d[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(d.mean()), [float(lo), float(hi)]
