"""CLI verbs of the data area: ingest and prepare (they only parse arguments and call facesr.data)."""

from __future__ import annotations

from pathlib import Path

import click

from facesr.cli.common import echo_kv
from facesr.cli.main import cli, pass_app


@cli.command()
@click.option("--source", default=None, metavar="SRC",
              help="sample | dir:PATH (folder or .zip/.tar archive) | s3://bucket/prefix | kaggle:OWNER/DATASET "
                   "(default: params data.source)")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="raw folder to write: absent, empty or an earlier raw folder (never the source)")
@pass_app
def ingest(app, source: str | None, out: Path) -> None:
    """Copy images from a source into a raw folder with a manifest (sha256, size, mode per file)."""
    from facesr.data.ingest import ingest as run

    m = run(app.params, source, out)
    echo_kv(f"ingested {m['count']} files", {"source": m["source"], "skipped": len(m.get("skipped", [])),
                                             "out": str(out)})
    for k in m.get("skipped", []):
        click.echo(f"  skipped {k['path']}: {k['reason']}")


@cli.command()
@click.option("--raw", required=True, type=click.Path(file_okay=False, path_type=Path), help="raw folder (from ingest)")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="prepared folder to write: absent, empty or an earlier prepared folder (never --raw)")
@pass_app
def prepare(app, raw: Path, out: Path) -> None:
    """Validate, deduplicate and split raw images; write training shards and fixed test pairs."""
    from facesr.data.prepare import prepare as run

    m = run(app.params, raw, out)
    echo_kv(f"prepared {m['accepted']} images", {
        "train": m["split"]["train"], "test": m["split"]["test"], "rejected": len(m["rejected"]),
        "skipped (data.max_images)": m["skipped_by_max_images"], "out": str(out)})
    for r in m["rejected"]:
        click.echo(f"  rejected {r['file']}: {r['reason']}")
