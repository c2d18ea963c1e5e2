"""Where MLflow stores things, bounded requests, the SQLite store made atomically, and MLflow errors mapped to ours.

Tracking store: ``$MLFLOW_TRACKING_URI`` when set, else ``params.registry.tracking_uri`` (default: an embedded SQLite
file ``mlflow.db`` with local artifacts under ``./mlruns``; no server needed). ``$MLFLOW_REGISTRY_URI`` overrides the
registry store only.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from facesr.errors import ExternalServiceError, FacesrError, UserError

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# bounds on every MLflow HTTP request (set unless the user set them): a server that accepts connections but never
# answers fails within about 2 x 12 s (+ a short backoff), not MLflow's default 7 x 120 s
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "12",  # seconds per request (connect and each read)
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
}
STORE_CREATE_WAIT_S = 300.0  # how long a first use waits for another process that is creating the same SQLite store


def tracking_uri(params: Any | None = None) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if params is not None:
        return params.registry.tracking_uri
    return DEFAULT_TRACKING_URI


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


def client() -> Any:
    """An ``MlflowClient`` of the configured stores (call ``configure_tracking`` first)."""
    from mlflow import MlflowClient

    return MlflowClient()


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


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_store(db: Path) -> None:
    """Create and migrate the schema in a temporary file beside ``db``, then rename it into place (caller holds the
    lock)."""
    for stale in db.parent.glob(f".{db.name}.new-*"):  # left by a killed first use
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
        _fsync(tmp)
        os.replace(tmp, db)
        _fsync(db.parent)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise FacesrError(f"MLflow store {db}: could not create it ({exc})") from None
        raise


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
        _create_store(db)


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


def _mlflow_error(what: str, exc: Any) -> Exception:
    """Our error for an ``MlflowException``."""
    code = getattr(exc, "error_code", "")
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
        return UserError(f"{what}: {msg}")
    if is_request_failure(msg):
        return _server_error(what, msg)
    if "out-of-date database schema" in msg:
        import mlflow

        uri = mlflow.get_tracking_uri()
        return UserError(
            f"MLflow store {sqlite_path(uri) or uri}: {msg.split('. Take a backup')[0]}: an older MLflow made it (back "
            f"it up, then run `mlflow db upgrade {uri}`), or a command was killed while it created or upgraded the "
            "store (move it aside and rerun to start a fresh one)")
    return FacesrError(f"{what}: {msg[:1000]}")


def _database_error(what: str, exc: Exception) -> Exception:
    """Our error for a failure of the SQLite (or other database) store itself."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    db = sqlite_path(uri)
    first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    if db is not None and any(s in first for s in ("already exists", "no such table", "no such column")):
        return _broken_store(db, f"its schema does not match ({type(exc).__name__}: {first})")
    return FacesrError(f"{what}: the MLflow store {db or uri} failed ({type(exc).__name__}: {first}); rerun to retry")


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
        raise _mlflow_error(what, exc) from None
    except SQLAlchemyError as exc:
        raise _database_error(what, exc) from None
    except OSError as exc:
        if "Connection" in type(exc).__name__ or "Connection" in str(exc):
            raise _server_error(what, str(exc)) from None
        raise


def is_request_failure(msg: str) -> bool:
    """True when an MLflow error message says an HTTP request failed (a dead or hung server)."""
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
