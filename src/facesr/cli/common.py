"""Small helpers shared by the verb modules."""

from __future__ import annotations

from pathlib import Path

import click

from facesr.errors import UserError


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


def echo_kv(title: str, rows: dict[str, object]) -> None:
    click.echo(title)
    width = max((len(k) for k in rows), default=0)
    for k, v in rows.items():
        click.echo(f"  {k:<{width}}  {v}")
