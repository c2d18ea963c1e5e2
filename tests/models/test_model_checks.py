"""Hostile model folders: changed weights, unbounded or wrong architecture numbers in model.json (checked before any
weights are read or any module is built)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from facesr.errors import InputError
from facesr.models import RRDBNet
from facesr.models.io import check_model, load_generator, load_init_weights, save_generator

REPO = Path(__file__).resolve().parents[2]
TINY = {"num_feat": 8, "num_block": 1, "num_grow_ch": 4, "scale": 4}


def _model(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    folder = tmp_path / "model"
    save_generator(RRDBNet(**TINY), folder, {"variant": "l1_vgg", "steps": 1})
    return folder


def _flip_a_weight_byte(folder: Path) -> None:
    f = folder / "generator.safetensors"
    data = bytearray(f.read_bytes())
    header = int.from_bytes(data[:8], "little")
    i = 8 + header + (len(data) - 8 - header) // 2  # inside the tensor data, not the header
    data[i] ^= 0x01
    f.write_bytes(bytes(data))


def _edit_meta(folder: Path, **changes: object) -> None:
    meta = json.loads((folder / "model.json").read_text())
    meta.update(changes)
    (folder / "model.json").write_text(json.dumps(meta))


def _facesr(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "facesr", "--params", str(REPO / "params.yaml"), "--profile", "ci",
                           *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_one_flipped_weight_byte_is_refused_by_every_loader(tmp_path: Path) -> None:
    folder = _model(tmp_path)
    load_generator(folder)  # intact: loads
    _flip_a_weight_byte(folder)
    for call in (lambda: load_generator(folder), lambda: load_generator(folder / "generator.safetensors"),
                 lambda: load_init_weights(RRDBNet(**TINY), folder), lambda: check_model(folder)):
        with pytest.raises(InputError, match=r"generator.safetensors: sha256 .* does not match generator_sha256"):
            call()


def test_the_mlflow_pyfunc_checks_the_digest(tmp_path: Path) -> None:
    from facesr.mlflow_model import FacesrSuperResolution

    folder = _model(tmp_path)
    _flip_a_weight_byte(folder)
    with pytest.raises(InputError, match="does not match generator_sha256"):
        FacesrSuperResolution().load_context(SimpleNamespace(artifacts={"model": str(folder)}))


def test_upscale_with_changed_weights_exits_2_naming_the_file(tmp_path: Path) -> None:
    folder = _model(tmp_path)
    Image.new("RGB", (8, 8), (90, 60, 30)).save(tmp_path / "face.png")
    ok = _facesr("upscale", str(tmp_path / "face.png"), "--model", str(folder), "--out", str(tmp_path / "o1"),
                 "--no-progress", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    _flip_a_weight_byte(folder)
    r = _facesr("upscale", str(tmp_path / "face.png"), "--model", str(folder), "--out", str(tmp_path / "o2"),
                "--no-progress", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert f"{folder / 'generator.safetensors'}: sha256" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o2").exists() or not any((tmp_path / "o2").iterdir())


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"num_block": 20000, "num_feat": 512}, "num_block: Input should be less than or equal to 64"),
    ({"num_feat": -1}, "num_feat: Input should be greater than 0"),
    ({"num_grow_ch": 0}, "num_grow_ch: Input should be greater than 0"),
    ({"num_feat": True}, "num_feat: Input should be a valid integer"),
    ({"num_block": "1"}, "num_block: Input should be a valid integer"),
    ({"scale": 3}, "scale: Input should be 2, 4 or 8"),
    ({"num_in_ch": 1}, "num_in_ch: must be 3"),
    ({"num_block": 2}, "do not match the generator"),  # in bounds, but the header has 1 block
    ({"num_feat": 16}, "shape mismatch"),
    ({"scale": 8}, "missing 2 key(s)"),
])
def test_model_json_architecture_is_checked_before_anything_is_built(tmp_path: Path, changes: dict,
                                                                        fragment: str) -> None:
    folder = _model(tmp_path)
    _edit_meta(folder, **changes)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InputError) as exc:
        load_generator(folder)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 200_000  # KiB: nothing big was allocated
    msg = str(exc.value)
    assert fragment in msg
    assert str(folder / "model.json") in msg or str(folder / "generator.safetensors") in msg


def test_a_huge_model_json_in_a_small_folder_exits_2_from_the_cli(tmp_path: Path) -> None:
    folder = _model(tmp_path)
    _edit_meta(folder, num_block=20000, num_feat=512)
    Image.new("RGB", (8, 8)).save(tmp_path / "face.png")
    r = _facesr("upscale", str(tmp_path / "face.png"), "--model", str(folder), "--out", str(tmp_path / "o"),
                "--no-progress", cwd=tmp_path)
    assert r.returncode == 2 and f"{folder / 'model.json'}: invalid architecture" in r.stderr, r.stderr
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < 3_000_000  # KiB: the torch import, no model
    _edit_meta(folder, num_block=1, num_feat=-1)
    r = _facesr("upscale", str(tmp_path / "face.png"), "--model", str(folder), "--out", str(tmp_path / "o"),
                "--no-progress", cwd=tmp_path)
    assert r.returncode == 2 and "num_feat" in r.stderr and "RuntimeError" not in r.stderr, r.stderr


def test_a_bare_safetensors_with_hostile_metadata_is_bounded_too(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    net = RRDBNet(**TINY)
    f = tmp_path / "g.safetensors"
    save_file(net.state_dict(), str(f), metadata={"num_block": "20000"})
    with pytest.raises(InputError, match=r"g.safetensors: invalid architecture: num_block"):
        load_generator(f)
    save_file({"conv_first.weight": torch.zeros(3, 3, dtype=torch.int32)}, str(f))
    with pytest.raises(InputError, match="g.safetensors"):
        load_generator(f)


def test_a_pickled_init_file_is_refused_without_advice_to_unpickle(tmp_path: Path) -> None:
    pkl = tmp_path / "net_g.pth"
    torch.save({"params": {"conv_first.weight": torch.zeros(1)}, "opt": Path("x")}, pkl)
    with pytest.raises(InputError) as exc:
        load_init_weights(RRDBNet(**TINY), pkl)
    msg = str(exc.value)
    assert str(pkl) in msg and "pickled Python objects" in msg and "weights_only" not in msg


def test_evaluate_refuses_changed_weights_naming_the_file(tmp_path: Path, prepared_ci: Path, capsys) -> None:
    from facesr.cli.main import main

    folder = _model(tmp_path)
    _flip_a_weight_byte(folder)
    code = main(["--params", str(REPO / "params.yaml"), "--profile", "ci", "evaluate", "--data", str(prepared_ci),
                 "--model", f"l1_vgg={folder}", "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert code == 2 and f"{folder / 'generator.safetensors'}: sha256" in err, err
    assert not (tmp_path / "eval").exists()


def test_model_location_is_what_every_model_argument_may_name(tmp_path: Path) -> None:
    """models.io.model_location / find_model_folder: the one answer to "where is the model" (upscale, evaluate,
    quality, the registry)."""
    from facesr.models.io import find_model_folder, model_location

    folder = _model(tmp_path / "train_out")  # train_out/model
    weights = folder / "generator.safetensors"
    assert model_location(tmp_path / "train_out") == folder  # a training output folder
    assert model_location(folder) == folder  # a model folder
    assert model_location(weights) == weights  # a .safetensors file, as given
    # an MLflow download: one model.json somewhere below
    save_generator(RRDBNet(**TINY), tmp_path / "dl" / "a" / "b" / "model", {"variant": "psnr"})
    assert find_model_folder(tmp_path / "dl") == tmp_path / "dl" / "a" / "b" / "model"
    pickled = tmp_path / "weights.pth"
    pickled.write_bytes(b"not loaded")
    with pytest.raises(InputError, match=r"--model .*weights.pth: a model file must be .safetensors"):
        model_location(pickled, "--model ")
    with pytest.raises(InputError, match="no such file or folder"):
        model_location(tmp_path / "missing")
    save_generator(RRDBNet(**TINY), tmp_path / "dl" / "c" / "model", {"variant": "psnr"})
    with pytest.raises(InputError, match="several model.json"):
        model_location(tmp_path / "dl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no model.json found"):
        model_location(tmp_path / "empty")
