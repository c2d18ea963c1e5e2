"""The statistics of facesr, one definition each: which metrics are lower-is-better, the percentile bootstrap
interval of a mean, and the paired bootstrap of two models on the same images.

Used by evaluate (the table's intervals and the paired-difference table) and by the registry's promotion gate
alike, so the report and the gate never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Every metric facesr reports or a policy may name where a smaller value is better. Anything else is higher-is-better
# (PSNR, SSIM, Ma).
LOWER_IS_BETTER = frozenset({"lpips", "pieapp", "niqe", "pi", "dmos", "brisque", "dists", "mse", "mae", "l1"})


def lower_is_better(metric: str) -> bool:
    """True when a smaller value of ``metric`` is better (case-insensitive)."""
    return metric.lower() in LOWER_IS_BETTER


def bootstrap_ci(values: Sequence[float], n: int, seed: int) -> list[float] | None:
    """Percentile 95% bootstrap interval of the mean (NaNs dropped); None with no finite value."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n, x.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return [float(lo), float(hi)]


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Paired bootstrap of mean(b - a) over the same images (pairs with a NaN on either side are dropped).

    Returns ``{"mean_diff", "ci95": [lo, hi], "n", "significant"}``; ``significant`` is true when the 95% interval
    excludes 0. ``a`` and ``b`` must be aligned (the same image at the same index).
    """
    a_arr, b_arr = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired_bootstrap needs aligned scores; got {a_arr.shape} and {b_arr.shape}")
    d = b_arr - a_arr
    d = d[np.isfinite(d)]
    if d.size == 0:
        return {"mean_diff": None, "ci95": None, "n": 0, "significant": False}
    ci = bootstrap_ci(d, n, seed)
    assert ci is not None
    return {"mean_diff": float(d.mean()), "ci95": ci, "n": int(d.size), "significant": bool(ci[0] > 0 or ci[1] < 0)}


__all__ = ["LOWER_IS_BETTER", "lower_is_better", "bootstrap_ci", "paired_bootstrap"]
