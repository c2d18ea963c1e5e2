"""Infra test fixtures: render each kustomize overlay once per session."""

from __future__ import annotations

import pytest
import yaml

from .infra_util import K8S, OVERLAYS, REPO, render


@pytest.fixture(scope="session")
def rendered() -> dict[str, str]:
    return {name: render(K8S / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="session")
def objects(rendered) -> dict[str, list[dict]]:
    return {name: [d for d in yaml.safe_load_all(text) if d] for name, text in rendered.items()}


@pytest.fixture(scope="session")
def params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


