"""Fixtures for the training tests: ci params (deterministic, 64 px crops) and the prepared sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facesr.config import load_params


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
def prepared(prepared_ci) -> Path:
    """The bundled sample, ingested and prepared with the ci profile (tests/fixtures_data.py, session-scoped)."""
    return Path(prepared_ci)
