"""Shared data fixtures for every area's tests (registered in tests/conftest.py via pytest_plugins).

- ``ci_params``:   params.yaml resolved with the ci profile (data.max_images = 24, tiny models).
- ``sample_raw``:  the bundled sample ingested into a raw folder (session-scoped; do not modify it).
- ``prepared_ci``: ``sample_raw`` prepared with the ci profile: 24 images (about 70/30 train/test), train shards and
                   test pairs (session-scoped; do not modify it; copy it with shutil.copytree if a test must).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from facesr.config import Params, load_params

_REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ci_params() -> Params:
    return load_params(_REPO / "params.yaml", profile="ci")


@pytest.fixture(scope="session")
def sample_raw(tmp_path_factory: pytest.TempPathFactory, ci_params: Params) -> Path:
    from facesr.data.ingest import ingest

    out = tmp_path_factory.mktemp("data-fixtures") / "raw"
    ingest(ci_params, "sample", out)
    return out


@pytest.fixture(scope="session")
def prepared_ci(tmp_path_factory: pytest.TempPathFactory, ci_params: Params, sample_raw: Path) -> Path:
    from facesr.data.prepare import prepare

    out = tmp_path_factory.mktemp("data-fixtures") / "prepared"
    prepare(ci_params, sample_raw, out)
    return out
