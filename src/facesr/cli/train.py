"""`facesr pretrain` (the shared PSNR stage) and `facesr train` (one GAN variant); the core is facesr.train.train."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from facesr.cli.main import cli, pass_app
from facesr.config import PSNR_MODEL

_DATA = click.option("--data", "data", required=True, type=click.Path(path_type=Path),
                     help="prepared folder (output of `facesr prepare`)")
_OUT = click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
                    help="training folder to write (model/, checkpoints/, metrics.jsonl, plots/, train_summary.json)")
_RESUME = click.option("--resume", is_flag=True,
                       help="continue from OUT/checkpoints/last.pt (a finished run: nothing to do)")
_RESTART = click.option("--restart-if-changed", is_flag=True,
                        help="with --resume: start over when the checkpoint was made with other params, data or init "
                             "weights (pipelines)")
_NO_PROGRESS = click.option("--no-progress", is_flag=True, help="no progress bar")


def _run(app, data: Path, variant: str, out: Path, resume: bool, restart_if_changed: bool, no_progress: bool,
         init_from: Path | None = None) -> None:
    from facesr.train import train as run_train

    if restart_if_changed and not resume:
        raise click.UsageError("--restart-if-changed only applies with --resume")
    params = app.params
    if init_from is not None:
        params = params.model_copy(update={"train": params.train.model_copy(update={"init_from": str(init_from)})})
    summary = run_train(params, data, variant, out, resume, progress=not no_progress,
                        restart_if_changed=restart_if_changed)
    if os.environ.get("RANK", "0") == "0":
        click.echo(json.dumps({k: summary.get(k) for k in ("variant", "steps", "device", "untrained_weights",
                                                            "imgs_per_s_this_session")}))
        click.echo(f"model: {out / 'model'}")


@cli.command()
@_DATA
@_OUT
@_RESUME
@_RESTART
@_NO_PROGRESS
@pass_app
def pretrain(app, data: Path, out: Path, resume: bool, restart_if_changed: bool, no_progress: bool) -> None:
    """Train the shared PSNR model: the generator with L1 only (params section `pretrain`).

    Both GAN variants then start from OUT/model (`facesr train --init-from OUT/model`). Evaluate and register it
    as the model named `psnr`. Under `torchrun --nproc_per_node=N --no-python facesr pretrain ...` it trains with DDP.
    """
    _run(app, data, PSNR_MODEL, out, resume, restart_if_changed, no_progress)


@cli.command()
@_DATA
@click.option("--variant", required=True, metavar="NAME", help="loss variant: a key of loss.variants (params.yaml)")
@_OUT
@click.option("--init-from", "init_from", type=click.Path(path_type=Path), default=None,
              help="start from this generator (the `facesr pretrain` model folder; also a .safetensors file or a "
                   "BasicSR/ESRGAN .pth): no L1 phase. Same as --set train.init_from=PATH")
@_RESUME
@_RESTART
@_NO_PROGRESS
@pass_app
def train(app, data: Path, variant: str, out: Path, init_from: Path | None, resume: bool, restart_if_changed: bool,
          no_progress: bool) -> None:
    """Train the generator with a variant's GAN loss, from --init-from (else after train.pretrain_steps L1 steps).

    Under `torchrun --nproc_per_node=N --no-python facesr train ...` it trains with DDP (rank 0 writes).
    """
    _run(app, data, variant, out, resume, restart_if_changed, no_progress, init_from)
