"""No-reference metrics: NIQE and BRISQUE (our DMOS predictor). Ma and PI are in ``facesr.metrics.ma``.

NIQE follows the published algorithm (Mittal, Soundararajan, Bovik 2013; MATLAB ``niqe_release``, as ported by
BasicSR and pyiqa): Y channel (BT.601) rounded to integers, 7x7 Gaussian (sigma 7/6) MSCN coefficients, 96x96 blocks
(no overlap), 18 AGGD features per block at two scales (the second after a MATLAB-style bicubic x0.5 resize with
antialiasing), a multivariate Gaussian fit over blocks, and the distance to the pristine model
``sqrt((mu_p - mu)^T pinv((C_p + C) / 2) (mu_p - mu))``. The pristine mean and covariance are a weights file
(``niqe_pristine``). It needs at least two blocks to fit a covariance: images below 192 px on a side are refused
(NIQE on a 128x128 crop is one block: degenerate).

BRISQUE is piq's implementation with its SVR (trained on the LIVE IQA database's DMOS) loaded from a weights file
(``brisque_svr``), so its output is a predicted DMOS (0..100, lower is better).

Ma et al.'s score and PI = ((10 - Ma) + NIQE) / 2 (PIRM 2018) are in :mod:`facesr.metrics.ma`; they use the same
luma (Y of YCbCr, rounded) and border crop as :func:`niqe` here, on the same full-size images.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import convolve
from scipy.special import gamma

from facesr.errors import InputError
from facesr.metrics.fidelity import rgb_to_y

NIQE_BLOCK = 96
NIQE_MIN_SIDE = 2 * NIQE_BLOCK


def niqe_size_ok(h: int, w: int, border: int = 0) -> bool:
    """Whether an h x w image leaves at least NIQE_MIN_SIDE px per side after cropping ``border`` (>= 2 blocks)."""
    return min(h, w) - 2 * border >= NIQE_MIN_SIDE

_GAM = np.arange(0.2, 10.001, 0.001)
_R_GAM = np.square(gamma(2.0 / _GAM)) / (gamma(1.0 / _GAM) * gamma(3.0 / _GAM))


def gaussian_window(size: int = 7, sigma: float = 7.0 / 6.0) -> np.ndarray:
    """MATLAB fspecial('gaussian', size, sigma)."""
    ax = np.arange(size) - (size - 1) / 2
    xx, yy = np.meshgrid(ax, ax)
    g = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    return g / g.sum()


def load_niqe_params(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Pristine mean [36] and covariance [36, 36] from BasicSR's .npz or the MATLAB/pyiqa .mat file."""
    path = Path(path)
    try:
        if path.suffix == ".mat":
            from scipy.io import loadmat

            d = loadmat(path)
            mu, cov = d["mu_prisparam"], d["cov_prisparam"]
        else:
            with np.load(path, allow_pickle=False) as d:
                mu, cov = d["mu_pris_param"], d["cov_pris_param"]
    except (KeyError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a NIQE pristine-params file (mu_pris_param, cov_pris_param): {exc}") from None
    mu = np.asarray(mu, dtype=np.float64).reshape(-1)
    cov = np.asarray(cov, dtype=np.float64)
    if mu.shape != (36,) or cov.shape != (36, 36):
        raise InputError(f"{path}: NIQE params must be a 36-vector and a 36x36 matrix, got {mu.shape} and {cov.shape}")
    return mu, cov


def _aggd(block: np.ndarray) -> tuple[float, float, float]:
    block = block.ravel()
    left, right = block[block < 0], block[block > 0]
    left_std = math.sqrt(np.mean(left**2)) if left.size else 0.0
    right_std = math.sqrt(np.mean(right**2)) if right.size else 0.0
    if left_std == 0 or right_std == 0:
        return float("nan"), float("nan"), float("nan")
    gammahat = left_std / right_std
    rhat = np.mean(np.abs(block)) ** 2 / np.mean(block**2)
    rhatnorm = rhat * (gammahat**3 + 1) * (gammahat + 1) / (gammahat**2 + 1) ** 2
    alpha = float(_GAM[np.argmin((_R_GAM - rhatnorm) ** 2)])
    k = math.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left_std * k, right_std * k


def _block_features(block: np.ndarray) -> list[float]:
    alpha, bl, br = _aggd(block)
    feat = [alpha, (bl + br) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        alpha, bl, br = _aggd(block * np.roll(block, shift, axis=(0, 1)))
        mean = (br - bl) * gamma(2 / alpha) / gamma(1 / alpha)
        feat.extend([alpha, mean, bl, br])
    return feat


def _matlab_half(img: np.ndarray) -> np.ndarray:
    """MATLAB imresize(img, 0.5) (bicubic, antialiased) via piq's port."""
    from piq.functional import imresize

    t = torch.from_numpy(img)[None, None]
    return imresize(t, scale=0.5, antialiasing=True).squeeze().numpy().astype(np.float64)


def niqe_block_features(img: np.ndarray, block: int = NIQE_BLOCK) -> np.ndarray:
    """[blocks, 36] NIQE features of a 2-D luma image in 0..255 (18 per scale, two scales)."""
    h, w = img.shape
    nh, nw = h // block, w // block
    if nh * nw < 2:
        raise ValueError(f"NIQE needs at least two {block}x{block} blocks; the image is {h}x{w}")
    img = img[: nh * block, : nw * block].astype(np.float64)
    win = gaussian_window()
    feats = []
    for scale in (1, 2):
        mu = convolve(img, win, mode="nearest")
        sigma = np.sqrt(np.abs(convolve(img * img, win, mode="nearest") - mu * mu))
        mscn = (img - mu) / (sigma + 1)
        b = block // scale
        rows = [_block_features(mscn[i * b:(i + 1) * b, j * b:(j + 1) * b]) for j in range(nw) for i in range(nh)]
        feats.append(np.asarray(rows))
        if scale == 1:
            img = _matlab_half(img / 255.0) * 255.0
    return np.concatenate(feats, axis=1)


def niqe_gray(img: np.ndarray, mu_p: np.ndarray, cov_p: np.ndarray, block: int = NIQE_BLOCK) -> float:
    """NIQE of a 2-D luma image in 0..255 (float): distance of its block-feature MVG to the pristine MVG."""
    dist = niqe_block_features(img, block)
    ok = dist[~np.isnan(dist).any(axis=1)]
    if ok.shape[0] < 2:  # flat blocks have no AGGD fit: fewer than two usable blocks, no covariance
        return float("nan")
    mu_d = np.nanmean(dist, axis=0)
    cov_d = np.cov(ok, rowvar=False)
    diff = mu_p - mu_d
    q = diff @ np.linalg.pinv((cov_p + cov_d) / 2) @ diff
    return float(np.sqrt(q))


def niqe(img: np.ndarray, mu_p: np.ndarray, cov_p: np.ndarray, border: int = 0) -> float:
    """NIQE of a uint8 HWC RGB image on its Y channel (rounded, as the MATLAB code reads uint8 luma)."""
    y = rgb_to_y(img)
    if border:
        y = y[border:-border, border:-border]
    return niqe_gray(np.round(y), mu_p, cov_p)


class NIQEMetric:
    """NIQE with the pristine params from a weights file; status missing without it (no untrained mode)."""

    name = "niqe"

    def __init__(self) -> None:
        from facesr.metrics.weights import locate

        self.weights = locate("niqe_pristine")
        self.status = self.weights.status
        self.params = load_niqe_params(self.weights.path) if self.status == "real" else None

    def __call__(self, img: np.ndarray, border: int = 0) -> float:
        if self.params is None:
            return float("nan")
        if not niqe_size_ok(*img.shape[:2], border=border):
            return float("nan")
        return niqe(img, *self.params, border=border)


def load_brisque_svr(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    try:
        sv_coef, sv = obj
    except (TypeError, ValueError):
        raise InputError(f"{path}: not piq's BRISQUE SVR file (a pair of tensors sv_coef, sv)") from None
    return sv_coef, sv


def brisque_scores(x: torch.Tensor, sv_coef: torch.Tensor, sv: torch.Tensor) -> torch.Tensor:
    """piq.brisque (v0.8) with the SVR tensors passed in instead of downloaded. x: [N, 3, H, W] in 0..1."""
    from piq.brisque import _natural_scene_statistics, _rbf_kernel, _scale_features
    from piq.functional import imresize, rgb2yiq

    x = x * 255
    x = torch.round(rgb2yiq(x)[:, :1])
    feats = []
    for _ in range(2):
        feats.append(_natural_scene_statistics(x, 7, 7 / 6))
        x = imresize(x, sizes=(x.size(2) // 2, x.size(3) // 2))
    f = _scale_features(torch.cat(feats, dim=-1))
    k = _rbf_kernel(features=f, sv=sv.t().to(f), gamma=0.05)
    return k @ sv_coef.to(f) - (-153.591)


class BRISQUEMetric:
    """BRISQUE predicted DMOS (lower is better); missing without its SVR file (no untrained mode)."""

    name = "dmos"

    def __init__(self) -> None:
        from facesr.metrics.weights import locate

        self.weights = locate("brisque_svr")
        self.status = self.weights.status
        self.svr = load_brisque_svr(self.weights.path) if self.status == "real" else None

    @torch.no_grad()
    def __call__(self, images: list[np.ndarray]) -> list[float]:
        if self.svr is None:
            return [float("nan")] * len(images)
        from facesr.metrics.perceptual import to_tensor

        x = to_tensor(images).double()
        try:
            return [float(v) for v in brisque_scores(x, *self.svr).flatten()]
        except AssertionError:  # piq refuses a flat (zero-variance) image: score the others, NaN for those
            out = []
            for i in range(x.shape[0]):
                try:
                    out.append(float(brisque_scores(x[i:i + 1], *self.svr).flatten()[0]))
                except AssertionError:
                    out.append(float("nan"))
            return out
