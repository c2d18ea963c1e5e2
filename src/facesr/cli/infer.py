"""`facesr upscale`: parse arguments and call facesr.infer."""

from __future__ import annotations

from pathlib import Path

import click

from facesr.cli.main import cli, pass_app
from facesr.errors import InputError


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--model", "model", required=True,
              help="training output folder, model folder, .safetensors file, or MLflow URI (models:/facesr@champion)")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="output folder: absent, empty or an earlier upscale output (never holding an input)")
@click.option("--tile", default=128, show_default=True, type=int, help="LR tile size in pixels (0 = whole image)")
@click.option("--overlap", default=32, show_default=True, type=int, help="LR context pixels around each tile")
@click.option("--batch-size", default=4, show_default=True, type=int, help="tiles per forward pass")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option("--bf16", is_flag=True, help="bfloat16 autocast (CUDA only)")
@click.option("--format", "fmt", default="png", show_default=True, type=click.Choice(["png", "jpg", "webp"]))
@click.option("--quality", default=95, show_default=True, type=click.IntRange(1, 100), help="jpg/webp quality")
@click.option("--no-progress", is_flag=True, help="hide the progress bars")
@pass_app
def upscale(app, inputs, model, out, tile, overlap, batch_size, device, bf16, fmt, quality, no_progress) -> None:
    """Upscale images (files, folders, globs) x4 with a trained generator; any size, tiled, one band of tile rows
    at a time (PNG rows are written as they come).

    Exit status 2 when any input failed, or its output would have more pixels than upscale.max_output_pixels (each
    failure is reported; the other images are still written).
    """
    from facesr.infer import is_mlflow_uri
    from facesr.infer import upscale as run_upscale

    spec = (lambda: load_mlflow_model(app.params, model, device)) if is_mlflow_uri(model) else model
    report = run_upscale(app.params, list(inputs), spec, out, tile=tile, overlap=overlap, batch_size=batch_size,
                         device=device, bf16=bf16, fmt=fmt, quality=quality, progress=not no_progress)
    for o in report.outputs:
        click.echo(f"{o['input']} -> {o['output']} ({o['width']}x{o['height']})")
    click.echo(f"upscaled {len(report.outputs)} image(s) x{report.scale} on {report.device} into {out}")
    if report.failed:
        lines = "\n  ".join(f["error"] for f in report.failed)
        raise InputError(f"{len(report.failed)} input(s) failed:\n  {lines}")


def load_mlflow_model(params, uri: str, device: str):
    """An MLflow model URI (``models:/facesr@champion``, ``runs:/ID/model``) -> ``facesr.infer.LoadedModel``: the
    registry downloads it (an unknown alias or version is a UserError) into a temporary folder, the weights are read
    from its model folder into memory and the folder is removed."""
    import tempfile

    from facesr import registry
    from facesr.infer import load_model

    with tempfile.TemporaryDirectory(prefix="facesr-model-") as td:
        return load_model(registry.fetch_model(uri, params, td), params, device, source=uri)
