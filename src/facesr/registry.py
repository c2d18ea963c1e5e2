"""MLflow tracking, model registry, promotion gate and lineage.

Tracking store: ``$MLFLOW_TRACKING_URI`` when set, else ``params.registry.tracking_uri`` (default: an embedded SQLite
file ``mlflow.db`` with local artifacts under ``./mlruns``; no server needed).

``register`` logs a whole pipeline run *after the fact* from the step output folders (training runs as separate
processes: DVC stages or KFP pods): a parent run tagged with the pipeline run id, child runs ``train/<variant>`` (params,
per-step metrics from ``metrics.jsonl``, loss curves, model card, the pyfunc model) and ``evaluate`` (metrics.json,
per_image.csv, table.md, grids). The better variant (by ``registry.promotion.primary_metric``) becomes a new version of
``registry.model_name`` with alias ``challenger`` and lineage tags.

``promote`` moves alias ``champion`` when the policy passes (see ``decide``), records the decision on the version either
way, and serialises concurrent promotions with a registry-side mutex (see ``promotion_lock``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from facesr.errors import ExternalServiceError, FacesrError, InputError, Interrupted, UserError
from facesr.fsutil import read_json, sha256_file, tree_hash
from facesr.locks import owner_alive, owner_token

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
CHALLENGER, CHAMPION = "challenger", "champion"
PER_IMAGE_ARTIFACT = "eval/per_image.csv"
TAG = "facesr."  # prefix of our tags
# metrics where lower values are better; every other metric is higher-is-better
LOWER_IS_BETTER = {"lpips", "pieapp", "niqe", "pi", "dmos", "brisque", "dists", "mse", "mae", "l1"}
LOCK_STALE_S = 600.0


def lower_is_better(metric: str) -> bool:
    return metric.lower() in LOWER_IS_BETTER


# --------------------------------------------------------------------------------------------------------------------
# tracking setup and error mapping


def tracking_uri(params: Any | None = None) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if params is not None:
        return params.registry.tracking_uri
    return DEFAULT_TRACKING_URI


# bounds on every MLflow HTTP request (set unless the user set them): a server that accepts connections but never
# answers fails within about 2 x 12 s (+ a short backoff), not MLflow's default 7 x 120 s
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "12",  # seconds per request (connect and each read)
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
}
STORE_CREATE_WAIT_S = 300.0  # how long a first use waits for another process that is creating the same SQLite store


def configure_tracking(params: Any | None = None) -> str:
    """Point MLflow at the tracking/registry store.

    A remote server is checked first (clear error when down) and its requests are bounded (``HTTP_DEFAULTS``); a
    SQLite store is created atomically on first use and refused with exit 2 when it is half-made (``ensure_sqlite``).
    """
    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for k, v in HTTP_DEFAULTS.items():
        os.environ.setdefault(k, v)
    uri = absolute_sqlite(tracking_uri(params))
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    registry = os.environ.get("MLFLOW_REGISTRY_URI")
    for u in {uri, absolute_sqlite(registry) if registry else uri}:
        db = sqlite_path(u)
        if db is not None:
            ensure_sqlite(db)
    mlflow.set_tracking_uri(uri)
    if not registry:
        mlflow.set_registry_uri(uri)
    return uri


def absolute_sqlite(uri: str) -> str:
    """``sqlite:///rel.db`` -> ``sqlite:////abs/cwd/rel.db`` (MLflow caches stores by URI, and cwd may change)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and ":memory:" not in uri:
        return prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///...`` URI (None for other stores and in-memory SQLite)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    path = uri[len(prefix):].split("?", 1)[0]
    if not path or ":memory:" in path or path.startswith("file:"):
        return None
    return Path(path)


def _sqlite_problem(db: Path) -> str | None:
    """None for a usable MLflow store; "missing"/"empty" for one not made yet; else what is wrong with it."""
    import sqlite3

    if not db.exists():
        return "missing"
    if db.is_dir():
        return "it is a folder"
    if db.stat().st_size == 0:
        return "empty"
    try:
        # read-write: SQLite rolls back a hot journal that a killed writer left (read-only could not)
        con = sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=30)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            versions = con.execute("SELECT version_num FROM alembic_version").fetchall() \
                if "alembic_version" in tables else []
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        return f"not a readable SQLite database ({exc})"
    if not tables:
        return "empty"
    leftovers = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
    if leftovers:
        return f"a schema migration was interrupted (it left the temporary table {leftovers[0]})"
    if len(versions) != 1 or "experiments" not in tables:
        return "its schema is incomplete (no single alembic_version row, or no experiments table)"
    return None


def _broken_store(db: Path, problem: str) -> UserError:
    return UserError(
        f"MLflow store {db} is unusable: {problem}, probably because a command was killed while it created or "
        f"upgraded the store. Move it aside (mv {db} {db}.broken) and rerun to start a fresh, empty store, or put back "
        "a backup; register the models again into the new store if it held any")


def ensure_sqlite(db: Path) -> None:
    """Make sure ``db`` is a complete MLflow store: create it the first time without ever leaving a half-made one.

    The schema is created and migrated in a temporary file beside ``db`` and then renamed into place, under a lock
    (``facesr.locks``) so two first uses do not race: a kill at any moment leaves no store (the next use creates it)
    or a complete one. A store that is broken anyway (a half-finished migration by another tool) -> exit 2.
    """
    from facesr import locks

    problem = _sqlite_problem(db)
    if problem is None:
        return
    if problem not in ("missing", "empty"):
        raise _broken_store(db, problem)
    db.parent.mkdir(parents=True, exist_ok=True)
    with locks.exclusive(locks.lock_file_for(db), f"MLflow store {db}", wait=STORE_CREATE_WAIT_S,
                         command="facesr (creating the MLflow store)", hint="retry when it has finished"):
        problem = _sqlite_problem(db)  # another process may have made it while we waited
        if problem is None:
            return
        if problem not in ("missing", "empty"):
            raise _broken_store(db, problem)
        for stale in db.parent.glob(f".{db.name}.new-*"):  # left by a killed first use (we hold the lock)
            stale.unlink(missing_ok=True)
        tmp = db.parent / f".{db.name}.new-{os.getpid()}"
        log.info("creating the MLflow store %s", db)
        try:
            from mlflow.store.db.utils import _initialize_tables, create_sqlalchemy_engine

            engine = create_sqlalchemy_engine(f"sqlite:///{tmp}")
            try:
                _initialize_tables(engine)
            finally:
                engine.dispose()
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, db)
            dfd = os.open(db.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise FacesrError(f"MLflow store {db}: could not create it ({exc})") from None
            raise


def check_server(uri: str, timeout: float = 5.0) -> None:
    import requests

    try:
        r = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as exc:
        raise ExternalServiceError(
            f"MLflow tracking server {uri} is unreachable ({type(exc).__name__}); start it or set "
            "MLFLOW_TRACKING_URI / registry.tracking_uri. Training outputs are untouched: rerun the command to retry."
        ) from None
    if r.status_code >= 400:
        raise ExternalServiceError(f"MLflow tracking server {uri} answered /health with HTTP {r.status_code}")


@contextlib.contextmanager
def mlflow_errors(what: str) -> Iterator[None]:
    """Map MLflow/HTTP failures to our error types (one clear message)."""
    from mlflow.exceptions import MlflowException

    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (UserError, FacesrError):
        raise
    except MlflowException as exc:
        code = getattr(exc, "error_code", "")
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise UserError(f"{what}: {msg}") from None
        if _is_request_failure(msg):
            raise _server_error(what, msg) from None
        if "out-of-date database schema" in msg:
            import mlflow

            uri = mlflow.get_tracking_uri()
            raise UserError(
                f"MLflow store {sqlite_path(uri) or uri}: {msg.split('. Take a backup')[0]}: an older MLflow made it (back "
                f"it up, then run `mlflow db upgrade {uri}`), or a command was killed while it created or upgraded the "
                "store (move it aside and rerun to start a fresh one)") from None
        raise FacesrError(f"{what}: {msg[:1000]}") from None
    except SQLAlchemyError as exc:  # the SQLite (or other database) store itself
        import mlflow

        uri = mlflow.get_tracking_uri()
        db = sqlite_path(uri)
        first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        if db is not None and any(s in first for s in ("already exists", "no such table", "no such column")):
            raise _broken_store(db, f"its schema does not match ({type(exc).__name__}: {first})") from None
        raise FacesrError(f"{what}: the MLflow store {db or uri} failed ({type(exc).__name__}: {first}); rerun to "
                          "retry") from None
    except OSError as exc:
        if "Connection" in type(exc).__name__ or "Connection" in str(exc):
            raise _server_error(what, str(exc)) from None
        raise


def _is_request_failure(msg: str) -> bool:
    return any(s in msg for s in ("API request", "Max retries", "Connection", "timed out", "Timeout"))


def _server_error(what: str, msg: str) -> ExternalServiceError:
    import mlflow

    tries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    tries = str(1 + int(tries)) if tries.isdigit() else "?"
    limit = f"{os.environ.get('MLFLOW_HTTP_REQUEST_TIMEOUT', '?')} s x {tries} tries"
    return ExternalServiceError(
        f"{what}: MLflow server {mlflow.get_tracking_uri()} did not answer (request limit {limit}; "
        f"{msg[:300]}); check the server, then rerun to retry (MLFLOW_HTTP_REQUEST_TIMEOUT / "
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES change the limits)")


def _client() -> Any:
    from mlflow import MlflowClient

    return MlflowClient()


# --------------------------------------------------------------------------------------------------------------------
# lineage facts


def git_info(cwd: str | os.PathLike[str] | None = None) -> tuple[str, str]:
    """(commit, dirty) of the working tree; $FACESR_GIT_COMMIT wins (containers have no .git)."""
    env = os.environ.get("FACESR_GIT_COMMIT")
    if env:
        return env, os.environ.get("FACESR_GIT_DIRTY", "unknown")
    # the project folder first (where DVC runs); else the checkout holding this source (an editable install)
    for where in (cwd, Path(__file__).resolve().parent):
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                                    timeout=10, check=True).stdout.strip()
            status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                                    capture_output=True, text=True, timeout=30, check=True).stdout
            return commit, "true" if status.strip() else "false"
        except (OSError, subprocess.SubprocessError):
            continue
    return "unknown", "unknown"


def pipeline_run_id() -> str:
    """$FACESR_PIPELINE_RUN_ID, else KFP's run id, else a generated one."""
    for var in ("FACESR_PIPELINE_RUN_ID", "KFP_RUN_ID", "PIPELINE_RUN_ID"):
        if os.environ.get(var):
            return os.environ[var]
    return "local-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def data_hash(data: Path | None, eval_dir: Path | None = None, dvc_lock: Path = Path("dvc.lock")) -> tuple[str, str]:
    """(hash, source) of the prepared data: dvc.lock md5, else our tree hash of --data, else the eval manifest."""
    if dvc_lock.is_file():
        import yaml

        try:
            lock = yaml.safe_load(dvc_lock.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            lock = {}
        base = dvc_lock.resolve().parent
        for stage_name, stage in (lock.get("stages") or {}).items():
            for out in (stage or {}).get("outs") or []:
                path, md5 = out.get("path"), out.get("md5")
                if not path or not md5:
                    continue
                if data is not None:
                    if (base / path).resolve() == Path(data).resolve():
                        return md5, f"dvc.lock:{stage_name}:{path}"
                elif stage_name.split("@")[0] == "prepare":
                    return md5, f"dvc.lock:{stage_name}:{path}"
    if data is not None:
        if not Path(data).is_dir():
            raise InputError(f"--data {data}: not a folder (expected the prepared data folder)")
        return tree_hash(data), f"tree_hash:{data}"
    if eval_dir is not None and (eval_dir / "manifest.json").is_file():
        man = read_json(eval_dir / "manifest.json")
        inputs = man.get("inputs", {}) if isinstance(man, dict) else {}
        for key in ("prepared_manifest_sha256", "data_manifest_sha256", "prepared_sha256"):
            if isinstance(inputs, dict) and inputs.get(key):
                return str(inputs[key]), f"eval manifest:{key}"
    return "unknown", "none (pass --data or run under DVC)"


# --------------------------------------------------------------------------------------------------------------------
# reading step outputs


@dataclass
class Candidate:
    name: str
    train_dir: Path
    model_dir: Path
    meta: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    per_image: list[dict[str, str]] = field(default_factory=list)

    @property
    def variant(self) -> str:
        return str(self.meta.get("variant") or self.name)

    @property
    def weights(self) -> str:
        untrained = bool(self.meta.get("untrained_weights"))
        statuses = {str(m.get("weights")) for m in self.metrics.values() if isinstance(m, dict)}
        return "untrained" if untrained or "untrained" in statuses else "real"

    def mean(self, metric: str) -> float | None:
        m = self.metrics.get(metric)
        if isinstance(m, dict) and m.get("mean") is not None:
            return float(m["mean"])
        return None


def read_per_image(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found (evaluate writes per_image.csv)") from None
    if rows and not {"model", "image"} <= set(rows[0]):
        raise InputError(f"{path}: expected columns model,image,<metric>...; got {list(rows[0])}")
    return rows


def rows_to_csv(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def load_candidates(eval_dir: Path, models: dict[str, Path]) -> list[Candidate]:
    from facesr.models.io import check_model, find_model_folder

    eval_dir = Path(eval_dir)
    if not eval_dir.is_dir():
        raise InputError(f"--eval {eval_dir}: not a folder (expected the output of facesr evaluate)")
    metrics = read_json(eval_dir / "metrics.json")
    if not isinstance(metrics, dict):
        raise InputError(f"{eval_dir / 'metrics.json'}: expected a JSON object of model -> metrics")
    per_image = read_per_image(eval_dir / "per_image.csv")
    if not models:
        raise UserError("register: give at least one --model NAME=DIR (a training output folder)")
    out = []
    for name, d in models.items():
        if name not in metrics:
            raise UserError(f"--model {name}={d}: {eval_dir / 'metrics.json'} has no model {name!r}; "
                            f"it has: {', '.join(sorted(metrics))}")
        mdir = find_model_folder(Path(d))
        meta = check_model(mdir).meta  # digest, architecture bounds and header shapes, before anything is logged
        rows = [r for r in per_image if r.get("model") == name]
        out.append(Candidate(name, Path(d), mdir, meta, metrics[name], rows))
    return out


def pick_best(cands: list[Candidate], metric: str) -> Candidate:
    scored = [(c.mean(metric), c) for c in cands]
    missing = [c.name for v, c in scored if v is None]
    if missing:
        raise UserError(f"registry.promotion.primary_metric {metric!r}: not in metrics.json for {', '.join(missing)} "
                        f"(available: {', '.join(sorted(cands[0].metrics))})")
    sign = 1.0 if lower_is_better(metric) else -1.0
    return min(scored, key=lambda t: sign * t[0])[1]  # type: ignore[operator]


def read_metrics_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s line %d: not JSON, skipped", path, i + 1)
    return rows


def _loss_curve_png(rows: list[dict[str, Any]], title: str) -> bytes | None:
    keys = sorted({k for r in rows for k, v in r.items() if k.startswith("loss") and isinstance(v, (int, float))})
    if not keys:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k in keys:
        pts = [(r.get("step", i), r[k]) for i, r in enumerate(rows) if isinstance(r.get(k), (int, float))]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k)
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def model_card(c: Candidate, tags: dict[str, str], primary: str) -> str:
    lines = [f"# facesr model card: {c.variant}", "",
             "x4 face super-resolution, ESRGAN generator (RRDBNet). Input float32 [N,3,H,W] in [0,1]; output "
             "[N,3,4H,4W].", "",
             f"- weights provenance: **{c.weights}**" + (" (losses/metrics ran on random backbones: numbers are not "
                                                         "meaningful)" if c.weights == "untrained" else ""),
             f"- architecture: num_feat={c.meta.get('num_feat')}, num_block={c.meta.get('num_block')}, "
             f"num_grow_ch={c.meta.get('num_grow_ch')}, scale={c.meta.get('scale')}",
             f"- training steps: {c.meta.get('steps')}",
             f"- git commit: {tags.get(TAG + 'git_commit')} (dirty: {tags.get(TAG + 'git_dirty')})",
             f"- data hash: {tags.get(TAG + 'data_hash')}", f"- params hash: {tags.get(TAG + 'params_hash')}",
             f"- pipeline run: {tags.get(TAG + 'pipeline_run_id')}", "", "## Test-set metrics (mean, 95% CI)", "",
             "| metric | mean | ci95 | n |", "|---|---|---|---|"]
    for k, m in sorted(c.metrics.items()):
        if isinstance(m, dict):
            star = " (primary)" if k == primary else ""
            lines.append(f"| {k}{star} | {m.get('mean')} | {m.get('ci95')} | {m.get('n')} |")
    lines += ["", "Intended use: research on face super-resolution. Faces are personal data: do not use to identify "
              "people. Trained on the Kaggle 'human faces' dataset (see the data hash)."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------------
# register


@dataclass
class RegisterResult:
    name: str
    version: str
    variant: str
    parent_run_id: str
    run_ids: dict[str, str]
    tags: dict[str, str]
    reused: bool = False


def register_key(best: Candidate, eval_dir: Path, dhash: str, phash: str) -> str:
    """Identity of a registration: generator weights + evaluation files + data hash + params hash."""
    from facesr.fsutil import canonical_json, sha256_bytes

    parts = {"generator": sha256_file(best.model_dir / "generator.safetensors"), "model": best.name,
             "metrics": sha256_file(eval_dir / "metrics.json"), "per_image": sha256_file(eval_dir / "per_image.csv"),
             "data": dhash, "params": phash}
    return sha256_bytes(canonical_json(parts).encode("utf-8"))


def _find_registered(client: Any, name: str, key: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        hits = client.search_model_versions(f"name = '{name}' and tags.`{TAG}register_key` = '{key}'")
    except MlflowException as exc:
        if _is_request_failure(str(exc)):  # a dead server is not "not registered yet"
            raise
        return None
    return max(hits, key=lambda v: int(v.version)) if hits else None


def _str_params(flat: dict[str, Any]) -> dict[str, str]:
    return {k: (json.dumps(v) if isinstance(v, (list, dict)) else str(v))[:6000] for k, v in flat.items()}


def _log_metrics_jsonl(client: Any, run_id: str, rows: list[dict[str, Any]]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = []
    for i, r in enumerate(rows):
        step = int(r.get("step", i)) if isinstance(r.get("step", i), (int, float)) else i
        for k, v in r.items():
            if k in ("step", "epoch", "time") or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if not np.isfinite(v):
                continue
            batch.append(Metric(key=str(k), value=float(v), timestamp=now, step=step))
    for i in range(0, len(batch), 1000):
        client.log_batch(run_id, metrics=batch[i:i + 1000])


def _log_pyfunc(c: Candidate) -> Any:
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    code = Path(__file__).with_name("mlflow_model.py")
    example = np.zeros((2, 3, 8, 8), dtype=np.float32)  # batch > 1; the signature leaves N, H, W free
    spec = TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1))
    signature = ModelSignature(inputs=Schema([spec]), outputs=Schema([spec]))
    from importlib.metadata import PackageNotFoundError, version

    try:
        reqs = [f"facesr=={version('facesr')}"]
    except PackageNotFoundError:
        reqs = ["facesr"]
    reqs += ["torch", "safetensors", "numpy", "pillow", "mlflow"]
    return mlflow.pyfunc.log_model(name="model", python_model=str(code), artifacts={"model": str(c.model_dir)},
                                   signature=signature, input_example=example, pip_requirements=reqs)


def end_stale_runs(client: Any, experiment_id: str, pipeline_run_id: str) -> list[str]:
    """Mark RUNNING facesr runs that no live process owns as KILLED; returns their ids.

    A run's ``facesr.owner`` tag is ``host:pid:start`` of the process that logs it. On this host a run whose process is
    gone (or whose pid now belongs to another process) is stale; a run logged on another host is stale only when it
    belongs to the same pipeline run as this one (a retried step: the earlier attempt is over). Other runs are left.
    """
    runs = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000)
    stale = []
    for r in runs:
        tags = r.data.tags
        if TAG + "step" not in tags:  # not logged by facesr
            continue
        owner = tags.get(TAG + "owner", "")
        alive = owner_alive(owner) if owner else None
        if alive or (alive is None and tags.get(TAG + "pipeline_run_id") != pipeline_run_id):
            continue
        client.set_tag(r.info.run_id, TAG + "ended_by", f"facesr register {owner_token()}: owner {owner or '?'} gone")
        client.set_terminated(r.info.run_id, "KILLED")
        stale.append(r.info.run_id)
    if stale:
        log.warning("marked %d stale RUNNING run(s) KILLED (their process is gone): %s", len(stale), ", ".join(stale))
    return stale


def _mark_own_runs_killed(params: Any) -> list[str]:
    """The runs this process started and did not finish -> KILLED (after a signal)."""
    client = _client()
    exp = client.get_experiment_by_name(params.registry.experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{TAG}owner` = '{owner_token()}'",
                              max_results=1000)
    killed = []
    for r in runs:
        if r.info.status != "FINISHED":
            client.set_terminated(r.info.run_id, "KILLED")
            killed.append(r.info.run_id)
    return killed


def _ends_runs_on_signal(fn: Any) -> Any:
    """SIGTERM or SIGINT during ``fn``: the MLflow runs it started end KILLED (never RUNNING for good); exit 128+N."""
    import functools
    import signal
    import threading

    @functools.wraps(fn)
    def wrapper(params: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
            return fn(params, *args, **kwargs)
        got: list[int] = []

        def handler(signum: int, frame: Any) -> None:
            got.append(signum)
            raise KeyboardInterrupt

        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            return fn(params, *args, **kwargs)
        except KeyboardInterrupt:
            for sig in old:  # a second signal must not cut the clean-up short
                signal.signal(sig, signal.SIG_IGN)
            signum = got[0] if got else signal.SIGINT
            killed: list[str] = []
            with contextlib.suppress(Exception):
                killed = _mark_own_runs_killed(params)
            exc = Interrupted(f"{fn.__name__} stopped by {signal.Signals(signum).name} before it finished; the "
                              f"{len(killed)} MLflow run(s) it had started are marked KILLED. Run the same command "
                              "again to register")
            exc.exit_code = 128 + int(signum)
            raise exc from None
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)

    return wrapper


@_ends_runs_on_signal
def register(params: Any, eval_dir: Path, models: dict[str, Path], data: Path | None = None) -> RegisterResult:
    """Log the pipeline run (parent + train/<variant> + evaluate children) and register the better variant."""
    import mlflow

    eval_dir = Path(eval_dir)
    cands = load_candidates(eval_dir, models)
    primary = params.registry.promotion.primary_metric
    best = pick_best(cands, primary)
    dhash, dsrc = data_hash(Path(data) if data else None, eval_dir)
    commit, dirty = git_info()
    prid = pipeline_run_id()
    common = {TAG + "pipeline_run_id": prid, TAG + "git_commit": commit, TAG + "git_dirty": dirty,
              TAG + "data_hash": dhash, TAG + "data_hash_source": dsrc, TAG + "params_hash": params.hash(),
              TAG + "profile": params.profile, "mlflow.source.git.commit": commit}
    if os.environ.get("FACESR_PIPELINE_NAME"):
        common[TAG + "pipeline_name"] = os.environ["FACESR_PIPELINE_NAME"]
    common[TAG + "owner"] = owner_token()  # host:pid:start of this process: a run no live process owns is stale
    flat = _str_params(params.flat())
    key = register_key(best, eval_dir, dhash, params.hash())
    configure_tracking(params)
    name = params.registry.model_name
    with mlflow_errors("register"):
        client = _client()
        existing = _find_registered(client, name, key)
        if existing is not None:  # a retried step (KFP retry, DVC rerun): same weights, evaluation, data and params
            log.info("register: %s v%s already holds these outputs; alias %s set again", name, existing.version,
                     CHALLENGER)
            client.set_registered_model_alias(name, CHALLENGER, existing.version)
            t = dict(existing.tags)
            runs = {k: v for k, v in (("train/" + t.get(TAG + "model_name", best.name), t.get(TAG + "run_id")),
                                      ("evaluate", t.get(TAG + "eval_run_id"))) if v}
            return RegisterResult(name, str(existing.version), t.get(TAG + "variant", best.variant),
                                  t.get(TAG + "parent_run_id", ""), runs, t, reused=True)
        exp = mlflow.set_experiment(params.registry.experiment)
        end_stale_runs(client, exp.experiment_id, prid)
        run_ids: dict[str, str] = {}
        model_infos: dict[str, Any] = {}
        with mlflow.start_run(run_name=f"pipeline-{prid}", tags={**common, TAG + "step": "pipeline"}) as parent:
            mlflow.log_params(flat)
            for c in cands:
                with mlflow.start_run(run_name=f"train/{c.name}", nested=True,
                                      tags={**common, TAG + "step": "train", TAG + "variant": c.variant,
                                            TAG + "weights": c.weights}) as run:
                    run_ids[f"train/{c.name}"] = run.info.run_id
                    mlflow.log_params({**flat, "variant": c.variant})
                    rows = read_metrics_jsonl(c.train_dir / "metrics.jsonl")
                    _log_metrics_jsonl(client, run.info.run_id, rows)
                    mlflow.log_metrics({f"eval.{k}": float(v["mean"]) for k, v in c.metrics.items()
                                        if isinstance(v, dict) and isinstance(v.get("mean"), (int, float))})
                    for f in ("train_summary.json", "metrics.jsonl"):
                        if (c.train_dir / f).is_file():
                            mlflow.log_artifact(str(c.train_dir / f), artifact_path="train")
                    mlflow.log_artifact(str(c.model_dir / "model.json"), artifact_path="train")
                    png = _loss_curve_png(rows, f"{c.variant} losses")
                    if png:
                        mlflow.log_image(_png_to_pil(png), artifact_file="train/loss_curves.png")
                    mlflow.log_text(rows_to_csv(c.per_image), PER_IMAGE_ARTIFACT)
                    mlflow.log_text(model_card(c, common, primary), "model_card.md")
                    model_infos[c.name] = _log_pyfunc(c)
            with mlflow.start_run(run_name="evaluate", nested=True, tags={**common, TAG + "step": "evaluate"}) as run:
                run_ids["evaluate"] = run.info.run_id
                for f in ("metrics.json", "per_image.csv", "table.md", "manifest.json"):
                    if (eval_dir / f).is_file():
                        mlflow.log_artifact(str(eval_dir / f))
                if (eval_dir / "grids").is_dir():
                    mlflow.log_artifacts(str(eval_dir / "grids"), artifact_path="grids")
                mlflow.log_metrics({f"{c.name}.{k}": float(v["mean"]) for c in cands for k, v in c.metrics.items()
                                    if isinstance(v, dict) and isinstance(v.get("mean"), (int, float))})
        vtags = {**common, TAG + "variant": best.variant, TAG + "model_name": best.name, TAG + "weights": best.weights,
                 TAG + "run_id": run_ids[f"train/{best.name}"], TAG + "parent_run_id": parent.info.run_id,
                 TAG + "eval_run_id": run_ids["evaluate"], TAG + "per_image_artifact": PER_IMAGE_ARTIFACT,
                 TAG + "primary_metric": primary, TAG + "generator_sha256": str(best.meta.get("generator_sha256", "")),
                 TAG + "n_test_images": str(len({r["image"] for r in best.per_image})), TAG + "register_key": key}
        for k, m in best.metrics.items():
            if isinstance(m, dict) and m.get("mean") is not None:
                vtags[f"{TAG}metric.{k}"] = str(m["mean"])
        vtags.pop("mlflow.source.git.commit", None)
        vtags.pop(TAG + "owner", None)
        mv = mlflow.register_model(model_infos[best.name].model_uri, name, tags=vtags)
        client.set_registered_model_alias(name, CHALLENGER, mv.version)
    return RegisterResult(name, str(mv.version), best.variant, parent.info.run_id, run_ids, vtags)


def _png_to_pil(data: bytes) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


# --------------------------------------------------------------------------------------------------------------------
# promotion


@dataclass
class Decision:
    promote: bool
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)


def paired_bootstrap(diff: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of the mean of paired per-image differences (facesr.evaluate's bootstrap)."""
    from facesr.evaluate import paired_bootstrap as eval_paired_bootstrap

    res = eval_paired_bootstrap(np.zeros(len(diff)), np.asarray(diff, dtype=np.float64), n_boot, seed)
    if not res.get("ci95"):
        return float("nan"), float("nan")
    lo, hi = res["ci95"]
    return float(lo), float(hi)


def _column(rows: list[dict[str, str]], metric: str, who: str) -> dict[str, float]:
    out = {}
    for r in rows:
        v = r.get(metric)
        try:
            f = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out[r["image"]] = f
    if not out:
        raise UserError(f"{who}: per-image values have no metric {metric!r} "
                        f"(columns: {', '.join(k for k in (rows[0] if rows else {}) if k not in ('model', 'image'))})")
    return out


def decide(policy: Any, chall: list[dict[str, str]], champ: list[dict[str, str]], n_boot: int = 1000,
           seed: int = 0) -> Decision:
    """The promotion policy on paired per-image values of the same test set.

    Pass when: the primary metric's mean improves by more than 0 and at least ``min_improvement``; no guard metric
    worsens by more than its tolerance; and, with ``require_significant``, the paired bootstrap 95% interval of the
    primary improvement lies above zero.
    """
    primary = policy.primary_metric
    a = _column(chall, primary, "challenger")
    b = _column(champ, primary, "champion")
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise UserError(f"challenger and champion were evaluated on different test images (only challenger: "
                        f"{only_a[:3]}{'...' if len(only_a) > 3 else ''}, only champion: {only_b[:3]}"
                        f"{'...' if len(only_b) > 3 else ''}): re-evaluate both on the same prepared data")
    names = sorted(a)
    sign = 1.0 if lower_is_better(primary) else -1.0
    improvement = sign * (np.array([b[n] for n in names]) - np.array([a[n] for n in names]))
    mean_imp = float(improvement.mean())
    lo, hi = paired_bootstrap(improvement, n_boot, seed)
    numbers: dict[str, Any] = {"primary_metric": primary, "n_images": len(names),
                               "challenger_mean": float(np.mean([a[n] for n in names])),
                               "champion_mean": float(np.mean([b[n] for n in names])),
                               "improvement": mean_imp, "improvement_ci95": [lo, hi],
                               "min_improvement": policy.min_improvement,
                               "require_significant": policy.require_significant, "guards": {}}
    reasons = []
    if not (mean_imp > 0 and mean_imp >= policy.min_improvement):
        reasons.append(f"{primary} did not improve enough: improvement {mean_imp:.6g} "
                       f"(needs > 0 and >= {policy.min_improvement})")
    if policy.require_significant and not lo > 0:
        reasons.append(f"{primary} improvement is not significant: paired bootstrap 95% interval "
                       f"[{lo:.6g}, {hi:.6g}] does not exclude 0")
    for g, tol in policy.guards.items():
        ga, gb = _column(chall, g, "challenger"), _column(champ, g, "champion")
        common = sorted(set(ga) & set(gb))
        gsign = 1.0 if lower_is_better(g) else -1.0
        worse = gsign * (float(np.mean([ga[n] for n in common])) - float(np.mean([gb[n] for n in common])))
        numbers["guards"][g] = {"worsening": worse, "tolerance": tol}
        if worse > tol:
            reasons.append(f"guard {g} got worse by {worse:.6g} (tolerance {tol})")
    if reasons:
        return Decision(False, "; ".join(reasons), numbers)
    return Decision(True, f"{primary} improved by {mean_imp:.6g} (95% CI [{lo:.6g}, {hi:.6g}]); guards held", numbers)


def baseline_guard(policy: Any, chall: list[dict[str, str]], baseline: list[dict[str, str]],
                   primary_real: bool) -> tuple[list[str], dict[str, Any]]:
    """Reasons to refuse a challenger that is worse than bicubic on the same test images (empty: it is not).

    Always checked: PSNR-Y and SSIM-Y, each beyond its ``guards`` tolerance (0 when it has none); the primary metric
    too, with no tolerance, when its weights are real (a score of random networks says nothing about bicubic).
    Returns ``(reasons, numbers)``; the numbers are recorded on the version with the decision.
    """
    checks: dict[str, float] = {m: float(policy.guards.get(m, 0.0)) for m in ("psnr_y", "ssim_y")}
    if primary_real:
        checks[policy.primary_metric] = 0.0
    reasons: list[str] = []
    numbers: dict[str, Any] = {}
    if not baseline:
        return ["no bicubic baseline in the challenger's evaluation (per_image.csv has no 'bicubic' rows): "
                "evaluate and register it again"], numbers
    for m, tol in checks.items():
        try:
            ca, cb = _column(chall, m, "challenger"), _column(baseline, m, "bicubic")
        except UserError as exc:
            reasons.append(f"cannot compare with bicubic: {exc}")
            continue
        common = sorted(set(ca) & set(cb))
        if not common:
            reasons.append(f"cannot compare with bicubic on {m}: no test image in common")
            continue
        mc, mb = float(np.mean([ca[n] for n in common])), float(np.mean([cb[n] for n in common]))
        worse = (1.0 if lower_is_better(m) else -1.0) * (mc - mb)
        numbers[m] = {"challenger": mc, "bicubic": mb, "worsening": worse, "tolerance": tol, "n_images": len(common)}
        if worse > tol:
            reasons.append(f"worse than bicubic on {m}: {mc:.6g} vs bicubic {mb:.6g} on the same {len(common)} "
                           f"images (tolerance {tol:g})")
    return reasons, numbers


def evaluation_of(client: Any, mv: Any) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The whole evaluation a version was registered from: per-image rows of every model (bicubic included) and
    metrics.json, read from its evaluate run; ``([], {})`` when that run or its files are gone."""
    import mlflow

    run_id = mv.tags.get(TAG + "eval_run_id")
    if not run_id:
        return [], {}
    with tempfile.TemporaryDirectory() as td:
        try:
            rows = read_per_image(Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="per_image.csv",
                                                                          dst_path=td)))
            metrics = read_json(Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="metrics.json",
                                                                        dst_path=td)))
        except (InputError, OSError, mlflow.exceptions.MlflowException):
            return [], {}
    return rows, metrics if isinstance(metrics, dict) else {}


def _baseline_decision(params: Any, client: Any, mv: Any, chall_rows: list[dict[str, str]]) -> Decision | None:
    """A refusal when the version is worse than bicubic on its own evaluation (None: the baseline guard holds)."""
    from facesr.evaluate import BASELINE

    rows, metrics = evaluation_of(client, mv)
    policy = params.registry.promotion
    model = mv.tags.get(TAG + "model_name", "")
    weights = (metrics.get(model, {}).get(policy.primary_metric) or {}).get("weights")
    reasons, numbers = baseline_guard(policy, chall_rows, [r for r in rows if r.get("model") == BASELINE],
                                      primary_real=weights == "real")
    if reasons:
        return Decision(False, "baseline guard: " + "; ".join(reasons),
                        {"baseline": numbers, "primary_weights": weights or "unknown"})
    return None


@contextlib.contextmanager
def promotion_lock(client: Any, name: str, timeout: float = 120.0, poll: float = 0.5) -> Iterator[str]:
    """A registry-side mutex: creating a registered model is atomic (unique name) on every MLflow backend.

    The lock is the registered model ``<name>.promotion-lock``; it is deleted on release. A lock older than
    ``LOCK_STALE_S`` (a crashed promoter) is broken. Works the same for a local SQLite store and a remote server.
    """
    from mlflow.exceptions import MlflowException

    lock_name = f"{name}.promotion-lock"
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.create_registered_model(lock_name, tags={TAG + "lock_owner": token},
                                           description="facesr promotion in progress (a lock; deleted when done)")
            break
        except MlflowException as exc:
            code = getattr(exc, "error_code", "")
            if code == "RESOURCE_DOES_NOT_EXIST":  # the holder released it while the store checked: try again
                continue
            if code != "RESOURCE_ALREADY_EXISTS":
                raise
            with contextlib.suppress(MlflowException):
                held = client.get_registered_model(lock_name)
                age = time.time() - (held.creation_timestamp or 0) / 1000.0
                if age > LOCK_STALE_S:
                    log.warning("breaking a stale promotion lock (%.0f s old)", age)
                    client.delete_registered_model(lock_name)
                    continue
            if time.monotonic() > deadline:
                raise FacesrError(f"another promotion of {name!r} holds the lock {lock_name!r} for more than "
                                  f"{timeout:.0f} s; retry later (a lock older than {LOCK_STALE_S:.0f} s is broken "
                                  "automatically)") from None
            time.sleep(poll)
    try:
        yield token
    finally:
        with contextlib.suppress(MlflowException):
            client.delete_registered_model(lock_name)


def _alias_version(client: Any, name: str, alias: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def per_image_rows(client: Any, mv: Any) -> list[dict[str, str]]:
    import mlflow

    run_id = mv.tags.get(TAG + "run_id") or mv.run_id
    art = mv.tags.get(TAG + "per_image_artifact", PER_IMAGE_ARTIFACT)
    with tempfile.TemporaryDirectory() as td:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=art, dst_path=td)
        return read_per_image(Path(path))


def _record(client: Any, name: str, version: str, decision: Decision, extra: dict[str, str]) -> None:
    tags = {TAG + "promotion.decision": "promoted" if decision.promote else "refused",
            TAG + "promotion.reason": decision.reason[:4900],
            TAG + "promotion.numbers": json.dumps(decision.numbers)[:4900],
            TAG + "promotion.at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra}
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)


def promote(params: Any, version: str | int | None = None, force: bool = False, reason: str | None = None,
            lock_timeout: float = 120.0) -> Decision:
    """Move alias ``champion`` to ``version`` (default: the ``challenger``) when the policy passes."""
    if force and not (reason and reason.strip()):
        raise UserError("promote --force needs --reason TEXT (it is recorded on the version)")
    configure_tracking(params)
    name = params.registry.model_name
    with mlflow_errors("promote"):
        client = _client()
        if version is None:
            mv = _alias_version(client, name, CHALLENGER)
            if mv is None:
                raise UserError(f"model {name!r} has no version with alias {CHALLENGER!r}: run facesr register first, "
                                "or pass --version N")
        else:
            mv = client.get_model_version(name, str(version))
        ver = str(mv.version)
        if mv.tags.get(TAG + "weights") == "untrained" and not params.allow_untrained_weights:
            d = Decision(False, "the model was trained/evaluated with untrained (random) loss or metric weights and "
                                "allow_untrained_weights is false in this profile")
            _record(client, name, ver, d, {})
            raise UserError(f"promote {name} v{ver}: refused: {d.reason}")
        with promotion_lock(client, name, timeout=lock_timeout):
            champ = _alias_version(client, name, CHAMPION)  # re-read under the lock
            extra = {TAG + "promotion.previous_champion": str(champ.version) if champ else "none"}
            if champ is not None and str(champ.version) == ver:
                return Decision(True, f"version {ver} is already the champion", {"already_champion": True})
            chall_rows = [] if force else per_image_rows(client, mv)
            refused = None if force else _baseline_decision(params, client, mv, chall_rows)
            if force:
                d = Decision(True, f"forced: {reason}", {"forced": True})
                extra[TAG + "promotion.forced"] = "true"
            elif refused is not None:
                d = refused
            elif champ is None:
                d = Decision(True, "first champion (no champion yet); not worse than bicubic", {})
            else:
                if mv.tags.get(TAG + "data_hash") != champ.tags.get(TAG + "data_hash"):
                    d = Decision(False, f"not comparable: the test data differ (data hash "
                                        f"{mv.tags.get(TAG + 'data_hash')} vs the champion's "
                                        f"{champ.tags.get(TAG + 'data_hash')}); evaluate both models on the same "
                                        "prepared data, or promote with --force --reason after checking",
                                 {"comparable": False})
                else:
                    try:
                        d = decide(params.registry.promotion, chall_rows,
                                   per_image_rows(client, champ), n_boot=params.evaluate.bootstrap, seed=params.seed)
                    except UserError as exc:
                        d = Decision(False, f"not comparable: {exc}", {"comparable": False})
                d.numbers["champion_version"] = str(champ.version)
            _record(client, name, ver, d, extra)
            if d.promote:
                client.set_registered_model_alias(name, CHAMPION, ver)
                if champ is not None:
                    client.set_model_version_tag(name, str(champ.version), TAG + "replaced_by", ver)
            return d


# --------------------------------------------------------------------------------------------------------------------
# lineage and model download


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> (name, alias, version)."""
    if not uri.startswith("models:/"):
        raise UserError(f"{uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    rest = uri[len("models:/"):].strip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        if name and alias:
            return name, alias, None
    elif "/" in rest:
        name, version = rest.split("/", 1)
        if name and version.isdigit():
            return name, None, version
    raise UserError(f"{uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")


def get_version(client: Any, uri: str) -> Any:
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_model_uri(uri)
    try:
        if alias:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, version)
    except MlflowException as exc:
        what = f"alias {alias!r}" if alias else f"version {version}"
        raise UserError(f"{uri}: model {name!r} has no {what} ({str(exc).splitlines()[0]})") from None


def lineage(params: Any, uri: str) -> list[tuple[str, str]]:
    """registry version -> run -> git commit -> data hash -> params -> pipeline run."""
    configure_tracking(params)
    with mlflow_errors("lineage"):
        client = _client()
        mv = get_version(client, uri)
        t = mv.tags
        aliases = ", ".join(getattr(mv, "aliases", []) or []) or "none"
        run_id = t.get(TAG + "run_id") or mv.run_id or "unknown"
        rows = [("registry version", f"{mv.name} v{mv.version} (aliases: {aliases})"),
                ("model source", str(mv.source))]
        run_name = ""
        if run_id != "unknown":
            with contextlib.suppress(Exception):
                run_name = client.get_run(run_id).info.run_name
        rows += [("run", f"{run_id} ({run_name})" if run_name else run_id),
                 ("parent (pipeline) run", t.get(TAG + "parent_run_id", "unknown")),
                 ("evaluate run", t.get(TAG + "eval_run_id", "unknown")),
                 ("variant", t.get(TAG + "variant", "unknown")),
                 ("git commit", f"{t.get(TAG + 'git_commit', 'unknown')} (dirty: {t.get(TAG + 'git_dirty', '?')})"),
                 ("data hash", f"{t.get(TAG + 'data_hash', 'unknown')} ({t.get(TAG + 'data_hash_source', '?')})"),
                 ("params hash", f"{t.get(TAG + 'params_hash', 'unknown')} (profile {t.get(TAG + 'profile', '?')})"),
                 ("pipeline run", t.get(TAG + "pipeline_run_id", "unknown")),
                 ("weights", t.get(TAG + "weights", "unknown"))]
        primary = t.get(TAG + "primary_metric")
        if primary:
            rows.append((f"{primary} (primary)", t.get(f"{TAG}metric.{primary}", "?")))
        if t.get(TAG + "promotion.decision"):
            rows.append(("promotion", f"{t[TAG + 'promotion.decision']}: {t.get(TAG + 'promotion.reason', '')}"))
        return rows


def download_model(uri: str, dst: str | os.PathLike[str] | None = None) -> Path:
    """Download an MLflow model URI to a local folder (unknown alias/version -> UserError)."""
    import mlflow

    with mlflow_errors(f"download {uri}"):
        if uri.startswith("models:/"):
            get_version(_client(), uri)  # a clear error for an unknown alias or version
        target = Path(dst) if dst else Path(tempfile.mkdtemp(prefix="facesr-model-"))
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target)))


__all__ = ["register", "promote", "lineage", "decide", "paired_bootstrap", "promotion_lock", "configure_tracking",
           "download_model", "data_hash", "git_info", "pipeline_run_id", "lower_is_better", "sha256_file"]
