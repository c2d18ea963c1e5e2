"""`facesr evaluate`: score the bicubic baseline and the given models on the fixed test pairs."""

from __future__ import annotations

from pathlib import Path

import click

from facesr.cli.common import models_from_option, named_models
from facesr.cli.main import cli, pass_app


@cli.command("evaluate")
@click.option("--data", "data", required=True, type=click.Path(path_type=Path),
              help="prepared folder (output of `facesr prepare`)")
@click.option("--model", "model_items", multiple=True, metavar="NAME=DIR",
              help="model to score: NAME=DIR, DIR a train output folder, its model/ folder or a .safetensors (repeatable)")
@models_from_option
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="eval folder to write: absent, empty or an earlier eval folder (never an input)")
@pass_app
def evaluate_cmd(app, data: Path, model_items: tuple[str, ...], models_from: Path | None, out: Path) -> None:
    """PSNR/SSIM (Y and RGB), LPIPS, PieAPP, NIQE, DMOS (BRISQUE) with bootstrap intervals; table.md and grids.

    The bicubic baseline (PIL BICUBIC upscaling) is always included. Prints table.md and the grid paths.
    """
    from facesr.evaluate import evaluate

    models = named_models(app.params, model_items, models_from, model_folder=True)
    evaluate(app.params, data, models, out)
    click.echo((out / "table.md").read_text(encoding="utf-8"))
    click.echo("Comparison grids:")
    for p in sorted((out / "grids").glob("*.png")):
        click.echo(f"  {p}")
    click.echo(f"Metrics: {out / 'metrics.json'}  per image: {out / 'per_image.csv'}")
