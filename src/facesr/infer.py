"""Upscale images of any size with a trained generator: tiled inference with overlap, batches of tiles, no seams.

The model is a training output folder (``OUT/`` holding ``model/``), a model folder (``model.json`` +
``generator.safetensors``), a ``.safetensors`` file, or an MLflow model URI (``models:/facesr@champion``,
``models:/facesr/3``, ``runs:/<run_id>/model``). Weights are always read with safetensors through
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
import io
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from facesr.errors import FacesrError, InputError, UserError
from facesr.fsutil import check_output_folder, write_output_marker
from facesr.fsutil import atomic_write_bytes

log = logging.getLogger(__name__)

UPSCALE_MARKER, UPSCALE_FORMAT = ".facesr-upscale.json", "facesr.upscale/1"  # marks --out as upscale's own folder

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
FORMATS = {"png": ("PNG", ".png"), "jpg": ("JPEG", ".jpg"), "jpeg": ("JPEG", ".jpg"), "webp": ("WEBP", ".webp")}


# --------------------------------------------------------------------------------------------------------------------
# model loading


@dataclass
class LoadedModel:
    model: torch.nn.Module
    meta: dict[str, Any]
    scale: int
    source: str
    device: torch.device


def resolve_device(device: str = "auto") -> torch.device:
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"--device {device!r}: allowed: auto, cpu, cuda, cuda:N")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine (use --device cpu or auto)")
    return torch.device(device)


def is_mlflow_uri(spec: str) -> bool:
    return spec.startswith(("models:/", "runs:/", "mlflow-artifacts:/", "s3://"))


def find_model_folder(root: Path) -> Path:
    """The folder holding ``model.json`` inside a training output, a model folder or a downloaded MLflow model."""
    root = Path(root)
    if (root / "model.json").is_file():
        return root
    if (root / "model" / "model.json").is_file():
        return root / "model"
    hits = sorted(p.parent for p in root.rglob("model.json"))
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise InputError(f"{root}: no model.json found (expected a training output folder, a model folder, "
                         "a .safetensors file or an MLflow models:/ URI)")
    raise InputError(f"{root}: several model.json files found ({', '.join(map(str, hits[:4]))}); point at one")


def _load_generator(path: Path, device: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    from facesr.models import io as model_io  # the nets engineer's loader (safetensors + model.json)

    return model_io.load_generator(path, device=device)


def download_mlflow_model(uri: str, params: Any | None = None, dst: str | os.PathLike[str] | None = None) -> Path:
    """Download an MLflow model's files (``models:/NAME@alias`` etc.) and return the facesr model folder inside."""
    from facesr import registry

    registry.configure_tracking(params)
    local = registry.download_model(uri, dst)
    return find_model_folder(local)


def load_model(spec: str | os.PathLike[str], params: Any | None = None, device: str = "auto") -> LoadedModel:
    """Load a generator from a folder, a .safetensors file or an MLflow URI."""
    spec_s = str(spec)
    dev = resolve_device(device)
    if is_mlflow_uri(spec_s):
        with tempfile.TemporaryDirectory(prefix="facesr-model-") as td:  # weights are read into memory, then removed
            model, meta = _load_generator(download_mlflow_model(spec_s, params, td), device=str(dev))
        return _loaded(model, meta, spec_s, dev, params)
    else:
        p = Path(spec_s)
        if not p.exists():
            raise InputError(f"--model {spec_s}: no such file or folder (expected a training output folder, a model "
                             "folder, a .safetensors file or an MLflow URI such as models:/facesr@champion)")
        if p.is_file():
            if p.suffix != ".safetensors":
                raise InputError(f"--model {spec_s}: a model file must be .safetensors (pickled .pt/.pth files are "
                                 "not loaded for safety)")
            path = p
        else:
            path = find_model_folder(p)
    model, meta = _load_generator(path, device=str(dev))
    return _loaded(model, meta, spec_s, dev, params)


def _loaded(model: torch.nn.Module, meta: dict[str, Any], spec_s: str, dev: torch.device, params: Any) -> LoadedModel:
    model = model.to(dev).eval()
    default_scale = getattr(getattr(params, "data", None), "scale", 4)
    scale = int((meta or {}).get("scale") or getattr(model, "scale", None) or default_scale)
    return LoadedModel(model=model, meta=dict(meta or {}), scale=scale, source=spec_s, device=dev)


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

    ``tile=0`` runs the whole image at once.
    """
    if x.ndim != 3:
        raise ValueError(f"expected [C, H, W], got {tuple(x.shape)}")
    c, h, w = x.shape
    if tile <= 0 or (h <= tile and w <= tile):
        return _run(model, x.unsqueeze(0), bf16)[0]
    if overlap < 0:
        raise UserError(f"--overlap {overlap}: must be >= 0")
    ys, xs = tile_windows(h, tile, overlap), tile_windows(w, tile, overlap)
    wh, ww = min(h, tile + 2 * overlap), min(w, tile + 2 * overlap)
    jobs = [(yy, xx) for yy in ys for xx in xs]
    out = torch.empty((c, h * scale, w * scale), dtype=torch.float32, device=x.device)
    bar = _tqdm(total=len(jobs), desc=desc or "tiles", unit="tile", disable=not progress)
    try:
        for i in range(0, len(jobs), max(1, batch_size)):
            chunk = jobs[i:i + max(1, batch_size)]
            batch = torch.stack([x[:, y[2]:y[2] + wh, xx[2]:xx[2] + ww] for y, xx in chunk])
            res = _run(model, batch, bf16)
            for (y, xx), r in zip(chunk, res):
                (cy0, cy1, wy0), (cx0, cx1, wx0) = y, xx
                out[:, cy0 * scale:cy1 * scale, cx0 * scale:cx1 * scale] = r[
                    :, (cy0 - wy0) * scale:(cy1 - wy0) * scale, (cx0 - wx0) * scale:(cx1 - wx0) * scale]
            bar.update(len(chunk))
    finally:
        bar.close()
    return out


def _run(model: torch.nn.Module, batch: torch.Tensor, bf16: bool) -> torch.Tensor:
    if bf16 and batch.device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = model(batch)
    else:
        y = model(batch)
    return y.float().clamp_(0.0, 1.0)


def _tqdm(**kw: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(**kw)


# --------------------------------------------------------------------------------------------------------------------
# images


@dataclass
class LoadedImage:
    rgb: np.ndarray                 # uint8 [H, W, 3]
    alpha: Image.Image | None       # mode "L", same size, or None
    gray: bool                      # the source had no colour: write grayscale back


def load_image(path: Path, max_pixels: int = 89_478_485) -> LoadedImage:
    """Open any Pillow image as 8-bit RGB (+ alpha); EXIF orientation applied; errors name the file."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise InputError(f"{path}: {w}x{h} = {w * h} pixels is above data.max_image_pixels ({max_pixels})")
            if w < 1 or h < 1:
                raise InputError(f"{path}: empty image ({w}x{h})")
            im.load()
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            alpha = None
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                arr = np.asarray(im, dtype=np.float64)
                peak = 65535.0 if arr.max() > 255 else 255.0
                im = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
                mode = "L"
            if mode == "F":
                arr = np.asarray(im, dtype=np.float64)
                im = Image.fromarray(np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8), "L")
                mode = "L"
            gray = mode in ("L", "LA", "1")
            if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
                alpha = im.getchannel("A")
            rgb = im.convert("RGB")
            return LoadedImage(np.asarray(rgb, dtype=np.uint8).copy(), alpha, gray)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"{path}: too large ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: unreadable or truncated image ({exc})") from None


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


def encode_image(img: Image.Image, fmt: str, quality: int) -> bytes:
    pil_fmt, _ = FORMATS[fmt]
    if pil_fmt == "JPEG" and img.mode in ("RGBA", "LA"):
        log.warning("JPEG has no alpha channel: the alpha is dropped (use --format png or webp to keep it)")
        img = img.convert("RGB" if img.mode == "RGBA" else "L")
    buf = io.BytesIO()
    kw: dict[str, Any] = {}
    if pil_fmt in ("JPEG", "WEBP"):
        kw["quality"] = quality
    if pil_fmt == "PNG":
        kw["compress_level"] = 6
    img.save(buf, format=pil_fmt, **kw)
    return buf.getvalue()


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
    model: str | os.PathLike[str] | LoadedModel,
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
    """Upscale every input image into ``out``; a bad input is reported in ``report.failed``, the others still run."""
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
    lm = model if isinstance(model, LoadedModel) else load_model(model, params, device)
    if bf16 and lm.device.type != "cuda":
        log.warning("--bf16 only applies on CUDA; running in float32 on %s", lm.device)
    report = UpscaleReport(model=lm.source, device=str(lm.device), scale=lm.scale, failed=list(errors))
    max_pixels = getattr(getattr(params, "data", None), "max_image_pixels", 89_478_485)
    write_output_marker(out, UPSCALE_MARKER, UPSCALE_FORMAT)
    _, ext = FORMATS[fmt]
    for src, rel in files:
        try:
            img = load_image(src, max_pixels)
            x = torch.from_numpy(img.rgb).permute(2, 0, 1).to(lm.device, torch.float32).div_(255.0)
            try:
                y = upscale_tensor(lm.model, x, lm.scale, tile, overlap, batch_size, bf16, progress, desc=src.name)
            except torch.OutOfMemoryError:
                raise FacesrError(f"{src}: out of memory; use a smaller --tile or --batch-size") from None
            arr = (y.permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
            res = Image.fromarray(arr, "RGB")
            if img.gray:
                res = res.convert("L")
            if img.alpha is not None:
                a = img.alpha.resize(res.size, Image.Resampling.BICUBIC)
                res = res.convert("LA" if img.gray else "RGBA")
                res.putalpha(a)
            target = out / rel.parent / (rel.name + ext)
            atomic_write_bytes(target, encode_image(res, fmt, quality))
            report.outputs.append({"input": str(src), "output": str(target), "width": res.width,
                                   "height": res.height, "mode": res.mode})
        except (UserError, FacesrError) as exc:
            log.error("%s", exc)
            report.failed.append({"input": str(src), "error": str(exc)})
    return report


def output_size(width: int, height: int, scale: int) -> tuple[int, int]:
    return width * scale, height * scale


__all__ = [
    "LoadedModel", "UpscaleReport", "load_model", "upscale", "upscale_tensor", "tile_windows", "load_image",
    "expand_inputs", "find_model_folder", "resolve_device", "output_size",
]
