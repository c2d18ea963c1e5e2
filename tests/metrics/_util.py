"""Helpers shared by the metrics and evaluate tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SAMPLE = Path(__file__).resolve().parents[2] / "src" / "facesr" / "data" / "sample"
# the three faces the golden NIQE/Ma values were computed on by BasicSR/pyiqa (tests/metrics/data/faces/README.md)
GOLDEN_FACES = Path(__file__).resolve().parent / "data" / "faces"


def sample_faces(n: int = 4, size: int | None = 128, root: Path = SAMPLE) -> list[np.ndarray]:
    """The first ``n`` faces of ``root`` (the bundled sample) as uint8 RGB, centre-cropped to ``size`` (None = whole)."""
    files = sorted(root.glob("*.jpg"))[:n]
    if len(files) < n:
        pytest.skip("bundled sample faces not present")
    out = []
    for f in files:
        with Image.open(f) as im:
            a = np.asarray(im.convert("RGB"), dtype=np.uint8)
        if size is not None:
            h, w = a.shape[:2]
            t, l = (h - size) // 2, (w - size) // 2
            a = a[t:t + size, l:l + size]
        out.append(np.ascontiguousarray(a))
    return out
