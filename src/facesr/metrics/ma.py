"""Ma et al.'s no-reference SR quality score (NRQM) and the PIRM 2018 perceptual index PI.

Ma, Yang, Yang, Yang, "Learning a no-reference quality metric for single-image super-resolution", CVIU 2017
(MATLAB: github.com/chaoma99/sr-metric). The reference behaviour matched here is pyiqa 0.1.16's port
(``pyiqa/archs/nrqm_arch.py``); this is our own implementation of the same algorithm (numpy/scipy; the MATLAB-style
bicubic resize is piq's ``imresize``, the same code pyiqa uses). On a grey image ``y`` in 0..255:

- **f1, local frequency (18)**: a 3-level Gaussian pyramid of ``y / 255`` (3x3 Gaussian, sigma 0.5, zero padding,
  keep every second pixel from the second one); on each level, 7x7 blocks with stride 3 (zero-padded "same" as
  TensorFlow) and their orthonormal 2-D DCT-II. Per block, over the 48 AC coefficients: the generalised-Gaussian
  shape (moment matching on a 0.001 grid of shapes 0.03..10), the coefficient of variation of their magnitudes, and
  the variance over three orientation groups of the magnitudes' coefficient of variation. Pooled over blocks as the
  mean of the lowest 10% + 1 (shape) or of the highest 10% (the other two) and the mean of all: 6 per level.
- **f2, global GSM (45)**: a complex steerable pyramid (2 levels, 6 orientations; Portilla-Simoncelli raised-cosine
  masks in the Fourier domain) of ``y``; each oriented band (real part) divisively normalised by its Gaussian-scale-
  mixture neighbourhood (3x3 spatial window, the parent band resized up, the other orientations at that scale;
  covariance without mean removal, negative eigenvalues clipped with the trace kept), guard band 16 / 8 px removed.
  Features: GGD shape of each of the 12 normalised bands, of each orientation's two scales pooled (6), SSIM's
  contrast-structure term (11x11 Gaussian, sigma 1.5, range 255, negative values clipped) between each
  un-normalised band resized to full size and the high-pass residual (12), and between the 6 normalised orientations
  of the first scale pairwise (15).
- **f3, spatial (75)**: the 25 singular values of the matrix of distinct 5x5 blocks (zero-padded to a multiple of 5)
  of each pyramid level.
- **Regression**: one regression forest per group (randomForest-matlab trees: at node ``k`` go to
  ``lDau[k]`` if ``x[mbest[k]] <= upper[k]`` else ``rDau[k]``; a child index 0 ends the walk and the node's
  ``avnode`` is the tree's prediction; forest = mean over trees; the forests' bias-correction ``coef`` is not applied,
  as in pyiqa), then ``Ma = [1, rf1, rf2, rf3] @ linear``: about 0..10, higher is better.

The forests and ``linear`` come from the published ``NRQM_model.mat`` (weights name ``ma_nrqm``; read with
``scipy.io.loadmat(path)['model']``, fields ``linear`` (4x1) and ``rf`` (1x3 cell of forest structs whose fields are
read by position, as pyiqa does: lDau, rDau, nodestatus, nrnodes, upper, avnode, mbest, ...). There is no untrained
mode: without that file Ma and PI are reported missing.

Luma and crop (``ma``, ``ma_features``): we use PIRM 2018's convention for PI -- Y of YCbCr (ITU-R BT.601, as
MATLAB ``rgb2ycbcr``, :func:`facesr.metrics.fidelity.rgb_to_y`), rounded to integers, border crop = the SR scale --
i.e. what pyiqa's ``PI`` metric passes to its NRQM (``color_space='ycbcr'``, ``crop_border=4``) and the same luma and
crop as our NIQE, so PI = ((10 - Ma) + NIQE) / 2 combines two scores of the same pixels. (pyiqa's stand-alone
``nrqm`` defaults to the YIQ luma and no crop; the MATLAB code of the paper uses ``rgb2ycbcr`` too.)

Agreement with pyiqa 0.1.16 (``tests/metrics/test_ma.py`` against ``tests/metrics/data/ma_golden.json``, made by
``tests/metrics/make_ma_golden.py`` on bundled faces: whole, blurred, an odd-sized crop; synthetic forests): features
within 4e-8 absolute / 2e-8 relative, forest outputs and scores within 5e-10; the test allows 1e-6. The residue comes
from the order of floating-point operations: the DCT as a matrix product (pyiqa: FFT), the GSM quadratic form with the
inverse covariance (pyiqa: a solve), the 11x11 SSIM window as two 1-D passes (pyiqa: the float32-rounded 2-D kernel,
separable to ~1e-8). pyiqa rounds its 3x3 Gaussian kernel and its Fourier masks to float32; we do the same. The
bicubic resizes are piq's ``imresize``, the same code as pyiqa's, which computes in float32.

Size: at least ``MA_MIN_SIDE`` (100) px per side after the crop (the third pyramid level must hold 25 blocks of 5x5).
The evaluate step scores Ma only where NIQE is defined (>= 192 px per side after the crop), so that PI combines the two
on the same images.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import correlate, correlate1d
from scipy.special import factorial

from facesr.errors import InputError
from facesr.metrics.fidelity import rgb_to_y

N_FEATURES = (18, 45, 75)  # f1 (DCT), f2 (GSM), f3 (SVD)
MA_MIN_SIDE = 100  # the third pyramid level (1/4 size) must hold >= 25 distinct 5x5 blocks for 25 singular values

MA_NEEDS = (
    "Ma et al.'s regression forests, the file NRQM_model.mat (weights name ma_nrqm), are not in the weights cache: "
    "fetch them with `facesr weights fetch ma_nrqm` (online) or put a copy in a folder and run "
    "`facesr weights import DIR`"
)
MA_MISSING_REASON = f"{MA_NEEDS}. Without them Ma and PI = ((10 - Ma) + NIQE) / 2 are reported as missing"

# ----------------------------------------------------------------------------------------- GGD shape by moments

# the grid of shapes and its ratio table r(g) = G(1/g) G(3/g) / G(2/g)^2, built as pyiqa does (float32 arange)
_SHAPES = torch.arange(0.03, 10 + 0.001, 0.001).double()
_RATIO = torch.exp(torch.lgamma(1.0 / _SHAPES) + torch.lgamma(3.0 / _SHAPES) - 2 * torch.lgamma(2.0 / _SHAPES))
_SHAPES, _RATIO = _SHAPES.numpy(), _RATIO.numpy()
# r(g) decreases strictly: the nearest entry is found by bisection instead of a [n, 9971] argmin
assert np.all(np.diff(_RATIO) < 0)
_RATIO_UP = _RATIO[::-1].copy()


def ggd_shape(x: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Generalised-Gaussian shape of each row of ``x`` (last axis = samples) by moment matching.

    ``rho = var(x) / (mean|x - mean|^2 + eps)`` (unbiased variance) matched to the nearest ``r(g)`` on the grid
    0.03, 0.031, ..., 10; ties go to the smaller shape (argmin's first index). NaN -> the first shape, as argmin does.
    """
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, ddof=1)
    rho = var / (np.abs(x - mean).mean(axis=-1) ** 2 + eps)
    n = _RATIO_UP.size
    pos = np.clip(np.searchsorted(_RATIO_UP, rho), 1, n - 1)
    lo, hi = _RATIO_UP[pos - 1], _RATIO_UP[pos]
    up_idx = np.where(np.abs(rho - hi) <= np.abs(rho - lo), pos, pos - 1)
    idx = n - 1 - up_idx
    idx = np.where(np.isnan(rho), 0, idx)
    return _SHAPES[idx]


def _coef_var_abs(x: np.ndarray, eps: float) -> np.ndarray:
    """std(|x|) / (mean(|x|) + eps) over the last axis (unbiased std)."""
    a = np.abs(x)
    return a.std(axis=-1, ddof=1) / (a.mean(axis=-1) + eps)


# ------------------------------------------------------------------------------------------- f1: block DCT

def _fspecial32(size: int, sigma: float) -> np.ndarray:
    """MATLAB fspecial('gaussian') rounded to float32 (as pyiqa's kernels are)."""
    ax = np.arange(size) - (size - 1) / 2
    g = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * sigma * sigma))
    g[g < np.finfo(g.dtype).eps * g.max()] = 0
    return (g / g.sum()).astype(np.float32).astype(np.float64)


def gauss_pyramid(img: np.ndarray, levels: int = 2) -> list[np.ndarray]:
    """[img, down1, down2]: 3x3 Gaussian (sigma 0.5, zero padding) then every second pixel from index 1."""
    k = _fspecial32(3, 0.5)
    pyr = [img]
    for _ in range(levels):
        img = correlate(img, k, mode="constant", cval=0.0)[1::2, 1::2]
        pyr.append(img)
    return pyr


@functools.lru_cache(maxsize=4)
def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: X = D @ x."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


def _same_pad(img: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """Zero padding so that ceil(size / stride) windows fit ("same", extra pixel at the end, as TensorFlow)."""
    pads = []
    for size in img.shape:
        total = (math.ceil(size / stride) - 1) * stride + kernel - size
        pads.append((total // 2, total - total // 2))
    return np.pad(img, pads)


def _blocks(img: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """[n_blocks, kernel, kernel] windows, row-major, of an already padded image."""
    win = np.lib.stride_tricks.sliding_window_view(img, (kernel, kernel))[::stride, ::stride]
    return win.reshape(-1, kernel, kernel)


# the three orientation groups of a 7x7 DCT block, as flat indices (row * 7 + column): near-horizontal
# frequencies (row 0 cols 1-6, row 1 cols 2-6, row 2 cols 4-6, row 3 cols 5-6), the diagonal band, and the transpose
# of the first (near-vertical)
_HORIZ = [(0, range(1, 7)), (1, range(2, 7)), (2, range(4, 7)), (3, range(5, 7))]
_DIAG = [(1, [1]), (2, range(2, 4)), (3, range(2, 5)), (4, range(3, 7)), (5, range(4, 7)), (6, range(4, 7))]
_ORIENT_IDX = [np.array([r * 7 + c for r, cols in _HORIZ for c in cols]),
               np.array([r * 7 + c for r, cols in _DIAG for c in cols]),
               np.array([r * 7 + c for c, rows in _HORIZ for r in rows])]


def block_dct_features(img: np.ndarray) -> np.ndarray:
    """The 6 DCT features of one pyramid level (values in 0..1)."""
    blocks = _blocks(_same_pad(img, 7, 3), 7, 3)
    d = _dct_matrix(7)
    coefs = np.einsum("ij,bjk,lk->bil", d, blocks, d).reshape(len(blocks), 49)
    ac = coefs[:, 1:]
    n = len(blocks)
    shape = np.sort(ggd_shape(ac))
    cv = np.sort(_coef_var_abs(ac, 1e-7))
    ori = np.stack([_coef_var_abs(coefs[:, idx], 1e-8) for idx in _ORIENT_IDX], axis=-1)
    ori = np.sort(ori.var(axis=-1, ddof=1))
    lo = math.ceil(0.1 * n) + 1
    hi = math.floor(0.9 * n)
    return np.array([shape[:lo].mean(), shape.mean(), cv[hi:].mean(), cv.mean(), ori[hi:].mean(), ori.mean()])


# ---------------------------------------------------------------------------------- f3: singular values

def svd_features(img: np.ndarray, k: int = 5) -> np.ndarray:
    """Singular values (descending) of the [n_blocks, k*k] matrix of distinct kxk blocks (zero-padded at the end)."""
    h, w = img.shape
    padded = np.pad(img, ((0, -h % k), (0, -w % k)))
    blocks = _blocks(padded, k, k).reshape(-1, k * k)
    return np.linalg.svd(blocks, compute_uv=False)


# ------------------------------------------------------------------------ f2: steerable pyramid + GSM

def _rcos(width: float = 1.0, position: float = -0.5) -> tuple[np.ndarray, np.ndarray]:
    """matlabPyrTools rcosFn: a raised-cosine transition, as sampled points (x, y)."""
    n = 256
    x = np.pi * np.arange(-n - 1, 2) / 2 / n
    y = np.cos(x) ** 2
    y[0] = y[1]
    y[n + 2] = y[n + 1]
    return position + 2 * width / np.pi * (x + np.pi / 4), y


def _f32(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32).astype(np.float64)


@functools.lru_cache(maxsize=8)
def _scf_masks(h: int, w: int, height: int = 2, nbands: int = 6) -> dict:
    """Fourier-domain masks of the complex steerable pyramid for an h x w image (float32-rounded like pyiqa's)."""
    xs = np.linspace(-(h // 2) / (h / 2), (h // 2) / (h / 2) - (1 - h % 2) * 2 / h, num=h)
    ys = np.linspace(-(w // 2) / (w / 2), (w // 2) / (w / 2) - (1 - w % 2) * 2 / w, num=w)
    xv, yv = np.meshgrid(ys, xs)
    angle = np.arctan2(yv, xv)
    rad = np.sqrt(xv**2 + yv**2)
    rad[h // 2, w // 2] = rad[h // 2, w // 2 - 1]
    log_rad = np.log2(rad)

    xr, yr = _rcos(1, -0.5)
    yr = np.sqrt(yr)
    yir = np.sqrt(1 - yr**2)
    masks: dict = {"lo0": _f32(np.interp(log_rad, xr, yir)), "hi0": _f32(np.interp(log_rad, xr, yr)), "levels": []}

    lut = 1024
    xcosn = np.pi * np.arange(-(2 * lut + 1), lut + 2) / lut
    alpha = (xcosn + np.pi) % (2 * np.pi) - np.pi
    order = nbands - 1
    const = 2 ** (2 * order) * factorial(order) ** 2 / (nbands * factorial(2 * order))
    ycosn = 2 * np.sqrt(const) * np.cos(xcosn) ** order * (np.abs(alpha) < np.pi / 2)

    dims = np.array([h, w])
    for _ in range(height):
        xr = xr - 1.0
        himask = _f32(np.interp(log_rad, xr, yr))
        bands = [_f32(np.interp(angle, xcosn + np.pi * b / nbands, ycosn)) * himask for b in range(nbands)]
        start = (np.ceil((dims + 0.5) / 2) - np.ceil((np.ceil((dims - 0.5) / 2) + 0.5) / 2)).astype(int)
        end = (start + np.ceil((dims - 0.5) / 2)).astype(int)
        crop = (slice(start[0], end[0]), slice(start[1], end[1]))
        log_rad, angle = log_rad[crop], angle[crop]
        lomask = _f32(np.interp(log_rad, xr, np.abs(np.sqrt(1 - yr**2))))
        masks["levels"].append({"bands": bands, "crop": crop, "lo": lomask})
        dims = np.array(log_rad.shape)
    return masks


def steerable_pyramid(img: np.ndarray, height: int = 2, nbands: int = 6) -> tuple[np.ndarray, list[list[np.ndarray]]]:
    """(high-pass residual, [level][band] complex oriented bands) of a complex steerable pyramid."""
    h, w = img.shape
    if height > int(np.floor(np.log2(min(h, w)))) - 2:
        raise ValueError(f"steerable pyramid: {h}x{w} is too small for {height} levels")
    m = _scf_masks(h, w, height, nbands)
    dft = np.fft.fftshift(np.fft.fft2(img))
    hi0 = np.fft.ifft2(np.fft.ifftshift(dft * m["hi0"])).real
    lodft = dft * m["lo0"]
    factor = (-1j) ** (nbands - 1)
    levels = []
    for lev in m["levels"]:
        levels.append([np.fft.ifft2(np.fft.ifftshift(lodft * bm * factor)) for bm in lev["bands"]])
        lodft = lodft[lev["crop"]] * lev["lo"]
    return hi0, levels


def _resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """MATLAB imresize (bicubic) to ``size`` via piq's port (computes in float32, as pyiqa's identical code does)."""
    from piq.functional import imresize

    return imresize(torch.from_numpy(np.ascontiguousarray(x))[None, None], sizes=size).squeeze(0).squeeze(0).numpy()


def gsm_normalise(bands: list[np.ndarray], nbands: int = 6, guard: int = 16) -> list[np.ndarray]:
    """Divisive normalisation of each real band by its GSM neighbourhood; guard band removed; zero mean."""
    out = []
    nscales = len(bands) // nbands
    for s in range(nscales):
        for b in range(nbands):
            band = bands[s * nbands + b]
            h, w = band.shape
            win = np.lib.stride_tricks.sliding_window_view(band, (3, 3)).reshape(-1, 9)
            cols = [win]
            n_var = 9
            if s + 1 < nscales:
                parent = _resize(bands[(s + 1) * nbands + b], (h, w))
                cols.append(parent[1:-1, 1:-1].reshape(-1, 1))
                n_var += 1
            cols += [bands[s * nbands + o][1:-1, 1:-1].reshape(-1, 1) for o in range(nbands) if o != b]
            nb = np.concatenate(cols, axis=1)
            cov = nb.T @ nb / nb.shape[0]
            lam, q = np.linalg.eigh(cov)
            pos = lam * (lam > 0)
            psum = pos.sum()
            lam = pos * lam.sum() / (psum + (psum == 0))
            cov = (q * lam) @ q.T
            z2 = np.einsum("ij,ij->i", nb @ np.linalg.inv(cov), nb) / n_var  # x^T C^-1 x / N per pixel
            z = np.sqrt(z2)
            centre = band[1:-1, 1:-1].reshape(-1)
            centre = centre - centre.mean()
            mask = z != 0
            g = (centre * mask / (z * mask + 1e-12)).reshape(h - 2, w - 2)
            gb = int(guard / 2**s)
            g = g[gb:-gb, gb:-gb]
            out.append(g - g.mean())
    return out


_SSIM_1D = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
_SSIM_1D /= _SSIM_1D.sum()


def _gauss_valid(x: np.ndarray) -> np.ndarray:
    y = correlate1d(correlate1d(x, _SSIM_1D, axis=0, mode="constant"), _SSIM_1D, axis=1, mode="constant")
    return y[5:-5, 5:-5]


def ssim_cs(x: np.ndarray, y: np.ndarray, data_range: float = 255.0) -> float:
    """Mean of SSIM's contrast-structure map (11x11 Gaussian, sigma 1.5, valid region), negatives clipped to 0."""
    c2 = (0.03 * data_range) ** 2
    mx, my = _gauss_valid(x), _gauss_valid(y)
    sxx = _gauss_valid(x * x) - mx * mx
    syy = _gauss_valid(y * y) - my * my
    sxy = _gauss_valid(x * y) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    return float(np.maximum(cs, 0).mean())


def gsm_features(img: np.ndarray, nbands: int = 6) -> np.ndarray:
    """The 45 global GSM features of a grey image in 0..255."""
    hi0, levels = steerable_pyramid(img, 2, nbands)
    real = [b.real for lev in levels for b in lev]
    sub = gsm_normalise(real, nbands)
    feat = [float(ggd_shape(s.reshape(1, -1))[0]) for s in sub]
    for b in range(nbands):
        both = np.concatenate([sub[b].reshape(-1), sub[b + nbands].reshape(-1)])
        feat.append(float(ggd_shape(both[None])[0]))
    for band in real:
        feat.append(ssim_cs(_resize(band, hi0.shape), hi0))
    for i in range(nbands):
        for j in range(i + 1, nbands):
            feat.append(ssim_cs(sub[i], sub[j]))
    return np.asarray(feat)


# ------------------------------------------------------------------------------------------------ features

def ma_luma(img: np.ndarray, border: int = 0) -> np.ndarray:
    """Y of YCbCr (BT.601, MATLAB rgb2ycbcr), rounded, border cropped: the grey image Ma and NIQE see."""
    y = np.round(rgb_to_y(img))
    if border:
        y = y[border:-border, border:-border]
    return y


def ma_features_gray(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(f1 [18], f2 [45], f3 [75]) of a grey image in 0..255."""
    y = np.asarray(y, dtype=np.float64)
    if min(y.shape) < MA_MIN_SIDE:
        raise ValueError(f"Ma needs at least {MA_MIN_SIDE} px per side; the image is {y.shape[0]}x{y.shape[1]}")
    pyr = gauss_pyramid(y / 255.0)
    f1 = np.concatenate([block_dct_features(p) for p in pyr])
    f2 = gsm_features(y)
    f3 = np.concatenate([svd_features(p) for p in pyr])
    return f1, f2, f3


def ma_features(img: np.ndarray, border: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of a uint8 HWC RGB image on its rounded Y channel, border cropped."""
    return ma_features_gray(ma_luma(img, border))


# -------------------------------------------------------------------------------------------------- model

@dataclass(frozen=True)
class Forest:
    """One regression forest; arrays are [nodes, trees], indices 1-based as in the .mat (0 = none)."""

    ldau: np.ndarray
    rdau: np.ndarray
    upper: np.ndarray
    avnode: np.ndarray
    mbest: np.ndarray

    def predict(self, x: np.ndarray) -> float:
        """Mean over trees of the leaf value reached by ``x`` (all trees walked at once)."""
        x = np.asarray(x, dtype=np.float64)
        n_nodes, n_trees = self.ldau.shape
        trees = np.arange(n_trees)
        node = np.zeros(n_trees, dtype=np.int64)
        active = np.ones(n_trees, dtype=bool)
        for _ in range(n_nodes):
            if not active.any():
                break
            t, k = trees[active], node[active]
            left = x[self.mbest[k, t] - 1] <= self.upper[k, t]  # mbest 0 (a leaf) reads x[-1], as pyiqa does
            child = np.where(left, self.ldau[k, t], self.rdau[k, t])
            stop = child == 0
            node[t[~stop]] = child[~stop] - 1
            active[t[stop]] = False
        return float(self.avnode[node, trees].mean())


@dataclass(frozen=True)
class MaModel:
    linear: np.ndarray  # [4]
    forests: tuple[Forest, Forest, Forest]

    def score(self, f1: np.ndarray, f2: np.ndarray, f3: np.ndarray) -> float:
        preds = [forest.predict(f) for forest, f in zip(self.forests, (f1, f2, f3))]
        return float(np.array([1.0, *preds]) @ self.linear)


def _forest(path: Path, i: int, rec: object) -> Forest:
    try:
        fields = [np.asarray(rec[j]) for j in range(7)]  # type: ignore[index]
    except (IndexError, KeyError, TypeError, ValueError):
        raise InputError(f"{path}: model.rf{{{i + 1}}} is not a randomForest-matlab struct (lDau, rDau, nodestatus, "
                         "nrnodes, upper, avnode, mbest, ...)") from None
    ldau, rdau, _, _, upper, avnode, mbest = fields
    arrays = {"lDau": ldau, "rDau": rdau, "upper": upper, "avnode": avnode, "mbest": mbest}
    shape = ldau.shape
    for name, a in arrays.items():
        if a.ndim != 2 or a.shape != shape or a.size == 0 or not np.issubdtype(a.dtype, np.number):
            raise InputError(f"{path}: model.rf{{{i + 1}}}.{name} must be a numeric [nodes, trees] array like lDau "
                             f"{shape}, got {a.shape} {a.dtype}")
    n_nodes = shape[0]
    idx = {name: arrays[name].astype(np.int64) for name in ("lDau", "rDau", "mbest")}
    own = np.arange(1, n_nodes + 1)[:, None]
    for name in ("lDau", "rDau"):
        a = idx[name]
        if (a != arrays[name]).any() or (a < 0).any() or (a > n_nodes).any() or ((a != 0) & (a <= own)).any():
            raise InputError(f"{path}: model.rf{{{i + 1}}}.{name} must hold 1-based child indices after the node "
                             f"(0 = leaf), at most {n_nodes}")
    if (idx["mbest"] < 0).any() or (idx["mbest"] > N_FEATURES[i]).any():
        raise InputError(f"{path}: model.rf{{{i + 1}}}.mbest must index the {N_FEATURES[i]} features of group "
                         f"{i + 1} (1-based)")
    return Forest(idx["lDau"], idx["rDau"], upper.astype(np.float64), avnode.astype(np.float64), idx["mbest"])


def load_ma_model(path: str | Path) -> MaModel:
    """The forests and linear weights of a ``NRQM_model.mat`` (``InputError`` naming the file if it is not one)."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    path = Path(path)
    try:
        model = loadmat(path)["model"]
        linear = np.asarray(model["linear"][0, 0], dtype=np.float64).reshape(-1)
        rf = model["rf"][0, 0]
    except (KeyError, OSError, ValueError, IndexError, TypeError, MatReadError, NotImplementedError) as exc:
        raise InputError(f"{path}: not an NRQM model file (a struct 'model' with fields 'linear' and 'rf', as "
                         f"NRQM_model.mat): {type(exc).__name__}: {exc}") from None
    if linear.shape != (4,) or not np.isfinite(linear).all():
        raise InputError(f"{path}: model.linear must be 4 finite numbers, got shape {linear.shape}")
    if rf.dtype != object or rf.size != 3:
        raise InputError(f"{path}: model.rf must be a cell of 3 forests, got {rf.dtype} {rf.shape}")
    forests = []
    for i, cell in enumerate(rf.reshape(-1)):
        try:
            rec = cell[0, 0]
        except (IndexError, TypeError):
            rec = None
        forests.append(_forest(path, i, rec))
    return MaModel(linear, tuple(forests))  # type: ignore[arg-type]


def pi_score(ma_score: float, niqe_score: float) -> float:
    """PIRM 2018 perceptual index: ((10 - Ma) + NIQE) / 2 (lower is better); NaN if either is."""
    return 0.5 * ((10.0 - ma_score) + niqe_score)


class MaMetric:
    """Ma's score with the forests from the weights file ``ma_nrqm``; status missing without it."""

    name = "ma"

    def __init__(self) -> None:
        from facesr.metrics.weights import locate

        self.weights = locate("ma_nrqm")
        self.status = self.weights.status
        self.model = load_ma_model(self.weights.path) if self.status == "real" else None

    def __call__(self, img: np.ndarray, border: int = 0) -> float:
        """Ma of a uint8 RGB image (Y rounded, ``border`` cropped); NaN when missing or below MA_MIN_SIDE."""
        if self.model is None or min(img.shape[:2]) - 2 * border < MA_MIN_SIDE:
            return float("nan")
        return self.model.score(*ma_features(img, border))
