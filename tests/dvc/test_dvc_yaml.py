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
PROFILE_KEY = "profiles.${profile}."


def _stage_params(stage: dict) -> list[str]:
    body = stage.get("do", stage)
    return [p for p in body.get("params", []) if isinstance(p, str)]


@pytest.fixture(scope="module")
def dvc_yaml() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())


@pytest.fixture(scope="module")
def params_raw() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_every_profile_has_every_key_a_stage_tracks(dvc_yaml, params_raw):
    """DVC refuses a stage whose params key is missing: each profile must list every tracked section."""
    profiles = params_raw["profiles"]
    tracked = {p[len(PROFILE_KEY):] for s in dvc_yaml["stages"].values() for p in _stage_params(s)
               if p.startswith(PROFILE_KEY)}
    assert {"data", "train", "evaluate", "registry"} <= tracked
    missing = [f"profiles.{name}.{key}" for name, prof in profiles.items() for key in sorted(tracked)
               if key.split(".")[0] not in (prof or {})]
    assert not missing, f"params.yaml lacks {missing}: add them (empty {{}} = no override)"


def test_base_keys_tracked_by_stages_exist_and_are_valid(dvc_yaml, params_raw):
    for name, stage in dvc_yaml["stages"].items():
        for key in _stage_params(stage):
            if "${" in key:
                continue
            cur = params_raw
            for part in key.split("."):
                assert isinstance(cur, dict) and part in cur, f"stage {name}: params key {key} not in params.yaml"
                cur = cur[part]
    # each profile resolves (the stages run with whichever is active)
    for prof in ["paper", *params_raw["profiles"]]:
        assert load_params(REPO / "params.yaml", profile=prof).profile == prof


def test_one_training_stage_per_variant_and_the_cli_verbs_in_order(dvc_yaml, params_raw):
    stages = dvc_yaml["stages"]
    assert list(stages) == ["ingest", "prepare", "pretrain", "train", "evaluate", "register", "promote"]
    assert stages["train"]["foreach"] == "${loss.variants}"
    # one shared PSNR stage; every GAN variant starts from its model and depends on it
    assert stages["pretrain"]["cmd"].startswith("facesr pretrain --data data/prepared --out outputs/train/psnr")
    assert "outputs/train/psnr/model" in stages["pretrain"]["outs"]
    assert "--init-from outputs/train/psnr/model" in stages["train"]["do"]["cmd"]
    assert "outputs/train/psnr/model" in stages["train"]["do"]["deps"]
    for name in ("pretrain", "train"):  # the LR operator makes every training patch: changing it re-trains
        deps = stages[name].get("do", stages[name])["deps"]
        assert "src/facesr/data/degrade.py" in deps and "src/facesr/data/dataset.py" in deps
    assert "--model psnr=outputs/train/psnr" in stages["evaluate"]["cmd"]
    assert "--model psnr=outputs/train/psnr" in stages["register"]["cmd"]
    assert set(params_raw["loss"]["variants"]) == {"l1_vgg", "l1_vgg_pieapp"}
    for variant in params_raw["loss"]["variants"]:
        assert f"--model {variant}=outputs/train/{variant}" in stages["evaluate"]["cmd"]
        assert f"--model {variant}=outputs/train/{variant}" in stages["register"]["cmd"]
    for name in ("register", "promote"):
        outs = stages[name]["outs"]
        assert all(list(o.values())[0]["cache"] is False for o in outs)  # MLflow side effects: receipts not cached


def test_dvc_parses_the_pipeline():
    dvc = Path(sys.executable).parent / "dvc"
    if not dvc.exists():
        pytest.skip("dvc is not installed next to this interpreter")
    out = subprocess.run([str(dvc), "dag", "--md"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    names = dict(re.findall(r'(node\d+)\["([^"]+)"\]', out.stdout))
    edges = {(names[a], names[b]) for a, b in re.findall(r"(node\d+)-->(node\d+)", out.stdout)}
    assert set(names.values()) == {"ingest", "prepare", "pretrain", "train@l1_vgg", "train@l1_vgg_pieapp",
                                   "evaluate", "register", "promote"}
    assert {("ingest", "prepare"), ("prepare", "pretrain"), ("pretrain", "train@l1_vgg"),
            ("pretrain", "train@l1_vgg_pieapp"), ("pretrain", "evaluate"), ("prepare", "train@l1_vgg"),
            ("train@l1_vgg", "evaluate"), ("train@l1_vgg_pieapp", "evaluate"), ("evaluate", "register"),
            ("register", "promote")} <= edges


def test_ingest_depends_on_the_bundled_sample():
    """With the embedded default source, a change to the bundled faces must re-run ingest (and all after it)."""
    stages = yaml.safe_load((Path(__file__).resolve().parents[2] / "dvc.yaml").read_text())["stages"]
    assert "src/facesr/data/sample" in stages["ingest"]["deps"]
    assert (Path(__file__).resolve().parents[2] / "src/facesr/data/sample").is_dir()
