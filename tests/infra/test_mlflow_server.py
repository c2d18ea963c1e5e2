"""The MLflow container's command line, as the kubelet would expand it from the rendered dev overlay, starts the
pinned mlflow server; the probe path answers for any Host (the kubelet sends the pod IP), the API answers for the
in-cluster service names and refuses other hosts (DNS-rebinding protection from --allowed-hosts).
The PostgreSQL URI and the S3 destination are swapped for SQLite and a folder (no database or S3 here)."""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, host: str, path: str = "/health") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host})
        return conn.getresponse().status
    finally:
        conn.close()


def test_rendered_mlflow_command_serves_health_for_the_probe_and_the_service_name(objects, tmp_path):
    dep = next(o for o in objects["dev"] if o["kind"] == "Deployment" and o["metadata"]["name"] == "mlflow")
    cm = next(o for o in objects["dev"] if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "mlflow-config")["data"]
    c = dep["spec"]["template"]["spec"]["containers"][0]

    env = {}
    for e in c["env"]:
        ref = e.get("valueFrom", {})
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "configMapKeyRef" in ref:
            if ref["configMapKeyRef"]["key"] in cm:
                env[e["name"]] = cm[ref["configMapKeyRef"]["key"]]
        elif "secretKeyRef" in ref:
            env[e["name"]] = "placeholder"
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in c["args"]]   # kubelet expansion

    port = _free_port()
    swapped = []
    for a in args:
        if a.startswith("--backend-store-uri="):
            assert a.startswith("--backend-store-uri=postgresql://placeholder:placeholder@postgres.facesr.svc")
            a = f"--backend-store-uri=sqlite:///{tmp_path / 'mlflow.db'}"
        elif a.startswith("--artifacts-destination="):
            assert a == "--artifacts-destination=s3://mlflow-artifacts"
            a = f"--artifacts-destination={tmp_path / 'artifacts'}"
        elif a.startswith("--host="):
            a = "--host=127.0.0.1"
        elif a.startswith("--workers="):
            a = "--workers=1"   # startup time on 2 CPU cores; the value itself is the ConfigMap's business
        elif a.startswith("--port="):
            assert a == f"--port={c['ports'][0]['containerPort']}"
            a = f"--port={port}"
        swapped.append(a)
    assert swapped[0] == "server" and "--serve-artifacts" in swapped

    mlflow = Path(sys.executable).parent / "mlflow"
    if not mlflow.exists():
        pytest.skip("mlflow console script not in this venv")
    run_env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "HOME": str(tmp_path)}
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL"):
        run_env.pop(k, None)
    proc = subprocess.Popen([str(mlflow), *swapped], env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        probe = dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]
        pod_ip_host = f"10.20.3.7:{c['ports'][0]['containerPort']}"   # what the kubelet sends as Host
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited {proc.returncode}:\n{proc.stdout.read()[-3000:]}")
            try:
                status = _get(port, pod_ip_host, probe["path"])
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(1)
        assert status == 200, f"probe never answered 200 (last {status})"
        api = "/api/2.0/mlflow/experiments/search?max_results=1"
        assert _get(port, "mlflow.facesr.svc.cluster.local:5000", api) == 200
        assert _get(port, "mlflow.facesr:5000", api) == 200
        assert _get(port, "localhost:5000", api) == 200            # kubectl port-forward
        assert _get(port, "attacker.example.com", api) in (400, 403)
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=10)
