"""`facesr pipeline run --local`: the whole DAG through kfp.local.SubprocessRunner(use_venv=False).

The first test puts a stand-in CLI (tests/kfp/fake_facesr.py) behind the components to check the wiring of every
task quickly; the slow test runs the real steps with the ci profile, a tmp MLflow (SQLite) and the bundled sample.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "params.yaml"
FAKE = Path(__file__).with_name("fake_facesr.py")
FACESR = [sys.executable, "-c", "from facesr.cli.main import entrypoint; entrypoint()"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACESR_", "MLFLOW_TRACKING"))}
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "OMP_NUM_THREADS": "1",
                "CUDA_VISIBLE_DEVICES": "", "HOME": str(tmp_path)}, **extra)
    return env


@pytest.mark.slow
def test_local_run_wires_every_task_with_standin_cli(tmp_path):
    """With a third variant added in the params file (no code change): trained, evaluated and registered too."""
    log = tmp_path / "calls.jsonl"
    env = _env(tmp_path, FACESR_KFP_CLI=json.dumps([sys.executable, str(FAKE)]), FAKE_FACESR_LOG=str(log))
    root = tmp_path / "root"
    raw = yaml.safe_load(PARAMS.read_text())
    raw["loss"]["variants"]["l1_gan"] = {"pixel": 0.01, "perceptual": 0.0, "gan": 0.005, "pieapp": 0.0}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    r = subprocess.run(FACESR + ["--params", str(params), "--profile", "ci", "--set", "seed=5", "pipeline", "run",
                                 "--local", "--pipeline-root", str(root), "--source", "dir:/faces",
                                 "--data-version", "v7", "--model-name", "facesr-test",
                                 "--mlflow-uri", f"sqlite:///{tmp_path}/m.db"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    calls = [json.loads(x) for x in log.read_text().splitlines()]
    verbs = [c["verb"] for c in calls]
    assert verbs[:3] == ["ingest", "prepare", "pretrain"] and verbs[-3:] == ["evaluate", "register", "promote"]
    assert verbs.count("pretrain") == 1, "the shared PSNR model is trained once per run"
    assert sorted(c["args"]["variant"] for c in calls if c["verb"] == "train") == ["l1_gan", "l1_vgg", "l1_vgg_pieapp"]
    by = {c["verb"]: c for c in calls}
    # params plumbing: the same params file, profile and --set reach every step
    assert all(c["profile"] == "ci" and "seed=5" in c["set"] for c in calls)
    assert all(c["params_text"] == params.read_text() for c in calls)
    assert by["ingest"]["args"]["source"] == "dir:/faces"
    # artifacts flow: ingest out -> prepare raw -> train data -> evaluate models -> register eval
    assert by["prepare"]["args"]["raw"] == by["ingest"]["args"]["out"]
    trains = [c for c in calls if c["verb"] == "train"]
    assert all(t["args"]["data"] == by["prepare"]["args"]["out"] for t in trains)
    assert by["pretrain"]["args"]["data"] == by["prepare"]["args"]["out"]
    # training ran in the checkpoint folder (ROOT/checkpoints/RUN_ID/VARIANT), then was copied into the artifacts;
    # pretrain in ROOT/checkpoints/pretrain-<inputs key>/psnr (no run id: the task is cached)
    assert all(Path(t["args"]["out"]).parent.parent == root / "checkpoints" for t in trains)
    pre_work = Path(by["pretrain"]["args"]["out"])
    assert pre_work.name == "psnr" and pre_work.parent.name.startswith("pretrain-")
    # both variants start from the PSNR model artifact (its model folder), the copy of the pretrain workdir
    evaluated = dict(m.split("=", 1) for m in by["evaluate"]["args"]["model"])
    assert list(evaluated)[0] == "psnr" and sorted(list(evaluated)[1:]) == ["l1_gan", "l1_vgg", "l1_vgg_pieapp"]
    assert all(t["args"]["init_from"] == str(Path(evaluated["psnr"]) / "model") for t in trains)
    assert json.loads((Path(evaluated["psnr"]) / "model" / "model.json").read_text())["variant"] == "psnr"
    for name, folder in evaluated.items():
        assert json.loads((Path(folder) / "model" / "model.json").read_text())["variant"] == name
    assert dict(m.split("=", 1) for m in by["register"]["args"]["model"]) == evaluated
    assert by["register"]["args"]["eval"] == by["evaluate"]["args"]["out"]
    assert by["register"]["args"]["data"] == by["prepare"]["args"]["out"]
    assert "registry.model_name=facesr-test" in by["register"]["set"]
    assert by["register"]["env"]["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path}/m.db"
    assert by["register"]["env"]["FACESR_PIPELINE_RUN_ID"]  # the KFP run id, for lineage
    # KFP UI views of the evaluation
    ev = Path(by["evaluate"]["args"]["out"])
    task_dir = ev.parent
    assert (task_dir / "table").read_text() == (ev / "table.md").read_text()
    page = (task_dir / "grids").read_text()
    assert "<img" in page and f"<h1>facesr: LR | bicubic | {' | '.join(evaluated)} | HR</h1>" in page
    raw_meta = json.loads((root.glob("*/ingest/executor_output.json").__next__()).read_text())
    assert raw_meta["artifacts"]["raw"]["artifacts"][0]["metadata"]["data_version"] == "v7"
    assert f"evaluation          {ev}" in r.stdout


def test_run_without_local_is_a_usage_error(capsys):
    from facesr.cli.main import main

    assert main(["--params", str(PARAMS), "pipeline", "run"]) == 2
    err = capsys.readouterr().err
    assert "--local" in err and "submit" in err


def test_unknown_variant_is_a_usage_error(capsys, tmp_path):
    from facesr.cli.main import main

    rc = main(["--params", str(PARAMS), "pipeline", "run", "--local", "--pipeline-root", str(tmp_path / "r"),
               "--variant", "l2"])
    err = capsys.readouterr().err
    assert rc == 2 and "l2" in err and "l1_vgg_pieapp" in err
    assert not (tmp_path / "r").exists(), "rejected before anything ran"


def _verbs_missing() -> list[str]:
    from facesr.cli.main import cli

    return [v for v in ("ingest", "prepare", "pretrain", "train", "evaluate", "register", "promote")
            if v not in cli.commands]


@pytest.mark.slow
@pytest.mark.integration
def test_local_run_ci_profile_real_steps_evaluates_and_registers(tmp_path):
    assert not _verbs_missing(), "every step the pipeline runs must be a facesr verb"
    db = tmp_path / "mlflow.db"
    env = _env(tmp_path, MLFLOW_TRACKING_URI=f"sqlite:///{db}")
    root = tmp_path / "root"
    # the ci profile; only the metrics the promotion policy reads (primary lpips, guards psnr_y/ssim_y), for time
    r = subprocess.run(FACESR + ["--params", str(PARAMS), "--profile", "ci",
                                 "--set", "evaluate.metrics=[psnr_y,ssim_y,lpips]", "pipeline", "run", "--local",
                                 "--pipeline-root", str(root)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    (run,) = [p for p in root.iterdir() if p.name.startswith("facesr-training-")]
    # every task ran and left its step folder
    assert json.loads((run / "ingest" / "raw" / "manifest.json").read_text())["format"] == "facesr.raw/1"
    assert json.loads((run / "prepare" / "prepared" / "manifest.json").read_text())["format"] == "facesr.prepared/1"
    variants = sorted(json.loads((p / "model" / "model.json").read_text())["variant"]
                      for p in run.glob("for-loop-1-iteration-*/train/model"))
    assert variants == ["l1_vgg", "l1_vgg_pieapp"]
    assert (run / "pretrain" / "model" / "model" / "generator.safetensors").is_file()
    ev = run / "evaluate" / "evaluation"
    metrics = json.loads((ev / "metrics.json").read_text())
    assert {"bicubic", "psnr", "l1_vgg", "l1_vgg_pieapp"} <= set(metrics)
    assert (ev / "table.md").is_file() and (ev / "per_image.csv").is_file() and list((ev / "grids").glob("*.png"))
    executor = json.loads((run / "evaluate" / "executor_output.json").read_text())
    logged = executor["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert logged["l1_vgg/psnr_y"] == pytest.approx(metrics["l1_vgg"]["psnr_y"]["mean"])
    page = (run / "evaluate" / "grids").read_text()
    # the page's header names the real grid's columns: evaluate's own model order (metrics.json keeps it)
    assert "<img" in page and f"<h1>facesr: LR | {' | '.join(metrics)} | HR</h1>" in page
    # a registered model with the aliases, in the tmp MLflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    challenger = client.get_model_version_by_alias("facesr", "challenger")
    assert f"registered version  {challenger.version}" in r.stdout
    champion = client.get_model_version_by_alias("facesr", "champion")  # the first one becomes champion
    assert champion.version == challenger.version
