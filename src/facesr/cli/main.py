"""CLI entry point: global options, params loading and the exit-status contract."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import click

from facesr.config import Params, load_params
from facesr.errors import FacesrError, Interrupted, UserError

# verb modules, each registering its commands on `cli` when imported
VERB_MODULES = (
    "facesr.cli.params",
    "facesr.cli.data",
    "facesr.cli.train",
    "facesr.cli.evaluate",
    "facesr.cli.quality",
    "facesr.cli.infer",
    "facesr.cli.registry",
    "facesr.cli.weights",
    "facesr.cli.pipeline",
    "facesr.cli.bench",
)


@dataclass
class AppContext:
    params_path: Path | None
    profile: str | None
    overrides: tuple[str, ...]
    debug: bool
    _params: Params | None = field(default=None, repr=False)

    @property
    def params(self) -> Params:
        """The validated params (loaded once, before the verb does any work)."""
        if self._params is None:
            self._params = load_params(self.params_path, self.profile, self.overrides)
        return self._params


pass_app = click.make_pass_decorator(AppContext)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--params", "params_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="params file (default: ./params.yaml, or $FACESR_PARAMS)")
@click.option("--profile", default=None, help="profile to apply: paper, demo, ci (default: params key 'profile')")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override a param by dotted key, YAML-typed value (repeatable)")
@click.option("--debug", is_flag=True, help="show tracebacks and debug logs")
@click.version_option(package_name="facesr")
@click.pass_context
def cli(ctx: click.Context, params_path: Path | None, profile: str | None, overrides: tuple[str, ...],
        debug: bool) -> None:
    """facesr: train, evaluate, register and serve x4 face super-resolution models."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = AppContext(params_path, profile, overrides, debug)
    ctx.obj = app
    # validate params before any verb works (help and --version never get here)
    if ctx.invoked_subcommand is not None and not ctx.resilient_parsing:
        _ = app.params


BROKEN_VERBS: dict[str, str] = {}


def _load_verbs() -> None:
    """Import every verb module. One that fails to import is reported, and the other verbs still work."""
    for mod in VERB_MODULES:
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            BROKEN_VERBS[mod] = f"{type(exc).__name__}: {exc}"
            print(f"facesr: warning: commands of {mod} are unavailable ({exc})", file=sys.stderr)


_load_verbs()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and map exceptions to the exit-status contract."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        rv = cli.main(args=args, prog_name="facesr", standalone_mode=False)
        if isinstance(rv, int) and not isinstance(rv, bool):  # click returns a command's Exit(code) here
            return rv
    except click.exceptions.Exit as exc:
        return int(exc.exit_code or 0)
    except click.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as exc:  # usage errors: exit 2
        exc.show()
        return 2 if exc.exit_code in (None, 2) else exc.exit_code
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        if debug:
            traceback.print_exc()
        return 2
    except Interrupted as exc:  # what was kept and how to continue; no traceback hint: nothing went wrong
        click.echo(f"interrupted: {exc}", err=True)
        if debug:
            traceback.print_exc()
        return exc.exit_code
    except FacesrError as exc:
        click.echo(f"error: {exc}", err=True)
        if debug:
            traceback.print_exc()
        else:
            click.echo("(run with --debug for the traceback)", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: message first, traceback on --debug
        click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        if debug:
            traceback.print_exc()
        else:
            click.echo("(run with --debug for the traceback)", err=True)
        return 1
    return 0


def entrypoint() -> None:
    sys.exit(main())
