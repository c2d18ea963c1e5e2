"""Small image factories for the data tests (every bad-input case is made here, nothing is downloaded)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def rand_rgb(h: int = 160, w: int = 144, seed: int = 0) -> np.ndarray:
    """A smooth-ish random colour image (JPEG-friendly, distinct per seed)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR))
    noise = rng.integers(0, 8, (h, w, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.clip(big.astype(int) + noise, 0, 255).astype(np.uint8))


def save(arr: np.ndarray, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png16(arr: np.ndarray, path: Path) -> Path:
    """Write a 16-bit PNG by hand (Pillow cannot write 48-bit RGB): arr uint16 HxW (gray) or HxWx3 (RGB)."""
    arr = np.asarray(arr, dtype=">u2")
    h, w = arr.shape[:2]
    color = 2 if arr.ndim == 3 else 0
    rows = arr.reshape(h, -1)
    raw = b"".join(b"\x00" + rows[y].tobytes() for y in range(h))
    data = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def png_bomb_header(path: Path, w: int = 30000, h: int = 30000) -> Path:
    """A tiny file whose PNG header claims w x h pixels (a decompression-bomb stand-in; never decoded)."""
    data = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b""))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def exif_rotated_jpeg(arr: np.ndarray, path: Path, orientation: int = 6) -> Path:
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, exif=exif, quality=95)
    return path


def truncated(src: Path, dst: Path, keep: float = 0.5) -> Path:
    b = src.read_bytes()
    dst.write_bytes(b[: int(len(b) * keep)])
    return dst


def _s15(x: float) -> bytes:
    return struct.pack(">i", round(x * 65536))


def matrix_trc_icc(description: str, colorants: tuple[tuple[float, float, float], ...], trc: bytes) -> bytes:
    """A minimal ICC v2 matrix/TRC RGB display profile: D50-adapted ``colorants`` (red, green, blue XYZ) and one tone
    curve tag body ``trc`` for the three channels. Built by hand because Pillow can only create sRGB/LAB/XYZ
    profiles."""
    def xyz(x, y, z):
        return b"XYZ " + b"\0" * 4 + _s15(x) + _s15(y) + _s15(z)

    asc = description.encode("ascii") + b"\0"
    desc = b"desc" + b"\0" * 4 + struct.pack(">I", len(asc)) + asc + b"\0" * 4 + b"\0" * 4 + b"\0" * 2 + b"\0" + b"\0" * 67
    (r, g, b) = colorants
    tags = [(b"desc", desc), (b"wtpt", xyz(0.9642, 1.0, 0.8249)), (b"rXYZ", xyz(*r)), (b"gXYZ", xyz(*g)),
            (b"bXYZ", xyz(*b)), (b"rTRC", trc), (b"gTRC", trc), (b"bTRC", trc),
            (b"cprt", b"text" + b"\0" * 4 + b"none\0\0\0\0")]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        while len(body) % 4:
            body += b"\0"
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ " + b"\0" * 12 + b"acsp"
              + b"APPL" + b"\0" * 4 + b"\0" * 4 + b"\0" * 4 + b"\0" * 8 + struct.pack(">I", 0)
              + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + b"lcms" + b"\0" * 16 + b"\0" * 28)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


SRGB_COLORANTS = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))
#: Display P3 (DCI-P3 primaries, D65 white, the sRGB tone curve): the colorants of Apple's "Display P3" profile
P3_COLORANTS = ((0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419), (0.1571, 0.0666, 0.7841))


def linear_rgb_icc(description: str = "Linear RGB (test)") -> bytes:
    """sRGB primaries (D50-adapted) with gamma 1.0 (linear light); used to check the ICC -> sRGB conversion."""
    curv = b"curv" + b"\0" * 4 + struct.pack(">I", 1) + struct.pack(">H", 0x0100) + b"\0\0"
    return matrix_trc_icc(description, SRGB_COLORANTS, curv)


def display_p3_icc(description: str = "Display P3 (test)") -> bytes:
    """A Display P3 profile: P3 primaries with the sRGB tone curve (ICC parametric curve type 3), as phones and Macs
    tag their photos. Its saturated colours lie outside sRGB."""
    g, a, b, c, d = 2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045
    para = b"para" + b"\0" * 4 + struct.pack(">H", 3) + b"\0\0" + b"".join(_s15(v) for v in (g, a, b, c, d))
    return matrix_trc_icc(description, P3_COLORANTS, para)
