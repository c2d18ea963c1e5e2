"""The one image decoder of facesr (prepare, upscale): any image file -> 8-bit sRGB colour (+ alpha), or a precise
reason why it cannot be used.

``decode(path, max_pixels)`` decodes the whole file (so truncation is found here, not during training), applies the
EXIF orientation and returns a ``DecodedImage``: the colour as 8-bit RGB in sRGB, the alpha channel (8-bit ``L``)
when the file has one, and whether the source had no colour. Every mode Pillow knows is handled (1, L, LA, P, PA,
RGBA, RGBa, La, CMYK, YCbCr, LAB, HSV, I, I;16*, F):

- 16-bit (``I;16*``, and ``I`` holding values above 255) is scaled to 8 bits: ``value / 257``, rounded; ``F`` is
  taken as 0..1 (``x 255``) when its maximum is at most 1, else as 0..255; ``I`` holding 8-bit values is kept.
- palette images become RGB, or RGB + alpha when they have a transparent entry;
- an embedded non-sRGB ICC profile (Display P3, Adobe RGB, a CMYK press profile, a grey profile...) is converted to
  sRGB with LittleCMS (perceptual intent); an sRGB, missing or unusable profile leaves the plain mode conversion.
  The colour is converted before any compositing: transparent pixels keep their converted colour.

``load_rgb(path, max_pixels)`` (prepare) is that colour with the alpha composited onto white; ``facesr upscale``
keeps the alpha (``facesr.infer.load_image``). Both see the same colour pixels.

Errors are ``ImageRejected`` (an ``InputError``, exit 2) naming the file, with a reason code: empty, not an image,
corrupt, truncated, or over ``max_pixels`` (the decompression-bomb guard, checked from the header before decoding).
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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

_HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_ALPHA_MODES = {"RGBA": "RGB", "LA": "L", "PA": "RGB", "RGBa": "RGB", "La": "L"}  # alpha mode -> its colour mode
_GRAY_MODES = ("1", "L", "LA", "La", *_HIGH_BIT_MODES)


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


@dataclass
class DecodedImage:
    """One decoded image: ``rgb`` 8-bit RGB (sRGB, EXIF orientation applied; under transparent pixels the stored
    colour, not composited), ``alpha`` its 8-bit ``L`` alpha channel or None, ``gray`` the source had no colour."""

    rgb: Image.Image
    alpha: Image.Image | None
    gray: bool


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


def gray8(im: Image.Image) -> Image.Image:
    """A high-bit-depth grey image (I, I;16*, F) -> 8-bit ``L``, scaled as the module docstring says (not clipped)."""
    arr = np.asarray(im)
    if im.mode == "F":
        a = arr.astype(np.float64)
        a = a * 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else a
        a8 = np.clip(np.nan_to_num(a), 0, 255)
    elif im.mode.startswith("I;16") or int(arr.max(initial=0)) > 255:
        a8 = np.clip(arr.astype(np.float64), 0, 65535) / 257.0
    else:  # 32-bit integer image holding 8-bit values
        a8 = np.clip(arr, 0, 255).astype(np.float64)
    return Image.fromarray(np.rint(a8).astype(np.uint8), "L")


def split_alpha(im: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """(colour, alpha) of a decoded image: the colour in its own mode (8-bit L for high-bit grey, RGB for palettes),
    the alpha as 8-bit ``L`` or None."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBa", "La", "PA"):  # premultiplied / palette + alpha: plain RGBA or LA first
        im = im.convert("LA" if im.mode == "La" else "RGBA")
    if im.mode in _ALPHA_MODES:
        return im.convert(_ALPHA_MODES[im.mode]), im.getchannel("A")
    if im.mode in _HIGH_BIT_MODES:
        return gray8(im), None
    return im, None


_SRGB = None


def to_srgb(colour: Image.Image, icc: bytes | None) -> Image.Image | None:
    """``colour`` (RGB, L or CMYK, no alpha) with the embedded ICC profile ``icc`` converted to sRGB RGB (LittleCMS,
    perceptual intent); None when there is no profile, it is already sRGB or it cannot be used (then the plain mode
    conversion applies)."""
    global _SRGB
    if not icc or colour.mode not in ("RGB", "CMYK", "L"):
        return None
    try:
        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if ImageCms.getProfileDescription(src).strip().lower().startswith("srgb"):
            return None
        if _SRGB is None:
            _SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        out = ImageCms.profileToProfile(colour, src, _SRGB, outputMode="RGB",
                                        renderingIntent=ImageCms.Intent.PERCEPTUAL)
        return out if out is not None and out.mode == "RGB" else None
    except Exception:  # noqa: BLE001 - a broken or unsupported profile is not a reason to lose the image
        return None


def _decoded(im: Image.Image) -> DecodedImage:
    """A loaded Pillow image -> its ``DecodedImage`` (EXIF orientation, alpha split, 8 bits, sRGB)."""
    icc = im.info.get("icc_profile")
    gray = im.mode in _GRAY_MODES
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - a broken EXIF block is not a reason to lose the image
        pass
    colour, alpha = split_alpha(im)
    rgb = to_srgb(colour, icc) or colour.convert("RGB")
    if rgb is im:
        rgb = im.copy()
    return DecodedImage(rgb, alpha, gray)


def decode(path: str | os.PathLike[str], max_pixels: int,
           check_size: Callable[[int, int], None] | None = None) -> DecodedImage:
    """Decode ``path`` fully (see the module docstring); ``check_size(width, height)`` may refuse the image from its
    header (raise an ``InputError``) before anything is decoded.

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
            if check_size is not None:
                check_size(w, h)
            try:
                im.load()
            except OSError as exc:
                msg = str(exc)
                if "truncated" in msg.lower():
                    raise ImageRejected(path, TRUNCATED, msg) from None
                raise ImageRejected(path, CORRUPT, msg) from None
            except (SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as exc:
                raise ImageRejected(path, CORRUPT, f"{type(exc).__name__}: {exc}") from None
            return _decoded(im)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise ImageRejected(path, NOT_AN_IMAGE, "not an image format Pillow can read") from None
    except Image.DecompressionBombError as exc:  # pragma: no cover - disabled above, kept as a guard
        raise ImageRejected(path, TOO_LARGE, str(exc)) from None
    except OSError as exc:
        raise ImageRejected(path, CORRUPT, str(exc) or type(exc).__name__) from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a property of the file
        raise ImageRejected(path, CORRUPT, f"{type(exc).__name__}: {exc}") from None


def on_white(img: DecodedImage) -> Image.Image:
    """The decoded colour with its alpha (if any) composited onto white: 8-bit RGB."""
    if img.alpha is None:
        return img.rgb
    rgba = img.rgb.convert("RGBA")
    rgba.putalpha(img.alpha)
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def load_rgb(path: str | os.PathLike[str], max_pixels: int) -> Image.Image:
    """Decode ``path`` fully into an 8-bit sRGB image (``decode``), transparency composited onto white."""
    return on_white(decode(path, max_pixels))


def to_array(im: Image.Image) -> np.ndarray:
    """uint8 HWC array (C-contiguous) of an RGB image."""
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


__all__ = ["DecodedImage", "ImageRejected", "decode", "load_rgb", "on_white", "read_header", "split_alpha", "to_array",
           "to_srgb", "gray8", "EMPTY", "NOT_AN_IMAGE", "CORRUPT", "TRUNCATED", "TOO_LARGE", "TOO_SMALL", "DUPLICATE"]
