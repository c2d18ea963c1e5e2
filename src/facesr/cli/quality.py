"""`facesr quality`: the quality report (figures against bicubic and the profile's targets); core: facesr.quality."""

from __future__ import annotations

import json
from pathlib import Path

import click

from facesr.cli.common import models_from_option, named_models
from facesr.cli.main import cli, pass_app


@cli.command("quality")
@click.option("--data", "data", required=True, type=click.Path(path_type=Path),
              help="prepared folder (output of `facesr prepare`): its test split is scored")
@click.option("--model", "model_items", multiple=True, metavar="NAME=DIR",
              help="model to score: NAME=DIR (a train output folder, its model/ folder or a .safetensors); the psnr "
                   "stage's model is named psnr (repeatable)")
@models_from_option
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="also write the figures and targets as JSON to this file")
@click.option("--exit-code", is_flag=True, help="exit 3 when a target is not met (default: 0, the report is figures)")
@pass_app
def quality_cmd(app, data: Path, model_items: tuple[str, ...], models_from: Path | None, json_out: Path | None,
                exit_code: bool) -> None:
    """PSNR-Y gain over bicubic, colour (Y-RGB gap), the outer frame against bicubic's, flat outputs; per model, on
    the test crops and on the whole test faces resized to the HR size; then the profile's targets (params quality)."""
    from facesr.fsutil import atomic_write_json
    from facesr.quality import quality_report

    report = quality_report(app.params, data, named_models(app.params, model_items, models_from, model_folder=True))
    click.echo(f"# Quality (profile {app.params.profile})\n")
    click.echo(report.render(), nl=False)
    if json_out is not None:
        atomic_write_json(json_out, report.as_dict())
    if exit_code and not report.all_met:
        raise SystemExit(3)
