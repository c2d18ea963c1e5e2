"""The bundled sample is colour, matches its manifest, and holds no second copy of a person."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from facesr.data.sources import sample_dir


def _rows() -> list[dict[str, str]]:
    with open(sample_dir() / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_manifest_lists_exactly_the_bundled_files_with_their_hashes():
    rows = _rows()
    files = sorted(p.name for p in Path(sample_dir()).glob("*.jpg"))
    assert files == sorted(r["file"] for r in rows) and len(files) >= 200
    for r in rows:
        data = (sample_dir() / r["file"]).read_bytes()
        assert hashlib.sha1(data).hexdigest() == r["sha1"] and len(data) == int(r["bytes"])
    # one person once: BioguideIDs are unique, and only the colour source is bundled
    assert len({r["file"].split(".")[0] for r in rows}) == len(rows)
    assert {r["repo"] for r in rows} == {"Hainish/congress-images-225x275"}


def test_sample_faces_are_colour():
    """Chroma is real: a grayscale-stored-as-RGB set has Cb/Cr spread near zero."""
    spreads = []
    for r in _rows()[::25]:
        with Image.open(sample_dir() / r["file"]) as im:
            ycc = np.asarray(im.convert("YCbCr"), dtype=np.float64)
        spreads.append(ycc[..., 1].std() + ycc[..., 2].std())
    assert min(spreads) > 3.0, spreads
