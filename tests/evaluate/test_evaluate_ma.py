"""The evaluate step's Ma and PI: finite with a (synthetic) NRQM model and NIQE params, missing without the model.

Bicubic only and a few metrics, so it stays fast; the full evaluation is in test_evaluate.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from facesr.config import Params
from facesr.evaluate import evaluate, load_per_image
from facesr.metrics.ma import MA_MISSING_REASON
from tests.metrics._ma_util import write_golden_model


def _params(ci_params: Params) -> Params:
    p = ci_params.model_copy(deep=True)
    p.evaluate.metrics = ["psnr_y", "niqe", "ma", "pi"]
    return p


def test_ma_and_pi_with_weights(tmp_path: Path, ci_params: Params, prepared_ci: Path,
                                monkeypatch: pytest.MonkeyPatch):
    wdir = tmp_path / "weights"
    wdir.mkdir()
    write_golden_model(wdir / "NRQM_model.mat")
    monkeypatch.setenv("FACESR_WEIGHTS_DIR", str(wdir))
    monkeypatch.setenv("FACESR_WEIGHTS_TRUST", "1")
    out = tmp_path / "eval"
    metrics = evaluate(_params(ci_params), prepared_ci, {}, out)

    m = metrics["bicubic"]
    for k in ("niqe", "ma", "pi"):
        assert m[k]["weights"] == "real" and m[k]["n"] > 0 and math.isfinite(m[k]["mean"]), k
    assert m["ma"]["n"] == m["niqe"]["n"] == m["pi"]["n"]  # the same full-size images
    per = load_per_image(out)["bicubic"]
    assert set(per["ma"]) == set(per["niqe"]) == set(per["pi"])
    for name, pi in per["pi"].items():
        assert pi == pytest.approx(((10 - per["ma"][name]) + per["niqe"][name]) / 2)
    assert len(set(per["ma"].values())) > 1  # per-image scores, not one constant

    table = (out / "table.md").read_text()
    pi_col = next(line for line in table.splitlines() if line.startswith("| bicubic")).split("|")[3]
    assert f"{m['pi']['mean']:.3f}" in pi_col
    assert "| Ma |" in table.replace("NIQE* | Ma |", "| Ma |")
    ma_note = next(line for line in table.splitlines() if line.startswith("- ma: "))
    pi_note = next(line for line in table.splitlines() if line.startswith("- pi: "))
    assert "NRQM_model.mat" in ma_note and "UNPINNED" in ma_note and "NOT verified" in ma_note
    assert "NRQM_model.mat" in pi_note and "niqe_pris_params.npz" in pi_note and "((10 - Ma) + NIQE) / 2" in pi_note
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["ma"]["provenance"]["file"] == "NRQM_model.mat"
    assert manifest["metrics"]["pi"]["provenance"]["niqe"]["file"] == "niqe_pris_params.npz"


def test_ma_and_pi_missing_without_the_model(tmp_path: Path, ci_params: Params, prepared_ci: Path,
                                             monkeypatch: pytest.MonkeyPatch):
    wdir = tmp_path / "weights"
    wdir.mkdir()
    monkeypatch.setenv("FACESR_WEIGHTS_DIR", str(wdir))
    monkeypatch.setenv("FACESR_WEIGHTS_TRUST", "1")
    out = tmp_path / "eval"
    metrics = evaluate(_params(ci_params), prepared_ci, {}, out)
    m = metrics["bicubic"]
    assert m["niqe"]["weights"] == "real" and math.isfinite(m["niqe"]["mean"])
    for k in ("ma", "pi"):
        assert m[k] == {"mean": None, "ci95": None, "n": 0, "weights": "missing"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["ma"]["reason"] == MA_MISSING_REASON
    assert "facesr weights fetch ma_nrqm" in manifest["metrics"]["pi"]["reason"]
    assert "facesr weights import" in manifest["metrics"]["pi"]["reason"]
    table = (out / "table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| bicubic"))
    assert "missing" in row
    assert any(line.startswith("- ma: missing: ") and "NRQM_model.mat" in line for line in table.splitlines())
    assert load_per_image(out)["bicubic"]["ma"] == {}


def test_pi_is_missing_when_only_niqe_is_missing(tmp_path: Path, ci_params: Params, monkeypatch: pytest.MonkeyPatch):
    import torch

    from facesr.evaluate import Scorer

    wdir = tmp_path / "weights"
    wdir.mkdir()
    write_golden_model(wdir / "NRQM_model.mat")
    monkeypatch.setenv("FACESR_WEIGHTS_DIR", str(wdir))
    monkeypatch.setenv("FACESR_WEIGHTS_TRUST", "1")
    p = ci_params.model_copy(deep=True)
    p.evaluate.metrics = ["ma", "pi"]
    from facesr import weights

    with weights.override("niqe_pristine", bundled=None, sha256=None, size=None):  # a build without the bundled file
        st = Scorer(p, torch.device("cpu")).status()
    assert st["ma"]["weights"] == "real" and st["ma"]["reason"] is None
    assert st["pi"]["weights"] == "missing"
    assert "NIQE" in st["pi"]["reason"] and "niqe_pris_params.npz" in st["pi"]["reason"]
    assert "ma_nrqm" not in st["pi"]["reason"]
