"""A deterministic synthetic NRQM_model.mat (the published file's structure, small random forests).

Shared by ``make_ma_golden.py`` (pyiqa's scores on it) and ``test_ma.py`` (ours on it). The published model is the
output of randomForest-matlab's ``regRF_train`` (compressed) per feature group plus ``robustfit`` weights:
``model.linear`` (4x1) and ``model.rf`` (1x3 cell) of structs with fields, in this order, lDau, rDau, nodestatus,
nrnodes, upper, avnode, mbest, ndtree, ntree, coef (pyiqa reads fields 0, 1, 4, 5, 6 by position).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).resolve().parent / "data" / "ma_golden.json"
SEED = 20170301
N_FEATURES = (18, 45, 75)


def _tree(rng: np.random.Generator, centres: np.ndarray, scales: np.ndarray, depth: int) -> list[tuple]:
    """Nodes (ldau, rdau, status, upper, avnode, mbest) of one tree in randomForest order (children after parents).

    Splits use a random feature and a threshold near that feature's typical value, so different images take
    different paths; branches stop at random depths (unbalanced trees, leaves at several levels).
    """
    nodes: list[list] = []

    def add(level: int) -> int:
        idx = len(nodes)
        nodes.append([0, 0, -1, 0.0, float(rng.uniform(0, 10)), 0])
        if level < depth and (level < 2 or rng.random() < 0.7):
            f = int(rng.integers(len(centres)))
            nodes[idx][2] = -3
            nodes[idx][3] = float(centres[f] + scales[f] * rng.normal(0, 0.5))
            nodes[idx][5] = f + 1
            nodes[idx][0] = add(level + 1) + 1
            nodes[idx][1] = add(level + 1) + 1
        return idx

    add(0)
    return [tuple(n) for n in nodes]


def synthetic_model(centres: list[list[float]], scales: list[list[float]], seed: int = SEED, n_trees: int = 6,
                    depth: int = 5) -> dict:
    """``{"model": struct}`` for ``scipy.io.savemat``: three forests over 18/45/75 features and linear weights."""
    rng = np.random.default_rng(seed)
    forests = np.empty((1, 3), dtype=object)
    for g in range(3):
        c, s = np.asarray(centres[g], dtype=np.float64), np.asarray(scales[g], dtype=np.float64)
        assert c.shape == (N_FEATURES[g],) and s.shape == c.shape
        trees = [_tree(rng, c, s, depth) for _ in range(n_trees)]
        n_nodes = max(len(t) for t in trees)
        arr = {k: np.zeros((n_nodes, n_trees)) for k in ("ldau", "rdau", "status", "upper", "avnode", "mbest")}
        for j, tree in enumerate(trees):
            for i, (ld, rd, st, up, av, mb) in enumerate(tree):
                arr["ldau"][i, j], arr["rdau"][i, j], arr["status"][i, j] = ld, rd, st
                arr["upper"][i, j], arr["avnode"][i, j], arr["mbest"][i, j] = up, av, mb
        forest = {
            "lDau": arr["ldau"].astype(np.int32), "rDau": arr["rdau"].astype(np.int32),
            "nodestatus": arr["status"].astype(np.int32), "nrnodes": np.array([[n_nodes]], dtype=np.float64),
            "upper": arr["upper"], "avnode": arr["avnode"], "mbest": arr["mbest"].astype(np.int32),
            "ndtree": np.array([[len(t) for t in trees]], dtype=np.int32),
            "ntree": np.array([[n_trees]], dtype=np.float64), "coef": np.zeros((2, 1)),
        }
        forests[0, g] = forest
    linear = np.array([[1.5], [0.35], [0.25], [0.3]])
    return {"model": {"linear": linear, "rf": forests}}


def write_synthetic_model(path: Path, centres: list[list[float]], scales: list[list[float]], seed: int = SEED) -> Path:
    from scipy.io import savemat

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, synthetic_model(centres, scales, seed))
    return path


def golden() -> dict:
    return json.loads(GOLDEN.read_text())


def write_golden_model(path: Path) -> Path:
    """The synthetic model the golden scores were computed with (its thresholds centre on the golden features)."""
    g = golden()
    return write_synthetic_model(path, g["model"]["centres"], g["model"]["scales"], g["model"]["seed"])
