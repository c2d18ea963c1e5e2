"""``facesr pipeline compile|run --local|submit|schedule``: the Kubeflow pipeline front-end (logic in facesr.kfp)."""

from __future__ import annotations

from pathlib import Path

import click

from facesr.cli.common import echo_kv
from facesr.cli.main import AppContext, cli, pass_app
from facesr.errors import UserError


def _run_options(f):
    """The pipeline's run arguments, shared by run/submit/schedule."""
    options = [
        click.option("--source", default=None, help="data source (default: params data.source): sample | dir:PATH | "
                                                    "s3://bucket/prefix | kaggle:OWNER/DATASET"),
        click.option("--data-version", default="", help="label of the data version (e.g. a date or DVC rev); part "
                                                        "of the ingest cache key, so a new label re-ingests"),
        click.option("--variant", "variants", multiple=True, help="train only these variants (repeatable; default: "
                                                                   "every key of params loss.variants)"),
        click.option("--mlflow-uri", default=None, help="MLflow tracking URI for register/promote (default: on a "
                     "cluster params pipeline.mlflow_uri; locally $MLFLOW_TRACKING_URI, else registry.tracking_uri)"),
        click.option("--model-name", default=None, help="registered model name (default: params registry.model_name)"),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _remote_options(f):
    options = [
        click.option("--host", required=True, envvar="KF_PIPELINES_ENDPOINT", show_envvar=True,
                     help="KFP API endpoint, e.g. http://localhost:8080 (credentials: $FACESR_KFP_TOKEN or "
                          "$KF_PIPELINES_SA_TOKEN_PATH)"),
        click.option("--namespace", default=None, help="Kubeflow profile namespace (multi-user deployments)"),
        click.option("--experiment", default=None, help="KFP experiment (default: the pipeline name)"),
        click.option("--package", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="a compiled pipeline YAML to send (default: compile from the params now)"),
        click.option("--upload", "do_upload", is_flag=True,
                     help="upload the pipeline as a new version of the pipeline named params pipeline.name and "
                          "run that version (default: the spec travels inline with the run)"),
        click.option("--service-account", default=None,
                     help="Kubernetes service account of the run's pods (infra: facesr-pipeline-runner)"),
        click.option("--send-params/--image-params", default=True, show_default=True,
                     help="send this params file with the run, or use the params.yaml baked into the image"),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _arguments(app: AppContext, send_params: bool, source, data_version, variants, mlflow_uri, model_name,
               checkpoint_root: str | None = None) -> dict:
    from facesr.kfp.local import params_text_of
    from facesr.kfp.pipeline import pipeline_arguments

    text = params_text_of(app.params_path) if send_params else ""
    return pipeline_arguments(app.params, overrides=list(app.overrides), params_text=text, source=source,
                              data_version=data_version, variants=list(variants), mlflow_uri=mlflow_uri,
                              model_name=model_name, checkpoint_root=checkpoint_root)


@cli.group("pipeline")
def pipeline_group() -> None:
    """The Kubeflow pipeline (facesr-training): compile, run here, submit, schedule."""


@pipeline_group.command("compile")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="output YAML (default: pipelines/<pipeline.name>.yaml)")
@pass_app
def compile_cmd(app: AppContext, out: Path | None) -> None:
    """Compile the pipeline to KFP v2 IR YAML (defaults from the params: image, GPU pool, profile, variants)."""
    from facesr.kfp.pipeline import compile_pipeline

    params = app.params
    path = compile_pipeline(params, out or Path("pipelines") / f"{params.pipeline.name}.yaml")
    click.echo(f"compiled {params.pipeline.name} (image {params.pipeline.image}, profile {params.profile}) -> {path}")


@pipeline_group.command("run")
@click.option("--local", "local_", is_flag=True, help="run here with kfp.local (every task, one after another)")
@click.option("--container", is_flag=True,
              help="with --local: run each task in the image of params pipeline.image (scripts/build-image.sh) as "
                   "its non-root user, through the Docker API at $DOCKER_HOST (Docker, or Podman's socket: "
                   "`podman system service`); default: subprocesses of this venv")
@click.option("--pipeline-root", type=click.Path(file_okay=False, path_type=Path), default=Path(".kfp-local"),
              show_default=True, help="where the local runner keeps every task's artifacts")
@_run_options
@pass_app
def run_cmd(app: AppContext, local_: bool, container: bool, pipeline_root: Path, source, data_version, variants,
            mlflow_uri, model_name) -> None:
    """Run the whole pipeline on this machine (every task, one after another, in this venv or in the image)."""
    if not local_:
        raise UserError("facesr pipeline run: only --local is supported here; for a cluster use "
                        "`facesr pipeline submit --host URL`")
    from facesr.kfp.local import params_text_of, run_local

    params = app.params
    res = run_local(params, pipeline_root=pipeline_root, params_text=params_text_of(app.params_path),
                    overrides=list(app.overrides), source=source, data_version=data_version, variants=list(variants),
                    mlflow_uri=mlflow_uri or "", model_name=model_name, container=container)
    rows = {
        "pipeline root": res.pipeline_root,
        "evaluation": res.evaluation,
        "registered version": res.registered_version or "-",
        "champion version": res.champion_version or "-",
    }
    if container:
        rows["image"] = params.pipeline.image
        rows["MLflow store"] = res.mlflow_uri
    echo_kv("local pipeline run finished", rows)


@pipeline_group.command("submit")
@_remote_options
@click.option("--run-name", default=None, help="run name (default: '<pipeline> <UTC time>')")
@_run_options
@pass_app
def submit_cmd(app: AppContext, host, namespace, experiment, package, do_upload, service_account, send_params,
               run_name, source,
               data_version, variants, mlflow_uri, model_name) -> None:
    """Start one run of the pipeline on a KFP server."""
    from facesr.kfp.remote import submit

    args = _arguments(app, send_params, source, data_version, variants, mlflow_uri, model_name)
    res = submit(app.params, host, args, package=package, experiment=experiment, run_name=run_name,
                 namespace=namespace, do_upload=do_upload, service_account=service_account)
    echo_kv("submitted", {"run id": res.id, "experiment id": res.experiment_id or "-",
                          "pipeline version": res.version_id or "(inline spec)", "url": res.url})


@pipeline_group.command("schedule")
@_remote_options
@click.option("--cron", default=None, help="KFP cron, 6 fields with seconds (default: params pipeline.cron)")
@click.option("--name", "job_name", default=None, help="recurring run name (default: '<pipeline> scheduled')")
@click.option("--max-concurrency", type=click.IntRange(1, 10), default=1, show_default=True)
@_run_options
@pass_app
def schedule_cmd(app: AppContext, host, namespace, experiment, package, do_upload, service_account, send_params,
                 cron, job_name,
                 max_concurrency, source, data_version, variants, mlflow_uri, model_name) -> None:
    """Create a recurring run (scheduled retraining) on a KFP server."""
    from facesr.kfp.remote import schedule

    params = app.params
    args = _arguments(app, send_params, source, data_version, variants, mlflow_uri, model_name)
    res = schedule(params, host, cron or params.pipeline.cron, args, package=package, experiment=experiment,
                   job_name=job_name, namespace=namespace, do_upload=do_upload, max_concurrency=max_concurrency,
                   service_account=service_account)
    echo_kv("scheduled", {"recurring run id": res.id, "cron": cron or params.pipeline.cron,
                          "experiment id": res.experiment_id or "-",
                          "pipeline version": res.version_id or "(inline spec)", "url": res.url})
