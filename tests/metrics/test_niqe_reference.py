"""NIQE against the reference implementation, with the published pristine model that facesr bundles.

The golden values (tests/metrics/data/niqe_golden.json) are BasicSR 1.4.2's NIQE, which reproduces the MATLAB release,
on bundled sample faces; tests/metrics/make_niqe_golden.py made them and says how to rerun it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesr import weights
from facesr.metrics.noref import load_niqe_params, niqe
from tests.metrics._util import GOLDEN_FACES

GOLDEN = json.loads((Path(__file__).parent / "data" / "niqe_golden.json").read_text())
BUNDLED = Path(weights.__file__).parent / "metrics" / "data" / "niqe_pris_params.npz"
# our half-scale resize is piq's float32 port of MATLAB's imresize (BasicSR's is float64): <= 3e-4 on these faces
TOL = 1e-3


def test_bundled_params_are_the_published_file():
    assert hashlib.sha256(BUNDLED.read_bytes()).hexdigest() == GOLDEN["params_sha256"]
    entry = weights.get("niqe_pristine")
    assert entry.sha256 == GOLDEN["params_sha256"]
    assert weights.cached_path("niqe_pristine") == BUNDLED  # resolved from the package, no fetch or import needed
    assert weights.resolve("niqe_pristine") == BUNDLED


@pytest.mark.parametrize("row", GOLDEN["rows"], ids=lambda r: f"{r['file']}-border{r['border']}")
def test_niqe_matches_basicsr(row):
    mu, cov = load_niqe_params(BUNDLED)
    with Image.open(GOLDEN_FACES / row["file"]) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    assert min(rgb.shape[:2]) - 2 * row["border"] >= 192  # two 96 px blocks at least: a real NIQE, not a degenerate one
    assert niqe(rgb, mu, cov, border=row["border"]) == pytest.approx(row["niqe"], abs=TOL)


def test_golden_values_discriminate():
    """The tolerance is far below the differences between the faces, so a wrong NIQE cannot pass by luck."""
    values = sorted(r["niqe"] for r in GOLDEN["rows"])
    assert min(b - a for a, b in zip(values, values[1:], strict=False)) > 50 * TOL


def test_wheels_ship_the_bundled_file():
    """pyproject's package-data globs cover the bundled model and its licence notice (the container installs a wheel)."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[2]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["facesr"]
    pkg = root / "src" / "facesr"
    for f in (BUNDLED, BUNDLED.parent / "NOTICE.md"):
        rel = f.relative_to(pkg).as_posix()
        assert any(fnmatch.fnmatch(rel, g) for g in globs), rel
    assert weights.get("niqe_pristine").bundled == "facesr:" + BUNDLED.relative_to(pkg).as_posix()
