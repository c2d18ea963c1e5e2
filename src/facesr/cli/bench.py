"""`facesr bench`: training and inference speed of each variant against the reference configuration."""

from __future__ import annotations

from pathlib import Path

import click

from facesr.cli.main import cli, pass_app


@cli.command()
@click.option("--variant", "variants", multiple=True, metavar="NAME",
              help="variant(s) to measure, keys of loss.variants (repeatable; default: all)")
@click.option("--steps", default=3, show_default=True, type=int, help="timed training steps per configuration")
@click.option("--warmup", default=1, show_default=True, type=int,
              help="untimed steps first (the first also counts the FLOPs)")
@click.option("--repeat", default=3, show_default=True, type=int,
              help="timed rounds per configuration, alternating reference and optimised; the median round is reported")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="prepared folder whose patches the training data stream reads (default: synthetic uint8 patches "
                   "in memory, through the same stream)")
@click.option("--infer-size", default=64, show_default=True, type=int, help="LR side (px) of the inference input")
@click.option("--upscale-size", default=512, show_default=True, type=int,
              help="LR width (px; height 3/4 of it) of the synthetic image `facesr upscale` runs on (0 = skip)")
@click.option("--upscale-tile", default=128, show_default=True, type=int, help="the upscale tiles (upscale --tile)")
@click.option("--no-reference", is_flag=True, help="skip the eager fp32 channels-first reference")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="also write the results as JSON")
@pass_app
def bench(app, variants: tuple[str, ...], steps: int, warmup: int, repeat: int, data: Path | None, infer_size: int,
          upscale_size: int, upscale_tile: int, no_reference: bool, json_out: Path | None) -> None:
    """Measure training images/s (data / forward / backward+optimiser), inference megapixels/s, peak memory and
    TFLOP/s for the active profile and train.device; print the ratio to the reference configuration; and `facesr
    upscale` MP/s end to end against the generator's forward on the same tiles (upscale_ratio)."""
    from facesr.bench import bench as run_bench
    from facesr.bench import format_table
    from facesr.fsutil import atomic_write_json

    result = run_bench(app.params, list(variants) or None, steps=steps, warmup=warmup, repeat=repeat, data=data,
                       reference=not no_reference, infer_size=infer_size, upscale_size=upscale_size,
                       upscale_tile=upscale_tile)
    click.echo(format_table(result))
    if json_out is not None:
        atomic_write_json(json_out, result)
