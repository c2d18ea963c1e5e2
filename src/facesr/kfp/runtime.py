"""What runs inside a KFP task: build the ``facesr`` command line, run it, move step folders into artifacts.

The component functions in ``facesr.kfp.components`` are serialised into the pipeline spec and executed in the facesr
image (or, for ``facesr pipeline run --local``, in this venv). They stay a few lines long and call these helpers, which
only ever run CLI verbs (``facesr ingest|prepare|pretrain|train|evaluate|register|promote``): the pipeline never re-implements a
step.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from facesr.config import PSNR_MODEL
from facesr.errors import FacesrError, InputError

#: where the training task mounts the checkpoint PVC (see docs/kubeflow.md, "Retries and resume")
CHECKPOINT_MOUNT = "/mnt/facesr-checkpoints"
#: env var the components set for the registry step (lineage tag "pipeline run id")
RUN_ID_ENV = "FACESR_PIPELINE_RUN_ID"
PIPELINE_NAME_ENV = "FACESR_PIPELINE_NAME"

# run the CLI with the same interpreter as the task (the image's python, or this venv under kfp.local)
_CLI = [sys.executable, "-c", "from facesr.cli.main import entrypoint; entrypoint()"]
#: a JSON list that replaces the command prefix above (tests use it to put a stand-in CLI behind the components)
CLI_ENV = "FACESR_KFP_CLI"
#: the name of the shared PSNR model (facesr pretrain): its checkpoint folder and model name
PSNR_NAME = PSNR_MODEL


def cli_command() -> list[str]:
    raw = os.environ.get(CLI_ENV)
    if not raw:
        return list(_CLI)
    try:
        cmd = json.loads(raw)
    except ValueError:
        cmd = None
    if not isinstance(cmd, list) or not cmd or not all(isinstance(c, str) for c in cmd):
        raise InputError(f"${CLI_ENV}: expected a JSON list of strings (a command prefix), got {raw!r}")
    return cmd


def launcher(nproc_per_node: int = 1) -> list[str]:
    """What goes before the CLI command: nothing for one process; for ``nproc_per_node`` > 1 (``pipeline.gpu.count``
    GPUs in the pod) ``torchrun --standalone --nproc_per_node=N --no-python``, run as ``python -m
    torch.distributed.run`` with the task's interpreter (the same program as the ``torchrun`` script, found without
    PATH). Every rank runs the same ``facesr`` verb; ``facesr.train`` joins the process group and rank 0 writes."""
    if nproc_per_node < 1:
        raise InputError(f"nproc_per_node {nproc_per_node}: must be >= 1 (params pipeline.gpu.count)")
    if nproc_per_node == 1:
        return []
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
            "--no-python"]


def command(argv: Sequence[str], nproc_per_node: int = 1) -> list[str]:
    """The whole command line of a task's ``facesr`` run (the one place it is built): launcher + CLI + arguments."""
    return launcher(nproc_per_node) + cli_command() + list(argv)


class StepFailed(FacesrError):
    """A ``facesr`` verb run by a pipeline task exited non-zero."""

    def __init__(self, argv: Sequence[str], code: int, tail: str) -> None:
        self.code = code
        super().__init__(f"`facesr {' '.join(argv)}` exited with status {code}\n{tail}")


def global_args(profile: str = "", overrides: Iterable[str] = (), params_file: str | None = None) -> list[str]:
    """The CLI's global options: ``[--params FILE] [--profile NAME] [--set KEY=VALUE ...]``."""
    out: list[str] = []
    if params_file:
        out += ["--params", str(params_file)]
    if profile:
        out += ["--profile", profile]
    for item in overrides or ():
        if item:
            out += ["--set", str(item)]
    return out


def run_cli(
    verb_args: Sequence[str],
    *,
    profile: str = "",
    overrides: Iterable[str] = (),
    params_text: str = "",
    mlflow_uri: str = "",
    env: Mapping[str, str] | None = None,
    nproc_per_node: int = 1,
) -> str:
    """Run ``facesr [globals] VERB ...`` in a subprocess; stream its output; return it; raise StepFailed on failure.

    ``params_text``: when not empty, the content of a params.yaml to use (written to a temporary file and passed as
    ``--params``); otherwise the CLI uses ``$FACESR_PARAMS`` (set in the image to its baked-in params.yaml) or
    ``./params.yaml``. ``mlflow_uri``: when not empty, exported as ``MLFLOW_TRACKING_URI``. ``nproc_per_node`` > 1:
    under torchrun, one process per GPU (``launcher``).
    """
    child_env = dict(os.environ)
    child_env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    if mlflow_uri:
        child_env["MLFLOW_TRACKING_URI"] = mlflow_uri
    child_env.update(env or {})
    # an empty AWS_ENDPOINT_URL (an optional key of the data Secret left blank) would make boto3 fail: drop it
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        if not child_env.get(var, "x").strip():
            child_env.pop(var)
    with tempfile.TemporaryDirectory(prefix="facesr-kfp-") as tmp:
        params_file = None
        if params_text:
            params_file = Path(tmp) / "params.yaml"
            params_file.write_text(params_text, encoding="utf-8")
        argv = global_args(profile, overrides, str(params_file) if params_file else None) + list(verb_args)
        cmd = command(argv, nproc_per_node)
        prefix = " ".join(launcher(nproc_per_node)[1:]) + " " if nproc_per_node > 1 else ""
        print(f"[facesr-kfp] {prefix}facesr {' '.join(argv)}", flush=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env,
                                bufsize=1)
        lines: list[str] = []
        assert proc.stdout is not None
        with _forward_sigterm(proc):  # a preempted pod: the step checkpoints where it is (facesr train), then stops
            for line in proc.stdout:
                print(line, end="", flush=True)
                lines.append(line)
            code = proc.wait()
    text = "".join(lines)
    if code != 0:
        raise StepFailed(list(verb_args), code, "".join(lines[-30:]))
    return text


@contextlib.contextmanager
def _forward_sigterm(proc: subprocess.Popen) -> Iterator[None]:
    """While ``proc`` runs, a SIGTERM to this process is passed on to it (and this process waits for it to end)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.poll() is None and proc.send_signal(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def copy_folder(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy a step folder into an artifact path (through a temporary sibling and a rename)."""
    from facesr.fsutil import atomic_dir

    src, dst = Path(src), Path(dst)
    with atomic_dir(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(folder) / "manifest.json"
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


# ----------------------------------------------------------------------------------------------------------- train

def checkpoint_workdir(checkpoint_root: str, run_id: str, variant: str) -> Path | None:
    """The folder a training task trains into when a checkpoint volume is mounted: ``ROOT/RUN_ID/VARIANT``.

    It is stable across retries of the same task in the same run, so a retried pod (a preempted node) finds
    ``checkpoints/last.pt`` there and resumes. ``None`` when no checkpoint root is configured.
    """
    if not checkpoint_root:
        return None
    safe_run = "".join(c if c.isalnum() or c in "-_." else "_" for c in (run_id or "run")) or "run"
    return Path(checkpoint_root) / safe_run / variant


def inputs_key(data: str, **cli: Any) -> str:
    """A short hash of what a cached task's output depends on: the prepared folder's manifest and the params
    plumbing (profile, overrides, params text). Stable across retries *and* across runs with the same inputs, so
    the pretrain task can keep caching on (no run id among its inputs) and still resume on a retry."""
    h = hashlib.sha256()
    try:
        h.update((Path(data) / "manifest.json").read_bytes())
    except OSError:
        h.update(str(data).encode())
    h.update(json.dumps({k: cli.get(k) for k in ("profile", "overrides", "params_text")}, sort_keys=True,
                        default=list).encode())
    return h.hexdigest()[:16]


def init_model_dir(path: str | os.PathLike[str]) -> str:
    """The model folder inside a train/pretrain artifact (``ART/model``); a model folder as given."""
    p = Path(path)
    return str(p / "model") if (p / "model" / "model.json").is_file() else str(p)


def _training_task(args: list[str], name: str, out: str, work: Path | None, checkpoint_root: str,
                   nproc_per_node: int, restart_if_changed: bool, **cli: Any) -> dict[str, Any]:
    """Run a training verb (``pretrain`` / ``train``) into the ``out`` artifact, through ``work`` on the checkpoint
    volume when there is one (``--resume`` when a retry finds ``checkpoints/last.pt``), then copy it into ``out``."""
    if work is None:
        run_cli([*args, "--out", out], nproc_per_node=nproc_per_node, **cli)
        return {"resumed": False, "workdir": out}
    try:
        work.parent.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise FacesrError(
            f"checkpoint volume {checkpoint_root}: not writable by uid {os.getuid()} (the image's user); make the "
            "PVC's root writable by uid/gid 1000 once (docs/kubeflow.md, 'Retries and resume')"
        ) from None
    done = (work / "train_summary.json").is_file() and (work / "model").is_dir()
    resumed = (work / "checkpoints" / "last.pt").is_file()
    if done:
        print(f"[facesr-kfp] {work} holds a finished {name} run (an earlier attempt); copying it", flush=True)
    else:
        argv = [*args, "--out", str(work)]
        if resumed:
            print(f"[facesr-kfp] resuming from {work / 'checkpoints' / 'last.pt'}", flush=True)
            argv.append("--resume")
            if restart_if_changed:
                argv.append("--restart-if-changed")
        run_cli(argv, nproc_per_node=nproc_per_node, **cli)
    copy_folder(work, out)
    return {"resumed": resumed, "workdir": str(work)}


def train_step(
    data: str,
    variant: str,
    out: str,
    *,
    init_from: str = "",
    checkpoint_root: str = "",
    run_id: str = "",
    nproc_per_node: int = 1,
    **cli: Any,
) -> dict[str, Any]:
    """Train one variant into the ``out`` artifact folder; resume from the checkpoint volume when a retry finds one.

    ``init_from``: the pretrain task's model artifact (``--init-from ART/model``: the GAN phase starts from that
    generator). Without a checkpoint root the CLI trains straight into ``out``. With one, it trains into
    ``ROOT/RUN_ID/VARIANT`` (``--resume`` when ``checkpoints/last.pt`` is there), then copies that folder into ``out``.
    Returns ``{"resumed": bool, "workdir": str}``.
    """
    args = ["train", "--data", data, "--variant", variant]
    if init_from:
        args += ["--init-from", init_model_dir(init_from)]
    return _training_task(args, variant, out, checkpoint_workdir(checkpoint_root, run_id, variant), checkpoint_root,
                          nproc_per_node, False, **cli)


def pretrain_step(
    data: str,
    out: str,
    *,
    checkpoint_root: str = "",
    nproc_per_node: int = 1,
    **cli: Any,
) -> dict[str, Any]:
    """``facesr pretrain`` (the shared PSNR model) into the ``out`` artifact; once per pipeline run, cached.

    With a checkpoint root it trains into ``ROOT/pretrain-<inputs_key>/psnr``: a retried pod resumes there
    (``--resume --restart-if-changed``), and no run id enters the task's inputs, so KFP's cache can answer a later
    run with the same data and params. Returns ``{"resumed": bool, "workdir": str}``.
    """
    work = (Path(checkpoint_root) / f"pretrain-{inputs_key(data, **cli)}" / PSNR_NAME) if checkpoint_root else None
    return _training_task(["pretrain", "--data", data], PSNR_NAME, out, work, checkpoint_root, nproc_per_node, True,
                          **cli)


def model_name(path: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None, default: str = "") -> str:
    """The variant name of a train folder: artifact metadata ``variant``, else ``model/model.json``'s ``variant``."""
    if metadata and metadata.get("variant"):
        return str(metadata["variant"])
    for candidate in (Path(path) / "model" / "model.json", Path(path) / "train_summary.json"):
        try:
            meta = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("variant"):
            return str(meta["variant"])
    if default:
        return default
    raise InputError(f"{path}: cannot tell which variant this model folder holds (no model/model.json 'variant')")


def model_args(models: Sequence[Any]) -> list[str]:
    """``--model NAME=DIR`` for each KFP Model artifact (``.path`` and ``.metadata``)."""
    out: list[str] = []
    seen: set[str] = set()
    for i, m in enumerate(models):
        name = model_name(m.path, getattr(m, "metadata", None), default=f"model{i}")
        if name in seen:
            raise InputError(f"two model artifacts are both named {name!r}; each variant must be trained once")
        seen.add(name)
        out += ["--model", f"{name}={m.path}"]
    return out


# -------------------------------------------------------------------------------------------------------- evaluate

def log_eval_metrics(eval_dir: str | os.PathLike[str], metrics: Any) -> int:
    """Log every ``mean`` of ``EVAL/metrics.json`` to a KFP Metrics artifact as ``MODEL/METRIC``; returns the count."""
    data = read_json_or_empty(Path(eval_dir) / "metrics.json")
    n = 0
    for model, table in sorted(data.items()):
        if not isinstance(table, dict):
            continue
        for metric, row in sorted(table.items()):
            value = row.get("mean") if isinstance(row, dict) else row
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value)):
                metrics.log_metric(f"{model}/{metric}", float(value))
                n += 1
    return n


def read_json_or_empty(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_table(eval_dir: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> None:
    """The evaluation table (``EVAL/table.md``) as the KFP Markdown artifact."""
    src = Path(eval_dir) / "table.md"
    text = src.read_text(encoding="utf-8") if src.is_file() else "_evaluate wrote no table.md_\n"
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text(text, encoding="utf-8")


def grid_columns(eval_dir: str | os.PathLike[str]) -> list[str]:
    """The columns of evaluate's comparison grids, as evaluate wrote them: LR, each model it scored in its own order
    (``EVAL/manifest.json`` ``inputs.models``: bicubic, psnr, the variants; else the models of ``metrics.json``), HR."""
    models = read_json_or_empty(Path(eval_dir) / "manifest.json").get("inputs", {}).get("models")
    if not isinstance(models, dict) or not models:
        models = read_json_or_empty(Path(eval_dir) / "metrics.json")
    return ["LR", *models, "HR"]


def write_grids_html(eval_dir: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> int:
    """A self-contained HTML page with every comparison grid (``EVAL/grids/*.png``, inlined), its header naming the
    grids' columns (``grid_columns``); returns the count."""
    grids = sorted((Path(eval_dir) / "grids").glob("*.png"))
    header = " | ".join(grid_columns(eval_dir))
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>facesr comparison grids</title></head><body>",
             f"<h1>facesr: {html.escape(header)}</h1>"]
    for g in grids:
        b64 = base64.b64encode(g.read_bytes()).decode("ascii")
        parts.append(f"<h2>{html.escape(g.name)}</h2><img alt='{html.escape(g.name)}' "
                     f"src='data:image/png;base64,{b64}' style='image-rendering:pixelated;max-width:100%'>")
    if not grids:
        parts.append("<p>evaluate wrote no grids</p>")
    parts.append("</body></html>")
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text("\n".join(parts), encoding="utf-8")
    return len(grids)


# -------------------------------------------------------------------------------------------------------- registry

def registry_env(run_id: str, pipeline_name: str = "") -> dict[str, str]:
    env = {RUN_ID_ENV: run_id} if run_id else {}
    if pipeline_name:
        env[PIPELINE_NAME_ENV] = pipeline_name
    return env


def alias_version(model_name: str, alias: str, mlflow_uri: str = "") -> str:
    """The version number behind ``models:/NAME@alias`` ("" when there is none or MLflow cannot be asked)."""
    try:
        import mlflow
        from mlflow import MlflowClient

        if mlflow_uri:
            mlflow.set_tracking_uri(mlflow_uri)
        mv = MlflowClient().get_model_version_by_alias(model_name, alias)
        return str(mv.version)
    except Exception as exc:  # noqa: BLE001 - informational output only
        print(f"[facesr-kfp] could not read {model_name}@{alias}: {exc}", flush=True)
        return ""


def registry_step(args: list[str], *, alias: str, profile: str, overrides: Sequence[str], params_text: str,
                  mlflow_uri: str, model_name: str, run_id: str, report_path: str) -> str:
    """Run a registry verb (register, promote) for a pipeline task: the model name and pipeline run id travel to the
    CLI, its output becomes the task's Markdown report; returns the version now behind ``alias`` ("" if unknown)."""
    sets = list(overrides) + ([f"registry.model_name={model_name}"] if model_name else [])
    text = run_cli(args, profile=profile, overrides=sets, params_text=params_text, mlflow_uri=mlflow_uri,
                   env=registry_env(run_id))
    write_report(report_path, f"facesr {args[0]}", text)
    return alias_version(model_name, alias, mlflow_uri) if model_name else ""


def write_report(out_path: str | os.PathLike[str], title: str, text: str) -> None:
    body = f"# {title}\n\n```\n{text.strip()}\n```\n"
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text(body, encoding="utf-8")
