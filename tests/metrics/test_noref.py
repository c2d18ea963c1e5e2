"""NIQE (with a fake pristine model fitted here) and BRISQUE (against piq on the same SVR file)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from facesr import weights
from facesr.errors import InputError
from facesr.metrics.fidelity import rgb_to_y
from facesr.metrics.noref import (
    BRISQUEMetric,
    NIQEMetric,
    brisque_scores,
    gaussian_window,
    load_niqe_params,
    niqe,
    niqe_block_features,
)
from tests.metrics._util import sample_faces


def _blur(img: np.ndarray, r: float) -> np.ndarray:
    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(r)))


def _fit_fake_pristine(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A stand-in for the published pristine model: the MVG of NIQE features of sharp faces."""
    feats = np.concatenate([niqe_block_features(np.round(rgb_to_y(im))) for im in images])
    feats = feats[~np.isnan(feats).any(axis=1)]
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


@pytest.fixture(scope="module")
def fake_pristine() -> tuple[np.ndarray, np.ndarray]:
    return _fit_fake_pristine(sample_faces(6, size=None)[2:])


def test_gaussian_window_is_matlab_fspecial():
    w = gaussian_window()
    assert w.shape == (7, 7)
    assert w.sum() == pytest.approx(1.0)
    assert w[3, 3] == w.max()
    np.testing.assert_allclose(w, w.T)


def test_niqe_is_finite_and_worse_for_blurred(fake_pristine):
    mu, cov = fake_pristine
    for face in sample_faces(2, size=None):  # 200x250: 2x2 blocks of 96x96
        sharp = niqe(face, mu, cov)
        blurred = niqe(_blur(face, 2.5), mu, cov)
        assert math.isfinite(sharp) and math.isfinite(blurred)
        assert sharp > 0
        assert blurred > sharp + 1.0


def test_niqe_refuses_one_block_images(fake_pristine):
    face = sample_faces(1, size=128)[0]
    with pytest.raises(ValueError, match="two 96x96 blocks"):
        niqe(face, *fake_pristine)


def test_niqe_metric_uses_the_bundled_published_model(weights_dir: Path):
    m = NIQEMetric()  # an empty weights cache: the pristine model shipped in the package is used
    assert m.status == "real" and m.weights.path == weights.cached_path("niqe_pristine")
    assert m.weights.path.parent.name == "data" and m.weights.path.is_file()
    face = sample_faces(1, size=None)[0]
    assert m(face) == pytest.approx(niqe(face, *load_niqe_params(m.weights.path)))
    assert math.isnan(m(sample_faces(1, size=128)[0]))  # too small: not computed


def test_niqe_metric_status_and_file_loading(weights_dir: Path, fake_pristine):
    with weights.override("niqe_pristine", bundled=None, sha256=None, size=None):  # as a build without the bundle
        m = NIQEMetric()
        assert m.status == "missing"
        face = sample_faces(1, size=None)[0]
        assert math.isnan(m(face))
        mu, cov = fake_pristine
        np.savez(weights_dir / "niqe_pris_params.npz", mu_pris_param=mu[None], cov_pris_param=cov,
                 gaussian_window=gaussian_window())
        m = NIQEMetric()
        assert m.status == "real"
        assert m(face) == pytest.approx(niqe(face, mu, cov))
        assert math.isnan(m(sample_faces(1, size=128)[0]))  # too small: not computed


def test_niqe_params_file_errors(tmp_path: Path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, something=np.zeros(3))
    with pytest.raises(InputError, match="pristine"):
        load_niqe_params(bad)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, mu_pris_param=np.zeros(5), cov_pris_param=np.eye(5))
    with pytest.raises(InputError, match="36"):
        load_niqe_params(wrong)


def _fake_svr(seed: int = 0, k: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, generator=g, dtype=torch.float64) * 10, torch.rand(k, 36, generator=g, dtype=torch.float64) * 2 - 1


def test_brisque_equals_piq_on_the_same_svr(weights_dir: Path, tmp_path: Path):
    import piq

    sv_coef, sv = _fake_svr()
    torch.save((sv_coef, sv), weights_dir / "brisque_svm_weights.pt")
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    torch.save((sv_coef.clone(), sv.clone()), hub / "checkpoints" / "brisque_svm_weights.pt")
    faces = sample_faces(2)
    x = torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).double() / 255
    old_hub = torch.hub.get_dir()
    torch.hub.set_dir(str(hub))
    try:
        expected = piq.brisque(x, reduction="none")
    finally:
        torch.hub.set_dir(old_hub)
    torch.testing.assert_close(brisque_scores(x, sv_coef, sv), expected)
    m = BRISQUEMetric()
    assert m.status == "real"
    got = m(faces)
    assert got == pytest.approx(expected.tolist(), rel=1e-6)
    assert got[0] != got[1]


def test_brisque_missing_is_nan(weights_dir: Path):
    m = BRISQUEMetric()
    assert m.status == "missing"
    assert all(math.isnan(v) for v in m(sample_faces(1)))


def test_brisque_flat_image_is_nan_not_a_crash(weights_dir: Path):
    torch.save(_fake_svr(), weights_dir / "brisque_svm_weights.pt")
    face = sample_faces(1)[0]
    flat = np.full_like(face, 17)
    scores = BRISQUEMetric()([face, flat])
    assert math.isfinite(scores[0]) and math.isnan(scores[1])
