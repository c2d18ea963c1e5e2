"""KFP components: one per step, each running one ``facesr`` CLI verb in the facesr image.

They are *lightweight* Python components (``@dsl.component(base_image=IMAGE, install_kfp_package=False)``): on a
cluster KFP runs the function below in the facesr image (which has kfp and facesr installed, so nothing is pip-installed
at run time); under ``kfp.local.SubprocessRunner(use_venv=False)`` the same function runs in this venv. (Container
components would be the other choice, but the subprocess runner refuses them.) The function bodies are serialised into
the pipeline spec, so they import what they use inside and call ``facesr.kfp.runtime``, which runs the CLI.

Artifacts are exactly the step folders: ``Dataset`` = the raw and the prepared folders, ``Model`` = a pretrain or train
folder (``model/``, ``checkpoints/``, ``metrics.jsonl``, ``train_summary.json``), ``Artifact`` = the evaluation folder, plus
``Metrics`` / ``Markdown`` / ``HTML`` views of it for the KFP UI.

Every component takes the same params plumbing: ``profile`` and ``overrides`` (``--set KEY=VALUE``) go to the CLI;
``params_text`` (a whole params.yaml, optional) replaces the params.yaml baked into the image (``$FACESR_PARAMS``).
"""

from collections.abc import Callable
from typing import List  # noqa: UP035 - KFP reads these annotations

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output


def ingest(
    source: str,
    data_version: str,
    profile: str,
    overrides: List[str],
    params_text: str,
    raw: Output[Dataset],
):
    """facesr ingest --source SOURCE --out RAW (data_version labels the data set; it is part of the cache key)."""
    from facesr.kfp import runtime

    runtime.run_cli(["ingest", "--source", source, "--out", raw.path],
                    profile=profile, overrides=overrides, params_text=params_text)
    manifest = runtime.read_manifest(raw.path)
    raw.metadata.update({"source": source, "data_version": data_version, "count": manifest.get("count"),
                         "format": manifest.get("format")})


def prepare(
    raw: Input[Dataset],
    profile: str,
    overrides: List[str],
    params_text: str,
    prepared: Output[Dataset],
):
    """facesr prepare --raw RAW --out PREPARED."""
    from facesr.kfp import runtime

    runtime.run_cli(["prepare", "--raw", raw.path, "--out", prepared.path],
                    profile=profile, overrides=overrides, params_text=params_text)
    manifest = runtime.read_manifest(prepared.path)
    prepared.metadata.update({"accepted": manifest.get("accepted"), "split": manifest.get("split"),
                              "format": manifest.get("format")})


def pretrain(
    data: Input[Dataset],
    profile: str,
    overrides: List[str],
    params_text: str,
    checkpoint_root: str,
    nproc_per_node: int,
    model: Output[Model],
):
    """facesr pretrain --data PREPARED --out MODEL [--resume]: the shared PSNR model, once per run (cached); under
    torchrun when nproc_per_node > 1."""
    from facesr.kfp import runtime

    info = runtime.pretrain_step(data.path, model.path, checkpoint_root=checkpoint_root,
                                 nproc_per_node=nproc_per_node, profile=profile, overrides=overrides,
                                 params_text=params_text)
    model.metadata.update({"variant": runtime.PSNR_NAME, "resumed": info["resumed"]})


def train(
    data: Input[Dataset],
    psnr_model: Input[Model],
    variant: str,
    profile: str,
    overrides: List[str],
    params_text: str,
    checkpoint_root: str,
    run_id: str,
    nproc_per_node: int,
    model: Output[Model],
):
    """facesr train --data PREPARED --variant VARIANT --init-from PSNR/model --out MODEL [--resume] (resumes on a
    retried pod; under torchrun when nproc_per_node > 1)."""
    from facesr.kfp import runtime

    info = runtime.train_step(data.path, variant, model.path, init_from=psnr_model.path,
                              checkpoint_root=checkpoint_root, run_id=run_id, nproc_per_node=nproc_per_node,
                              profile=profile, overrides=overrides, params_text=params_text)
    model.metadata.update({"variant": variant, "resumed": info["resumed"]})


def evaluate(
    data: Input[Dataset],
    psnr_model: Input[Model],
    models: Input[List[Model]],
    profile: str,
    overrides: List[str],
    params_text: str,
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    table: Output[Markdown],
    grids: Output[HTML],
):
    """facesr evaluate --data PREPARED --model psnr=DIR --model NAME=DIR ... --out EVAL; metrics, table and grids
    for the KFP UI."""
    from facesr.kfp import runtime

    every = [psnr_model, *models]
    runtime.run_cli(["evaluate", "--data", data.path, *runtime.model_args(every), "--out", evaluation.path],
                    profile=profile, overrides=overrides, params_text=params_text)
    runtime.log_eval_metrics(evaluation.path, metrics)
    runtime.write_table(evaluation.path, table.path)
    runtime.write_grids_html(evaluation.path, grids.path)


def register(
    data: Input[Dataset],
    evaluation: Input[Artifact],
    psnr_model: Input[Model],
    models: Input[List[Model]],
    profile: str,
    overrides: List[str],
    params_text: str,
    mlflow_uri: str,
    model_name: str,
    run_id: str,
    report: Output[Markdown],
) -> str:
    """facesr register --eval EVAL --model psnr=DIR --model NAME=DIR ... --data PREPARED; returns the version behind
    'challenger'."""
    from facesr.kfp import runtime

    return runtime.registry_step(
        ["register", "--eval", evaluation.path, *runtime.model_args([psnr_model, *models]), "--data", data.path],
        alias="challenger",
        profile=profile, overrides=overrides, params_text=params_text, mlflow_uri=mlflow_uri, model_name=model_name,
        run_id=run_id, report_path=report.path)


def promote(
    registered_version: str,
    profile: str,
    overrides: List[str],
    params_text: str,
    mlflow_uri: str,
    model_name: str,
    run_id: str,
    report: Output[Markdown],
) -> str:
    """facesr promote (the policy gate moves 'champion' only when the challenger is better); returns the champion."""
    from facesr.kfp import runtime

    return runtime.registry_step(
        ["promote"] + (["--version", registered_version] if registered_version else []), alias="champion",
        profile=profile, overrides=overrides, params_text=params_text, mlflow_uri=mlflow_uri, model_name=model_name,
        run_id=run_id, report_path=report.path)


STEP_FUNCTIONS: dict[str, Callable[..., object]] = {
    "ingest": ingest,
    "prepare": prepare,
    "pretrain": pretrain,
    "train": train,
    "evaluate": evaluate,
    "register": register,
    "promote": promote,
}


def make_components(image: str) -> dict[str, Callable[..., dsl.PipelineTask]]:
    """The step components, all running in ``image`` (nothing pip-installed at run time)."""
    return {
        name: dsl.component(func, base_image=image, install_kfp_package=False)
        for name, func in STEP_FUNCTIONS.items()
    }
