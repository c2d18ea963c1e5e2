"""The image for real, and `facesr pipeline run --local --container`: every task of the pipeline in that image.

Fast tests (always): the container mode's checks before anything runs (no engine, a store the containers cannot
use, the folders shared with the image's user) and scripts/build-image.sh's usage errors.

Container checks (``FACESR_CONTAINER_TESTS=1``, minutes; README "Container checks"): build the image with
scripts/build-image.sh (``FACESR_BASE=debootstrap`` on machines without a registry), start Podman's Docker API on a
private socket unless ``$DOCKER_HOST`` or a Docker daemon answers, then run the ci pipeline in containers to a
registered model in a SQLite MLflow store mounted into them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "params.yaml"
SCRIPT = REPO / "scripts" / "build-image.sh"
FACESR = [sys.executable, "-c", "from facesr.cli.main import entrypoint; entrypoint()"]
CONTAINER_TESTS = os.environ.get("FACESR_CONTAINER_TESTS") == "1"
needs_containers = pytest.mark.skipif(
    not CONTAINER_TESTS, reason="builds the image and runs the pipeline in containers (minutes): "
                                "set FACESR_CONTAINER_TESTS=1 (README: Container checks)")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACESR_", "MLFLOW_TRACKING"))}
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "CUDA_VISIBLE_DEVICES": "",
                "HOME": str(tmp_path)}, **extra)
    return env


# --------------------------------------------------------------------------------------------------------------------
# fast: checks before any task runs


def test_no_engine_is_a_clear_failure_before_anything_runs(tmp_path):
    root = tmp_path / "root"
    sock = tmp_path / "none.sock"
    r = subprocess.run(FACESR + ["--params", str(PARAMS), "--profile", "ci", "pipeline", "run", "--local",
                                 "--container", "--pipeline-root", str(root)],
                       cwd=tmp_path, env=_env(tmp_path, DOCKER_HOST=f"unix://{sock}"), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert f"unix://{sock}" in r.stderr and "podman system service" in r.stderr
    assert "Traceback" not in r.stderr
    assert not root.exists(), "nothing ran"


def test_unknown_variant_is_rejected_before_the_engine_is_asked(tmp_path):
    r = subprocess.run(FACESR + ["--params", str(PARAMS), "pipeline", "run", "--local", "--container",
                                 "--pipeline-root", str(tmp_path / "r"), "--variant", "l2"],
                       cwd=tmp_path, env=_env(tmp_path, DOCKER_HOST=f"unix://{tmp_path}/none.sock"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "l2" in r.stderr and "podman" not in r.stderr


def test_store_of_a_container_run(tmp_path, monkeypatch):
    from facesr.config import load_params
    from facesr.errors import UserError
    from facesr.kfp.local import container_store

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    params = load_params(PARAMS)
    root = tmp_path / "root"
    assert params.registry.tracking_uri == "sqlite:///mlflow.db"
    # the params' relative SQLite file would be written in a container's working folder: under the pipeline root
    assert container_store(params, root, "") == f"sqlite:///{root}/mlflow.db"
    # named by the caller: relative to the caller's folder, as for every other verb
    assert container_store(params, root, "sqlite:///m.db") == f"sqlite:///{tmp_path}/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert container_store(params, root, "") == "http://127.0.0.1:5000"
    with pytest.raises(UserError, match="sqlite:/// file or an http"):
        container_store(params, root, "file:///tmp/mlruns")


@pytest.mark.skipif(os.geteuid() != 0, reason="hands a folder to another uid: needs root")
def test_shared_folder_goes_to_the_image_user_but_not_its_contents(tmp_path):
    from facesr.kfp.local import share_folder

    root = tmp_path / "root"
    (root / "old").mkdir(parents=True)
    share_folder(root, 1000, 1000)
    assert (root.stat().st_uid, root.stat().st_gid) == (1000, 1000)
    assert (root / "old").stat().st_uid == 0, "only the folder itself changes hands"
    made = tmp_path / "new" / "store"
    share_folder(made, 1000, 1000)
    assert made.stat().st_uid == 1000


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a root-only store file")
def test_store_file_the_image_user_cannot_write_is_a_usage_error(tmp_path, monkeypatch):
    import facesr.kfp.local as loc
    from facesr.config import load_params
    from facesr.errors import UserError

    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    db.write_bytes(b"")
    db.chmod(0o644)
    monkeypatch.setattr(loc, "engine_client", lambda: type("C", (), {"close": lambda self: None})())
    monkeypatch.setattr(loc, "image_user", lambda client, image: (1000, 1000))
    with pytest.raises(UserError, match=r"mlflow.db: the MLflow SQLite store is not writable by uid 1000"):
        loc.container_runner(load_params(PARAMS), tmp_path / "root", f"sqlite:///{db}")


@pytest.mark.parametrize("argv, env, message", [
    (["--bogus"], {}, "unknown argument --bogus"),
    (["--weights", "/nonexistent-weights"], {}, "no such folder"),
    ([], {"FACESR_BASE": "floppy"}, "FACESR_BASE=floppy"),
    ([], {"FACESR_ENGINE": "lxc"}, "FACESR_ENGINE=lxc"),
])
def test_build_script_usage_errors(tmp_path, argv, env, message):
    r = subprocess.run(["bash", str(SCRIPT), *argv], cwd=tmp_path, env=_env(tmp_path, **env),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and not r.stderr.rstrip().endswith(" 2"), r.stderr


# --------------------------------------------------------------------------------------------------------------------
# container checks: the real image, the real engine


def _engine_answers(env: dict[str, str]) -> bool:
    import docker

    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        client = docker.from_env(timeout=10)
        client.ping()
        client.close()
        return True
    except Exception:
        return False
    finally:
        os.environ.clear()
        os.environ.update(old)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """(env with DOCKER_HOST, engine command): $DOCKER_HOST or Docker's socket when it answers, else a private
    Podman API service on a socket in a tmp folder, stopped at the end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESR_")}
    if env.get("DOCKER_HOST") or (shutil.which("docker") and _engine_answers(env)):
        assert _engine_answers(env), f"no engine answers at {env.get('DOCKER_HOST')}"
        yield env, "podman" if "podman" in env.get("DOCKER_HOST", "") else "docker"
        return
    podman = shutil.which("podman")
    if not podman:
        pytest.fail("FACESR_CONTAINER_TESTS=1 but neither Docker nor Podman is here (apt-get install -y podman "
                    "buildah runc)")
    env.setdefault("CONTAINERS_CONF", str(REPO / "components" / "containers.conf"))
    sock = tmp_path_factory.mktemp("podman") / "api.sock"
    log = open(sock.with_name("service.log"), "wb")
    proc = subprocess.Popen([podman, "system", "service", "--time=0", f"unix://{sock}"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    env["DOCKER_HOST"] = f"unix://{sock}"
    try:
        deadline = time.monotonic() + 60
        while not _engine_answers(env):
            assert proc.poll() is None, sock.with_name("service.log").read_text()
            assert time.monotonic() < deadline, "podman's API did not answer within 60 s"
            time.sleep(0.5)
        yield env, "podman"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def image(engine):
    """scripts/build-image.sh (engine layer cache: a rebuild after a code change redoes only the facesr layers)."""
    env, eng = engine
    run_env = dict(env, FACESR_ENGINE=eng)
    for k in ("FACESR_BASE", "FACESR_BASE_IMAGE", "FACESR_PIP_CERT", "FACESR_PIP_INDEX_URL", "FACESR_DEBIAN_MIRROR",
              "FACESR_PYTHON", "FACESR_CONTAINERS_CONF"):
        if k in os.environ:
            run_env[k] = os.environ[k]
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=run_env, capture_output=True, text=True, timeout=7200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    print(f"\n{r.stdout.strip().splitlines()[-1]} (this call {time.monotonic() - t0:.0f} s)")
    ref = yaml.safe_load(PARAMS.read_text())["pipeline"]["image"]
    import facesr

    for tag in (ref, f"facesr:{facesr.__version__}"):
        subprocess.run([eng, "image", "inspect", tag], env=env, check=True, capture_output=True)
    return ref


def _in_image(engine, image: str, *cmd: str) -> str:
    env, eng = engine
    r = subprocess.run([eng, "run", "--rm", image, *cmd], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@needs_containers
@pytest.mark.slow
def test_image_runs_facesr_as_its_non_root_user(engine, image):
    out = _in_image(engine, image, "sh", "-c", "id -u; id -g; echo $HOME; "
                    "python3 -c 'import sys, torch, kfp, facesr; print(sys.version_info[:2], torch.__version__)';"
                    " facesr --help >/dev/null && echo cli-ok; pip check")
    uid, gid, home, versions, cli, *rest = out.splitlines()
    assert (uid, gid, home) == ("1000", "1000", "/home/facesr")
    assert versions.startswith("(3, 11) 2.14.1") and cli == "cli-ok"
    assert "No broken requirements" in "\n".join(rest)


def _spec_tasks() -> set[str]:
    """Every task name of the compiled pipeline, sub-DAGs included (what the cluster would run)."""
    spec = next(yaml.safe_load_all((REPO / "pipelines" / "facesr-training.yaml").read_text()))
    names = set(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        names |= set(comp.get("dag", {}).get("tasks", {}))
    return names


@needs_containers
@pytest.mark.slow
@pytest.mark.integration
def test_ci_pipeline_runs_every_step_in_the_image_to_a_registered_model(engine, image, tmp_path):
    env, _ = engine
    root = tmp_path / "root"
    store = tmp_path / "store"
    run_env = _env(tmp_path, DOCKER_HOST=env["DOCKER_HOST"])
    t0 = time.monotonic()
    r = subprocess.run(FACESR + ["--params", str(PARAMS), "--profile", "ci",
                                 "--set", "evaluate.metrics=[psnr_y,ssim_y,lpips]", "pipeline", "run", "--local",
                                 "--container", "--pipeline-root", str(root),
                                 "--mlflow-uri", f"sqlite:///{store}/mlflow.db"],
                       cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=3600)
    print(f"\ncontainer pipeline run: {time.monotonic() - t0:.0f} s\n{r.stdout[-1500:]}")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert f"image               {image}" in r.stdout
    (run,) = [p for p in root.iterdir() if p.name.startswith("facesr-training-")]
    outputs = sorted(run.rglob("executor_output.json"))
    ran = {p.parent.name for p in outputs}
    # the DAG of the cluster: every task that ran is a task of the compiled pipeline, and the steps are there
    assert ran <= _spec_tasks(), ran - _spec_tasks()
    assert {"ingest", "prepare", "train", "evaluate", "register", "promote"} <= ran
    # each task ran in the image as its user (uid 1000), not as this process (a subprocess would leave root's files)
    assert {p.stat().st_uid for p in outputs} == {1000}
    assert json.loads((run / "prepare" / "prepared" / "manifest.json").read_text())["format"] == "facesr.prepared/1"
    ev = run / "evaluate" / "evaluation"
    assert {"bicubic", "l1_vgg", "l1_vgg_pieapp"} <= set(json.loads((ev / "metrics.json").read_text()))
    # a registered model with both aliases in the mounted store, its files on this machine, loadable here
    from mlflow import MlflowClient

    uri = f"sqlite:///{store}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    challenger = client.get_model_version_by_alias("facesr", "challenger")
    champion = client.get_model_version_by_alias("facesr", "champion")
    assert champion.version == challenger.version
    assert f"registered version  {challenger.version}" in r.stdout
    assert str(store / "mlruns") in client.get_model_version_download_uri("facesr", challenger.version) or \
        list((store / "mlruns").rglob("MLmodel")), "the model's files stay beside the store, not in a container"
    up = subprocess.run(FACESR + ["--params", str(PARAMS), "--profile", "ci", "upscale",
                                  str(next((ev / "grids").glob("*.png"))), "--model",
                                  "models:/facesr@champion", "--out", str(tmp_path / "up")],
                        cwd=tmp_path, env=dict(run_env, MLFLOW_TRACKING_URI=uri), capture_output=True, text=True,
                        timeout=600)
    assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
    assert list((tmp_path / "up").glob("*.png"))


def _containers(engine, image: str) -> list[str]:
    env, eng = engine
    r = subprocess.run([eng, "ps", "-a", "-q", "--filter", f"ancestor={image}"], env=env, capture_output=True,
                       text=True, timeout=60, check=True)
    return r.stdout.split()


@needs_containers
@pytest.mark.slow
def test_a_failing_step_fails_the_run_with_its_message(engine, image, tmp_path):
    """kfp.local's own Docker handler reads a container that is already gone as exit 0 (SUCCESS): not ours."""
    env, _ = engine
    empty = tmp_path / "faces"
    empty.mkdir()
    r = subprocess.run(FACESR + ["--params", str(PARAMS), "--profile", "ci", "pipeline", "run", "--local",
                                 "--container", "--pipeline-root", str(tmp_path / "root"), "--source", f"dir:{empty}",
                                 "--mlflow-uri", f"sqlite:///{tmp_path}/store/mlflow.db"],
                       cwd=tmp_path, env=_env(tmp_path, DOCKER_HOST=env["DOCKER_HOST"]), capture_output=True,
                       text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out[-4000:]
    assert "Inner task failed: 'ingest'" in out and "`facesr ingest --source dir:" in out
    assert "finished with status \x1b[92mSUCCESS" not in out and "'ingest' not found" not in out
    assert not list((tmp_path / "root").rglob("prepare")), "nothing ran after the failed step"
    assert not _containers(engine, image)


@needs_containers
@pytest.mark.slow
def test_sigint_removes_the_running_task_containers(engine, image, tmp_path):
    env, _ = engine
    proc = subprocess.Popen(FACESR + ["--params", str(PARAMS), "--profile", "ci", "pipeline", "run", "--local",
                                      "--container", "--pipeline-root", str(tmp_path / "root"),
                                      "--mlflow-uri", f"sqlite:///{tmp_path}/store/mlflow.db"],
                            cwd=tmp_path, env=_env(tmp_path, DOCKER_HOST=env["DOCKER_HOST"]),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not _containers(engine, image):
            assert proc.poll() is None and time.monotonic() < deadline, "no task container started"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out[-3000:]
    assert "stopped by SIGINT" in out and "container(s) removed" in out
    assert not _containers(engine, image), "no task container outlives the run"
