"""MLflow tracking, model registry, promotion gate and lineage (docs/registry.md).

Modules, one job each:

- ``tracking``: which store (``$MLFLOW_TRACKING_URI`` / ``registry.tracking_uri``), bounded HTTP requests, the SQLite
  store created atomically, MLflow errors mapped to facesr's (``configure_tracking``, ``mlflow_errors``)
- ``provenance``: git commit, pipeline run id, the prepared data's hash (``dvc.lock``, else a tree hash)
- ``candidates``: reading the evaluate and training folders register logs
- ``register``: the pipeline run logged after the fact, the better model registered as ``challenger``
- ``policy``: the promotion gate as pure functions of per-image rows and the policy (``decide``, ``baseline_guard``)
- ``promote``: the registry-side lock and the alias moves
- ``lineage``: ``models:/`` URIs resolved, a version's lineage, ``fetch_model`` (the model folder of a URI)
- ``pyfunc``: the MLflow pyfunc model (logged as code; not imported here)

Import direction: the registry may use infer, evaluate and models; nothing below it imports the registry.
Statistics (direction of a metric, bootstrap intervals) come from ``facesr.stats``.
"""

from __future__ import annotations

from facesr.registry.candidates import Candidate, load_candidates, pick_best, read_per_image
from facesr.registry.lineage import download_model, fetch_model, get_version, lineage, parse_model_uri
from facesr.registry.names import CHALLENGER, CHAMPION, PER_IMAGE_ARTIFACT, TAG
from facesr.registry.policy import Decision, baseline_guard, decide
from facesr.registry.promote import LOCK_STALE_S, promote, promotion_lock
from facesr.registry.provenance import data_hash, git_info, pipeline_run_id
from facesr.registry.register import RegisterResult, end_stale_runs, pyfunc_requirements, register
from facesr.registry.tracking import (DEFAULT_TRACKING_URI, HTTP_DEFAULTS, configure_tracking, ensure_sqlite,
                                      mlflow_errors, tracking_uri)

__all__ = ["CHALLENGER", "CHAMPION", "DEFAULT_TRACKING_URI", "HTTP_DEFAULTS", "LOCK_STALE_S", "PER_IMAGE_ARTIFACT",
           "TAG", "Candidate", "Decision", "RegisterResult", "baseline_guard", "configure_tracking", "data_hash",
           "decide", "download_model", "end_stale_runs", "ensure_sqlite", "fetch_model", "get_version", "git_info",
           "lineage", "load_candidates", "mlflow_errors", "parse_model_uri", "pick_best", "pipeline_run_id", "promote",
           "promotion_lock", "pyfunc_requirements", "read_per_image", "register", "tracking_uri"]
