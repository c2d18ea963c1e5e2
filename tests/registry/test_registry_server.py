"""Against a real MLflow tracking server (SQLite backend, artifacts proxied to S3 on moto's server) started here."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import make_eval, scores
from PIL import Image

from facesr.cli.main import main
from facesr.fsutil import tree_hash

pytestmark = pytest.mark.integration
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    pytest.importorskip("moto.server")
    import boto3
    from moto.server import ThreadedMotoServer

    tmp = tmp_path_factory.mktemp("mlflow-server")
    s3_port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port)
    moto.start()
    s3_url = f"http://127.0.0.1:{s3_port}"
    s3 = boto3.client("s3", endpoint_url=s3_url, **{k.lower(): v for k, v in AWS.items() if "KEY" in k},
                      region_name="us-east-1")
    s3.create_bucket(Bucket="facesr-artifacts")
    port = free_port()
    env = {**os.environ, **AWS, "MLFLOW_S3_ENDPOINT_URL": s3_url, "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = open(tmp / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
         "--artifacts-destination", "s3://facesr-artifacts/mlflow", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if requests.get(uri + "/health", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            moto.stop()
            pytest.fail("mlflow server did not start:\n" + (tmp / "server.log").read_text()[-3000:])
        time.sleep(0.5)
    yield {"uri": uri, "s3": s3, "s3_url": s3_url}
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    moto.stop()


def cli(repo_root, *args):
    return main(["--params", str(repo_root / "params.yaml"), "--profile", "ci", *args])


@pytest.mark.slow
def test_server_register_promote_concurrently_and_upscale(mlflow_server, workspace, repo_root, monkeypatch, capsys):
    ws, root = workspace, workspace["root"]
    for k, v in AWS.items():
        monkeypatch.setenv(k, v)
    reg = ["register", "--model", f"l1_vgg={ws['l1_vgg']}", "--model", f"l1_vgg_pieapp={ws['l1_vgg_pieapp']}",
           "--data", str(ws["data"])]
    ev1 = make_eval(root / "eval1", {"bicubic": scores(0.5), "l1_vgg": scores(0.30, seed=1), "l1_vgg_pieapp": scores(0.28, seed=2)})

    # server down: clear error, exit 1, training outputs untouched; the same command works once it is up
    before = tree_hash(ws["l1_vgg"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    assert cli(repo_root, *reg, "--eval", str(ev1)) == 1
    assert "unreachable" in capsys.readouterr().err
    assert tree_hash(ws["l1_vgg"]) == before

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server["uri"])
    assert cli(repo_root, *reg, "--eval", str(ev1)) == 0
    assert cli(repo_root, "promote") == 0  # first champion
    # artifacts (the model, per-image CSV, grids) went through the server into S3
    keys = [o["Key"] for o in mlflow_server["s3"].list_objects_v2(Bucket="facesr-artifacts")["Contents"]]
    assert any(k.endswith("generator.safetensors") for k in keys)
    assert any(k.endswith("per_image.csv") for k in keys)

    # a better challenger, promoted by two processes at once: exactly one moves the alias, the other sees it done
    ev2 = make_eval(root / "eval2", {"bicubic": scores(0.5), "l1_vgg": scores(0.12, seed=3), "l1_vgg_pieapp": scores(0.10, seed=4)})
    assert cli(repo_root, *reg, "--eval", str(ev2)) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "facesr.cli.main", "--params", str(repo_root / "params.yaml"), "--profile", "ci",
           "promote"]
    code = "import sys; from facesr.cli.main import main; sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", code, *cmd[3:]]
    procs = [subprocess.Popen(cmd, env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    texts = [o[0] for o in outs]
    assert sum("PROMOTED: lpips improved" in t for t in texts) == 1, texts
    assert sum("already the champion" in t for t in texts) == 1, texts

    from mlflow import MlflowClient

    c = MlflowClient(mlflow_server["uri"], mlflow_server["uri"])
    champ = c.get_model_version_by_alias("facesr", "champion")
    assert str(champ.version) == str(c.get_model_version_by_alias("facesr", "challenger").version)
    assert champ.tags["facesr.promotion.decision"] == "promoted"
    names = [m.name for m in c.search_registered_models()]
    assert "facesr.promotion-lock" not in names  # the lock was released

    # upscale from the champion, served by the server + S3
    src = root / "face.png"
    Image.fromarray((np.random.default_rng(1).random((20, 30, 3)) * 255).astype(np.uint8)).save(src)
    capsys.readouterr()
    assert cli(repo_root, "upscale", str(src), "--model", "models:/facesr@champion", "--out", str(root / "up"),
               "--no-progress") == 0
    with Image.open(root / "up" / "face.png") as im:
        assert im.size == (120, 80)
    assert cli(repo_root, "lineage", "models:/facesr@champion") == 0
    assert "run-test-1" in capsys.readouterr().out
