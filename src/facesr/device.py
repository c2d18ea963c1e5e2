"""The one device choice of facesr (train, pretrain, evaluate, quality, upscale, bench, the pyfunc model).

``resolve_device(want, what)``: ``auto`` = the local CUDA device when one is available, else the CPU; ``cpu``;
``cuda`` = the local CUDA device (``LOCAL_RANK`` under torchrun picks the GPU of this process); ``cuda:N`` = that GPU.
Asking for CUDA where there is none is a ``UserError`` (exit 2) that names the setting (``what``).
"""

from __future__ import annotations

import os

import torch

from facesr.errors import UserError

ALLOWED = "auto, cpu, cuda, cuda:N"


def resolve_device(want: str = "auto", what: str = "--device") -> torch.device:
    """``want`` (auto | cpu | cuda | cuda:N) -> the torch.device to run on; ``what`` names the setting in errors."""
    want = str(want).strip().lower()
    if want not in ("auto", "cpu", "cuda") and not (want.startswith("cuda:") and want[5:].isdigit()):
        raise UserError(f"{what} {want!r}: allowed: {ALLOWED}")
    if want == "cpu" or (want == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"{what} {want!r}: CUDA is not available on this machine (use auto or cpu)")
    count = max(1, torch.cuda.device_count())
    if want.startswith("cuda:"):
        index = int(want[5:])
        if index >= count:
            raise UserError(f"{what} {want!r}: this machine has {count} CUDA device(s)")
        return torch.device("cuda", index)
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % count)


__all__ = ["resolve_device", "ALLOWED"]
