"""`facesr train`: train one variant on a prepared folder (the core is facesr.train.train)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from facesr.cli.main import cli, pass_app
from facesr.config import VARIANTS


@cli.command()
@click.option("--data", "data", required=True, type=click.Path(path_type=Path),
              help="prepared folder (output of `facesr prepare`)")
@click.option("--variant", required=True, metavar="NAME", help=f"loss variant: {' | '.join(VARIANTS)}")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="model folder to write (model/, checkpoints/, metrics.jsonl, plots/, train_summary.json)")
@click.option("--resume", is_flag=True, help="continue from OUT/checkpoints/last.pt (a finished run: nothing to do)")
@click.option("--restart-if-changed", is_flag=True,
              help="with --resume: start over when the checkpoint was made with other params or data (pipelines)")
@click.option("--no-progress", is_flag=True, help="no progress bar")
@pass_app
def train(app, data: Path, variant: str, out: Path, resume: bool, restart_if_changed: bool,
          no_progress: bool) -> None:
    """Train the generator: L1 pre-training, then GAN training with the variant's loss.

    Under `torchrun --nproc_per_node=N --no-python facesr train ...` it trains with DDP (rank 0 writes).
    """
    from facesr.train import train as run_train

    if restart_if_changed and not resume:
        raise click.UsageError("--restart-if-changed only applies with --resume")
    summary = run_train(app.params, data, variant, out, resume, progress=not no_progress,
                        restart_if_changed=restart_if_changed)
    if os.environ.get("RANK", "0") == "0":
        click.echo(json.dumps({k: summary.get(k) for k in ("variant", "steps", "device", "untrained_weights",
                                                            "imgs_per_s_this_session")}))
        click.echo(f"model: {out / 'model'}")
