"""``register``: log a whole pipeline run *after the fact* from the step output folders and register the better model.

Training runs as separate processes (DVC stages or KFP pods), so this logs a parent run tagged with the pipeline run
id, child runs ``train/<name>`` (params, per-step metrics from ``metrics.jsonl``, loss curves, model card, the pyfunc
model) and ``evaluate`` (metrics.json, per_image.csv, table.md, grids). The better model by
``registry.promotion.primary_metric`` becomes a new version of ``registry.model_name`` with alias ``challenger`` and
lineage tags. SIGTERM/SIGINT end the runs it started as KILLED; runs a ``kill -9`` left RUNNING are ended by the next
``register``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facesr.errors import Interrupted
from facesr.fsutil import sha256_file
from facesr.locks import owner_alive, owner_token
from facesr.registry.candidates import (Candidate, load_candidates, loss_curve_png, model_card, pick_best,
                                        read_metrics_jsonl, rows_to_csv)
from facesr.registry.names import CHALLENGER, PER_IMAGE_ARTIFACT, TAG
from facesr.registry.provenance import data_hash, git_info, pipeline_run_id
from facesr.registry.tracking import client as _client
from facesr.registry.tracking import configure_tracking, is_request_failure, mlflow_errors

log = logging.getLogger(__name__)

PYFUNC_CODE = Path(__file__).with_name("pyfunc.py")


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


def pyfunc_requirements() -> list[str]:
    """The pip requirements recorded with the pyfunc model: facesr, its core dependencies (no extra) and mlflow, each
    pinned to the version installed here (local labels such as ``+cpu`` dropped, so a GPU server installs its own
    build). Serving the model needs nothing of dvc, kfp, kubernetes or kagglehub."""
    import re
    from importlib.metadata import PackageNotFoundError, requires, version

    def pinned(name: str) -> str:
        try:
            return f"{name}=={version(name).split('+', 1)[0]}"
        except PackageNotFoundError:
            return name

    try:
        core = [r for r in requires("facesr") or [] if ";" not in r]
    except PackageNotFoundError:
        core = []
    names = [re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0] for r in core]
    return [pinned("facesr"), *(pinned(n) for n in names if n.lower() != "mlflow"), pinned("mlflow")]


def _find_registered(client: Any, name: str, key: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        hits = client.search_model_versions(f"name = '{name}' and tags.`{TAG}register_key` = '{key}'")
    except MlflowException as exc:
        if is_request_failure(str(exc)):  # a dead server is not "not registered yet"
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

    example = np.zeros((2, 3, 8, 8), dtype=np.float32)  # batch > 1; the signature leaves N, H, W free
    spec = TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1))
    signature = ModelSignature(inputs=Schema([spec]), outputs=Schema([spec]))
    return mlflow.pyfunc.log_model(name="model", python_model=str(PYFUNC_CODE), artifacts={"model": str(c.model_dir)},
                                   signature=signature, input_example=example, pip_requirements=pyfunc_requirements())


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


def _common_tags(params: Any, dhash: str, dsrc: str, prid: str) -> dict[str, str]:
    """The tags of every run logged (and, less the owner, of the version)."""
    commit, dirty = git_info()
    common = {TAG + "pipeline_run_id": prid, TAG + "git_commit": commit, TAG + "git_dirty": dirty,
              TAG + "data_hash": dhash, TAG + "data_hash_source": dsrc, TAG + "params_hash": params.hash(),
              TAG + "profile": params.profile, "mlflow.source.git.commit": commit}
    if os.environ.get("FACESR_PIPELINE_NAME"):
        common[TAG + "pipeline_name"] = os.environ["FACESR_PIPELINE_NAME"]
    common[TAG + "owner"] = owner_token()  # host:pid:start of this process: a run no live process owns is stale
    return common


def _reuse(client: Any, name: str, existing: Any, best: Candidate) -> RegisterResult:
    """A retried step (KFP retry, DVC rerun): the same outputs are registered already; set ``challenger`` again."""
    log.info("register: %s v%s already holds these outputs; alias %s set again", name, existing.version, CHALLENGER)
    client.set_registered_model_alias(name, CHALLENGER, existing.version)
    t = dict(existing.tags)
    runs = {k: v for k, v in (("train/" + t.get(TAG + "model_name", best.name), t.get(TAG + "run_id")),
                              ("evaluate", t.get(TAG + "eval_run_id"))) if v}
    return RegisterResult(name, str(existing.version), t.get(TAG + "variant", best.variant),
                          t.get(TAG + "parent_run_id", ""), runs, t, reused=True)


def _numeric_means(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {f"{prefix}{k}": float(v["mean"]) for k, v in metrics.items()
            if isinstance(v, dict) and isinstance(v.get("mean"), (int, float))}


def _log_train_run(client: Any, c: Candidate, common: dict[str, str], flat: dict[str, str],
                   primary: str) -> tuple[str, Any]:
    """The child run ``train/<name>`` of one candidate; returns (run id, the logged pyfunc model's info)."""
    import mlflow

    tags = {**common, TAG + "step": "train", TAG + "variant": c.variant, TAG + "weights": c.weights}
    with mlflow.start_run(run_name=f"train/{c.name}", nested=True, tags=tags) as run:
        mlflow.log_params({**flat, "variant": c.variant})
        rows = read_metrics_jsonl(c.train_dir / "metrics.jsonl")
        _log_metrics_jsonl(client, run.info.run_id, rows)
        mlflow.log_metrics(_numeric_means(c.metrics, "eval."))
        for f in ("train_summary.json", "metrics.jsonl"):
            if (c.train_dir / f).is_file():
                mlflow.log_artifact(str(c.train_dir / f), artifact_path="train")
        mlflow.log_artifact(str(c.model_dir / "model.json"), artifact_path="train")
        png = loss_curve_png(rows, f"{c.variant} losses")
        if png:
            mlflow.log_image(_png_to_pil(png), artifact_file="train/loss_curves.png")
        mlflow.log_text(rows_to_csv(c.per_image), PER_IMAGE_ARTIFACT)
        mlflow.log_text(model_card(c, common, primary), "model_card.md")
        return run.info.run_id, _log_pyfunc(c)


def _log_eval_run(eval_dir: Path, cands: list[Candidate], common: dict[str, str]) -> str:
    """The child run ``evaluate``: the evaluate output's files and every model's means."""
    import mlflow

    with mlflow.start_run(run_name="evaluate", nested=True, tags={**common, TAG + "step": "evaluate"}) as run:
        for f in ("metrics.json", "per_image.csv", "table.md", "manifest.json"):
            if (eval_dir / f).is_file():
                mlflow.log_artifact(str(eval_dir / f))
        if (eval_dir / "grids").is_dir():
            mlflow.log_artifacts(str(eval_dir / "grids"), artifact_path="grids")
        metrics: dict[str, float] = {}
        for c in cands:
            metrics.update(_numeric_means(c.metrics, f"{c.name}."))
        mlflow.log_metrics(metrics)
        return run.info.run_id


def _version_tags(common: dict[str, str], best: Candidate, run_ids: dict[str, str], parent_id: str, primary: str,
                  key: str) -> dict[str, str]:
    vtags = {**common, TAG + "variant": best.variant, TAG + "model_name": best.name, TAG + "weights": best.weights,
             TAG + "run_id": run_ids[f"train/{best.name}"], TAG + "parent_run_id": parent_id,
             TAG + "eval_run_id": run_ids["evaluate"], TAG + "per_image_artifact": PER_IMAGE_ARTIFACT,
             TAG + "primary_metric": primary, TAG + "generator_sha256": str(best.meta.get("generator_sha256", "")),
             TAG + "n_test_images": str(len({r["image"] for r in best.per_image})), TAG + "register_key": key}
    for k, m in best.metrics.items():
        if isinstance(m, dict) and m.get("mean") is not None:
            vtags[f"{TAG}metric.{k}"] = str(m["mean"])
    vtags.pop("mlflow.source.git.commit", None)
    vtags.pop(TAG + "owner", None)
    return vtags


@_ends_runs_on_signal
def register(params: Any, eval_dir: Path, models: dict[str, Path], data: Path | None = None) -> RegisterResult:
    """Log the pipeline run (parent + train/<name> + evaluate children) and register the better model."""
    import mlflow

    eval_dir = Path(eval_dir)
    cands = load_candidates(eval_dir, models)
    primary = params.registry.promotion.primary_metric
    best = pick_best(cands, primary)
    dhash, dsrc = data_hash(Path(data) if data else None, eval_dir)
    prid = pipeline_run_id()
    common = _common_tags(params, dhash, dsrc, prid)
    flat = _str_params(params.flat())
    key = register_key(best, eval_dir, dhash, params.hash())
    configure_tracking(params)
    name = params.registry.model_name
    with mlflow_errors("register"):
        client = _client()
        existing = _find_registered(client, name, key)
        if existing is not None:
            return _reuse(client, name, existing, best)
        exp = mlflow.set_experiment(params.registry.experiment)
        end_stale_runs(client, exp.experiment_id, prid)
        run_ids: dict[str, str] = {}
        model_infos: dict[str, Any] = {}
        with mlflow.start_run(run_name=f"pipeline-{prid}", tags={**common, TAG + "step": "pipeline"}) as parent:
            mlflow.log_params(flat)
            for c in cands:
                run_ids[f"train/{c.name}"], model_infos[c.name] = _log_train_run(client, c, common, flat, primary)
            run_ids["evaluate"] = _log_eval_run(eval_dir, cands, common)
        vtags = _version_tags(common, best, run_ids, parent.info.run_id, primary, key)
        mv = mlflow.register_model(model_infos[best.name].model_uri, name, tags=vtags)
        client.set_registered_model_alias(name, CHALLENGER, mv.version)
    return RegisterResult(name, str(mv.version), best.variant, parent.info.run_id, run_ids, vtags)


def _png_to_pil(data: bytes) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")
