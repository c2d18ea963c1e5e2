"""Fixtures for the metrics tests: a private weights cache for fake files."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture()
def weights_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty weights cache for this test; fake files put there are accepted (FACESR_WEIGHTS_TRUST=1)."""
    d = tmp_path / "weights"
    d.mkdir()
    monkeypatch.setenv("FACESR_WEIGHTS_DIR", str(d))
    monkeypatch.setenv("FACESR_WEIGHTS_TRUST", "1")
    return d
