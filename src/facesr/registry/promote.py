"""``promote``: move alias ``champion`` when the gate (``facesr.registry.policy``) passes, under a registry-side lock,
and record the decision on the version either way."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from facesr.errors import FacesrError, InputError, UserError
from facesr.fsutil import read_json
from facesr.registry.candidates import read_per_image
from facesr.registry.names import CHALLENGER, CHAMPION, PER_IMAGE_ARTIFACT, TAG
from facesr.registry.policy import Decision, baseline_guard, decide
from facesr.registry.tracking import client as _client
from facesr.registry.tracking import configure_tracking, mlflow_errors

log = logging.getLogger(__name__)

LOCK_STALE_S = 600.0


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


def alias_version(client: Any, name: str, alias: str) -> Any | None:
    """The model version holding ``alias`` (None when no version has it)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def per_image_rows(client: Any, mv: Any) -> list[dict[str, str]]:
    """The per-image rows of the model a version was registered from (its train run's ``eval/per_image.csv``)."""
    import mlflow

    run_id = mv.tags.get(TAG + "run_id") or mv.run_id
    art = mv.tags.get(TAG + "per_image_artifact", PER_IMAGE_ARTIFACT)
    with tempfile.TemporaryDirectory() as td:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=art, dst_path=td)
        return read_per_image(Path(path))


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
    from facesr.config import BASELINE

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


def _against_champion(params: Any, client: Any, mv: Any, champ: Any, chall_rows: list[dict[str, str]]) -> Decision:
    """The policy against the current champion: the same data hash and test images, then ``decide``."""
    if mv.tags.get(TAG + "data_hash") != champ.tags.get(TAG + "data_hash"):
        d = Decision(False, f"not comparable: the test data differ (data hash {mv.tags.get(TAG + 'data_hash')} vs the "
                            f"champion's {champ.tags.get(TAG + 'data_hash')}); evaluate both models on the same "
                            "prepared data, or promote with --force --reason after checking", {"comparable": False})
    else:
        try:
            d = decide(params.registry.promotion, chall_rows, per_image_rows(client, champ),
                       n_boot=params.evaluate.bootstrap, seed=params.seed)
        except UserError as exc:
            d = Decision(False, f"not comparable: {exc}", {"comparable": False})
    d.numbers["champion_version"] = str(champ.version)
    return d


def _decision(params: Any, client: Any, mv: Any, champ: Any | None, force: bool, reason: str | None) -> Decision:
    if force:
        return Decision(True, f"forced: {reason}", {"forced": True})
    chall_rows = per_image_rows(client, mv)
    refused = _baseline_decision(params, client, mv, chall_rows)
    if refused is not None:
        return refused
    if champ is None:
        return Decision(True, "first champion (no champion yet); not worse than bicubic", {})
    return _against_champion(params, client, mv, champ, chall_rows)


def _record(client: Any, name: str, version: str, decision: Decision, extra: dict[str, str]) -> None:
    tags = {TAG + "promotion.decision": "promoted" if decision.promote else "refused",
            TAG + "promotion.reason": decision.reason[:4900],
            TAG + "promotion.numbers": json.dumps(decision.numbers)[:4900],
            TAG + "promotion.at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra}
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)


def _target_version(client: Any, name: str, version: str | int | None) -> Any:
    if version is not None:
        return client.get_model_version(name, str(version))
    mv = alias_version(client, name, CHALLENGER)
    if mv is None:
        raise UserError(f"model {name!r} has no version with alias {CHALLENGER!r}: run facesr register first, "
                        "or pass --version N")
    return mv


def promote(params: Any, version: str | int | None = None, force: bool = False, reason: str | None = None,
            lock_timeout: float = 120.0) -> Decision:
    """Move alias ``champion`` to ``version`` (default: the ``challenger``) when the policy passes."""
    if force and not (reason and reason.strip()):
        raise UserError("promote --force needs --reason TEXT (it is recorded on the version)")
    configure_tracking(params)
    name = params.registry.model_name
    with mlflow_errors("promote"):
        client = _client()
        mv = _target_version(client, name, version)
        ver = str(mv.version)
        if mv.tags.get(TAG + "weights") == "untrained" and not params.allow_untrained_weights:
            d = Decision(False, "the model was trained/evaluated with untrained (random) loss or metric weights and "
                                "allow_untrained_weights is false in this profile")
            _record(client, name, ver, d, {})
            raise UserError(f"promote {name} v{ver}: refused: {d.reason}")
        with promotion_lock(client, name, timeout=lock_timeout):
            champ = alias_version(client, name, CHAMPION)  # re-read under the lock
            if champ is not None and str(champ.version) == ver:
                return Decision(True, f"version {ver} is already the champion", {"already_champion": True})
            d = _decision(params, client, mv, champ, force, reason)
            extra = {TAG + "promotion.previous_champion": str(champ.version) if champ else "none"}
            if force:
                extra[TAG + "promotion.forced"] = "true"
            _record(client, name, ver, d, extra)
            if d.promote:
                client.set_registered_model_alias(name, CHAMPION, ver)
                if champ is not None:
                    client.set_model_version_tag(name, str(champ.version), TAG + "replaced_by", ver)
            return d
