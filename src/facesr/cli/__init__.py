"""The one facesr CLI: ``facesr [--params PATH] [--profile NAME] [--set KEY=VALUE ...] VERB ...``.

Each verb lives in a small module of this package and only parses arguments and calls the core in ``facesr``.
Exit status: 0 done; 2 bad usage, bad params or bad input; 1 any other failure.
"""

from facesr.cli.main import cli, main

__all__ = ["cli", "main"]
