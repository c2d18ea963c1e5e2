"""Run the ``facesr-training`` pipeline on this machine with ``kfp.local.SubprocessRunner(use_venv=False)``.

The same DAG and the same component code as on a cluster; each task runs in a subprocess of this venv (the runner
ignores GPU requests, node selectors, tolerations, retries and the PVC mount). Tasks run one after another.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from facesr.config import Params
from facesr.errors import FacesrError, UserError
from facesr.kfp.pipeline import build_pipeline, pipeline_arguments

log = logging.getLogger(__name__)


@dataclass
class LocalRunResult:
    pipeline_root: Path
    evaluation: Path | None
    registered_version: str
    champion_version: str
    metrics: dict[str, float] = field(default_factory=dict)


def params_text_of(path: str | os.PathLike[str] | None) -> str:
    """The text of the params file the CLI loaded (``--params``, ``$FACESR_PARAMS`` or ./params.yaml)."""
    p = Path(path or os.environ.get("FACESR_PARAMS") or "params.yaml")
    try:
        return p.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{p}: cannot read the params file ({exc.strerror})") from None


def run_local(
    params: Params,
    *,
    pipeline_root: str | os.PathLike[str],
    params_text: str = "",
    overrides: list[str] | tuple[str, ...] = (),
    source: str | None = None,
    data_version: str = "",
    variants: list[str] | tuple[str, ...] | None = None,
    mlflow_uri: str = "",
    model_name: str | None = None,
) -> LocalRunResult:
    """Run every task of the pipeline here; returns where the outputs are. Raises FacesrError when a task fails."""
    from kfp import local

    root = Path(pipeline_root).resolve()
    # the PVC is not mounted locally: checkpoint under the pipeline root (the local runner does not retry either)
    args = pipeline_arguments(params, overrides=overrides, params_text=params_text, source=source,
                              data_version=data_version, variants=variants, mlflow_uri=mlflow_uri,
                              model_name=model_name, checkpoint_root=str(root / "checkpoints"))
    root.mkdir(parents=True, exist_ok=True)
    pipeline = build_pipeline(params)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    try:
        with warnings.catch_warnings():
            # the runner warns that the image is not a python image and that it ignores GPU/CPU settings
            warnings.simplefilter("ignore")
            task = pipeline(**args)
    except RuntimeError as exc:
        raise FacesrError(f"local pipeline run failed: {exc} (task logs above; outputs under {root})") from None
    outs = task.outputs
    evaluation = outs.get("evaluation")
    metrics = outs.get("metrics")
    return LocalRunResult(
        pipeline_root=root,
        evaluation=Path(evaluation.path) if evaluation is not None else None,
        registered_version=str(outs.get("registered_version") or ""),
        champion_version=str(outs.get("champion_version") or ""),
        metrics=dict(getattr(metrics, "metadata", {}) or {}),
    )
