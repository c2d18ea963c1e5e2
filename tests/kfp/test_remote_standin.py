"""`facesr pipeline submit|schedule` against a stand-in KFP REST server on 127.0.0.1 (no cluster here).

The stand-in records the requests kfp.Client sends; the tests check the KFP REST API contract: the create-run,
create-recurring-run and upload requests carry the compiled pipeline spec (with the GPU pool settings), the run
arguments, the cron expression, and the bearer token from the environment.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from facesr.cli.main import main

from . import kfp_standin

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "params.yaml"


@pytest.fixture()
def standin(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.config/kfp/context.json of the user
    for var in ("FACESR_KFP_TOKEN", "KF_PIPELINES_SA_TOKEN_PATH", "KF_PIPELINES_ENDPOINT",
                "KF_PIPELINES_DEFAULT_EXPERIMENT_NAME", "KF_PIPELINES_OVERRIDE_EXPERIMENT_NAME"):
        monkeypatch.delenv(var, raising=False)
    s = kfp_standin.start()
    yield s
    s.server.shutdown()
    s.server.server_close()


def _spec_of(body: dict) -> dict:
    spec = body["pipeline_spec"]
    # kfp sends {"pipeline_spec": ..., "platform_spec": ...} when the package has a platform section
    return spec.get("pipeline_spec", spec)


def _platform_of(body: dict) -> dict:
    return body["pipeline_spec"].get("platform_spec", {})


def _check_gpu_spec(spec: dict, platform: dict) -> None:
    assert spec["pipelineInfo"]["name"] == "facesr-training"
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert k8s["nodeSelector"]["labels"] == {"facesr.io/pool": "gpu"}
    assert k8s["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_submit_sends_inline_spec_arguments_and_bearer_token_to_standin(standin, monkeypatch, capsys):
    monkeypatch.setenv("FACESR_KFP_TOKEN", "tok-123")
    rc = main(["--params", str(PARAMS), "--profile", "demo", "--set", "train.max_steps=7", "pipeline", "submit",
               "--host", standin.url, "--experiment", "facesr-test", "--run-name", "r1",
               "--source", "s3://faces/v2", "--data-version", "2026-11", "--variant", "l1_vgg",
               "--mlflow-uri", "http://mlflow.facesr:5000", "--model-name", "facesr-x4"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "run-1" in out
    runs = standin.find("POST", "/apis/v2beta1/runs")
    assert len(runs) == 1
    body = runs[0].json()
    assert body["display_name"] == "r1" and body["experiment_id"] == "exp-1"
    _check_gpu_spec(_spec_of(body), _platform_of(body))
    p = body["runtime_config"]["parameters"]
    assert p["source"] == "s3://faces/v2" and p["data_version"] == "2026-11"
    assert p["profile"] == "demo" and p["variants"] == ["l1_vgg"]
    assert p["overrides"] == ["train.max_steps=7"]
    assert p["mlflow_uri"] == "http://mlflow.facesr:5000" and p["model_name"] == "facesr-x4"
    assert p["params_text"] == PARAMS.read_text()  # --send-params is the default
    exps = standin.find("POST", "/apis/v2beta1/experiments")
    assert exps and exps[0].json()["display_name"] == "facesr-test"
    assert all(r.headers.get("authorization") == "Bearer tok-123" for r in standin.requests)


def test_schedule_sends_cron_and_spec_to_standin(standin, capsys):
    rc = main(["--params", str(PARAMS), "pipeline", "schedule", "--host", standin.url, "--cron", "0 30 2 * * 1",
               "--image-params", "--service-account", "facesr-pipeline-runner"])
    out = capsys.readouterr().out
    assert rc == 0, out
    rr = standin.find("POST", "/apis/v2beta1/recurringruns")
    assert len(rr) == 1
    body = rr[0].json()
    assert body["trigger"]["cron_schedule"]["cron"] == "0 30 2 * * 1"
    assert body["mode"] == "ENABLE"
    assert str(body["max_concurrency"]) == "1"
    _check_gpu_spec(_spec_of(body), _platform_of(body))
    p = body["runtime_config"]["parameters"]
    assert p["params_text"] == ""  # --image-params: the params.yaml baked into the image
    assert "mlflow_uri" not in p  # not given: the pipeline's default, params pipeline.mlflow_uri
    assert body["service_account"] == "facesr-pipeline-runner"
    assert p["profile"] == "demo"  # params.yaml's active profile
    # no data_version: every scheduled run must re-ingest, so caching is off for the recurring run
    tasks = _spec_of(body)["root"]["dag"]["tasks"]
    assert tasks["ingest"].get("cachingOptions", {}).get("enableCache") in (None, False)
    assert tasks["prepare"].get("cachingOptions", {}).get("enableCache") in (None, False)
    assert "rr-1" in out and "0 30 2 * * 1" in out
    assert not any("authorization" in r.headers for r in standin.requests)


def test_schedule_default_cron_comes_from_params(standin, capsys):
    rc = main(["--params", str(PARAMS), "pipeline", "schedule", "--host", standin.url])
    assert rc == 0, capsys.readouterr()
    expected = yaml.safe_load(PARAMS.read_text())["pipeline"]["cron"]
    body = standin.find("POST", "/apis/v2beta1/recurringruns")[0].json()
    assert body["trigger"]["cron_schedule"]["cron"] == expected


def test_schedule_with_upload_uploads_spec_then_references_version(standin, capsys):
    rc = main(["--params", str(PARAMS), "pipeline", "schedule", "--host", standin.url, "--cron", "0 0 4 * * *",
               "--upload"])
    assert rc == 0, capsys.readouterr()
    up = standin.find("POST", "/apis/v2beta1/pipelines/upload")
    assert len(up) == 1 and up[0].query["name"] == ["facesr-training"]
    assert up[0].headers["content-type"].startswith("multipart/form-data")
    uploaded = up[0].body.decode()
    assert "pipelineInfo" in uploaded and "nvidia.com/gpu" in uploaded and "facesr.io/pool" in uploaded
    # scheduled without --data-version: the uploaded spec has caching off (each scheduled run re-ingests)
    assert "enableCache: true" not in uploaded
    body = standin.find("POST", "/apis/v2beta1/recurringruns")[0].json()
    assert body["pipeline_version_reference"] == {"pipeline_id": "pl-1", "pipeline_version_id": "pv-1"}
    assert body.get("pipeline_spec") is None
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 4 * * *"
    # a second upload becomes a new version of the same pipeline
    rc = main(["--params", str(PARAMS), "pipeline", "submit", "--host", standin.url, "--upload"])
    assert rc == 0, capsys.readouterr()
    upv = standin.find("POST", "/apis/v2beta1/pipelines/upload_version")
    assert len(upv) == 1 and upv[0].query["pipelineid"] == ["pl-1"]
    assert "pipelineInfo" in upv[0].body.decode()
    assert "enableCache: true" in upv[0].body.decode()  # a submitted run keeps the compiled caching
    run = standin.find("POST", "/apis/v2beta1/runs")[0].json()
    assert run["pipeline_version_reference"] == {"pipeline_id": "pl-1", "pipeline_version_id": "pv-2"}


def test_sa_token_file_from_env_is_sent(standin, monkeypatch, tmp_path, capsys):
    tok = tmp_path / "token"
    tok.write_text("sa-token-xyz")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tok))
    rc = main(["--params", str(PARAMS), "pipeline", "submit", "--host", standin.url])
    assert rc == 0, capsys.readouterr()
    assert standin.find("POST", "/apis/v2beta1/runs")[0].headers["authorization"] == "Bearer sa-token-xyz"


@pytest.mark.parametrize("cron", ["0 3 * * 0", "every sunday", "0 0 3 * * 0 2026 x"])
def test_bad_cron_is_a_usage_error_and_sends_nothing(standin, capsys, cron):
    rc = main(["--params", str(PARAMS), "pipeline", "schedule", "--host", standin.url, "--cron", cron])
    err = capsys.readouterr().err
    assert rc == 2
    assert "--cron" in err and "6 fields" in err
    assert standin.requests == []


def test_unreachable_server_is_a_clear_failure(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("FACESR_KFP_TOKEN", raising=False)
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    # kfp.Client retries healthz 5 times with a sleep; make that instant
    import time as _time

    monkeypatch.setattr(_time, "sleep", lambda *_: None)
    rc = main(["--params", str(PARAMS), "pipeline", "submit", "--host", f"http://127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"127.0.0.1:{port}" in err and "error:" in err


def test_bad_host_is_a_usage_error(capsys):
    rc = main(["--params", str(PARAMS), "pipeline", "submit", "--host", "kfp.example.com"])
    assert rc == 2
    assert "--host" in capsys.readouterr().err
