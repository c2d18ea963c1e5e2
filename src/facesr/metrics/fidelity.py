"""PSNR and SSIM as SR papers compute them (BasicSR / MATLAB conventions).

Images are uint8 (or float in 0..255) arrays HWC RGB. The Y channel is ITU-R BT.601 "studio swing", as MATLAB's
``rgb2ycbcr`` and BasicSR's ``to_y_channel``: ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` (0..255 units, not
rounded). ``border`` pixels are cropped from every side before comparing (the SR convention: border = scale).
SSIM is Wang et al.'s: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, data range 255, valid region only; on RGB it
is the mean of the per-channel SSIMs.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import correlate1d

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64)


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """HWC RGB in 0..255 -> HW luma (BT.601, 16..235), float64."""
    img = np.asarray(img, dtype=np.float64)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {img.shape}")
    return img @ _Y_WEIGHTS / 255.0 + 16.0


def _prepare(img: np.ndarray, y_channel: bool, border: int) -> np.ndarray:
    x = rgb_to_y(img)[..., None] if y_channel else np.asarray(img, dtype=np.float64)
    if x.ndim == 2:
        x = x[..., None]
    if border:
        x = x[border:-border, border:-border]
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"border {border} leaves nothing of a {img.shape[:2]} image")
    return x


def _check(a: np.ndarray, b: np.ndarray) -> None:
    if np.shape(a) != np.shape(b):
        raise ValueError(f"images differ in shape: {np.shape(a)} vs {np.shape(b)}")


def psnr(a: np.ndarray, b: np.ndarray, border: int = 0, y_channel: bool = True) -> float:
    """PSNR in dB between two 8-bit-range RGB images (``inf`` when identical)."""
    _check(a, b)
    x, y = _prepare(a, y_channel, border), _prepare(b, y_channel, border)
    return _db(float(np.mean((x - y) ** 2)))


def _db(mse: float) -> float:
    """PSNR in dB of a mean squared error in 8-bit units (``inf`` for 0)."""
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def psnr_band(a: np.ndarray, b: np.ndarray, width: int = 4, y_channel: bool = True) -> float:
    """PSNR in dB over the outer ``width``-pixel frame only (what ``psnr``'s border crop leaves out): a dark or
    ringing frame shows here and nowhere else."""
    _check(a, b)
    x, y = _prepare(a, y_channel, 0), _prepare(b, y_channel, 0)
    h, w = x.shape[:2]
    if not (0 < width and 2 * width < min(h, w)):
        raise ValueError(f"band width {width} does not fit a {h}x{w} image")
    mask = np.ones((h, w), dtype=bool)
    mask[width:h - width, width:w - width] = False
    return _db(float(np.mean((x[mask] - y[mask]) ** 2)))


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(ax**2) / (2 * sigma**2))
    return g / g.sum()


def _ssim_channels(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x, y: [H, W, C] float64 in 0..255 -> per-channel SSIM [C] (valid region; separable 11x11 Gaussian)."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = _gaussian_1d()
    r = (g.size - 1) // 2
    stack = np.stack([x, y, x * x, y * y, x * y])  # [5, H, W, C]
    f = correlate1d(correlate1d(stack, g, axis=1, mode="constant"), g, axis=2, mode="constant")
    f = f[:, r:-r, r:-r]  # valid region: no padding enters
    mu_x, mu_y, exx, eyy, exy = f
    sxx, syy, sxy = exx - mu_x**2, eyy - mu_y**2, exy - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.reshape(-1, s.shape[-1]).mean(0)


def ssim(a: np.ndarray, b: np.ndarray, border: int = 0, y_channel: bool = True) -> float:
    """SSIM between two 8-bit-range RGB images (Y channel, or the mean over R, G, B)."""
    _check(a, b)
    x, y = _prepare(a, y_channel, border), _prepare(b, y_channel, border)
    if min(x.shape[:2]) < 11:
        raise ValueError(f"SSIM needs at least 11x11 pixels after the border crop, got {x.shape[:2]}")
    return float(_ssim_channels(x, y).mean())
