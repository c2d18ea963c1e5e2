"""The process-wide torch switches training sets, set and restored in one place.

``torch_switches(cudnn_benchmark=..., tf32=..., deterministic=...)`` is a context manager: on entry it records every
switch below, sets the ones given (``None`` leaves a switch as it is), and on exit (normal or by an exception) puts each
one back, so a caller sharing the process (tests, the bench, a notebook) finds torch as it was.

- ``cudnn_benchmark``: ``torch.backends.cudnn.benchmark``
- ``tf32``: TF32 matmuls (``torch.set_float32_matmul_precision("high")``, i.e.
  ``torch.backends.cuda.matmul.allow_tf32``; ``"highest"`` when false) and TF32 convolutions
  (``torch.backends.cudnn.allow_tf32``); the per-backend ``fp32_precision`` strings of newer torch are recorded and
  put back too
- ``deterministic``: ``torch.use_deterministic_algorithms(v, warn_only=True)``, ``torch.backends.cudnn.deterministic``
  and, when true, ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless the environment sets it (deterministic cuBLAS)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

_CUBLAS = "CUBLAS_WORKSPACE_CONFIG"
# torch >= 2.9 keeps the TF32 choice as per-backend precision strings (the legacy flags above are views of them, and
# reading a legacy flag raises when the two APIs were mixed): those strings are the state to record and put back
_PRECISION = ("", "cuda.matmul", "cudnn", "cudnn.conv", "cudnn.rnn")


def _backend(path: str) -> Any:
    obj: Any = torch.backends
    for part in filter(None, path.split(".")):
        obj = getattr(obj, part)
    return obj


def _read(get: Any) -> Any:
    try:
        return get()
    except RuntimeError:  # a legacy flag after a mix of the legacy and new APIs
        return "mixed"


def snapshot() -> dict[str, Any]:
    """Every switch ``torch_switches`` may change, as it is now."""
    b = torch.backends
    state = {
        "cudnn.benchmark": b.cudnn.benchmark,
        "cudnn.deterministic": b.cudnn.deterministic,
        "cudnn.allow_tf32": _read(lambda: b.cudnn.allow_tf32),
        "cuda.matmul.allow_tf32": _read(lambda: b.cuda.matmul.allow_tf32),
        "float32_matmul_precision": _read(torch.get_float32_matmul_precision),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "env." + _CUBLAS: os.environ.get(_CUBLAS),
    }
    for path in _PRECISION:
        if hasattr(_backend(path), "fp32_precision"):
            state[f"{path or 'backends'}.fp32_precision"] = _backend(path).fp32_precision
    return state


def _restore(s: dict[str, Any]) -> None:
    b = torch.backends
    if s["float32_matmul_precision"] != "mixed":
        torch.set_float32_matmul_precision(s["float32_matmul_precision"])
    elif s["cuda.matmul.allow_tf32"] != "mixed":
        b.cuda.matmul.allow_tf32 = s["cuda.matmul.allow_tf32"]
    if s["cudnn.allow_tf32"] != "mixed":
        b.cudnn.allow_tf32 = s["cudnn.allow_tf32"]
    for path in _PRECISION:
        key = f"{path or 'backends'}.fp32_precision"
        if key in s and _backend(path).fp32_precision != s[key]:
            _backend(path).fp32_precision = s[key]
    b.cudnn.benchmark = s["cudnn.benchmark"]
    b.cudnn.deterministic = s["cudnn.deterministic"]
    torch.use_deterministic_algorithms(s["deterministic_algorithms"], warn_only=s["deterministic_warn_only"])
    if s["env." + _CUBLAS] is None:
        os.environ.pop(_CUBLAS, None)
    else:
        os.environ[_CUBLAS] = s["env." + _CUBLAS]


@contextlib.contextmanager
def torch_switches(*, cudnn_benchmark: bool | None = None, tf32: bool | None = None,
                   deterministic: bool | None = None) -> Iterator[None]:
    """Set the given switches for the ``with`` block; restore every switch afterwards (see the module docstring)."""
    saved = snapshot()
    try:
        if cudnn_benchmark is not None:
            torch.backends.cudnn.benchmark = cudnn_benchmark
        if tf32 is not None:  # matmul through the precision setter (the matmul flag would mix the two APIs)
            torch.set_float32_matmul_precision("high" if tf32 else "highest")
            torch.backends.cudnn.allow_tf32 = tf32
        if deterministic is not None:
            torch.use_deterministic_algorithms(deterministic, warn_only=True)
            torch.backends.cudnn.deterministic = deterministic
            if deterministic:
                os.environ.setdefault(_CUBLAS, ":4096:8")
        yield
    finally:
        _restore(saved)


__all__ = ["snapshot", "torch_switches"]
