"""Error types and the exit-status contract of the CLI.

``UserError`` and its subclasses mean bad usage, bad params or bad input: the CLI prints the message alone and exits 2.
Any other exception is an internal failure: the CLI prints the message and exits 1 (traceback only with ``--debug``).
"""

from __future__ import annotations


class FacesrError(Exception):
    """A failure with a message meant for the user (exit status 1)."""

    exit_code = 1


class UserError(FacesrError):
    """Bad usage, bad params or bad input (exit status 2). The message names the key or file and what is allowed."""

    exit_code = 2


class ParamsError(UserError):
    """params.yaml, a profile or a --set override is invalid."""


class InputError(UserError):
    """An input file or folder is missing, unreadable or malformed."""


class WeightsMissingError(UserError):
    """A pretrained weight file is not in the cache and cannot be fetched (offline, or not imported)."""


class UntrainedWeightsError(UserError):
    """A loss or metric would run on random weights, and the active profile does not allow it."""


class ExternalServiceError(FacesrError):
    """A server (MLflow, S3, Kaggle, KFP) is unreachable or refused the request."""


class DiskFullError(FacesrError):
    """The disk is full (ENOSPC) or a quota is exceeded (EDQUOT) while writing ``path`` (exit status 1)."""

    def __init__(self, message: str, path: object = None) -> None:
        super().__init__(message)
        self.path = path


class Interrupted(FacesrError):
    """The user interrupted a long command (Ctrl-C / SIGINT, or SIGTERM); the message says what was kept and how to
    continue. Exit status 130, as a shell reports for SIGINT."""

    exit_code = 130


class Terminated(Interrupted):
    """Stopped by SIGTERM (a preempted or deleted pod, a cancelled task) after keeping what it had; exit status 143,
    as a shell reports for SIGTERM."""

    exit_code = 143
