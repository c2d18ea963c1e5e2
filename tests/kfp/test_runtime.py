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


def test_launcher_is_torchrun_for_more_than_one_process_only():
    assert runtime.launcher(1) == [] and runtime.command(["train"], 1) == runtime.cli_command() + ["train"]
    assert runtime.launcher(4) == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                   "--nproc_per_node=4", "--no-python"]
    assert runtime.command(["pretrain", "--data", "D"], 2) == runtime.launcher(2) + runtime.cli_command() + [
        "pretrain", "--data", "D"]
    with pytest.raises(InputError, match="pipeline.gpu.count"):
        runtime.launcher(0)


def _artifact(tmp_path: Path, name: str, variant: str) -> Path:
    a = tmp_path / name
    (a / "model").mkdir(parents=True)
    (a / "model" / "model.json").write_text(json.dumps({"variant": variant}))
    return a


def test_train_starts_from_the_psnr_artifacts_model_folder(fake_cli, tmp_path):
    psnr = _artifact(tmp_path, "psnr-art", "psnr")
    runtime.train_step(str(_prepared(tmp_path)), "l1_vgg", str(tmp_path / "m"), init_from=str(psnr))
    (call,) = fake_cli()
    assert call["args"]["init_from"] == str(psnr / "model") and call["args"]["variant"] == "l1_vgg"
    assert runtime.init_model_dir(psnr / "model") == str(psnr / "model")  # a model folder as given


def test_retried_pretrain_resumes_in_a_folder_keyed_by_its_inputs(fake_cli, tmp_path, monkeypatch):
    """No run id (the task is cached): the checkpoint folder is keyed by the data manifest and the params, so a retry
    finds it (--resume --restart-if-changed) and other inputs get another folder."""
    monkeypatch.setenv("FAKE_FACESR_FAIL_TRAIN_ONCE", "1")
    data, root = _prepared(tmp_path), tmp_path / "pvc"
    cli = {"profile": "ci", "overrides": ["seed=1"], "params_text": "seed: 1\n"}
    with pytest.raises(runtime.StepFailed):
        runtime.pretrain_step(str(data), str(tmp_path / "a1"), checkpoint_root=str(root), **cli)
    info = runtime.pretrain_step(str(data), str(tmp_path / "a1"), checkpoint_root=str(root), **cli)
    work = Path(info["workdir"])
    assert info["resumed"] is True and work.name == "psnr"
    assert work.parent == root / f"pretrain-{runtime.inputs_key(str(data), **cli)}"
    first, second = fake_cli()
    assert first["verb"] == second["verb"] == "pretrain" and first["args"]["out"] == second["args"]["out"] == str(work)
    assert (first["args"]["resume"], second["args"]["resume"], second["args"]["restart_if_changed"]) == (
        False, True, True)
    assert json.loads((tmp_path / "a1" / "model" / "model.json").read_text())["variant"] == "psnr"
    # other params -> another folder; the same inputs again -> the finished run is copied, nothing trains
    other = runtime.inputs_key(str(data), **{**cli, "params_text": "seed: 2\n"})
    assert other != runtime.inputs_key(str(data), **cli)
    (data / "manifest.json").write_text('{"changed": true}')
    assert runtime.inputs_key(str(data), **cli) != work.parent.name.removeprefix("pretrain-")
    (data / "manifest.json").write_text("{}")
    runtime.pretrain_step(str(data), str(tmp_path / "a2"), checkpoint_root=str(root), **cli)
    assert len(fake_cli()) == 2 and (tmp_path / "a2" / "model" / "model.json").is_file()


def test_grid_page_header_names_the_columns_evaluate_wrote(tmp_path):
    """The header is the grids' own column order, read from evaluate's output (manifest inputs.models), for any
    number of variants; without a manifest, the models of metrics.json (the same order)."""
    ev = tmp_path / "eval"
    (ev / "grids").mkdir(parents=True)
    (ev / "grids" / "g0.png").write_bytes(b"\x89PNG")
    models = {"bicubic": {}, "psnr": {}, "l1_vgg_pieapp": {}, "l1_vgg": {}, "l1_gan": {}}
    (ev / "manifest.json").write_text(json.dumps({"inputs": {"models": models}}))
    (ev / "metrics.json").write_text(json.dumps({"bicubic": {}, "psnr": {}}))
    assert runtime.write_grids_html(ev, tmp_path / "g.html") == 1
    assert "<h1>facesr: LR | bicubic | psnr | l1_vgg_pieapp | l1_vgg | l1_gan | HR</h1>" in (
        tmp_path / "g.html").read_text()
    (ev / "manifest.json").unlink()
    (ev / "metrics.json").write_text(json.dumps({"bicubic": {}, "psnr": {}, "l1_vgg_pieapp": {}}))
    runtime.write_grids_html(ev, tmp_path / "g2.html")
    assert "<h1>facesr: LR | bicubic | psnr | l1_vgg_pieapp | HR</h1>" in (tmp_path / "g2.html").read_text()


def test_model_args_name_each_artifact_by_its_variant(tmp_path):
    arts = [_artifact(tmp_path, "p", "psnr"), _artifact(tmp_path, "b", "l1_vgg_pieapp"), _artifact(tmp_path, "a", "l1_vgg")]
    args = runtime.model_args([SimpleNamespace(path=str(a), metadata={}) for a in arts])
    assert args == ["--model", f"psnr={arts[0]}", "--model", f"l1_vgg_pieapp={arts[1]}", "--model", f"l1_vgg={arts[2]}"]
    with pytest.raises(InputError, match="both named 'psnr'"):
        runtime.model_args([SimpleNamespace(path=str(arts[0]), metadata={})] * 2)


@pytest.mark.slow
def test_pretrain_component_runs_two_gloo_processes_for_real(prepared_ci, tmp_path, monkeypatch):
    """The pretrain component's own command path with nproc_per_node=2: torchrun, two CPU (gloo) ranks of the real
    `facesr pretrain`, ci profile, a few steps; rank 0 writes the model, which lands in the artifact."""
    from facesr.kfp import components

    monkeypatch.delenv(runtime.CLI_ENV, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    params = Path(__file__).resolve().parents[2] / "params.yaml"
    model = SimpleNamespace(path=str(tmp_path / "artifact"), metadata={})
    components.pretrain(data=SimpleNamespace(path=str(prepared_ci), metadata={}), profile="ci",
                        overrides=["pretrain.steps=2", "pretrain.batch_size=2", "pretrain.hr_size=64",
                                   "data.num_workers=0", "train.checkpoint_every=1"],
                        params_text=params.read_text(), checkpoint_root=str(tmp_path / "pvc"), nproc_per_node=2,
                        model=model)
    art = Path(model.path)
    summary = json.loads((art / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["variant"] == "psnr" and summary["finished"]
    assert (art / "model" / "generator.safetensors").is_file()
    assert json.loads((art / "model" / "model.json").read_text())["variant"] == "psnr"
    assert model.metadata == {"variant": "psnr", "resumed": False}
    rows = [json.loads(x) for x in (art / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
