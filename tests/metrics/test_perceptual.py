"""LPIPS and PieAPP: weights loading, status (real / untrained / missing), identities, and equality with piq."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from facesr.metrics.perceptual import LPIPSMetric, PieAPPMetric
from tests.metrics._util import sample_faces


def _noisy(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def _fake_alexnet_state(seed: int) -> dict[str, torch.Tensor]:
    """A torchvision-style AlexNet ``features.*`` state dict with random values (shapes as the real file)."""
    import lpips

    torch.manual_seed(seed)
    m = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    state = {}
    for k, v in m.net.state_dict().items():  # sliceK.i.weight -> features.i.weight
        _, idx, pname = k.split(".")
        state[f"features.{idx}.{pname}"] = torch.randn_like(v) * 0.05
    return state


def test_lpips_missing_without_weights_when_untrained_not_allowed(weights_dir: Path):
    m = LPIPSMetric(allow_untrained=False)
    assert m.status == "missing"
    assert "alexnet" in m.weights.reason
    face = sample_faces(1)[0]
    assert all(math.isnan(v) for v in m([face], [face]))


def test_lpips_untrained_identity_and_order(weights_dir: Path):
    m = LPIPSMetric(allow_untrained=True)
    assert m.status == "untrained"
    faces = sample_faces(2)
    same = m(faces, faces)
    assert same == pytest.approx([0.0, 0.0], abs=1e-7)
    mild = m([_noisy(f, 4) for f in faces], faces)
    strong = m([_noisy(f, 40) for f in faces], faces)
    assert all(0 < a < b for a, b in zip(mild, strong))


def test_lpips_loads_the_alexnet_file(weights_dir: Path):
    state = _fake_alexnet_state(seed=3)
    torch.save(state, weights_dir / "alexnet-owt-7be5be79.pth")
    m = LPIPSMetric(allow_untrained=False)
    assert m.status == "real"
    assert m.weights.provenance["sha256"]
    torch.testing.assert_close(m.model.net.slice1[0].weight, state["features.0.weight"])
    torch.testing.assert_close(getattr(m.model.net.slice5, "10").bias, state["features.10.bias"])
    faces = sample_faces(2)
    assert m(faces, faces) == pytest.approx([0.0, 0.0], abs=1e-7)
    noisy = [_noisy(f, 20) for f in faces]
    # the loaded trunk gives other scores than the random (seeded) one: the file was really used
    (weights_dir / "alexnet-owt-7be5be79.pth").unlink()
    untrained = LPIPSMetric(allow_untrained=True)
    assert untrained.status == "untrained"
    assert m(noisy, faces) != pytest.approx(untrained(noisy, faces), rel=1e-3)


def _fake_pieapp_file(path: Path, seed: int) -> dict[str, torch.Tensor]:
    from piq.pieapp import PieAPPModel

    torch.manual_seed(seed)
    state = {k: v.clone() for k, v in PieAPPModel().state_dict().items()}
    for k, v in state.items():
        if v.dtype.is_floating_point:
            state[k] = torch.randn_like(v) * 0.05
    state["ref_score_subtract.weight"] = state["ref_score_subtract.weight"].squeeze(1)  # as the published file
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_pieapp_equals_piq_on_the_same_state_dict(weights_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import piq

    _fake_pieapp_file(weights_dir / "PieAPPv0.1.pth", seed=5)
    torch_home = tmp_path / "torch"
    (torch_home / "hub" / "checkpoints").mkdir(parents=True)
    shutil.copy(weights_dir / "PieAPPv0.1.pth", torch_home / "hub" / "checkpoints" / "PieAPPv0.1.pth")
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    old_hub = torch.hub.get_dir()
    torch.hub.set_dir(str(torch_home / "hub"))
    try:
        reference = piq.PieAPP(reduction="none", stride=32)
    finally:
        torch.hub.set_dir(old_hub)
    ours = PieAPPMetric(allow_untrained=False, stride=32)
    assert ours.status == "real"
    faces = sample_faces(2, size=96)  # 2x2 patches of 64 at stride 32 (kept small: PieAPP is heavy on CPU)
    noisy = [_noisy(f, 20) for f in faces]
    x = torch.from_numpy(np.stack(noisy)).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).float() / 255
    expected = reference(x, y).tolist()
    got = ours(noisy, faces)
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert got[0] != got[1]


def test_pieapp_missing_and_untrained(weights_dir: Path):
    assert PieAPPMetric(allow_untrained=False).status == "missing"
    m = PieAPPMetric(allow_untrained=True)
    assert m.status == "untrained"
    faces = sample_faces(2)
    scores = m([_noisy(f, 30) for f in faces], faces)
    assert all(math.isfinite(s) for s in scores)
