"""The one LR operator: antialiased bicubic downscaling (Pillow's BICUBIC, a = -0.5, like MATLAB ``imresize``).

Pillow's ``resize`` with ``BICUBIC`` widens the cubic kernel by the scale factor when it shrinks (antialiasing), uses
the Keys kernel with a = -0.5 and pixel-centre alignment: the same operator as MATLAB's ``imresize(x, 1/s, 'bicubic')``
that the SR literature (and ESRGAN/BasicSR test sets) use. Away from the border the two agree within 1 grey level
(tests/data/test_degrade.py checks this against a numpy re-implementation of imresize); within 2 output pixels of the
border they differ (MATLAB reflects the image, Pillow renormalises the truncated kernel).
``torch.nn.functional.interpolate(..., mode="bicubic")`` uses a = -0.75 and no antialiasing unless asked: not used.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def _check(img: np.ndarray) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise TypeError("expected a uint8 numpy array of shape HxW or HxWxC")
    if img.ndim == 3 and img.shape[2] not in (1, 3):
        raise ValueError(f"expected 1 or 3 channels, got {img.shape[2]}")
    return img


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    img = _check(img)
    squeeze = img.ndim == 3 and img.shape[2] == 1
    src = img[:, :, 0] if squeeze else img
    out = np.array(Image.fromarray(np.ascontiguousarray(src)).resize(size, Image.Resampling.BICUBIC), dtype=np.uint8)
    return out[:, :, None] if squeeze else out


def bicubic_downscale(img: np.ndarray, scale: int) -> np.ndarray:
    """Downscale a uint8 HWC (or HW) image by the integer ``scale``; H and W must be multiples of ``scale``."""
    img = _check(img)
    h, w = img.shape[:2]
    if scale < 1 or h % scale or w % scale:
        raise ValueError(f"image size {w}x{h} is not a multiple of the scale {scale}")
    return _resize(img, (w // scale, h // scale))


def bicubic_upscale(img: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic upscaling by ``scale`` with the same kernel (the baseline the models are compared with)."""
    img = _check(img)
    h, w = img.shape[:2]
    return _resize(img, (w * scale, h * scale))


def resize_longer_side(img: np.ndarray, max_side: int, min_short: int = 1) -> np.ndarray:
    """Shrink (never enlarge) so the longer side is at most ``max_side``, keeping the shorter side >= ``min_short``."""
    img = _check(img)
    h, w = img.shape[:2]
    longer, shorter = max(h, w), min(h, w)
    if longer <= max_side:
        return img
    f = max(max_side / longer, min(1.0, min_short / shorter))
    if f >= 1.0:
        return img
    nw, nh = max(1, round(w * f)), max(1, round(h * f))
    if min(nw, nh) < min_short:  # rounding guard
        nw, nh = (max(nw, min_short), nh) if w <= h else (nw, max(nh, min_short))
    return _resize(img, (nw, nh))
