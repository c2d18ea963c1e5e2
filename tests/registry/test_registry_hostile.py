"""The MLflow side against kills, signals, hung servers and changed weights (real processes, real stores, a real
HTTP server)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import make_eval, scores

from facesr import registry
from facesr.registry import tracking

REPO = Path(__file__).resolve().parents[2]
NO_CHALLENGER = "has no version with alias 'challenger'"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_HTTP_", "MLFLOW_TRACKING", "MLFLOW_REG"))}
    return {**env, "MLFLOW_DISABLE_TELEMETRY": "true", "CUDA_VISIBLE_DEVICES": "", **extra}


def _facesr(*args: str) -> list[str]:
    return [sys.executable, "-m", "facesr", "--params", str(REPO / "params.yaml"), "--profile", "ci", *args]


# --- a SQLite store killed while it is being created --------------------------------------------------------------


@pytest.mark.parametrize("delay", [0.1, 0.4])  # the migration takes about 0.9 s on 2 idle cores
def test_kill_9_during_the_first_use_of_a_sqlite_store_never_bricks_it(tmp_path: Path, delay: float) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    db = folder / "mlflow.db"
    env = _env(MLFLOW_TRACKING_URI=f"sqlite:///{db}")
    proc = subprocess.Popen(_facesr("promote"), env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(("mlflow.db", ".mlflow.db.new-")) for p in folder.iterdir()):
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(delay)  # this kill lands in the middle of the migration
        assert proc.poll() is None, "the store was made before the kill: the test did not test anything"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    assert not db.exists() or tracking._sqlite_problem(db) is None  # no store, or a complete one: never half-made
    r = subprocess.run(_facesr("promote"), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and NO_CHALLENGER in r.stderr, r.stderr[-2000:]
    assert "OperationalError" not in r.stderr and "Traceback" not in r.stderr
    assert tracking._sqlite_problem(db) is None
    assert sorted(p.name for p in folder.iterdir()) == ["mlflow.db"]  # the killed run's temporary file is gone


def test_two_first_uses_at_once_do_not_race(tmp_path: Path) -> None:
    db = tmp_path / "s" / "mlflow.db"
    env = _env(MLFLOW_TRACKING_URI=f"sqlite:///{db}")
    procs = [subprocess.Popen(_facesr("promote"), env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    for code, err in results:
        assert code == 2 and NO_CHALLENGER in err, err[-2000:]
    assert tracking._sqlite_problem(db) is None


def test_a_half_made_store_exits_2_saying_what_happened_and_what_to_do(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    con = sqlite3.connect(db)  # what a kill in the middle of MLflow's batch migration leaves
    con.executescript("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL);"
                      "INSERT INTO alembic_version VALUES ('0c779009ac13');"
                      "CREATE TABLE experiments (experiment_id INTEGER);"
                      "CREATE TABLE _alembic_tmp_latest_metrics (key VARCHAR(250));")
    con.close()
    r = subprocess.run(_facesr("promote"), env=_env(MLFLOW_TRACKING_URI=f"sqlite:///{db}"), cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"MLflow store {db} is unusable: a schema migration was interrupted" in r.stderr
    assert f"mv {db} {db}.broken" in r.stderr and "Traceback" not in r.stderr


# --- a server that answers /health and hangs on everything else -------------------------------------------------


class _HangingServer:
    def __init__(self) -> None:
        release = self.release = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path.startswith("/health"):
                    body = b"OK"
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    release.wait(300)

            do_POST = do_PATCH = do_DELETE = do_GET  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hanging_server():
    s = _HangingServer()
    yield s
    s.close()


def test_a_hung_server_fails_fast_with_the_users_limits(hanging_server, tmp_path: Path) -> None:
    t0 = time.monotonic()
    r = subprocess.run(_facesr("promote"), cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env=_env(MLFLOW_TRACKING_URI=hanging_server.url, MLFLOW_HTTP_REQUEST_TIMEOUT="2",
                                MLFLOW_HTTP_REQUEST_MAX_RETRIES="0"))
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stderr[-2000:]
    assert f"MLflow server {hanging_server.url} did not answer (request limit 2 s x 1 tries" in r.stderr
    assert "Traceback" not in r.stderr
    assert took < 20, took


@pytest.mark.slow
def test_a_hung_server_fails_within_about_30_s_by_default(hanging_server, tmp_path: Path) -> None:
    t0 = time.monotonic()
    r = subprocess.run(_facesr("promote"), cwd=tmp_path, capture_output=True, text=True, timeout=200,
                       env=_env(MLFLOW_TRACKING_URI=hanging_server.url))
    took = time.monotonic() - t0
    assert r.returncode == 1 and hanging_server.url in r.stderr, r.stderr[-2000:]
    assert took < 40, took


def test_configure_tracking_bounds_requests_unless_the_user_set_them(monkeypatch, tmp_path: Path) -> None:
    for k in registry.HTTP_DEFAULTS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/m.db")
    registry.configure_tracking()
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
    d = registry.HTTP_DEFAULTS
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == d["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    tries = 1 + int(d["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
    backoff = sum(int(d["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"]) * 2 ** i for i in range(tries - 1))
    jitter = float(d["MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"]) * (tries - 1)
    assert int(d["MLFLOW_HTTP_REQUEST_TIMEOUT"]) * tries + backoff + jitter <= 30


# --- register: changed weights, SIGTERM and kill -9 -----------------------------------------------------------------


def _register_cmd(ws: dict, ev: Path) -> list[str]:
    return _facesr("register", "--eval", str(ev), "--model", f"l1_vgg={ws['l1_vgg']}", "--model",
                   f"l1_vgg_pieapp={ws['l1_vgg_pieapp']}", "--data", str(ws["data"]))


def _runs(root: Path):
    from mlflow import MlflowClient

    c = MlflowClient(f"sqlite:///{root}/mlflow.db", f"sqlite:///{root}/mlflow.db")
    exp = c.get_experiment_by_name("facesr")
    return [] if exp is None else c.search_runs([exp.experiment_id], max_results=1000)


def _start_register_and_wait_for_a_running_run(ws: dict, ev: Path) -> subprocess.Popen:
    proc = subprocess.Popen(_register_cmd(ws, ev), cwd=ws["root"], env=_env(FACESR_PIPELINE_RUN_ID="run-test-1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not any(r.info.status == "RUNNING" and r.data.tags.get("facesr.step") == "train" for r in _runs(ws["root"])):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return proc


def test_sigterm_during_register_ends_its_runs_killed(workspace) -> None:
    ws = workspace
    ev = make_eval(ws["root"] / "eval", {"l1_vgg": scores(0.3, seed=1), "l1_vgg_pieapp": scores(0.25, seed=2)})
    proc = _start_register_and_wait_for_a_running_run(ws, ev)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped by SIGTERM" in err and "marked KILLED" in err and "Traceback" not in err
    statuses = [r.info.status for r in _runs(ws["root"])]
    assert "KILLED" in statuses and "RUNNING" not in statuses, statuses


def test_runs_left_running_by_a_kill_9_are_marked_killed_by_the_next_register(workspace) -> None:
    ws = workspace
    ev = make_eval(ws["root"] / "eval", {"l1_vgg": scores(0.3, seed=1), "l1_vgg_pieapp": scores(0.25, seed=2)})
    proc = _start_register_and_wait_for_a_running_run(ws, ev)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = {r.info.run_id for r in _runs(ws["root"]) if r.info.status == "RUNNING"}
    assert left  # what a kill -9 leaves
    r = subprocess.run(_register_cmd(ws, ev), cwd=ws["root"], env=_env(FACESR_PIPELINE_RUN_ID="run-test-2"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    after = {x.info.run_id: x for x in _runs(ws["root"])}
    assert all(after[i].info.status == "KILLED" and "gone" in after[i].data.tags["facesr.ended_by"] for i in left)
    assert not [x for x in after.values() if x.info.status == "RUNNING"]


def test_register_refuses_changed_weights_before_logging_anything(workspace) -> None:
    ws = workspace
    ev = make_eval(ws["root"] / "eval", {"l1_vgg": scores(0.3, seed=1), "l1_vgg_pieapp": scores(0.25, seed=2)})
    f = ws["l1_vgg"] / "model" / "generator.safetensors"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x40
    f.write_bytes(bytes(data))
    r = subprocess.run(_register_cmd(ws, ev), cwd=ws["root"], env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and f"{f}: sha256" in r.stderr, r.stderr[-2000:]
    assert _runs(ws["root"]) == []
