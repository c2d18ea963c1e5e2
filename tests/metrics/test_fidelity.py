"""PSNR / SSIM against hand-computed values and scikit-image (an independent implementation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from facesr.metrics.fidelity import psnr, rgb_to_y, ssim
from tests.metrics._util import sample_faces


def _const(v, shape=(32, 32, 3)):
    return np.full(shape, v, dtype=np.uint8)


def test_psnr_hand_computed_rgb_and_y():
    a, b = _const(100), _const(110)
    # RGB: every channel differs by 10 -> MSE 100
    assert psnr(a, b, y_channel=False) == pytest.approx(10 * math.log10(255**2 / 100))
    # Y: dY = 10 * (65.481 + 128.553 + 24.966) / 255
    dy = 10 * 219.0 / 255
    assert psnr(a, b, y_channel=True) == pytest.approx(10 * math.log10(255**2 / dy**2))


def test_y_channel_is_bt601_studio_swing():
    assert rgb_to_y(_const(0, (1, 1, 3)))[0, 0] == pytest.approx(16.0)
    assert rgb_to_y(_const(255, (1, 1, 3)))[0, 0] == pytest.approx(235.0)
    img = sample_faces(1)[0]
    np.testing.assert_allclose(rgb_to_y(img), rgb2ycbcr(img)[..., 0], atol=1e-6)


def test_identical_images():
    a = sample_faces(1)[0]
    assert psnr(a, a) == math.inf
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, a, y_channel=False) == pytest.approx(1.0)


def test_border_crop_ignores_the_border():
    a = _const(120, (64, 64, 3))
    b = a.copy()
    b[:4] = 0
    b[:, -4:] = 255
    assert math.isfinite(psnr(a, b, border=0))
    assert psnr(a, b, border=4) == math.inf
    assert ssim(a, b, border=4) == pytest.approx(1.0)
    assert ssim(a, b, border=0) < 0.99


@pytest.mark.parametrize("border", [0, 4])
def test_against_scikit_image(border):
    faces = sample_faces(2)
    hr = faces[0]
    rng = np.random.default_rng(0)
    sr = np.clip(hr.astype(int) + rng.integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
    sl = slice(border, -border) if border else slice(None)
    y_hr, y_sr = rgb2ycbcr(hr)[sl, sl, 0], rgb2ycbcr(sr)[sl, sl, 0]
    assert psnr(sr, hr, border) == pytest.approx(peak_signal_noise_ratio(y_hr, y_sr, data_range=255), abs=1e-9)
    assert psnr(sr, hr, border, y_channel=False) == pytest.approx(
        peak_signal_noise_ratio(hr[sl, sl].astype(float), sr[sl, sl].astype(float), data_range=255), abs=1e-9)
    kw = dict(data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ssim(sr, hr, border) == pytest.approx(structural_similarity(y_hr, y_sr, **kw), abs=1e-6)
    assert ssim(sr, hr, border, y_channel=False) == pytest.approx(
        structural_similarity(hr[sl, sl].astype(float), sr[sl, sl].astype(float), channel_axis=2, **kw), abs=1e-6)


def test_more_noise_scores_worse():
    hr = sample_faces(1)[0]
    rng = np.random.default_rng(1)
    noise = rng.normal(size=hr.shape)
    mild = np.clip(hr + 5 * noise, 0, 255).astype(np.uint8)
    strong = np.clip(hr + 25 * noise, 0, 255).astype(np.uint8)
    assert psnr(mild, hr, 4) > psnr(strong, hr, 4)
    assert ssim(mild, hr, 4) > ssim(strong, hr, 4)


def test_shape_mismatch_and_tiny_images_are_refused():
    with pytest.raises(ValueError, match="shape"):
        psnr(_const(1, (8, 8, 3)), _const(1, (8, 9, 3)))
    with pytest.raises(ValueError, match="11x11"):
        ssim(_const(1, (16, 16, 3)), _const(2, (16, 16, 3)), border=4)


def test_psnr_band_sees_only_the_frame():
    from facesr.metrics.fidelity import psnr_band

    hr = sample_faces(1)[0]
    framed = hr.copy()
    framed[:2] = 0  # a dark 2 px frame on the top edge
    inner = hr.copy()
    inner[60:70, 60:70] = 0  # damage in the interior only
    assert psnr_band(hr, framed, 4) < 15 < psnr(hr, framed, border=4) == float("inf")
    assert psnr_band(hr, inner, 4) == float("inf") > 30 > psnr(hr, inner, border=4)
    with pytest.raises(ValueError):
        psnr_band(hr, hr, 64)
