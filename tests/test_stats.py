"""facesr.stats: the one definition of lower-is-better and of the bootstrap intervals (evaluate and the gate)."""

import numpy as np
import pytest

from facesr import metrics, stats


def test_lower_is_better_covers_every_reported_metric_and_is_shared():
    assert metrics.LOWER_IS_BETTER is stats.LOWER_IS_BETTER
    for m in ("lpips", "pieapp", "niqe", "pi", "dmos", "brisque", "dists"):
        assert stats.lower_is_better(m) and stats.lower_is_better(m.upper())
    for m in ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "ma"):
        assert not stats.lower_is_better(m)
    assert set(metrics.METRICS) - {"psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "ma"} <= stats.LOWER_IS_BETTER


def test_bootstrap_ci_brackets_the_mean_and_drops_nans():
    x = np.random.default_rng(0).normal(5.0, 1.0, size=200)
    lo, hi = stats.bootstrap_ci(np.append(x, np.nan), 500, 0)
    assert lo < x.mean() < hi and hi - lo < 0.5
    assert stats.bootstrap_ci([np.nan], 10, 0) is None
    assert stats.bootstrap_ci(x, 200, 3) == stats.bootstrap_ci(x, 200, 3)


def test_paired_bootstrap_sees_a_shift_the_unpaired_noise_hides():
    rng = np.random.default_rng(1)
    a = rng.normal(30, 3, size=40)          # per-image spread far larger than the shift
    b = a + 0.2 + rng.normal(0, 0.05, size=40)
    r = stats.paired_bootstrap(a, b, 500, 0)
    assert r["significant"] and r["ci95"][0] > 0 and r["n"] == 40
    assert r["mean_diff"] == pytest.approx(float(np.mean(b - a)))
    assert not stats.paired_bootstrap(a, a + rng.normal(0, 0.05, size=40), 500, 0)["significant"]
    assert stats.paired_bootstrap([np.nan], [1.0], 10, 0) == {"mean_diff": None, "ci95": None, "n": 0,
                                                               "significant": False}
    with pytest.raises(ValueError):
        stats.paired_bootstrap([1, 2], [1, 2, 3])
