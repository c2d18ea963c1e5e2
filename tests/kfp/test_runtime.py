"""What a pipeline task does around the CLI: command lines, checkpoint resume on retry, model names, KFP UI outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from facesr.errors import InputError
from facesr.kfp import runtime

FAKE = Path(__file__).with_name("fake_facesr.py")


@pytest.fixture()
def fake_cli(monkeypatch, tmp_path):
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv(runtime.CLI_ENV, json.dumps([sys.executable, str(FAKE)]))
    monkeypatch.setenv("FAKE_FACESR_LOG", str(log))

    def calls():
        return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []

    return calls


def test_global_args_order_and_empty_items():
    assert runtime.global_args("ci", ["a.b=1", "", "c=2"], "/p.yaml") == [
        "--params", "/p.yaml", "--profile", "ci", "--set", "a.b=1", "--set", "c=2"]
    assert runtime.global_args("", (), None) == []


def test_run_cli_passes_params_text_profile_sets_and_mlflow_uri(fake_cli, tmp_path):
    runtime.run_cli(["ingest", "--source", "sample", "--out", str(tmp_path / "raw")], profile="ci",
                    overrides=["seed=3"], params_text="seed: 3\n", mlflow_uri="sqlite:///m.db",
                    env={"FACESR_PIPELINE_RUN_ID": "run-9"})
    (call,) = fake_cli()
    assert call["verb"] == "ingest" and call["profile"] == "ci" and call["set"] == ["seed=3"]
    assert call["params_text"] == "seed: 3\n"
    assert call["env"] == {"MLFLOW_TRACKING_URI": "sqlite:///m.db", "FACESR_PIPELINE_RUN_ID": "run-9"}
    assert (tmp_path / "raw" / "manifest.json").is_file()


def test_run_cli_drops_an_empty_s3_endpoint(fake_cli, tmp_path, monkeypatch):
    import os

    seen = {}
    real_popen = runtime.subprocess.Popen

    def spy(cmd, **kw):
        seen.update(kw["env"])
        return real_popen(cmd, **kw)

    monkeypatch.setattr(runtime.subprocess, "Popen", spy)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "")
    runtime.run_cli(["promote"])
    assert "AWS_ENDPOINT_URL" not in seen and seen["PATH"] == os.environ["PATH"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    runtime.run_cli(["promote"])
    assert seen["AWS_ENDPOINT_URL"] == "http://minio:9000"


def test_run_cli_failure_raises_with_status_and_output(fake_cli, tmp_path):
    with pytest.raises(runtime.StepFailed) as ei:
        runtime.run_cli(["bogus"])
    assert ei.value.code == 2 and "unknown verb bogus" in str(ei.value)


def test_bad_cli_override_env_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(runtime.CLI_ENV, "facesr --debug")
    with pytest.raises(InputError, match=runtime.CLI_ENV):
        runtime.cli_command()


def _prepared(tmp_path: Path) -> Path:
    d = tmp_path / "prepared"
    d.mkdir()
    (d / "manifest.json").write_text("{}")
    return d


def test_train_without_checkpoint_root_trains_into_the_artifact(fake_cli, tmp_path):
    out = tmp_path / "model"
    info = runtime.train_step(str(_prepared(tmp_path)), "l1_vgg", str(out), checkpoint_root="", run_id="r")
    assert info == {"resumed": False, "workdir": str(out)}
    assert json.loads((out / "model" / "model.json").read_text())["variant"] == "l1_vgg"
    assert fake_cli()[0]["args"]["out"] == str(out)


def test_retried_training_resumes_from_the_checkpoint_volume(fake_cli, tmp_path, monkeypatch):
    """First attempt: a checkpoint is written, then the pod dies. The retry (same run id) passes --resume."""
    monkeypatch.setenv("FAKE_FACESR_FAIL_TRAIN_ONCE", "1")
    data, root, out = _prepared(tmp_path), tmp_path / "pvc", tmp_path / "artifact"
    with pytest.raises(runtime.StepFailed):
        runtime.train_step(str(data), "l1_vgg_pieapp", str(out), checkpoint_root=str(root), run_id="run/42")
    assert not out.exists(), "a failed attempt leaves no artifact"
    work = root / "run_42" / "l1_vgg_pieapp"
    assert (work / "checkpoints" / "last.pt").is_file()
    info = runtime.train_step(str(data), "l1_vgg_pieapp", str(out), checkpoint_root=str(root), run_id="run/42")
    assert info == {"resumed": True, "workdir": str(work)}
    first, second = fake_cli()
    assert first["args"]["resume"] is False and second["args"]["resume"] is True
    assert second["args"]["out"] == str(work)
    # the artifact is the whole train folder (model, checkpoints, summary)
    assert json.loads((out / "train_summary.json").read_text()) == {"variant": "l1_vgg_pieapp", "resumed": True}
    assert (out / "checkpoints" / "last.pt").is_file()
    # a third attempt (e.g. the copy failed) finds the finished run and does not train again
    runtime.train_step(str(data), "l1_vgg_pieapp", str(tmp_path / "artifact2"), checkpoint_root=str(root),
                       run_id="run/42")
    assert len(fake_cli()) == 2 and (tmp_path / "artifact2" / "model" / "model.json").is_file()
    # another run id starts fresh
    monkeypatch.delenv("FAKE_FACESR_FAIL_TRAIN_ONCE")
    runtime.train_step(str(data), "l1_vgg_pieapp", str(tmp_path / "a3"), checkpoint_root=str(root), run_id="run-43")
    assert fake_cli()[-1]["args"]["resume"] is False


def test_model_args_names_from_metadata_then_model_json(tmp_path):
    a = tmp_path / "a"
    (a / "model").mkdir(parents=True)
    (a / "model" / "model.json").write_text(json.dumps({"variant": "l1_vgg_pieapp"}))
    models = [SimpleNamespace(path=str(tmp_path / "b"), metadata={"variant": "l1_vgg"}),
              SimpleNamespace(path=str(a), metadata={})]
    assert runtime.model_args(models) == ["--model", f"l1_vgg={tmp_path / 'b'}", "--model", f"l1_vgg_pieapp={a}"]
    with pytest.raises(InputError, match="both named 'l1_vgg'"):
        runtime.model_args([models[0], models[0]])
    with pytest.raises(InputError, match="cannot tell which variant"):
        runtime.model_name(tmp_path / "nothing")


def test_eval_outputs_for_the_kfp_ui(tmp_path):
    ev = tmp_path / "eval"
    (ev / "grids").mkdir(parents=True)
    (ev / "grids" / "g0.png").write_bytes(b"\x89PNG-0")
    (ev / "grids" / "g1.png").write_bytes(b"\x89PNG-1")
    (ev / "metrics.json").write_text(json.dumps({
        "l1_vgg": {"psnr_y": {"mean": 24.5, "ci95": [24, 25]}, "niqe": {"mean": None}, "lpips": {"mean": float("nan")}},
        "bicubic": {"psnr_y": {"mean": 23.0}}}))
    (ev / "table.md").write_text("| model | psnr |\n")
    logged = {}
    n = runtime.log_eval_metrics(ev, SimpleNamespace(log_metric=lambda k, v: logged.__setitem__(k, v)))
    assert n == 2 and logged == {"l1_vgg/psnr_y": 24.5, "bicubic/psnr_y": 23.0}
    runtime.write_table(ev, tmp_path / "t.md")
    assert (tmp_path / "t.md").read_text() == "| model | psnr |\n"
    assert runtime.write_grids_html(ev, tmp_path / "g.html") == 2
    page = (tmp_path / "g.html").read_text()
    import base64

    assert base64.b64encode(b"\x89PNG-1").decode() in page and page.count("<img") == 2


def test_unwritable_checkpoint_volume_is_a_clear_error(fake_cli, tmp_path, monkeypatch):
    """A root-owned NFS volume and the non-root image user: mkdir is refused (simulated: tests may run as root)."""
    data = _prepared(tmp_path)
    real_mkdir = Path.mkdir

    def refuse(self, *a, **kw):
        if str(self).startswith(str(tmp_path / "nfs")):
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *a, **kw)

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(runtime.FacesrError, match="not writable by uid"):
        runtime.train_step(str(data), "l1_vgg", str(tmp_path / "m"), checkpoint_root=str(tmp_path / "nfs"),
                           run_id="r")
    assert fake_cli() == [], "nothing was trained"
