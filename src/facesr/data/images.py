"""Decode any image file into 8-bit RGB, or say precisely why it cannot be used.

``load_rgb`` decodes the whole file (so truncation is found here, not during training), applies the EXIF orientation
and converts every mode Pillow knows (1, L, LA, P, PA, RGBA, CMYK, YCbCr, LAB, HSV, I, I;16*, F) to 8-bit RGB.
Transparent images are composited onto white. 16-bit images are scaled to 8 bits (value / 257, rounded), not clipped.
Images with an embedded non-sRGB ICC profile are converted to sRGB (LittleCMS, perceptual intent).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facesr.errors import InputError

# reason codes written to the prepared manifest ("<code>: <detail>")
EMPTY = "empty"
NOT_AN_IMAGE = "not_an_image"
CORRUPT = "corrupt"
TRUNCATED = "truncated"
TOO_LARGE = "too_large"
TOO_SMALL = "too_small"
DUPLICATE = "duplicate"


class ImageRejected(InputError):
    """An input image cannot be used; ``code`` is one of the reason codes above."""

    def __init__(self, path: str | os.PathLike[str], code: str, detail: str) -> None:
        self.path = str(path)
        self.code = code
        self.detail = detail
        super().__init__(f"{path}: {code}: {detail}")

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.detail}"


@contextlib.contextmanager
def _no_pillow_bomb_check() -> Iterator[None]:
    """We check the pixel count ourselves (params data.max_image_pixels); silence Pillow's own check meanwhile."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def read_header(path: str | os.PathLike[str]) -> tuple[int | None, int | None, str | None]:
    """(width, height, mode) from the file header without decoding; (None, None, None) when unreadable."""
    try:
        with _no_pillow_bomb_check(), Image.open(path) as im:
            return int(im.width), int(im.height), str(im.mode)
    except Exception:  # noqa: BLE001 - ingest does not judge content; prepare rejects with a reason
        return None, None, None


def to_rgb8(im: Image.Image) -> Image.Image:
    """Convert a decoded Pillow image of any mode to 8-bit RGB (alpha composited onto white)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(im)
        if mode == "F":
            a = arr.astype(np.float64)
            a = a * 255.0 if np.nanmax(a) <= 1.0 else a
            a8 = np.clip(np.nan_to_num(a), 0, 255)
        elif mode.startswith("I;16") or int(arr.max(initial=0)) > 255:
            a8 = np.clip(arr.astype(np.float64), 0, 65535) / 257.0
        else:  # 32-bit integer image holding 8-bit values
            a8 = np.clip(arr, 0, 255).astype(np.float64)
        g = np.rint(a8).astype(np.uint8)
        return Image.fromarray(np.stack([g, g, g], axis=-1), "RGB")
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
        if mode == "RGB":
            return im
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")  # 1, L, CMYK, YCbCr, LAB, HSV


_SRGB = None


def to_srgb(im: Image.Image) -> Image.Image | None:
    """Convert an image with an embedded non-sRGB ICC profile (Adobe RGB, Display P3, a CMYK press profile...) to sRGB
    with LittleCMS; None when there is no profile, it is already sRGB, or the profile cannot be used (then the plain
    mode conversion of ``to_rgb8`` applies)."""
    global _SRGB
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK", "L", "LA"):
        return None
    try:
        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if ImageCms.getProfileDescription(src).strip().lower().startswith("srgb"):
            return None
        if _SRGB is None:
            _SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        base = im
        if im.mode in ("RGBA", "LA"):  # keep the plain alpha handling: composite first, then convert colours
            base = to_rgb8(im)
            base.info["icc_profile"] = icc
            if im.mode == "LA":
                return None
        out = ImageCms.profileToProfile(base, src, _SRGB, outputMode="RGB",
                                        renderingIntent=ImageCms.Intent.PERCEPTUAL)
        return out if out is not None and out.mode == "RGB" else None
    except Exception:  # noqa: BLE001 - a broken or unsupported profile is not a reason to lose the image
        return None


def load_rgb(path: str | os.PathLike[str], max_pixels: int) -> Image.Image:
    """Decode ``path`` fully into an 8-bit RGB image with the EXIF orientation applied.

    Raises ``ImageRejected`` (an ``InputError``) naming the file and the reason: empty, not an image, corrupt,
    truncated, or over ``max_pixels`` (decompression-bomb guard, checked from the header before decoding).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageRejected(path, CORRUPT, f"cannot read the file ({exc.strerror or exc})") from None
    if size == 0:
        raise ImageRejected(path, EMPTY, "the file has 0 bytes")
    try:
        with _no_pillow_bomb_check(), Image.open(path) as im:
            w, h = im.size
            if w <= 0 or h <= 0:
                raise ImageRejected(path, CORRUPT, f"invalid size {w}x{h}")
            if w * h > max_pixels:
                raise ImageRejected(
                    path, TOO_LARGE,
                    f"{w}x{h} = {w * h} pixels is over the decompression-bomb limit data.max_image_pixels={max_pixels}",
                )
            try:
                im.load()
            except OSError as exc:
                msg = str(exc)
                if "truncated" in msg.lower():
                    raise ImageRejected(path, TRUNCATED, msg) from None
                raise ImageRejected(path, CORRUPT, msg) from None
            except (SyntaxError, ValueError, EOFError, IndexError, TypeError, struct_error()) as exc:
                raise ImageRejected(path, CORRUPT, f"{type(exc).__name__}: {exc}") from None
            try:
                im = ImageOps.exif_transpose(im)
            except Exception:  # noqa: BLE001 - a broken EXIF block is not a reason to lose the image
                pass
            out = to_srgb(im) or to_rgb8(im)
            if out is im:
                out = im.copy()
            return out
    except ImageRejected:
        raise
    except UnidentifiedImageError:
        raise ImageRejected(path, NOT_AN_IMAGE, "not an image format Pillow can read") from None
    except Image.DecompressionBombError as exc:  # pragma: no cover - disabled above, kept as a guard
        raise ImageRejected(path, TOO_LARGE, str(exc)) from None
    except OSError as exc:
        raise ImageRejected(path, CORRUPT, str(exc) or type(exc).__name__) from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a property of the file
        raise ImageRejected(path, CORRUPT, f"{type(exc).__name__}: {exc}") from None


def struct_error() -> type[Exception]:
    import struct

    return struct.error


def to_array(im: Image.Image) -> np.ndarray:
    """uint8 HWC array (C-contiguous) of an RGB image."""
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
