"""Run the ``facesr-training`` pipeline on this machine with kfp.local.

The same DAG and the same component code as on a cluster, one task after another; the runner ignores GPU requests,
node selectors, tolerations, retries and the PVC mount. Two runners:

* ``SubprocessRunner(use_venv=False)`` (default): each task is a subprocess of this venv.
* ``DockerRunner`` (``container=True``): each task runs in the image of ``params.pipeline.image`` (built by
  ``scripts/build-image.sh``) as the image's own non-root user, through the Docker API at ``$DOCKER_HOST`` (Docker,
  or Podman's compatible socket: ``podman system service --time=0 unix:///PATH.sock``). The pipeline root is mounted
  at the same path in every container; the MLflow store is either a server the containers reach on the host network
  or a SQLite file whose folder is mounted the same way (its artifacts in ``mlruns/`` beside it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facesr.config import Params
from facesr.errors import ExternalServiceError, FacesrError, Interrupted, UserError
from facesr.kfp.pipeline import build_pipeline, pipeline_arguments

log = logging.getLogger(__name__)


@dataclass
class LocalRunResult:
    pipeline_root: Path
    evaluation: Path | None
    registered_version: str
    champion_version: str
    metrics: dict[str, float] = field(default_factory=dict)
    mlflow_uri: str = ""


def params_text_of(path: str | os.PathLike[str] | None) -> str:
    """The text of the params file the CLI loaded (``--params``, ``$FACESR_PARAMS`` or ./params.yaml)."""
    p = Path(path or os.environ.get("FACESR_PARAMS") or "params.yaml")
    try:
        return p.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{p}: cannot read the params file ({exc.strerror})") from None


def run_local(
    params: Params,
    *,
    pipeline_root: str | os.PathLike[str],
    params_text: str = "",
    overrides: list[str] | tuple[str, ...] = (),
    source: str | None = None,
    data_version: str = "",
    variants: list[str] | tuple[str, ...] | None = None,
    mlflow_uri: str = "",
    model_name: str | None = None,
    container: bool = False,
) -> LocalRunResult:
    """Run every task of the pipeline here; returns where the outputs are. Raises FacesrError when a task fails.

    ``container``: run each task in the pipeline's image (see the module doc) instead of a subprocess of this venv.
    """
    from kfp import local

    root = Path(pipeline_root).resolve()
    # the PVC is not mounted locally: checkpoint under the pipeline root (the local runner does not retry either)
    args = pipeline_arguments(params, overrides=overrides, params_text=params_text, source=source,
                              data_version=data_version, variants=variants, mlflow_uri=mlflow_uri,
                              model_name=model_name, checkpoint_root=str(root / "checkpoints"))
    runner: Any = None
    if container:
        # checked before any task runs: the engine answers, the image is there, the MLflow store is usable
        runner, mlflow_uri = container_runner(params, root, mlflow_uri, source=args["source"])
        args["mlflow_uri"] = mlflow_uri
    root.mkdir(parents=True, exist_ok=True)
    pipeline = build_pipeline(params)
    if runner is None:
        runner = local.SubprocessRunner(use_venv=False)
    local.init(runner=runner, pipeline_root=str(root), raise_on_error=True)
    try:
        with warnings.catch_warnings(), (container_exit_status(root) if container else contextlib.nullcontext()):
            # the runner warns that the image is not a python image and that it ignores GPU/CPU settings
            warnings.simplefilter("ignore")
            task = pipeline(**args)
    except RuntimeError as exc:
        raise FacesrError(f"local pipeline run failed: {exc} (task logs above; outputs under {root})") from None
    outs = task.outputs
    evaluation = outs.get("evaluation")
    metrics = outs.get("metrics")
    return LocalRunResult(
        pipeline_root=root,
        evaluation=Path(evaluation.path) if evaluation is not None else None,
        registered_version=str(outs.get("registered_version") or ""),
        champion_version=str(outs.get("champion_version") or ""),
        metrics=dict(getattr(metrics, "metadata", {}) or {}),
        mlflow_uri=mlflow_uri,
    )


# --------------------------------------------------------------------------------------------------------------------
# container mode

PODMAN_HINT = ("start Docker, or Podman's Docker-compatible API: `podman system service --time=0 "
               "unix:///tmp/facesr-podman.sock &` then `export DOCKER_HOST=unix:///tmp/facesr-podman.sock`")
#: the store of a container run when neither --mlflow-uri nor $MLFLOW_TRACKING_URI names one and the params' store is
#: a relative SQLite path (which would land in a container's working folder and vanish with it)
DEFAULT_STORE = "mlflow.db"


def engine_client() -> Any:
    """A Docker API client for ``$DOCKER_HOST`` (or the default socket) that answered a ping."""
    try:
        import docker
    except ImportError:  # pragma: no cover - in requirements.lock
        raise FacesrError("the container mode needs the `docker` package (requirements.lock): "
                          "run scripts/setup.sh") from None
    where = os.environ.get("DOCKER_HOST") or "the default Docker socket"
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # docker.errors.DockerException, requests' connection errors
        raise ExternalServiceError(f"no container engine answers at {where} ({type(exc).__name__}): "
                                   f"{PODMAN_HINT}") from None
    return client


def image_user(client: Any, image: str) -> tuple[int, int]:
    """(uid, gid) the image runs as; UserError when the image is not there or runs as root."""
    import docker

    try:
        img = client.images.get(image)
    except docker.errors.ImageNotFound:
        raise UserError(f"image {image} (params pipeline.image) is not in the container engine: build it with "
                        "scripts/build-image.sh, or choose one with --set pipeline.image=REF") from None
    user = str((img.attrs.get("Config") or {}).get("User") or "")
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or int(uid) == 0 or (gid and not gid.isdigit()):
        raise UserError(f"image {image} runs as {user or 'root'!r}: the container mode runs the image's non-root "
                        "user, given as a numeric USER uid:gid in the Dockerfile (components/Dockerfile: 1000:1000)")
    return int(uid), int(gid or uid)


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` URI, or None for any other store."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or ":memory:" in uri:
        return None
    return Path(uri[len(prefix):].split("?", 1)[0])


def container_store(params: Params, root: Path, mlflow_uri: str) -> str:
    """The MLflow URI the containers use: --mlflow-uri, else $MLFLOW_TRACKING_URI, else params registry.tracking_uri
    unless that is a relative SQLite path, which becomes ``ROOT/mlflow.db`` (a container's working folder vanishes)."""
    uri = mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or params.registry.tracking_uri
    db = sqlite_path(uri)
    if db is not None and not db.is_absolute():
        if mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI"):
            uri = "sqlite:///" + str(db.resolve())  # named here: relative to this folder, as everywhere else
        else:
            uri = "sqlite:///" + str(root / DEFAULT_STORE)
    if uri.startswith("file:") or (db is None and "://" not in uri):
        raise UserError(f"MLflow store {uri!r}: the container mode takes a sqlite:/// file or an http(s):// server "
                        "(set --mlflow-uri)")
    return uri


def _writable_by(path: Path, uid: int, gid: int) -> bool:
    st = path.stat()
    mode = st.st_mode
    if st.st_uid == uid:
        return bool(mode & 0o200)
    if st.st_gid == gid:
        return bool(mode & 0o020)
    return bool(mode & 0o002)


def share_folder(path: Path, uid: int, gid: int) -> None:
    """Make ``path`` (a folder mounted into the containers) writable by the image's user: create it; as root, hand
    a folder that user cannot write to it (the folder only, never what is inside); otherwise say what to do."""
    path.mkdir(parents=True, exist_ok=True)
    if _writable_by(path, uid, gid):
        return
    if os.geteuid() == 0:
        os.chown(path, uid, gid)
        return
    # a rootless engine maps users differently and Docker Desktop shares files as the caller: let those try
    log.warning("%s is not writable by uid %d (the image's user); if a task cannot write there: "
                "chown %d:%d %s", path, uid, uid, gid, path)


#: the containers of the tasks running now (several at once inside a ParallelFor), for the cleanup on an interrupt
_LIVE: dict[str, Any] = {}
_LIVE_LOCK = threading.Lock()


def run_container(client: Any, image: str, command: list[str], volumes: dict[str, Any], **run_args: Any) -> int:
    """One task's container, to its real exit status: create it, stream its log, wait, then remove it.

    Replaces ``kfp.local.docker_task_handler.run_docker_container`` (kfp 2.17), which starts the container with
    ``auto_remove=True`` and, when the container is gone before it asks for the exit status (always with Podman's
    API, sometimes with Docker's), assumes 0: a failed step then reads as SUCCESS and the run stops later on a
    missing output. It also pulls an image whose name the engine spells differently (Podman's ``localhost/``); the
    image was checked before the run, so nothing is pulled here."""
    import docker

    run_args.pop("auto_remove", None)
    container = client.containers.run(image=image, command=command, volumes=volumes, detach=True, stdout=True,
                                      stderr=True, **run_args)
    with _LIVE_LOCK:
        _LIVE[container.id] = container
    try:
        for chunk in container.logs(stream=True, follow=True):
            print(chunk.decode("utf-8", "replace"), end="")
        return int(container.wait()["StatusCode"])
    finally:
        with _LIVE_LOCK:
            _LIVE.pop(container.id, None)
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            container.remove(force=True)


def _remove_live_containers() -> list[str]:
    import docker

    with _LIVE_LOCK:
        live = list(_LIVE.values())
    for c in live:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            c.remove(force=True)
    return [c.id for c in live]


@contextlib.contextmanager
def container_exit_status(root: Path) -> Any:
    """While the pipeline runs: kfp.local's Docker task handler uses ``run_container`` (see its doc), and SIGINT or
    SIGTERM removes the task containers still running (so that their task threads end: kfp.local joins them before
    the process can exit) and exits 128+N with what was kept (``Interrupted``)."""
    from kfp.local import docker_task_handler

    saved = docker_task_handler.run_docker_container
    docker_task_handler.run_docker_container = run_container
    got: list[int] = []
    old: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
        def handler(signum: int, frame: Any) -> None:
            got.append(signum)
            raise KeyboardInterrupt

        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except KeyboardInterrupt:
        for sig in old:  # a second signal must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        gone = _remove_live_containers()
        signum = got[0] if got else signal.SIGINT
        exc = Interrupted(f"pipeline run stopped by {signal.Signals(signum).name}; {len(gone)} running task "
                          f"container(s) removed; the finished tasks' outputs are under {root}")
        exc.exit_code = 128 + int(signum)
        raise exc from None
    finally:
        docker_task_handler.run_docker_container = saved
        for sig, h in old.items():
            signal.signal(sig, h)


def container_runner(params: Params, root: Path, mlflow_uri: str, source: str = "") -> tuple[Any, str]:
    """The kfp.local DockerRunner of a container run, and the MLflow URI its tasks use.

    Mounted at the same paths: the pipeline root (by kfp.local), the SQLite store's folder, and a ``dir:PATH`` source
    (read-only)."""
    from docker.types import Mount
    from kfp import local

    client = engine_client()
    try:
        uid, gid = image_user(client, params.pipeline.image)
    finally:
        client.close()
    uri = container_store(params, root, mlflow_uri)
    share_folder(root, uid, gid)
    run_args: dict[str, Any] = {
        "user": f"{uid}:{gid}",
        # an MLflow server on 127.0.0.1 is reachable, as a cluster service is from the pods
        "network_mode": "host",
        "environment": {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"},
    }
    mounts: list[Any] = []
    if source.startswith("dir:"):
        src = Path(source[len("dir:"):]).expanduser().resolve()
        if not src.is_dir():
            raise UserError(f"--source {source}: {src} is not a folder")
        mounts.append(Mount(target=str(src), source=str(src), type="bind", read_only=True))
    db = sqlite_path(uri)
    if db is not None:
        store = db.parent
        share_folder(store, uid, gid)
        if db.exists() and not _writable_by(db, uid, gid):
            raise UserError(f"{db}: the MLflow SQLite store is not writable by uid {uid} (the image's user): "
                            f"chown {uid}:{gid} it, or use another store (--mlflow-uri)")
        if store != root and root not in store.parents:
            mounts.append(Mount(target=str(store), source=str(store), type="bind"))
        # MLflow puts a new experiment's artifacts in ./mlruns: beside the store, on the host, not in the container
        run_args["working_dir"] = str(store)
    if mounts:
        run_args["mounts"] = mounts
    return local.DockerRunner(**run_args), uri
