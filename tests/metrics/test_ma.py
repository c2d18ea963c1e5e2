"""Ma et al.'s NRQM and PI: features and score against pyiqa 0.1.16 (golden values), the forest walk, the model
loader, and the evaluate step with a synthetic model.

Golden values: ``tests/metrics/data/ma_golden.json``, made by ``tests/metrics/make_ma_golden.py`` with pyiqa's
``nrqm_arch`` on bundled faces (Y of YCbCr rounded, border 4) and a synthetic model (``_ma_util``). Measured agreement
when they were made: features within 4e-8 absolute / 2e-8 relative (the JSON keeps 10 significant digits), forest
outputs and scores within 5e-10. Tolerances below: 1e-6 relative + 1e-7 absolute for features (float32 steps inside
pyiqa's and piq's resize, BLAS order), 1e-6 for forest outputs and scores.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from facesr.errors import InputError
from facesr.metrics.ma import (
    MA_MIN_SIDE,
    N_FEATURES,
    Forest,
    MaMetric,
    block_dct_features,
    gauss_pyramid,
    ggd_shape,
    load_ma_model,
    ma_features,
    ma_features_gray,
    ma_luma,
    pi_score,
    svd_features,
)
from tests.metrics._ma_util import golden, synthetic_model, write_golden_model
from tests.metrics.make_ma_golden import golden_images

FEATURE_RTOL, FEATURE_ATOL, SCORE_TOL = 1e-6, 1e-7, 1e-6


@pytest.fixture(scope="module")
def gold() -> dict:
    return golden()


@pytest.fixture(scope="module")
def ours() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return {name: ma_features(img, border=4) for name, img in golden_images().items()}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_golden_model(tmp_path_factory.mktemp("ma") / "NRQM_model.mat")


def test_golden_file_is_small_and_complete(gold):
    assert len(gold["images"]) == 4
    for row in gold["images"].values():
        assert [len(row[k]) for k in ("f1", "f2", "f3")] == list(N_FEATURES)
    # the synthetic model separates the images (else the score check would not test the forests)
    assert len({round(r["score"], 6) for r in gold["images"].values()}) == 4


def test_luma_is_the_one_pyiqa_sees(gold):
    for name, img in golden_images().items():
        assert ma_luma(img, 4).sum() == gold["images"][name]["y_sum"]


@pytest.mark.parametrize("group", [0, 1, 2], ids=["f1_dct", "f2_gsm", "f3_svd"])
def test_features_match_pyiqa(gold, ours, group):
    key = f"f{group + 1}"
    for name, feats in ours.items():
        np.testing.assert_allclose(feats[group], gold["images"][name][key], rtol=FEATURE_RTOL, atol=FEATURE_ATOL,
                                   err_msg=f"{name} {key}")


def test_forests_and_score_match_pyiqa(gold, ours, model_path):
    model = load_ma_model(model_path)
    for name, feats in ours.items():
        row = gold["images"][name]
        preds = [f.predict(x) for f, x in zip(model.forests, feats)]
        np.testing.assert_allclose(preds, row["forests"], atol=SCORE_TOL, err_msg=name)
        assert model.score(*feats) == pytest.approx(row["score"], abs=SCORE_TOL), name


def test_ma_metric_from_the_weights_cache(weights_dir: Path, gold):
    m = MaMetric()
    assert m.status == "missing" and m.model is None
    img = golden_images()["face1"]
    assert math.isnan(m(img, border=4))
    write_golden_model(weights_dir / "NRQM_model.mat")
    m = MaMetric()
    assert m.status == "real"
    assert m.weights.provenance["file"] == "NRQM_model.mat" and len(m.weights.provenance["sha256"]) == 64
    assert m(img, border=4) == pytest.approx(gold["images"]["face1"]["score"], abs=SCORE_TOL)
    small = img[:MA_MIN_SIDE + 7, :MA_MIN_SIDE + 7]
    assert math.isnan(m(small, border=4))  # below the minimum after the crop: not computed
    assert math.isfinite(m(img[:MA_MIN_SIDE + 8, :MA_MIN_SIDE + 8], border=4))


# ----------------------------------------------------------------------------------------------- forest walk

def _tiny_forest() -> Forest:
    """Two trees over 3 features (1-based indices, 0 = leaf), [nodes, trees].

    tree 0: x[2] <= 0.5 ? (x[1] <= -1 ? 10 : 20) : 30      nodes: 1 root, 2 inner, 3 leaf 30, 4 leaf 10, 5 leaf 20
    tree 1: x[3] <= 2 ? 1 : 3                              nodes: 1 root, 2 leaf 1, 3 leaf 3
    """
    ldau = np.array([[2, 2], [4, 0], [0, 0], [0, 0], [0, 0]])
    rdau = np.array([[3, 3], [5, 0], [0, 0], [0, 0], [0, 0]])
    mbest = np.array([[2, 3], [1, 0], [0, 0], [0, 0], [0, 0]])
    upper = np.array([[0.5, 2.0], [-1.0, 0], [0, 0], [0, 0], [0, 0]])
    avnode = np.array([[99.0, 99.0], [99.0, 1.0], [30.0, 3.0], [10.0, 0], [20.0, 0]])
    return Forest(ldau, rdau, upper, avnode, mbest)


@pytest.mark.parametrize(("x", "expected"), [
    ([-2.0, 0.5, 2.0], (10 + 1) / 2),   # left-left, left (ties go left: <=)
    ([0.0, 0.0, 5.0], (20 + 3) / 2),    # left-right, right
    ([0.0, 0.7, 0.0], (30 + 1) / 2),    # right, left
    ([0.0, float("nan"), 0.0], (30 + 1) / 2),  # NaN compares false: right, as in pyiqa / randomForest
])
def test_forest_walk_on_a_hand_made_forest(x, expected):
    assert _tiny_forest().predict(np.array(x)) == expected


# ----------------------------------------------------------------------------------------------- the loader

def _save(path: Path, model: dict) -> Path:
    savemat(path, model)
    return path


def test_loader_reads_the_published_structure(tmp_path: Path, gold):
    model = load_ma_model(write_golden_model(tmp_path / "NRQM_model.mat"))
    assert model.linear.shape == (4,)
    assert [f.ldau.shape[1] for f in model.forests] == [6, 6, 6]
    assert all(f.mbest.max() <= n for f, n in zip(model.forests, N_FEATURES))


def test_loader_errors_name_the_file(tmp_path: Path, gold):
    centres, scales = gold["model"]["centres"], gold["model"]["scales"]

    not_mat = tmp_path / "junk.mat"
    not_mat.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(InputError, match="junk.mat.*not an NRQM model"):
        load_ma_model(not_mat)

    other = _save(tmp_path / "other.mat", {"mu_prisparam": np.zeros(36)})
    with pytest.raises(InputError, match="other.mat.*not an NRQM model"):
        load_ma_model(other)

    good = synthetic_model(centres, scales)
    good["model"]["linear"] = np.ones((3, 1))
    with pytest.raises(InputError, match="linear.mat.*4 finite"):
        load_ma_model(_save(tmp_path / "linear.mat", good))

    good = synthetic_model(centres, scales)
    good["model"]["rf"] = good["model"]["rf"][:, :2]
    with pytest.raises(InputError, match="two.mat.*3 forests"):
        load_ma_model(_save(tmp_path / "two.mat", good))

    good = synthetic_model(centres, scales)
    good["model"]["rf"][0, 1]["upper"] = good["model"]["rf"][0, 1]["upper"][:-1]
    with pytest.raises(InputError, match=r"shape.mat.*rf\{2\}\.upper"):
        load_ma_model(_save(tmp_path / "shape.mat", good))

    good = synthetic_model(centres, scales)
    good["model"]["rf"][0, 0]["lDau"] = good["model"]["rf"][0, 0]["lDau"] * 0 + 1  # a loop back to the root
    with pytest.raises(InputError, match=r"loop.mat.*rf\{1\}\.lDau"):
        load_ma_model(_save(tmp_path / "loop.mat", good))

    good = synthetic_model(centres, scales)
    good["model"]["rf"][0, 2]["mbest"] = good["model"]["rf"][0, 2]["mbest"] + 100
    with pytest.raises(InputError, match=r"feat.mat.*rf\{3\}\.mbest.*75"):
        load_ma_model(_save(tmp_path / "feat.mat", good))

    good = synthetic_model(centres, scales)
    good["model"]["rf"][0, 0] = {"lDau": np.zeros((2, 2))}
    with pytest.raises(InputError, match=r"fields.mat.*rf\{1\}"):
        load_ma_model(_save(tmp_path / "fields.mat", good))


def test_invalid_file_in_the_cache_is_an_input_error(weights_dir: Path):
    (weights_dir / "NRQM_model.mat").write_bytes(b"\x00" * 300)
    with pytest.raises(InputError, match="NRQM_model.mat"):
        MaMetric()


# ------------------------------------------------------------------------------ features: sense and pieces

def test_ggd_shape_recovers_known_shapes():
    rng = np.random.default_rng(0)
    gauss = rng.normal(size=(1, 200_000))
    laplace = rng.laplace(size=(1, 200_000))
    assert ggd_shape(gauss)[0] == pytest.approx(2.0, abs=0.05)
    assert ggd_shape(laplace)[0] == pytest.approx(1.0, abs=0.05)
    assert ggd_shape(np.zeros((1, 10)))[0] == pytest.approx(10.0)  # flat: rho 0 -> the largest shape


def test_blur_lowers_high_frequency_features():
    img = golden_images()["face0"]
    from PIL import Image, ImageFilter

    blurred = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(2.5)))
    y, yb = ma_luma(img, 4) / 255.0, ma_luma(blurred, 4) / 255.0
    # f3: small singular values of the 5x5 blocks carry the fine detail; blur removes it
    s, sb = svd_features(y), svd_features(yb)
    assert sb[5:].sum() < 0.5 * s[5:].sum()
    assert sb[0] == pytest.approx(s[0], rel=0.02)  # the block means (first singular value) stay
    # f1: the DCT coefficient-of-variation statistics on the finest level change; the GGD shape of AC coefficients
    # of a blurred image is peakier (smaller shape at the low end)
    d, db = block_dct_features(gauss_pyramid(y)[0]), block_dct_features(gauss_pyramid(yb)[0])
    assert not np.allclose(d, db, rtol=1e-3)
    assert db[0] < d[0]


def test_too_small_is_refused():
    with pytest.raises(ValueError, match=str(MA_MIN_SIDE)):
        ma_features_gray(np.zeros((MA_MIN_SIDE - 1, 200)))


def test_pi_formula():
    assert pi_score(7.0, 3.0) == 3.0
    assert pi_score(10.0, 0.0) == 0.0
    assert pi_score(2.5, 6.5) == pytest.approx(7.0)
    assert math.isnan(pi_score(float("nan"), 3.0)) and math.isnan(pi_score(5.0, float("nan")))
