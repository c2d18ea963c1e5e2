"""Registered model URIs: resolve ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION``, print a version's lineage, and
download a version's files (``fetch_model``: the facesr model folder inside, for ``facesr upscale``)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

from facesr.errors import UserError
from facesr.registry.names import TAG
from facesr.registry.tracking import client as _client
from facesr.registry.tracking import configure_tracking, mlflow_errors


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
    """The model version a ``models:/`` URI names (unknown alias or version -> UserError)."""
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_model_uri(uri)
    try:
        if alias:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, version)
    except MlflowException as exc:
        what = f"alias {alias!r}" if alias else f"version {version}"
        raise UserError(f"{uri}: model {name!r} has no {what} ({str(exc).splitlines()[0]})") from None


def _lineage_rows(client: Any, mv: Any) -> list[tuple[str, str]]:
    t = mv.tags
    aliases = ", ".join(getattr(mv, "aliases", []) or []) or "none"
    run_id = t.get(TAG + "run_id") or mv.run_id or "unknown"
    run_name = ""
    if run_id != "unknown":
        with contextlib.suppress(Exception):
            run_name = client.get_run(run_id).info.run_name
    rows = [("registry version", f"{mv.name} v{mv.version} (aliases: {aliases})"),
            ("model source", str(mv.source)),
            ("run", f"{run_id} ({run_name})" if run_name else run_id),
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


def lineage(params: Any, uri: str) -> list[tuple[str, str]]:
    """registry version -> run -> git commit -> data hash -> params -> pipeline run."""
    configure_tracking(params)
    with mlflow_errors("lineage"):
        client = _client()
        return _lineage_rows(client, get_version(client, uri))


def download_model(uri: str, dst: str | os.PathLike[str] | None = None) -> Path:
    """Download an MLflow model URI to a local folder (unknown alias/version -> UserError).

    Uses the stores MLflow is pointed at (``configure_tracking``); ``fetch_model`` does both.
    """
    import mlflow

    with mlflow_errors(f"download {uri}"):
        if uri.startswith("models:/"):
            get_version(_client(), uri)  # a clear error for an unknown alias or version
        target = Path(dst) if dst else Path(tempfile.mkdtemp(prefix="facesr-model-"))
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target)))


def fetch_model(uri: str, params: Any | None = None, dst: str | os.PathLike[str] | None = None) -> Path:
    """The facesr model folder (``model.json`` + ``generator.safetensors``) of an MLflow model URI, downloaded.

    ``uri``: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/...`` or an artifact URI; the stores are those
    of ``params`` (``configure_tracking``). ``dst``: where to download (default: a new temporary folder, which the
    caller removes). Unknown alias/version -> UserError (exit 2); unreachable server -> ExternalServiceError.
    """
    from facesr.models.io import find_model_folder

    configure_tracking(params)
    return find_model_folder(download_model(uri, dst))
