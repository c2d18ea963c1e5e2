"""Small helpers shared by the verb modules."""

from __future__ import annotations

from pathlib import Path

import click

from facesr.config import Params
from facesr.errors import UserError

#: ``--models-from DIR``: the models of a pipeline run, named by the params (``Params.models``)
models_from_option = click.option(
    "--models-from", "models_from", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
    help="every model of the params: psnr and each key of loss.variants, from DIR/<name> (a training folder per "
         "model, as `facesr pretrain|train --out DIR/<name>` writes); with --model, both are used")


def parse_named_dirs(items: tuple[str, ...], option: str = "--model") -> dict[str, Path]:
    """Parse ``NAME=DIR`` pairs; a bare DIR is named after the folder."""
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name, item
        if not name or not path:
            raise UserError(f"{option} {item!r}: expected NAME=DIR")
        if name in out:
            raise UserError(f"{option}: the name {name!r} is given twice")
        out[name] = Path(path)
    return out


def models_from(params: Params, root: Path, *, model_folder: bool = False) -> dict[str, Path]:
    """``{name: ROOT/name}`` (``ROOT/name/model`` with ``model_folder``) for each of ``params.models``, in that
    order; a model whose ``ROOT/name/model`` folder is missing is a UserError naming it."""
    missing = [m for m in params.models if not (root / m / "model").is_dir()]
    if missing:
        raise UserError(f"--models-from {root}: no model folder for {', '.join(missing)} (expected "
                        f"{root / missing[0] / 'model'}; models of the params: {', '.join(params.models)})")
    return {m: root / m / "model" if model_folder else root / m for m in params.models}


def named_models(params: Params, items: tuple[str, ...], root: Path | None, *, model_folder: bool = False,
                 required: bool = False) -> dict[str, Path]:
    """The models a verb gets: ``--models-from ROOT`` (``models_from``) and then each ``--model NAME=DIR``; a name
    given by both is a UserError. ``required``: at least one model."""
    given = parse_named_dirs(items, "--model")
    out = models_from(params, root, model_folder=model_folder) if root is not None else {}
    twice = sorted(set(out) & set(given))
    if twice:
        raise UserError(f"--model {twice[0]}=...: {twice[0]!r} is already one of --models-from {root}")
    out.update(given)
    if required and not out:
        raise UserError("no model given: pass --models-from DIR or --model NAME=DIR")
    return out


def echo_kv(title: str, rows: dict[str, object]) -> None:
    click.echo(title)
    width = max((len(k) for k in rows), default=0)
    for k, v in rows.items():
        click.echo(f"  {k:<{width}}  {v}")
