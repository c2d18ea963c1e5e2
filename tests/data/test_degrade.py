"""bicubic_downscale is MATLAB imresize's antialiased bicubic (a = -0.5) away from the border."""

from __future__ import annotations

import numpy as np
import pytest

from facesr.data.degrade import bicubic_downscale, bicubic_upscale, resize_longer_side

from .imgs import rand_rgb


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    return np.where(x <= 1, (a + 2) * x**3 - (a + 3) * x**2 + 1,
                    np.where(x < 2, a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a, 0.0))


def _imresize_weights(n: int, s: int) -> np.ndarray:
    """MATLAB imresize(x, 1/s, 'bicubic') along one axis: kernel widened by s, symmetric border."""
    m = n // s
    w = np.zeros((m, n))
    for i in range(m):
        c = (i + 0.5) * s - 0.5
        for j in range(int(np.floor(c - 2 * s)), int(np.ceil(c + 2 * s)) + 1):
            jj = -j - 1 if j < 0 else (2 * n - j - 1 if j >= n else j)
            w[i, jj] += _cubic((j - c) / s) / s
    return w / w.sum(1, keepdims=True)


@pytest.mark.parametrize("scale", [2, 4])
def test_matches_matlab_imresize_interior(scale):
    a = np.random.default_rng(0).integers(0, 256, (64, 48, 3)).astype(np.uint8)
    ref = np.einsum("ij,jkc,lk->ilc", _imresize_weights(64, scale), a.astype(float), _imresize_weights(48, scale))
    ref = np.clip(np.rint(ref), 0, 255)
    out = bicubic_downscale(a, scale)
    assert out.shape == (64 // scale, 48 // scale, 3) and out.dtype == np.uint8
    diff = np.abs(out.astype(float) - ref)[2:-2, 2:-2]
    assert diff.max() <= 1.0


def test_not_torch_style_bicubic():
    """a = -0.75 without antialiasing (torch's default) gives a clearly different result on noise."""
    import torch

    a = np.random.default_rng(1).integers(0, 256, (64, 64, 3)).astype(np.uint8)
    t = torch.from_numpy(a).permute(2, 0, 1)[None].float()
    naive = torch.nn.functional.interpolate(t, scale_factor=0.25, mode="bicubic", align_corners=False)
    naive = naive.clamp(0, 255).round()[0].permute(1, 2, 0).numpy()
    assert np.abs(bicubic_downscale(a, 4).astype(float) - naive).mean() > 5


def test_constant_and_gray_and_errors():
    c = np.full((32, 32, 3), 77, np.uint8)
    assert (bicubic_downscale(c, 4) == 77).all()
    g = rand_rgb(32, 32)[:, :, 0]
    assert bicubic_downscale(g, 4).shape == (8, 8)
    assert bicubic_downscale(g[:, :, None], 4).shape == (8, 8, 1)
    with pytest.raises(ValueError, match="multiple"):
        bicubic_downscale(np.zeros((30, 32, 3), np.uint8), 4)
    with pytest.raises(TypeError):
        bicubic_downscale(np.zeros((32, 32, 3), np.float32), 4)
    assert bicubic_upscale(bicubic_downscale(rand_rgb(64, 64), 4), 4).shape == (64, 64, 3)


def test_resize_longer_side():
    a = np.zeros((1000, 400, 3), np.uint8)
    assert resize_longer_side(a, 512).shape == (512, 205, 3)
    assert resize_longer_side(a, 2000) is a  # never enlarges
    # a very wide image keeps its shorter side >= min_short
    wide = np.zeros((150, 3000, 3), np.uint8)
    out = resize_longer_side(wide, 512, min_short=128)
    assert min(out.shape[:2]) >= 128 and out.shape[1] < 3000
