"""Upscale images of any size with a trained generator: tiled inference with overlap, batches of tiles, no seams.

The one inference forward pass of facesr (``forward``, ``to_uint8``: upscale, evaluate, quality, bench, the pyfunc
model). The model is a training output folder (``OUT/`` holding ``model/``), a model folder (``model.json`` +
``generator.safetensors``) or a ``.safetensors`` file; an MLflow model URI (``models:/facesr@champion``,
``models:/facesr/3``, ``runs:/<run_id>/model``) is downloaded by the caller (``facesr upscale``: the registry)
before ``load_model``: this module does not import the registry. Weights are always read with safetensors through
``facesr.models.io.load_generator``: nothing is unpickled.

Tiling: the LR image is cut into ``tile x tile`` cores; each core is run inside a window that extends it by
``overlap`` LR pixels on every side (shifted inwards at the image border, so every window of an image has the same
shape and windows are batched), and only the core's part of the output is kept. When the generator's receptive field
radius (in LR pixels) is at most ``overlap``, the tiled result equals the untiled one up to float rounding: no seams.
The default RRDBNet (23 blocks) has a receptive field larger than ``overlap=32``: the results are then close to, not
identical with, the untiled ones; raise ``overlap`` or use ``tile=0`` if seams show.
"""

from __future__ import annotations

import glob
import logging
import os
import struct
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image

from facesr.data.images import decode
from facesr.device import resolve_device
from facesr.errors import FacesrError, InputError, UserError
from facesr.fsutil import atomic_file, check_output_folder, write_output_marker
from facesr.models import io as model_io

log = logging.getLogger(__name__)

UPSCALE_MARKER, UPSCALE_FORMAT = ".facesr-upscale.json", "facesr.upscale/1"  # marks --out as upscale's own folder

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
FORMATS = {"png": ("PNG", ".png"), "jpg": ("JPEG", ".jpg"), "jpeg": ("JPEG", ".jpg"), "webp": ("WEBP", ".webp")}
#: refuse outputs above this many pixels unless params say otherwise (params upscale.max_output_pixels)
DEFAULT_MAX_OUTPUT_PIXELS = 268_435_456
#: zlib level of the streamed PNG rows (filter Up); see docs/upscale.md for the speed / size trade-off
PNG_LEVEL = 3
MLFLOW_PREFIXES = ("models:/", "runs:/", "mlflow-artifacts:/", "s3://")


# --------------------------------------------------------------------------------------------------------------------
# model loading


@dataclass
class LoadedModel:
    model: torch.nn.Module
    meta: dict[str, Any]
    scale: int
    source: str
    device: torch.device


def is_mlflow_uri(spec: str) -> bool:
    """Whether ``--model`` names an MLflow model (resolved to a local folder by the caller: ``facesr upscale`` asks
    ``facesr.registry.download_model``; this module never talks to the registry)."""
    return str(spec).startswith(MLFLOW_PREFIXES)


def load_model(spec: str | os.PathLike[str], params: Any | None = None, device: str | torch.device = "auto",
               *, source: str | None = None) -> LoadedModel:
    """Load a generator from a local model: a training output folder, a model folder or a ``.safetensors`` file
    (``facesr.models.io.model_location``), onto ``device`` (``auto|cpu|cuda|cuda:N``, ``facesr.device``; a
    ``torch.device`` is used as is). ``source`` is what the report names (the MLflow URI it came from, say)."""
    spec_s = str(spec)
    if is_mlflow_uri(spec_s):
        raise UserError(f"--model {spec_s}: an MLflow model URI; download it first (facesr.registry.download_model, "
                        "as `facesr upscale` does) and load the local folder")
    dev = device if isinstance(device, torch.device) else resolve_device(device, "--device")
    model, meta = model_io.load_generator(model_io.model_location(spec_s, "--model "), device=dev)
    # channels_last: the tiles then run channels_last too (iter_tiles), 1.4-2.6x faster on CPU (docs/upscale.md)
    model = model.to(dev, memory_format=torch.channels_last).eval()
    default_scale = getattr(getattr(params, "data", None), "scale", 4)
    scale = int((meta or {}).get("scale") or getattr(model, "scale", None) or default_scale)
    return LoadedModel(model=model, meta=dict(meta or {}), scale=scale, source=source or spec_s, device=dev)


# --------------------------------------------------------------------------------------------------------------------
# tiled inference


def tile_windows(size: int, tile: int, overlap: int) -> list[tuple[int, int, int]]:
    """For one axis: ``(core_start, core_end, window_start)``; every window has length ``min(size, tile+2*overlap)``."""
    win = min(size, tile + 2 * overlap)
    out = []
    for c0 in range(0, size, tile):
        c1 = min(c0 + tile, size)
        w0 = min(max(c0 - overlap, 0), size - win)
        out.append((c0, c1, w0))
    return out


def _plan(h: int, w: int, tile: int, overlap: int) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]],
                                                             int, int]:
    """Tile rows, tile columns and the window shape of an ``h x w`` LR image (``tile=0`` or a small image: one)."""
    if tile <= 0 or (h <= tile and w <= tile):
        return [(0, h, 0)], [(0, w, 0)], h, w
    if overlap < 0:
        raise UserError(f"--overlap {overlap}: must be >= 0")
    return (tile_windows(h, tile, overlap), tile_windows(w, tile, overlap),
            min(h, tile + 2 * overlap), min(w, tile + 2 * overlap))


def forward(model: torch.nn.Module, batch: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    """The one inference forward pass of a generator (upscale, evaluate, bench): ``[N, 3, h, w]`` float in [0, 1] ->
    ``[N, 3, h*s, w*s]`` float clamped to [0, 1]; bfloat16 autocast with ``bf16`` on CUDA."""
    if bf16 and batch.device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = model(batch)
    else:
        y = model(batch)
    return y.float().clamp_(0.0, 1.0)


def to_uint8(y: torch.Tensor) -> torch.Tensor:
    """Float in [0, 1] -> 8 bits as the images are saved: ``floor(y * 255 + 0.5)`` (the same on CPU and CUDA)."""
    return y.mul(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8)


@torch.inference_mode()
def upscale_images(model: torch.nn.Module, lrs: list[np.ndarray], device: torch.device | str = "cpu",
                   batch_size: int = 4) -> list[np.ndarray]:
    """Whole small images (uint8 ``[h, w, 3]``) -> their SR outputs (uint8 ``[h*s, w*s, 3]``), what evaluate and
    quality score: ``to_uint8(forward(...))``, i.e. clamped to [0, 1] and rounded ``floor(255 y + 0.5)``, as
    ``facesr upscale`` writes them. Up to ``batch_size`` consecutive images of one size share a forward pass."""
    dev = torch.device(device)
    out: list[np.ndarray] = []
    i = 0
    while i < len(lrs):
        j = i + 1
        while j < len(lrs) and j - i < batch_size and lrs[j].shape == lrs[i].shape:
            j += 1
        x = torch.from_numpy(np.stack(lrs[i:j])).to(dev).permute(0, 3, 1, 2).float().div_(255.0)
        out.extend(to_uint8(forward(model, x)).permute(0, 2, 3, 1).cpu().numpy())
        i = j
    return out


Window = tuple[tuple[int, int, int], tuple[int, int, int]]


def memory_format(model: torch.nn.Module) -> torch.memory_format:
    """``channels_last`` when the model's first 4-D weight is (``load_model`` makes it so), else contiguous: the
    tiles are laid out to match."""
    for p in model.parameters():
        if p.ndim == 4:
            return torch.channels_last if p.is_contiguous(memory_format=torch.channels_last) and not \
                p.is_contiguous() else torch.contiguous_format
    return torch.contiguous_format


def iter_tiles(
    model: torch.nn.Module,
    window: Callable[[int, int, int, int], torch.Tensor],
    h: int,
    w: int,
    scale: int,
    tile: int = 128,
    overlap: int = 32,
    batch_size: int = 4,
    bf16: bool = False,
    progress: bool = False,
    desc: str = "",
) -> Iterator[tuple[Window, torch.Tensor]]:
    """Run the tiles of an ``h x w`` LR image in raster order, ``batch_size`` windows per forward pass.

    ``window(y0, x0, wh, ww)`` returns that LR window as ``[3, wh, ww]`` float on the model's device. Yields
    ``((row, col), core)`` per tile, ``row``/``col`` as in ``tile_windows``, ``core`` the tile's own part of the
    output (``[3, (cy1-cy0)*scale, (cx1-cx0)*scale]`` float); a row of tiles is complete when ``col`` is the last.
    """
    ys, xs, wh, ww = _plan(h, w, tile, overlap)
    jobs = [(yy, xx) for yy in ys for xx in xs]
    fmt = memory_format(model)
    step = max(1, batch_size)
    bar = _tqdm(total=len(jobs), desc=desc or "tiles", unit="tile", disable=not progress)
    try:
        for i in range(0, len(jobs), step):
            chunk = jobs[i:i + step]
            batch = torch.stack([window(y[2], xx[2], wh, ww) for y, xx in chunk]).contiguous(memory_format=fmt)
            res = forward(model, batch, bf16)
            del batch
            for (y, xx), r in zip(chunk, res):
                (cy0, cy1, wy0), (cx0, cx1, wx0) = y, xx
                yield (y, xx), r[:, (cy0 - wy0) * scale:(cy1 - wy0) * scale, (cx0 - wx0) * scale:(cx1 - wx0) * scale]
            del res
            bar.update(len(chunk))
    finally:
        bar.close()


@torch.inference_mode()
def upscale_tensor(
    model: torch.nn.Module,
    x: torch.Tensor,
    scale: int,
    tile: int = 128,
    overlap: int = 32,
    batch_size: int = 4,
    bf16: bool = False,
    progress: bool = False,
    desc: str = "",
) -> torch.Tensor:
    """Upscale ``x`` ([3, h, w] float in [0, 1]) tile by tile; returns [3, h*scale, w*scale] float on x's device.

    ``tile=0`` runs the whole image at once. The whole output is held in float (12 bytes per output pixel): for large
    images use ``upscale_bands`` (uint8 rows, one row of tiles at a time), as ``facesr upscale`` does.
    """
    if x.ndim != 3:
        raise ValueError(f"expected [C, H, W], got {tuple(x.shape)}")
    c, h, w = x.shape
    out = torch.empty((c, h * scale, w * scale), dtype=torch.float32, device=x.device)
    for ((cy0, cy1, _), (cx0, cx1, _)), core in iter_tiles(
            model, lambda y0, x0, hh, ww: x[:, y0:y0 + hh, x0:x0 + ww], h, w, scale, tile, overlap, batch_size,
            bf16, progress, desc):
        out[:, cy0 * scale:cy1 * scale, cx0 * scale:cx1 * scale] = core
    return out


@torch.inference_mode()
def upscale_bands(
    model: torch.nn.Module,
    rgb: np.ndarray,
    scale: int,
    device: torch.device | str = "cpu",
    tile: int = 128,
    overlap: int = 32,
    batch_size: int = 4,
    bf16: bool = False,
    progress: bool = False,
    desc: str = "",
) -> Iterator[tuple[int, np.ndarray]]:
    """Upscale an 8-bit RGB image (``[h, w, 3]`` uint8) one row of tiles (a band) at a time, in bounded memory.

    Yields ``(y0, band)``: output rows ``y0 .. y0 + len(band)`` as ``[rows, w*scale, 3]`` uint8, top to bottom. Only
    the input (uint8), one band of output (uint8) and one batch of tiles (float, on ``device``) are held; the pixels
    are those of ``to_uint8(upscale_tensor(...))`` with the same tiles.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 [H, W, 3], got {rgb.dtype} {tuple(rgb.shape)}")
    dev = torch.device(device)
    h, w = rgb.shape[:2]
    src = torch.from_numpy(rgb)

    def window(y0: int, x0: int, hh: int, ww: int) -> torch.Tensor:
        return src[y0:y0 + hh, x0:x0 + ww].to(dev).permute(2, 0, 1).float().div_(255.0)

    _, xs, _, _ = _plan(h, w, tile, overlap)
    last_col = xs[-1]
    band: np.ndarray | None = None
    for ((cy0, cy1, _), xx), core in iter_tiles(model, window, h, w, scale, tile, overlap, batch_size, bf16,
                                                 progress, desc):
        if band is None:
            band = np.empty(((cy1 - cy0) * scale, w * scale, 3), dtype=np.uint8)
        cx0, cx1, _ = xx
        band[:, cx0 * scale:cx1 * scale] = to_uint8(core).permute(1, 2, 0).cpu().numpy()
        if xx == last_col:
            yield cy0 * scale, band
            band = None


def _tqdm(total: int, desc: str = "", unit: str = "it", disable: bool = False) -> Any:
    from facesr.progress import progress

    return progress(total, desc=desc, unit=unit, disable=disable)


# --------------------------------------------------------------------------------------------------------------------
# images


@dataclass
class LoadedImage:
    rgb: np.ndarray                 # uint8 [H, W, 3]
    alpha: Image.Image | None       # mode "L", same size, or None
    gray: bool                      # the source had no colour: write grayscale back


def load_image(path: Path, max_pixels: int = 89_478_485, *, scale: int = 1,
               max_output_pixels: int | None = None) -> LoadedImage:
    """Decode an image with the one decoder of prepare (``facesr.data.images.decode``: EXIF orientation, ICC -> sRGB,
    16-bit scaling, every Pillow mode, ``max_pixels``; errors name the file), keeping its alpha channel apart.

    With ``max_output_pixels``, an image whose x``scale`` output would be larger is refused from its header.
    """
    def check_output(w: int, h: int) -> None:
        if max_output_pixels is not None and w * h * scale * scale > max_output_pixels:
            ow, oh = w * scale, h * scale
            raise InputError(f"{path}: the x{scale} output would be {ow}x{oh} = {ow * oh} pixels, above "
                             f"upscale.max_output_pixels ({max_output_pixels}); raise it (--set "
                             "upscale.max_output_pixels=N) or upscale a smaller image")

    img = decode(path, max_pixels, check_output)
    return LoadedImage(np.asarray(img.rgb, dtype=np.uint8).copy(), img.alpha, img.gray)


def expand_inputs(inputs: list[str]) -> tuple[list[tuple[Path, Path]], list[dict[str, str]]]:
    """Files, folders (recursive, image extensions) and globs -> ``[(file, relative output stem)]`` and errors."""
    found: list[tuple[Path, Path]] = []
    errors: list[dict[str, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_file():
            found.append((p, Path(p.stem)))
        elif p.is_dir():
            files = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTS)
            if not files:
                errors.append({"input": item, "error": f"{item}: folder holds no images ({', '.join(IMAGE_EXTS)})"})
            for q in files:
                found.append((q, q.relative_to(p).with_suffix("")))
        else:
            hits = sorted(Path(h) for h in glob.glob(item, recursive=True) if Path(h).is_file())
            if not hits:
                errors.append({"input": item, "error": f"{item}: no such file, folder or matching glob"})
            for q in hits:
                found.append((q, Path(q.stem)))
    # unique output names
    seen: dict[Path, int] = {}
    unique: list[tuple[Path, Path]] = []
    for src, rel in found:
        n = seen.get(rel, 0)
        seen[rel] = n + 1
        unique.append((src, rel if n == 0 else rel.with_name(f"{rel.name}-{n}")))
    return unique, errors


class PngRowWriter:
    """A PNG written band by band (8-bit L / LA / RGB / RGBA, filter Up on every row, one zlib stream), so an image
    of any height is encoded holding one band of rows; the pixels read back are exactly those written."""

    COLOR_TYPES = {"L": (0, 1), "LA": (4, 2), "RGB": (2, 3), "RGBA": (6, 4)}

    def __init__(self, f: BinaryIO, width: int, height: int, mode: str, level: int = PNG_LEVEL) -> None:
        color_type, self.channels = self.COLOR_TYPES[mode]
        self.f, self.width, self.rows_left = f, width, height
        self._z = zlib.compressobj(level)
        self._prev: np.ndarray | None = None
        f.write(b"\x89PNG\r\n\x1a\n")
        self._chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))

    def _chunk(self, kind: bytes, data: bytes) -> None:
        self.f.write(struct.pack(">I", len(data)) + kind)
        self.f.write(data)
        self.f.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind))))

    def write(self, rows: np.ndarray) -> None:
        """The next ``[n, width, channels]`` uint8 rows (or ``[n, width]`` for L)."""
        n = rows.shape[0]
        flat = np.ascontiguousarray(rows).reshape(n, -1)
        if flat.shape[1] != self.width * self.channels or n > self.rows_left:
            raise ValueError(f"PNG rows: got {tuple(rows.shape)}, expected [<={self.rows_left}, {self.width}, "
                             f"{self.channels}]")
        buf = np.empty((n, flat.shape[1] + 1), dtype=np.uint8)
        buf[:, 0] = 2  # filter type Up: each byte minus the byte above it (mod 256)
        np.subtract(flat[1:], flat[:-1], out=buf[1:, 1:])
        if self._prev is None:
            buf[0, 1:] = flat[0]
        else:
            np.subtract(flat[0], self._prev, out=buf[0, 1:])
        self._prev = flat[-1].copy()
        data = self._z.compress(buf)
        if data:
            self._chunk(b"IDAT", data)
        self.rows_left -= n

    def close(self) -> None:
        if self.rows_left:
            raise FacesrError(f"PNG: {self.rows_left} rows were never written")
        self._chunk(b"IDAT", self._z.flush())
        self._chunk(b"IEND", b"")


class _ImageSink:
    """Where the bands of one output go: a streamed PNG, or (JPEG / WebP, whose encoders need the whole image) one
    8-bit Pillow image filled band by band and encoded at the end."""

    def __init__(self, f: BinaryIO, fmt: str, size: tuple[int, int], mode: str, quality: int) -> None:
        self.f, self.fmt, self.quality = f, FORMATS[fmt][0], quality
        self.png = PngRowWriter(f, size[0], size[1], mode) if self.fmt == "PNG" else None
        self.image = None if self.png else Image.new(mode, size)

    def put(self, y0: int, px: np.ndarray) -> None:
        if self.png is not None:
            self.png.write(px)
        else:
            self.image.paste(Image.fromarray(px), (0, y0))

    def close(self) -> None:
        if self.png is not None:
            self.png.close()
        else:
            self.image.save(self.f, format=self.fmt, quality=self.quality)
            self.image = None


def _band_pixels(band: np.ndarray, gray: bool, alpha: np.ndarray | None, y0: int) -> np.ndarray:
    """An RGB band -> the output's channels: Pillow's RGB->L for grayscale sources, plus the alpha rows."""
    px = np.asarray(Image.fromarray(band).convert("L")) if gray else band
    if alpha is None:
        return px
    a = alpha[y0:y0 + band.shape[0]]
    return np.stack([px, a], axis=-1) if gray else np.concatenate([px, a[..., None]], axis=-1)


def write_upscaled(
    lm: LoadedModel,
    img: LoadedImage,
    target: Path,
    fmt: str = "png",
    quality: int = 95,
    *,
    tile: int = 128,
    overlap: int = 32,
    batch_size: int = 4,
    bf16: bool = False,
    progress: bool = False,
    desc: str = "",
) -> tuple[int, int, str]:
    """Upscale one image into ``target`` (atomically), one band of tile rows at a time: the model runs the next band
    while a writer thread converts and encodes the previous one. Returns (width, height, mode) of the output."""
    h, w = img.rgb.shape[:2]
    size = (w * lm.scale, h * lm.scale)
    keep_alpha = img.alpha is not None
    if keep_alpha and FORMATS[fmt][0] == "JPEG":
        log.warning("JPEG has no alpha channel: the alpha is dropped (use --format png or webp to keep it)")
        keep_alpha = False
    mode = ("L" if img.gray else "RGB") + ("A" if keep_alpha else "")
    alpha = np.asarray(img.alpha.resize(size, Image.Resampling.BICUBIC)) if keep_alpha else None
    with atomic_file(target) as f:
        sink = _ImageSink(f, fmt, size, mode, quality)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="facesr-encode") as pool:
            pending: deque[Future[None]] = deque()

            def put(y0: int, band: np.ndarray) -> None:
                sink.put(y0, _band_pixels(band, img.gray, alpha, y0))

            for y0, band in upscale_bands(lm.model, img.rgb, lm.scale, lm.device, tile, overlap, batch_size, bf16,
                                          progress, desc):
                pending.append(pool.submit(put, y0, band))
                while len(pending) > 1:  # at most one band waits while one is encoded: bounded memory
                    pending.popleft().result()
            while pending:
                pending.popleft().result()
        sink.close()
    return size[0], size[1], mode


# --------------------------------------------------------------------------------------------------------------------
# the step


@dataclass
class UpscaleReport:
    model: str
    device: str
    scale: int
    outputs: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "device": self.device, "scale": self.scale, "outputs": self.outputs,
                "failed": self.failed}


def upscale(
    params: Any,
    inputs: list[str],
    model: str | os.PathLike[str] | LoadedModel | Callable[[], LoadedModel],
    out: Path,
    *,
    tile: int = 128,
    overlap: int = 32,
    batch_size: int = 4,
    device: str = "auto",
    bf16: bool = False,
    fmt: str = "png",
    quality: int = 95,
    progress: bool = True,
) -> UpscaleReport:
    """Upscale every input image into ``out``; a bad input is reported in ``report.failed``, the others still run.

    ``model``: a local model (``load_model``), a ``LoadedModel``, or a function returning one, called once the options,
    inputs and ``out`` have been checked (so a bad input is reported before a model is downloaded).
    """
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: allowed: png, jpg, webp")
    if not 1 <= quality <= 100:
        raise UserError(f"--quality {quality}: allowed 1..100")
    if tile < 0 or overlap < 0 or batch_size < 1:
        raise UserError("--tile and --overlap must be >= 0 and --batch-size >= 1")
    if not inputs:
        raise UserError("upscale: give at least one INPUT (file, folder or glob)")
    files, errors = expand_inputs([str(i) for i in inputs])
    out = Path(out)
    out_abs = out.resolve()
    files = [(f, r) for f, r in files if not f.resolve().is_relative_to(out_abs)]  # never re-upscale our outputs
    if not files:  # before anything is created
        raise InputError("upscale: no input image found (" + "; ".join(e["error"] for e in errors) + f"); nothing "
                         f"was written to {out}")
    # --out: absent, empty or made by upscale (docs/data.md); never an input or a folder holding one
    check_output_folder(out, markers={UPSCALE_MARKER: {UPSCALE_FORMAT}}, inputs=[f for f, _ in files],
                        inside_inputs_ok=True, replaces=False, kind="folder made by `facesr upscale`")
    if callable(model):  # a loader run only now, after the inputs and --out were checked (the CLI's MLflow download)
        model = model()
    lm = model if isinstance(model, LoadedModel) else load_model(model, params, device)
    if bf16 and lm.device.type != "cuda":
        log.warning("--bf16 only applies on CUDA; running in float32 on %s", lm.device)
    report = UpscaleReport(model=lm.source, device=str(lm.device), scale=lm.scale, failed=list(errors))
    max_pixels = getattr(getattr(params, "data", None), "max_image_pixels", 89_478_485)
    write_output_marker(out, UPSCALE_MARKER, UPSCALE_FORMAT)
    _, ext = FORMATS[fmt]
    limit = int(getattr(getattr(params, "upscale", None), "max_output_pixels", DEFAULT_MAX_OUTPUT_PIXELS))
    for src, rel in files:
        try:
            img = load_image(src, max_pixels, scale=lm.scale, max_output_pixels=limit)
            target = out / rel.parent / (rel.name + ext)
            try:
                width, height, mode = write_upscaled(lm, img, target, fmt, quality, tile=tile, overlap=overlap,
                                                     batch_size=batch_size, bf16=bf16, progress=progress,
                                                     desc=src.name)
            except torch.OutOfMemoryError:
                raise FacesrError(f"{src}: out of memory; use a smaller --tile or --batch-size") from None
            report.outputs.append({"input": str(src), "output": str(target), "width": width, "height": height,
                                   "mode": mode})
        except (UserError, FacesrError) as exc:
            log.error("%s", exc)
            report.failed.append({"input": str(src), "error": str(exc)})
    return report


__all__ = [
    "LoadedModel", "LoadedImage", "UpscaleReport", "load_model", "is_mlflow_uri", "upscale", "upscale_tensor",
    "upscale_bands", "upscale_images", "forward", "to_uint8", "iter_tiles", "write_upscaled", "PngRowWriter",
    "tile_windows", "load_image", "expand_inputs", "DEFAULT_MAX_OUTPUT_PIXELS",
]
