"""The dependency split: facesr's core serves a registered model without the pipeline's tools.

pyproject's core excludes the MLOps/KFP packages; a registered model records only facesr (core) and mlflow as its pip
requirements; a process that cannot import dvc, kfp, kubernetes, kagglehub, boto3, lpips or piq loads a registered
model with ``mlflow.pyfunc.load_model``, predicts, and runs ``facesr upscale``. Models registered from the former
``src/facesr/mlflow_model.py`` still load.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from conftest import make_eval, scores
from tiny_models import make_model_dir

from facesr.cli.main import main

REPO = Path(__file__).resolve().parents[2]
PIPELINE_ONLY = {"dvc", "dvc-s3", "kfp", "kfp-kubernetes", "kubernetes", "kagglehub", "boto3"}
# what the served model must never import: the pipeline's tools and the evaluation metrics' packages
BLOCKED = ("dvc", "kfp", "kubernetes", "kagglehub", "boto3", "lpips", "piq")


def _name(req: str) -> str:
    """The normalised distribution name of a requirement string (``moto[server]>=5`` -> ``moto``)."""
    return re.split(r"[\s\[<>=!~;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_the_core_dependencies_exclude_the_pipeline_tools():
    project = _project()
    core = {_name(r) for r in project["dependencies"]}
    assert {"torch", "numpy", "pillow", "safetensors", "pydantic", "pyyaml", "click"} <= core
    assert not core & (PIPELINE_ONLY | {"mlflow", "lpips", "piq"}), core
    extras = {k: {_name(r) for r in v} for k, v in project["optional-dependencies"].items()}
    assert {"mlflow", "dvc", "dvc-s3", "boto3", "kagglehub"} <= extras["mlops"]
    assert {"kfp", "kfp-kubernetes", "kubernetes"} <= extras["kfp"]
    assert {"lpips", "piq"} <= extras["eval"]
    assert project["optional-dependencies"]["all"] == ["facesr[eval,mlops,kfp]"]


def test_the_lock_pins_every_dependency_of_all_and_test():
    """requirements.lock stays the one resolved set of `.[all,test]`: every name in pyproject is pinned there."""
    project = _project()
    lock = {_name(line) for line in (REPO / "requirements.lock").read_text(encoding="utf-8").splitlines()
            if "==" in line and not line.startswith("#")}
    names = {_name(r) for r in project["dependencies"]}
    for extra, reqs in project["optional-dependencies"].items():
        names |= {_name(r) for r in reqs if not r.startswith("facesr[")}
    assert names and not names - lock, sorted(names - lock)
    build = {_name(r) for r in tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]}
    assert "setuptools" in lock and "setuptools" in build  # the editable install is built with the locked one


def test_setup_and_image_install_everything():
    setup = (REPO / "scripts" / "setup.sh").read_text(encoding="utf-8")
    assert "pip_ install -q -r requirements.lock" in setup and 'pip_ install -q --no-deps --no-build-isolation -e ".[all,test]"' in setup
    dockerfile = (REPO / "components" / "Dockerfile").read_text(encoding="utf-8")
    assert "pip install -r requirements.lock" in dockerfile and "pip install --no-deps .[all]" in dockerfile


def _register(repo_root: Path, ws: dict) -> None:
    ev = make_eval(ws["root"] / "eval", {"bicubic": scores(0.5), "l1_vgg": scores(0.3, seed=1)})
    assert main(["--params", str(repo_root / "params.yaml"), "--profile", "ci", "register", "--eval", str(ev),
                 "--model", f"l1_vgg={ws['l1_vgg']}"]) == 0


def _requirements(root: Path, uri: str) -> list[str]:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    path = mlflow.artifacts.download_artifacts(f"{uri}/requirements.txt", dst_path=str(root / "reqs"))
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


CHILD = """
import importlib.abc, json, sys
BLOCKED = set(sys.argv[1].split(","))

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: not part of facesr's core")

sys.meta_path.insert(0, Block())
import mlflow, numpy as np
from PIL import Image

mlflow.set_tracking_uri(sys.argv[2])
model = mlflow.pyfunc.load_model("models:/facesr@challenger")
y = model.predict(np.random.default_rng(0).random((2, 3, 9, 11), dtype=np.float32))
from facesr.cli.main import main
rcs = [main(["--params", sys.argv[3], "--profile", "ci", "upscale", sys.argv[4], "--model", m, "--out", out,
             "--no-progress", "--device", "cpu"]) for m, out in ((sys.argv[5], "up-folder"),
                                                                 ("models:/facesr@challenger", "up-registry"))]
sizes = [Image.open(f"{out}/face.png").size for out in ("up-folder", "up-registry")]
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"shape": list(y.shape), "dtype": str(y.dtype), "rcs": rcs, "sizes": sizes, "loaded": loaded}))
"""


@pytest.mark.slow
def test_a_registered_model_is_served_by_the_core_alone(workspace, repo_root):
    from PIL import Image

    ws = workspace
    root = ws["root"]
    _register(repo_root, ws)
    import facesr

    reqs = _requirements(root, "models:/facesr@challenger")
    names = {_name(r) for r in reqs}
    assert f"facesr=={facesr.__version__}" in reqs and "mlflow" in names, reqs
    assert not names & PIPELINE_ONLY and not names & {"lpips", "piq"}, reqs

    Image.fromarray((np.random.default_rng(1).random((7, 10, 3)) * 255).astype(np.uint8)).save(root / "face.png")
    tiny = make_model_dir(root / "tiny", variant="l1_vgg", seed=3)
    r = subprocess.run([sys.executable, "-c", CHILD, ",".join(BLOCKED), f"sqlite:///{root}/mlflow.db",
                        str(repo_root / "params.yaml"), str(root / "face.png"), str(tiny)],
                       cwd=root, capture_output=True, text=True, timeout=300,
                       env={**_clean_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db"})
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["shape"] == [2, 3, 36, 44] and out["dtype"] == "float32"
    assert out["rcs"] == [0, 0] and out["sizes"] == [[40, 28], [40, 28]], r.stderr[-3000:]
    assert out["loaded"] == []


def test_the_block_in_that_child_really_blocks(tmp_path):
    """The finder the served-model test relies on makes an import of a blocked package fail."""
    code = CHILD.split("import mlflow")[0] + "import kfp\n"
    r = subprocess.run([sys.executable, "-c", code, "kfp"], capture_output=True, text=True, timeout=120,
                       env=_clean_env())
    assert r.returncode != 0 and "kfp is blocked" in r.stderr


def _clean_env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "MLFLOW_REG"))}
    return {**env, "MLFLOW_DISABLE_TELEMETRY": "true", "CUDA_VISIBLE_DEVICES": ""}


def test_a_model_registered_from_the_former_mlflow_model_py_still_loads(tmp_path):
    """Versions registered before facesr.registry.pyfunc hold a copy of src/facesr/mlflow_model.py (tests/registry/
    legacy); today's facesr must load and serve them, with the same output as the current pyfunc model."""
    import mlflow

    model_dir = make_model_dir(tmp_path / "m", variant="l1_vgg", seed=4) / "model"
    x = np.random.default_rng(2).random((1, 3, 6, 5), dtype=np.float32)
    outs = []
    for code in (Path(__file__).parent / "legacy" / "mlflow_model.py",
                 REPO / "src" / "facesr" / "registry" / "pyfunc.py"):
        dst = tmp_path / code.stem
        mlflow.pyfunc.save_model(str(dst), python_model=str(code), artifacts={"model": str(model_dir)},
                                 pip_requirements=["facesr", "mlflow"])
        assert (dst / code.name).is_file()
        outs.append(mlflow.pyfunc.load_model(str(dst)).predict(x))
    assert outs[0].shape == (1, 3, 24, 20) and outs[0].dtype == np.float32
    np.testing.assert_array_equal(outs[0], outs[1])


def test_the_former_module_name_still_imports():
    from facesr.mlflow_model import FacesrSuperResolution
    from facesr.registry.pyfunc import FacesrSuperResolution as Current

    assert FacesrSuperResolution is Current
