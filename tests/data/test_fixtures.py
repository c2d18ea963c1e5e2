"""The shared fixtures give a usable ingested and prepared sample."""

from __future__ import annotations

import json

from facesr.data.dataset import load_test_pairs


def test_sample_raw_fixture(sample_raw):
    m = json.loads((sample_raw / "manifest.json").read_text())
    assert m["format"] == "facesr.raw/1" and m["source"] == "sample"
    assert m["count"] == len(m["files"]) > 150
    for f in m["files"][:5]:
        assert (sample_raw / f["path"]).stat().st_size == f["bytes"]


def test_prepared_ci_fixture(prepared_ci, ci_params):
    m = json.loads((prepared_ci / "manifest.json").read_text())
    assert m["accepted"] == ci_params.data.max_images == 24
    assert m["split"]["train"] >= 2 and m["split"]["test"] >= 2
    assert m["split"]["train"] + m["split"]["test"] == 24
    pairs = load_test_pairs(prepared_ci)
    assert len(pairs) == m["split"]["test"]
    assert pairs[0].hr.shape == (128, 128, 3) and pairs[0].lr.shape == (32, 32, 3)
