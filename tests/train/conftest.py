"""Fixtures for the training tests: ci params, a prepared folder, and stand-ins for modules not written yet.

The stand-ins (tests/train/_standins.py: a tiny patch dataset and a generator loss) are used only while
facesr.data.dataset / facesr.losses are missing from the tree; once they exist the tests run against the real ones.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import _standins  # noqa: E402

from facesr import train as train_mod  # noqa: E402
from facesr.config import load_params  # noqa: E402


@pytest.fixture
def params_ci(params_file):
    """ci-profile params with deterministic kernels; keyword overrides are dotted keys with '__' for '.'."""

    def make(**sets: object):
        # 64 px crops (not 128): the loss networks cost 4x less, and PieAPP still sees one whole 64 px patch
        base: dict[str, object] = {"train.deterministic": True, "data.num_workers": 0, "data.hr_size": 64}
        base.update({k.replace("__", "."): v for k, v in sets.items()})
        over = [f"{k}={json.dumps(v)}" for k, v in base.items()]
        return load_params(params_file, profile="ci", overrides=over)

    return make


@pytest.fixture
def prepared(tmp_path, request, monkeypatch) -> Path:
    """A prepared folder: the data engineer's `prepared_ci` fixture when it exists, else a stand-in."""
    if _standins.HAVE_DATASET:
        try:
            return Path(request.getfixturevalue("prepared_ci"))
        except pytest.FixtureLookupError:
            pass
    monkeypatch.setattr(train_mod, "make_dataset", _standins.fake_dataset)
    return _standins.fake_prepared(tmp_path / "prep")


@pytest.fixture(autouse=True)
def _standin_losses(monkeypatch):
    if not _standins.HAVE_LOSSES:
        monkeypatch.setattr(train_mod, "build_components", _standins.fake_components)
