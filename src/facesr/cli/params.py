"""`facesr params`: print the resolved params (profile and --set applied)."""

from __future__ import annotations

import click
import yaml

from facesr.cli.main import AppContext, cli, pass_app


@cli.command("params")
@click.option("--flat", is_flag=True, help="one dotted key per line")
@click.option("--hash", "show_hash", is_flag=True, help="print only the params hash")
@pass_app
def params_cmd(app: AppContext, flat: bool, show_hash: bool) -> None:
    """Show the validated params of the active profile, after --set overrides."""
    p = app.params
    if show_hash:
        click.echo(p.hash())
    elif flat:
        for k, v in p.flat().items():
            click.echo(f"{k}={v}")
    else:
        click.echo(yaml.safe_dump(p.model_dump(mode="json"), sort_keys=False).rstrip())
