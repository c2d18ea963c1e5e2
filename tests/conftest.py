"""Shared fixtures. Tests run on CPU only, offline, with tiny models and a handful of real sample faces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")

REPO = Path(__file__).resolve().parents[1]

pytest_plugins = ["tests.fixtures_data"]  # shared data fixtures: sample_raw, prepared_ci, ci_params


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def params_file() -> Path:
    return REPO / "params.yaml"
