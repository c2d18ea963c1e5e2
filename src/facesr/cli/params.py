"""`facesr params`: print the resolved params (profile and --set applied); `facesr params resolve --out FILE` writes
them for the DVC stages, which track their keys in that file (docs/dvc.md, "Params: what re-runs when")."""

from __future__ import annotations

from pathlib import Path

import click

from facesr.cli.main import AppContext, cli, pass_app
from facesr.config import load_raw, resolved_yaml, write_resolved
from facesr.errors import ParamsError


@cli.group("params", invoke_without_command=True)
@click.option("--flat", is_flag=True, help="one dotted key per line")
@click.option("--hash", "show_hash", is_flag=True, help="print only the params hash")
@click.pass_context
def params_cmd(ctx: click.Context, flat: bool, show_hash: bool) -> None:
    """Show the validated params of the active profile, after --set overrides."""
    if ctx.invoked_subcommand is not None:
        return
    p = ctx.find_object(AppContext).params
    if show_hash:
        click.echo(p.hash())
    elif flat:
        for k, v in p.flat().items():
            click.echo(f"{k}={v}")
    else:
        click.echo(resolved_yaml(p).rstrip())


def check_stage_variants(app: AppContext) -> None:
    """DVC makes one train stage per key of the params file's top-level ``loss.variants`` (``foreach``, before any
    profile applies): the resolved variants must be those keys, or a variant would be trained by no stage."""
    raw = load_raw(app.params_path).get("loss") or {}
    top = list((raw.get("variants") if isinstance(raw, dict) else None) or {})
    if top != app.params.variants:
        raise ParamsError(f"loss.variants: the active profile or --set makes the variants {app.params.variants}, "
                          f"but the pipeline's train stages come from the top-level keys {top}: define variants at "
                          "the top level of the params file (a profile may change their weights)")


@params_cmd.command("resolve")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="file to write (atomically): the whole resolved params, as `facesr params` prints them")
@pass_app
def resolve_cmd(app: AppContext, out: Path) -> None:
    """Write the resolved params (profile and --set applied, validated) for the DVC stages to track."""
    check_stage_variants(app)
    write_resolved(app.params, out, app.params_path)
    click.echo(f"params of profile {app.params.profile} (hash {app.params.hash()[:12]}) -> {out}")
