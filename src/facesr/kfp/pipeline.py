"""The ``facesr-training`` pipeline: ingest -> prepare -> pretrain (the shared PSNR model, once) -> train (each variant,
in parallel, from the PSNR model) -> evaluate (bicubic, psnr, the variants) -> register -> promote, with GPU placement
(every GPU a task asks for: torchrun when ``pipeline.gpu.count`` > 1), retries that resume from checkpoints, and
caching for the data steps and the pretrain step.

Everything cluster-specific comes from ``params.pipeline`` (the image, the GPU pool's resource name, count, node
selector and taint, CPU/memory, retries, the checkpoint PVC); the infra Terraform reads the same keys, so the pool the
pipeline asks for is the pool that exists.
"""

# no `from __future__ import annotations`: KFP reads the pipeline function's annotations as types

import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, List, NamedTuple  # noqa: UP035 - KFP reads these annotations

from kfp import compiler, dsl
from kfp import kubernetes as k8s

from facesr.config import Params
from facesr.errors import UserError
from facesr.fsutil import atomic_write_text
from facesr.kfp.components import make_components
from facesr.kfp.runtime import CHECKPOINT_MOUNT

#: taint effect of the GPU pool (nvidia.com/gpu=present:NoSchedule)
GPU_TAINT_EFFECT = "NoSchedule"
#: CPU/memory of the non-GPU tasks
CPU_TASK = {"cpu": "2", "memory": "8G"}
#: back-off between retries of a training task (a preempted node needs a replacement)
RETRY_BACKOFF = "120s"

TRAIN_TASK_NAME = "train"
PRETRAIN_TASK_NAME = "pretrain"
#: Secret (KFP run namespace) with the S3 keys ingest needs for s3:// sources (infra/k8s/secrets.example)
DATA_S3_SECRET = "facesr-data-s3"
DATA_S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")


class PipelineOutputs(NamedTuple):
    evaluation: dsl.Artifact
    metrics: dsl.Metrics
    registered_version: str
    champion_version: str


def _place_on_gpu_pool(task: dsl.PipelineTask, params: Params) -> dsl.PipelineTask:
    """GPU request, CPU/memory, node selector and toleration for the GPU pool, retries (params.pipeline)."""
    gpu = params.pipeline.gpu
    task.set_accelerator_type(gpu.accelerator)
    task.set_accelerator_limit(gpu.count)
    task.set_cpu_request(gpu.cpu).set_cpu_limit(gpu.cpu)
    task.set_memory_request(gpu.memory).set_memory_limit(gpu.memory)
    for key, value in sorted(gpu.node_selector.items()):
        k8s.add_node_selector(task, label_key=key, label_value=value)
    k8s.add_toleration(task, key=gpu.toleration_key, operator="Equal", value=gpu.toleration_value,
                       effect=GPU_TAINT_EFFECT)
    if params.pipeline.retries:
        task.set_retry(num_retries=params.pipeline.retries, backoff_duration=RETRY_BACKOFF, backoff_factor=2.0)
    return task


def _cpu_task(task: dsl.PipelineTask) -> dsl.PipelineTask:
    task.set_cpu_request(CPU_TASK["cpu"]).set_memory_request(CPU_TASK["memory"])
    return task


def build_pipeline(params: Params) -> Callable[..., Any]:
    """The pipeline function (a ``@dsl.pipeline``), with defaults and placement taken from ``params``."""
    ops = make_components(params.pipeline.image)
    pvc = params.pipeline.checkpoint_pvc
    nproc = params.pipeline.gpu.count  # processes per training pod: one per GPU it asks for (torchrun when > 1)
    default_variants = params.variants  # the keys of loss.variants; the run parameter `variants` may pick some

    @dsl.pipeline(
        name=params.pipeline.name,
        description="facesr x4 face super-resolution: ingest, prepare, pretrain the shared PSNR model, train each "
                    f"GAN variant ({', '.join(default_variants)}) from it in parallel on the GPU pool, evaluate, "
                    "register in MLflow (alias challenger), promote (alias champion).",
    )
    def facesr_training(
        source: str = params.data.source,
        data_version: str = "",
        profile: str = params.profile,
        variants: List[str] = default_variants,  # noqa: B006 - a KFP default, never mutated
        mlflow_uri: str = params.pipeline.mlflow_uri,
        model_name: str = params.registry.model_name,
        overrides: List[str] = [],  # noqa: B006
        params_text: str = "",
        checkpoint_root: str = CHECKPOINT_MOUNT if pvc else "",
    ) -> PipelineOutputs:
        common = {"profile": profile, "overrides": overrides, "params_text": params_text}

        ingest = ops["ingest"](source=source, data_version=data_version, **common)
        ingest.set_display_name("ingest").set_caching_options(True)
        _cpu_task(ingest)
        # S3 keys for s3:// sources; optional, so sample/dir/kaggle sources run without the Secret
        k8s.use_secret_as_env(ingest, secret_name=DATA_S3_SECRET, secret_key_to_env={k: k for k in DATA_S3_KEYS},
                              optional=True)

        prepare = ops["prepare"](raw=ingest.outputs["raw"], **common)
        prepare.set_display_name("prepare").set_caching_options(True)
        _cpu_task(prepare)

        # the shared PSNR model, once per run; cached (its inputs hold no run id: a rerun on the same data and params
        # reuses it); the same GPU pool, retries and checkpoint volume as the variants
        pretrain = ops["pretrain"](data=prepare.outputs["prepared"], checkpoint_root=checkpoint_root,
                                   nproc_per_node=nproc, **common)
        pretrain.set_display_name(PRETRAIN_TASK_NAME).set_caching_options(True)
        _place_on_gpu_pool(pretrain, params)
        if pvc:
            k8s.mount_pvc(pretrain, pvc_name=pvc, mount_path=CHECKPOINT_MOUNT)
        psnr_model = pretrain.outputs["model"]

        with dsl.ParallelFor(variants, name="variants") as variant:
            train = ops["train"](data=prepare.outputs["prepared"], psnr_model=psnr_model, variant=variant,
                                 checkpoint_root=checkpoint_root, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                                 nproc_per_node=nproc, **common)
            train.set_display_name(TRAIN_TASK_NAME).set_caching_options(False)
            _place_on_gpu_pool(train, params)
            if pvc:
                k8s.mount_pvc(train, pvc_name=pvc, mount_path=CHECKPOINT_MOUNT)

        # one Collected per consumer (sharing one Collected object between two tasks breaks the compiler)
        evaluate = ops["evaluate"](data=prepare.outputs["prepared"], psnr_model=psnr_model,
                                   models=dsl.Collected(train.outputs["model"]), **common)
        evaluate.set_display_name("evaluate").set_caching_options(False)
        _cpu_task(evaluate)

        register = ops["register"](data=prepare.outputs["prepared"], evaluation=evaluate.outputs["evaluation"],
                                   psnr_model=psnr_model, models=dsl.Collected(train.outputs["model"]),
                                   mlflow_uri=mlflow_uri,
                                   model_name=model_name, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, **common)
        register.set_display_name("register").set_caching_options(False)
        _cpu_task(register)

        promote = ops["promote"](registered_version=register.outputs["Output"], mlflow_uri=mlflow_uri,
                                 model_name=model_name, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, **common)
        promote.set_display_name("promote").set_caching_options(False)
        _cpu_task(promote)

        return PipelineOutputs(
            evaluation=evaluate.outputs["evaluation"],
            metrics=evaluate.outputs["metrics"],
            registered_version=register.outputs["Output"],
            champion_version=promote.outputs["Output"],
        )

    return facesr_training


def compile_pipeline(params: Params, out: str | Path) -> Path:
    """Compile the pipeline to a KFP v2 IR YAML at ``out`` (written atomically); returns the path."""
    out = Path(out)
    if out.suffix not in (".yaml", ".yml"):
        raise UserError(f"--out {out}: the compiled pipeline must be a .yaml or .yml file")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".compile-") as tmp:
        staged = Path(tmp) / out.name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compiler.Compiler().compile(build_pipeline(params), package_path=str(staged))
        atomic_write_text(out, staged.read_text(encoding="utf-8"))
    return out


def pipeline_arguments(
    params: Params,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    params_text: str = "",
    source: str | None = None,
    data_version: str = "",
    variants: list[str] | tuple[str, ...] | None = None,
    mlflow_uri: str | None = None,
    model_name: str | None = None,
    checkpoint_root: str | None = None,
) -> dict[str, Any]:
    """The run arguments of the pipeline (its parameters), from the CLI's params and options.

    ``profile`` is the active profile, ``overrides`` the CLI's ``--set`` items (without ``profile=``, which the
    profile argument carries), ``params_text`` the params file to use instead of the image's (empty = the image's).
    """
    for v in variants or ():
        params.check_variant(v)
    args: dict[str, Any] = {
        "source": source or params.data.source,
        "data_version": data_version,
        "profile": params.profile,
        "overrides": [o for o in overrides if not o.replace(" ", "").startswith("profile=")],
        "params_text": params_text,
        "model_name": model_name or params.registry.model_name,
    }
    if mlflow_uri is not None:  # None: the pipeline's default (params pipeline.mlflow_uri)
        args["mlflow_uri"] = mlflow_uri
    if variants:
        args["variants"] = list(dict.fromkeys(variants))
    if checkpoint_root is not None:
        args["checkpoint_root"] = checkpoint_root
    return args
