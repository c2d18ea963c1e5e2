"""`facesr weights list|fetch|import|verify`: parse arguments and call facesr.weights."""

from __future__ import annotations

import json
from pathlib import Path

import click

from facesr.cli.main import cli, pass_app
from facesr.errors import UserError


@cli.group()
def weights() -> None:
    """Pretrained files the losses and metrics need (cache: $FACESR_WEIGHTS_DIR or ~/.cache/facesr/weights)."""


def _print_rows(rows: list[dict], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        size = f"{r['bytes']} B" if r.get("bytes") else r.get("size_hint", "")
        click.echo(f"{r['name']:<16} {r['state']:<10} {r['file']:<26} {size}")
        click.echo(f"{'':16} sha256 expected {r['expected']}" + (f", found {r['sha256']}" if r.get("sha256") else ""))
        click.echo(f"{'':16} used by {', '.join(r['used_by'])}; {'bundled at ' if r['bundled'] else ''}{r['path']}")
        if r.get("url") and not r["bundled"]:
            click.echo(f"{'':16} source {r['url']}")


@weights.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_app
def list_cmd(app, as_json: bool) -> None:
    """Every weight file: name, state (ok/missing/corrupt), file, expected sha256, users, source URL."""
    from facesr import weights as w

    rows = []
    for e in w.entries():
        r = w.status(e.name)
        r["size_hint"] = e.size_hint
        rows.append(r)
    if not as_json:
        click.echo(f"cache: {w.cache_dir()}")
    _print_rows(rows, as_json)


@weights.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--timeout", default=60.0, show_default=True, type=float, help="network timeout per request (s)")
@click.option("--force", is_flag=True, help="download again even when a verified file is present")
@pass_app
def fetch_cmd(app, names: tuple[str, ...], timeout: float, force: bool) -> None:
    """Download NAMES (default: all) into the cache, checksum-verified. Offline: exit 2 with the import recipe."""
    from facesr import weights as w

    for r in w.fetch(list(names), timeout=timeout, force=force):
        click.echo(f"{r['name']}: {r['action']} {r['path']}")


@weights.command("import")
@click.argument("folder", type=click.Path(path_type=Path))
@pass_app
def import_cmd(app, folder: Path) -> None:
    """Copy the known files found in FOLDER (by file name, checksum-verified) into the cache."""
    from facesr import weights as w

    for r in w.import_dir(folder):
        click.echo(f"{r['name']}: {r['action']} {r['path']}")


@weights.command("verify")
@click.argument("names", nargs=-1)
@click.option("--require", is_flag=True, help="also fail (exit 2) when a file is missing")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_app
def verify_cmd(app, names: tuple[str, ...], require: bool, as_json: bool) -> None:
    """Re-hash the cached files. Exit 2 if one is corrupt (or, with --require, missing)."""
    from facesr import weights as w

    rows = w.verify(list(names))
    for r in rows:
        r["size_hint"] = w.get(r["name"]).size_hint
    _print_rows(rows, as_json)
    corrupt = [r["name"] for r in rows if r["state"] == "corrupt"]
    missing = [r["name"] for r in rows if r["state"] == "missing"]
    if corrupt:
        raise UserError(f"weights verify: corrupt file(s): {', '.join(corrupt)}; delete them and fetch/import again")
    if require and missing:
        raise UserError(f"weights verify: missing file(s): {', '.join(missing)}; run `facesr weights fetch "
                        f"{' '.join(missing)}` or `facesr weights import DIR`")
