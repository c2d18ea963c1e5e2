"""Fast checks of dvc.yaml against params.yaml (no pipeline run)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from facesr.config import load_params

REPO = Path(__file__).resolve().parents[2]
RESOLVED = "outputs/params.yaml"
DVC = Path(sys.executable).parent / "dvc"


def _body(stage: dict) -> dict:
    return stage.get("do", stage)


def _tracked(stage: dict) -> dict[str, list[str]]:
    """{params file: [keys]} of a stage (a bare key would be of params.yaml)."""
    out: dict[str, list[str]] = {}
    for p in _body(stage).get("params", []):
        if isinstance(p, str):
            out.setdefault("params.yaml", []).append(p)
        else:
            for file, keys in p.items():
                out.setdefault(file, []).extend(keys)
    return out


def _dvc(*args: str) -> subprocess.CompletedProcess:
    if not DVC.exists():
        pytest.skip("dvc is not installed next to this interpreter")
    return subprocess.run([str(DVC), *args], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def dvc_yaml() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())


@pytest.fixture(scope="module")
def params_raw() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_stages_track_only_resolved_params(dvc_yaml):
    """The profile merge is config.py's alone: stages read keys of the resolved file, never params.yaml's profiles."""
    stages = dvc_yaml["stages"]
    assert stages["params"]["cmd"] == f"facesr params resolve --out {RESOLVED}"
    assert "params.yaml" in stages["params"]["deps"] and RESOLVED in stages["params"]["outs"]
    for name, stage in stages.items():
        tracked = _tracked(stage)
        assert set(tracked) <= {RESOLVED}, f"stage {name} tracks {set(tracked) - {RESOLVED}}"
        assert name == "params" or tracked, f"stage {name} tracks no params"
        assert not any(k.startswith(("profile", "profiles")) for k in tracked.get(RESOLVED, []))
    assert "${profile}" not in (REPO / "dvc.yaml").read_text()


def test_every_tracked_key_exists_in_the_resolved_params_of_every_profile(dvc_yaml, params_raw):
    """DVC refuses a stage whose params key is missing from the file: each key is in every profile's resolved params."""
    for prof in ["paper", *params_raw["profiles"]]:
        resolved = load_params(REPO / "params.yaml", profile=prof).model_dump(mode="json")
        assert resolved["profile"] == prof
        for name, stage in dvc_yaml["stages"].items():
            keys = _tracked(stage).get(RESOLVED, [])
            for variant in resolved["loss"]["variants"] if "foreach" in stage else [None]:
                for key in keys:
                    key = key.replace("${key}", variant) if variant else key
                    cur = resolved
                    for part in key.split("."):
                        assert isinstance(cur, dict) and part in cur, f"{prof}: stage {name}: {key} not resolved"
                        cur = cur[part]


def test_one_training_stage_per_variant_and_the_cli_verbs_in_order(dvc_yaml, params_raw):
    stages = dvc_yaml["stages"]
    assert list(stages) == ["params", "ingest", "prepare", "pretrain", "train", "evaluate", "register", "promote"]
    assert stages["train"]["foreach"] == "${loss.variants}"
    # one shared PSNR stage; every GAN variant starts from its model and depends on it
    assert stages["pretrain"]["cmd"].startswith("facesr pretrain --data data/prepared --out outputs/train/psnr")
    assert "outputs/train/psnr/model" in stages["pretrain"]["outs"]
    assert "--init-from outputs/train/psnr/model" in stages["train"]["do"]["cmd"]
    assert "outputs/train/psnr/model" in stages["train"]["do"]["deps"]
    for name in ("pretrain", "train"):  # the LR operator makes every training patch: changing it re-trains
        deps = _body(stages[name])["deps"]
        assert "src/facesr/data/degrade.py" in deps and "src/facesr/data/dataset.py" in deps
    # evaluate and register take every model from the params, and depend on the folder of every train stage's outs
    assert "--models-from outputs/train" in stages["evaluate"]["cmd"]
    assert "--models-from outputs/train" in stages["register"]["cmd"]
    for name in ("evaluate", "register"):
        assert "outputs/train" in stages[name]["deps"] and "--model " not in stages[name]["cmd"]
        assert "loss.variants" in _tracked(stages[name])[RESOLVED]  # a variant removed: re-run on the others
    for name in ("register", "promote"):
        outs = stages[name]["outs"]
        assert all(list(o.values())[0]["cache"] is False for o in outs)  # MLflow side effects: receipts not cached


def test_no_variant_is_named_in_dvc_yaml(params_raw):
    """A variant is a key of loss.variants and nothing else: dvc.yaml never names one."""
    text = (REPO / "dvc.yaml").read_text()
    assert params_raw["loss"]["variants"]
    for variant in params_raw["loss"]["variants"]:
        assert not re.search(rf"\b{variant}\b", text), f"dvc.yaml names the variant {variant}"


def test_dvc_parses_the_pipeline(params_raw):
    out = _dvc("dag", "--md")
    assert out.returncode == 0, out.stderr
    names = dict(re.findall(r'(node\d+)\["([^"]+)"\]', out.stdout))
    edges = {(names[a], names[b]) for a, b in re.findall(r"(node\d+)-->(node\d+)", out.stdout)}
    trains = {f"train@{v}" for v in params_raw["loss"]["variants"]}
    assert set(names.values()) == {"params", "ingest", "prepare", "pretrain", "evaluate", "register",
                                   "promote"} | trains
    assert {("params", s) for s in ("ingest", "prepare", "pretrain", "evaluate", "register", "promote")} <= edges
    assert {("ingest", "prepare"), ("prepare", "pretrain"), ("pretrain", "evaluate"), ("evaluate", "register"),
            ("register", "promote"), ("pretrain", "register")} <= edges
    for t in trains:  # evaluate and register run after every train stage (their outs are in outputs/train)
        assert {("params", t), ("prepare", t), ("pretrain", t), (t, "evaluate"), (t, "register")} <= edges


def test_dvc_does_not_see_the_training_checkpoints():
    """evaluate/register depend on outputs/train: the checkpoints there (not outs, large) must not be part of it."""
    out = _dvc("check-ignore", "outputs/train/l1_vgg/checkpoints/last.pt", "outputs/train/psnr/checkpoints/x",
               "outputs/train/psnr/model/model.json", "outputs/train/l1_vgg/metrics.jsonl")
    ignored = set(out.stdout.split())
    assert ignored == {"outputs/train/l1_vgg/checkpoints/last.pt", "outputs/train/psnr/checkpoints/x"}, out


def test_ingest_depends_on_the_bundled_sample(dvc_yaml):
    """With the embedded default source, a change to the bundled faces must re-run ingest (and all after it)."""
    assert "src/facesr/data/sample" in dvc_yaml["stages"]["ingest"]["deps"]
    assert (REPO / "src/facesr/data/sample").is_dir()
