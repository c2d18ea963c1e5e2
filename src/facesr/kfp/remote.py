"""Talk to a Kubeflow Pipelines server: submit a run, create a recurring (scheduled) run, optionally upload the pipeline.

Credentials come from the environment, never from params or the command line:
- ``FACESR_KFP_TOKEN``: a bearer token (e.g. ``kubectl create token ...`` or an OIDC id token), sent as
  ``Authorization: Bearer ...``;
- otherwise ``KF_PIPELINES_SA_TOKEN_PATH``: a projected service-account token file (read, and re-read on expiry, by
  ``kfp.client.set_volume_credentials.ServiceAccountTokenVolumeCredentials``), as inside a Kubeflow notebook;
- otherwise no credentials (a port-forwarded or open endpoint); kfp's own ``KF_PIPELINES_*`` env settings
  (``KF_PIPELINES_ENDPOINT``, IAP client ids, ``~/.config/kfp/context.json``) are honoured by ``kfp.Client``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facesr.config import Params
from facesr.errors import ExternalServiceError, UserError

log = logging.getLogger(__name__)

TOKEN_ENV = "FACESR_KFP_TOKEN"
SA_TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"

_CRON_FIELD = re.compile(r"^[0-9A-Za-z*?/,\-LW#]+$")


@dataclass
class Submitted:
    kind: str  # "run" | "recurring run"
    id: str
    experiment_id: str
    pipeline_id: str = ""
    version_id: str = ""
    url: str = ""


def validate_cron(expr: str) -> str:
    """KFP's cron (robfig/cron with seconds): 6 space-separated fields, e.g. '0 0 3 * * 0' = Sundays 03:00:00."""
    fields = expr.split()
    if len(fields) != 6 or not all(_CRON_FIELD.match(f) for f in fields):
        hint = f" (a 5-field crontab? prepend the seconds: '0 {expr.strip()}')" if len(fields) == 5 else ""
        raise UserError(
            f"--cron {expr!r}: KFP needs 6 fields 'SECONDS MINUTES HOURS DAY-OF-MONTH MONTH DAY-OF-WEEK', "
            f"e.g. '0 0 3 * * 0'{hint}"
        )
    return " ".join(fields)


def validate_host(host: str) -> str:
    if not re.match(r"^https?://[^\s/]+", host or ""):
        raise UserError(f"--host {host!r}: expected the KFP API endpoint as http(s)://HOST[:PORT][/PATH], "
                        "e.g. http://localhost:8080 after `kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`")
    return host.rstrip("/")


def make_client(host: str, namespace: str | None = None) -> Any:
    """A ``kfp.Client`` for ``host`` with credentials from the environment (see the module docstring)."""
    import kfp

    host = validate_host(host)
    kwargs: dict[str, Any] = {"host": host}
    if namespace:
        kwargs["namespace"] = namespace
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        kwargs["existing_token"] = token
    elif os.environ.get(SA_TOKEN_PATH_ENV):
        from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

        path = os.environ[SA_TOKEN_PATH_ENV]
        if not Path(path).is_file():
            raise UserError(f"${SA_TOKEN_PATH_ENV}={path}: token file not found")
        kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(path=path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return kfp.Client(**kwargs)
    except Exception as exc:  # noqa: BLE001 - connection, TLS, auth: one message naming the host
        raise ExternalServiceError(f"KFP server {host}: cannot connect ({_short(exc)})") from None


def _short(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    if status:
        return f"HTTP {status} {reason or ''}".strip()
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


@contextmanager
def _calling(host: str, what: str) -> Iterator[None]:
    try:
        yield
    except (UserError, ExternalServiceError):
        raise
    except Exception as exc:  # noqa: BLE001
        raise ExternalServiceError(f"KFP server {host}: {what} failed ({_short(exc)})") from None


@contextmanager
def compiled_package(params: Params, package: str | os.PathLike[str] | None) -> Iterator[Path]:
    """The pipeline package to send: ``package`` when given, else the pipeline compiled from ``params`` now."""
    if package:
        p = Path(package)
        if not p.is_file():
            raise UserError(f"--package {p}: file not found (compile one with `facesr pipeline compile --out FILE`)")
        yield p
        return
    from facesr.kfp.pipeline import compile_pipeline

    with tempfile.TemporaryDirectory(prefix="facesr-kfp-") as tmp:
        yield compile_pipeline(params, Path(tmp) / f"{params.pipeline.name}.yaml")


def upload(client: Any, host: str, package: Path, name: str) -> tuple[str, str]:
    """Upload ``package`` as a new version of pipeline ``name`` (creating the pipeline the first time).

    Returns ``(pipeline_id, version_id)``. The version is named ``NAME-YYYYmmdd-HHMMSS-<spec sha256[:8]>``.
    """
    digest = hashlib.sha256(package.read_bytes()).hexdigest()[:8]
    version_name = f"{name}-{_dt.datetime.now(_dt.UTC).strftime('%Y%m%d-%H%M%S')}-{digest}"
    with _calling(host, "pipeline upload"):
        pipeline_id = client.get_pipeline_id(name)
        if not pipeline_id:
            pipeline = client.upload_pipeline(str(package), pipeline_name=name,
                                              description="facesr x4 face super-resolution training")
            pipeline_id = pipeline.pipeline_id
            versions = client.list_pipeline_versions(pipeline_id, page_size=1, sort_by="created_at desc")
            found = getattr(versions, "pipeline_versions", None) or []
            if not found:
                raise ExternalServiceError(f"KFP server {host}: uploaded pipeline {name} has no version")
            return pipeline_id, found[0].pipeline_version_id
        version = client.upload_pipeline_version(str(package), pipeline_version_name=version_name,
                                                 pipeline_id=pipeline_id)
        return pipeline_id, version.pipeline_version_id


def without_caching(package: Path, out: Path) -> Path:
    """A copy of a compiled pipeline package with caching switched off for every task."""
    import yaml

    docs = list(yaml.safe_load_all(package.read_text(encoding="utf-8")))
    spec = docs[0]
    dags = [spec.get("root", {}).get("dag", {})] + [c.get("dag", {}) for c in spec.get("components", {}).values()]
    for dag in dags:
        for task in (dag.get("tasks") or {}).values():
            task["cachingOptions"] = {}
    out.write_text("---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs), encoding="utf-8")
    return out


def submit(
    params: Params,
    host: str,
    arguments: Mapping[str, Any],
    *,
    package: str | os.PathLike[str] | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    namespace: str | None = None,
    do_upload: bool = False,
    service_account: str | None = None,
) -> Submitted:
    """Create one run of the pipeline (the spec inline, or an uploaded pipeline version with ``do_upload``)."""
    host = validate_host(host)
    experiment = experiment or params.pipeline.name
    run_name = run_name or f"{params.pipeline.name} {_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M:%S')}"
    client = make_client(host, namespace)
    with compiled_package(params, package) as pkg:
        if do_upload:
            pipeline_id, version_id = upload(client, host, pkg, params.pipeline.name)
            with _calling(host, "create experiment"):
                exp = client.create_experiment(experiment, namespace=namespace)
            with _calling(host, "create run"):
                run = client.run_pipeline(experiment_id=exp.experiment_id, job_name=run_name, params=dict(arguments),
                                          pipeline_id=pipeline_id, version_id=version_id,
                                          service_account=service_account)
            return Submitted("run", run.run_id, exp.experiment_id, pipeline_id, version_id,
                             f"{host}/#/runs/details/{run.run_id}")
        with _calling(host, "create run"):
            res = client.create_run_from_pipeline_package(str(pkg), arguments=dict(arguments), run_name=run_name,
                                                          experiment_name=experiment, namespace=namespace,
                                                          service_account=service_account)
        exp_id = getattr(res.run_info, "experiment_id", "") or ""
        return Submitted("run", res.run_id, exp_id, url=f"{host}/#/runs/details/{res.run_id}")


def schedule(
    params: Params,
    host: str,
    cron: str,
    arguments: Mapping[str, Any],
    *,
    package: str | os.PathLike[str] | None = None,
    experiment: str | None = None,
    job_name: str | None = None,
    namespace: str | None = None,
    do_upload: bool = False,
    max_concurrency: int = 1,
    service_account: str | None = None,
) -> Submitted:
    """Create a recurring run (``kfp.Client.create_recurring_run``) on the KFP cron schedule ``cron``.

    Without a ``data_version`` argument every scheduled run would hit the ingest cache of the first one (same
    arguments), so caching is switched off for the recurring run then: each run re-reads the source.
    """
    enable_caching = None if arguments.get("data_version") else False
    cron = validate_cron(cron)
    host = validate_host(host)
    experiment = experiment or params.pipeline.name
    job_name = job_name or f"{params.pipeline.name} scheduled"
    client = make_client(host, namespace)
    with compiled_package(params, package) as pkg:
        pipeline_id = version_id = ""
        if do_upload:
            # kfp can only switch caching off for an inline spec: switch it off in the uploaded package instead
            up = pkg if enable_caching is None else without_caching(pkg, pkg.parent / f".nocache-{pkg.name}")
            try:
                pipeline_id, version_id = upload(client, host, up, params.pipeline.name)
            finally:
                if up != pkg:
                    up.unlink(missing_ok=True)
        with _calling(host, "create experiment"):
            exp = client.create_experiment(experiment, namespace=namespace)
        with _calling(host, "create recurring run"):
            kwargs: dict[str, Any] = (
                {"pipeline_id": pipeline_id, "version_id": version_id} if do_upload
                else {"pipeline_package_path": str(pkg)}
            )
            rr = client.create_recurring_run(
                experiment_id=exp.experiment_id, job_name=job_name, cron_expression=cron, params=dict(arguments),
                max_concurrency=max_concurrency, no_catchup=True, enabled=True, enable_caching=enable_caching,
                service_account=service_account, **kwargs)
    return Submitted("recurring run", rr.recurring_run_id, exp.experiment_id, pipeline_id, version_id,
                     f"{host}/#/recurringrun/details/{rr.recurring_run_id}")
