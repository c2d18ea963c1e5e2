"""`facesr register | promote | lineage`: parse arguments and call facesr.registry."""

from __future__ import annotations

from pathlib import Path

import click

from facesr.cli.common import echo_kv, models_from_option, named_models
from facesr.cli.main import cli, pass_app


REFUSED_EXIT = 3  # `facesr promote --exit-code`: the challenger was refused

@cli.command()
@click.option("--eval", "eval_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="the evaluate output folder (metrics.json, per_image.csv, ...)")
@click.option("--model", "models", multiple=True, metavar="NAME=DIR",
              help="a training output folder per variant (repeatable), named as in evaluate")
@models_from_option
@click.option("--data", "data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="prepared data folder (its hash is recorded when dvc.lock does not have it)")
@pass_app
def register(app, eval_dir, models, models_from, data) -> None:
    """Log the pipeline run to MLflow and register the better variant with alias 'challenger'."""
    from facesr import registry

    named = named_models(app.params, models, models_from, required=True)
    res = registry.register(app.params, eval_dir, named, data=data)
    verb = "already registered (same weights, evaluation, data and params)" if res.reused else "registered"
    echo_kv(f"{verb} {res.name} v{res.version} ({res.variant}) as '{registry.CHALLENGER}'", {
        "model uri": f"models:/{res.name}/{res.version}",
        "pipeline run": res.tags.get(registry.TAG + "pipeline_run_id"),
        "parent run": res.parent_run_id,
        **{f"run {k}": v for k, v in res.run_ids.items()},
        "weights": res.tags.get(registry.TAG + "weights"),
    })


@cli.command()
@click.option("--version", "version", type=int, default=None, help="model version (default: the 'challenger')")
@click.option("--force", is_flag=True, help="promote without the policy (needs --reason; recorded)")
@click.option("--reason", default=None, help="why a forced promotion is made")
@click.option("--exit-code", "exit_code", is_flag=True,
              help=f"exit {REFUSED_EXIT} when the challenger is refused (for scripts that gate on the decision)")
@pass_app
def promote(app, version, force, reason, exit_code) -> None:
    """Move alias 'champion' to the challenger when the promotion policy passes (params registry.promotion).

    Exit 0 when promoted, already champion, or refused (worse, not significant, a guard failed, or not comparable:
    other test data; with --exit-code a refusal exits 3); the reason is printed and recorded as tags on the version.
    Exit 2 when there is no challenger, the version is unknown, --force lacks --reason, or the model used untrained
    weights and the profile forbids it.
    """
    from facesr import registry

    d = registry.promote(app.params, version=version, force=force, reason=reason)
    click.echo(("PROMOTED: " if d.promote else "REFUSED: ") + d.reason)
    for k, v in d.numbers.items():
        click.echo(f"  {k}: {v}")
    if exit_code and not d.promote:
        raise click.exceptions.Exit(REFUSED_EXIT)


@cli.command()
@click.argument("uri")
@pass_app
def lineage(app, uri) -> None:
    """Print registry version -> run -> git commit -> data hash -> params -> pipeline run for URI (models:/NAME@ALIAS)."""
    from facesr import registry

    echo_kv(f"lineage of {uri}", dict(registry.lineage(app.params, uri)))
