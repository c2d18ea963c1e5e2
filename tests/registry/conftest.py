"""Fixtures for the registry tests: tiny training outputs and evaluate folders made by the tests themselves."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "infer"))

from tiny_models import make_model_dir  # noqa: E402

METRICS = ("psnr_y", "ssim_y", "lpips")


def make_eval(folder: Path, values: dict[str, dict[str, list[float]]], weights: str = "untrained") -> Path:
    """An evaluate output: metrics.json (mean, ci95, n, weights) and per_image.csv (model,image,<metric>...)."""
    folder.mkdir(parents=True, exist_ok=True)
    metrics: dict = {}
    rows = []
    for model, per_metric in values.items():
        metrics[model] = {}
        n = len(next(iter(per_metric.values())))
        for m, vals in per_metric.items():
            a = np.asarray(vals, float)
            metrics[model][m] = {"mean": float(a.mean()), "ci95": [float(a.min()), float(a.max())], "n": n,
                                 "weights": weights if m == "lpips" else "real"}
        for i in range(n):
            rows.append({"model": model, "image": f"img{i:02d}", **{m: per_metric[m][i] for m in per_metric}})
    (folder / "metrics.json").write_text(json.dumps(metrics))
    with open(folder / "per_image.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["model", "image", *METRICS])
        w.writeheader()
        w.writerows(rows)
    (folder / "table.md").write_text("| model | lpips |\n|---|---|\n")
    (folder / "grids").mkdir(exist_ok=True)
    from PIL import Image

    Image.new("RGB", (8, 8), (10, 20, 30)).save(folder / "grids" / "grid-0.png")
    return folder


def scores(lpips: float, n: int = 12, psnr: float = 25.0, ssim: float = 0.7, seed: int = 0, spread: float = 0.01):
    rng = np.random.default_rng(seed)
    return {"psnr_y": list(psnr + rng.normal(0, 0.1, n)), "ssim_y": list(ssim + rng.normal(0, 0.005, n)),
            "lpips": list(lpips + rng.normal(0, spread, n))}


@pytest.fixture(scope="session")
def template_db(tmp_path_factory):
    """An initialised, empty MLflow SQLite store (creating the schema takes seconds; each test copies the file)."""
    from mlflow import MlflowClient

    d = tmp_path_factory.mktemp("template-db")
    uri = f"sqlite:///{d}/mlflow.db"
    MlflowClient(uri, uri).search_experiments()
    return d / "mlflow.db"


@pytest.fixture()
def workspace(tmp_path, monkeypatch, template_db):
    """A clean cwd with the embedded default store (sqlite:///mlflow.db, ./mlruns) and two tiny trained variants."""
    import shutil

    shutil.copyfile(template_db, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("FACESR_PIPELINE_RUN_ID", "run-test-1")
    a = make_model_dir(tmp_path / "models" / "l1_vgg", variant="l1_vgg", seed=1)
    b = make_model_dir(tmp_path / "models" / "l1_vgg_pieapp", variant="l1_vgg_pieapp", seed=2)
    data = tmp_path / "prepared"
    (data / "test" / "hr").mkdir(parents=True)
    (data / "manifest.json").write_text('{"format": "facesr.prepared/1"}')
    return {"root": tmp_path, "l1_vgg": a, "l1_vgg_pieapp": b, "data": data}
