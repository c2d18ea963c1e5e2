"""Training checkpoints (``OUT/checkpoints/last.pt`` and ``inputs.json`` beside it): the one owner of the format.

- ``write(out, state, inputs, steps_per_epoch)`` composes the fields (the only place that does) from a Trainer's
  ``state_dict()`` and what the run was made with, and writes ``last.pt`` atomically (a temporary sibling renamed into
  place) and then ``inputs.json``. ``save(path, fields)`` is the atomic writer under it.
- ``load(path, variant=...)`` reads with ``torch.load(weights_only=True)`` (nothing is unpickled beyond tensors and
  plain containers), ``validate``s every field, and returns a ``Checkpoint`` (the only place that reads the fields): a
  damaged or foreign file is refused with one ``InputError`` (exit 2) naming it *before* the caller touches any file.
- ``restore(ck, load_state_dict)`` hands the training state to the Trainer and maps a part that does not fit (other
  model params; the Trainer raises ``PartMismatch``) to the same kind of error.
- ``is_stale(out, inputs)``: whether ``inputs.json`` says the checkpoint was made with other inputs
  (``--restart-if-changed``); ``discard(out)`` removes both files; ``peek_step(path)`` the step as on disk.

Fields of ``last.pt`` (format ``facesr.checkpoint/1``): ``format``, ``variant``, ``step`` (optimiser steps done, >= 0),
``epoch``, ``position``, ``phase``, ``pretrain_steps``, ``steps_per_epoch``, ``params_hash``, ``data_manifest_sha256``,
and the Trainer's parts: ``generator`` / ``discriminator`` (state dicts), ``ema`` (``decay``, ``updates``,
``shadow``), ``opt_pre`` / ``opt_g`` / ``opt_d`` (optimizer state dicts), ``sched_g`` / ``sched_d`` (scheduler state
dicts), ``rng`` (``torch``, ``numpy``, ``python``, optionally ``cuda``). ``inputs.json``: ``variant``, ``step``,
``params_hash``, ``data_manifest_sha256``, ``init_sha256``.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import random
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facesr.errors import InputError

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "facesr.checkpoint/1"
CHECKPOINT_FILE = "last.pt"
INPUTS_FILE = "inputs.json"  # beside last.pt: what it was made with, readable without loading it
STATE_DICTS = ("generator", "discriminator")
OPTIMIZERS = ("opt_pre", "opt_g", "opt_d")
SCHEDULERS = ("sched_g", "sched_d")
STATE_FIELDS = ("step", "pretrain_steps", *STATE_DICTS, "ema", *OPTIMIZERS, *SCHEDULERS, "rng")  # Trainer.state_dict()
_REMEDY = "delete it (or the whole --out folder) to start training again, or put back a good copy"


def safe_torch_load(path: str | Path, what: str, remedy: str) -> Any:
    """``torch.load(weights_only=True)`` with one clear InputError: truncated/unreadable, or pickled objects refused.

    Never repeats torch's advice to load with ``weights_only=False``: facesr does not unpickle files.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Detected pickle protocol 4 ..."
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise InputError(f"{path}: not {what}: it holds pickled Python objects, which facesr never loads "
                             f"(only tensors and plain containers); {remedy}") from None
        raise InputError(f"{path}: {what} that is truncated or unreadable (not a complete PyTorch file); "
                         f"{remedy}") from None
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, expected {what}") from None
    except Exception:  # noqa: BLE001 - truncated zip, EOF, garbage bytes: all the same to the user
        raise InputError(f"{path}: {what} that is truncated or unreadable (not a complete PyTorch file); "
                         f"{remedy}") from None


def peek_step(path: str | Path) -> int | None:
    """The step of the checkpoint at ``path`` as it is on disk (memory-mapped: tensors are not read); None if unusable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            step = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True).get("step")
    except Exception:  # noqa: BLE001 - missing, truncated, foreign: no step to report
        return None
    return step if _is_int(step) else None


def save(path: str | Path, fields: Mapping[str, Any]) -> None:
    """Write a checkpoint's fields atomically (readers see the old file or the new one, never a part)."""
    from facesr.fsutil import atomic_write_bytes

    buf = io.BytesIO()
    torch.save(dict(fields), buf)
    atomic_write_bytes(Path(path), buf.getvalue())


@dataclass(frozen=True)
class Inputs:
    """What a run is made with: a checkpoint of other inputs is stale (``--restart-if-changed``)."""

    variant: str
    params_hash: str
    data_manifest_sha256: str
    init_sha256: str | None


@dataclass(frozen=True)
class Checkpoint:
    """A loaded, validated ``last.pt``: where it stands, what it was made with, and the Trainer's state."""

    path: Path
    variant: str
    step: int
    pretrain_steps: int
    params_hash: str | None
    data_manifest_sha256: str | None
    state: dict[str, Any]  # for Trainer.load_state_dict (step, pretrain_steps and the parts)


def path_in(out: Path) -> Path:
    """The checkpoint of the training folder ``out``."""
    return Path(out) / "checkpoints" / CHECKPOINT_FILE


def write(out: Path, state: Mapping[str, Any], inputs: Inputs, steps_per_epoch: int) -> None:
    """Write ``out``'s checkpoint from a Trainer's ``state_dict()``, then ``inputs.json`` beside it."""
    step, pre = int(state["step"]), int(state["pretrain_steps"])
    fields = {
        "format": CHECKPOINT_FORMAT,
        "variant": inputs.variant,
        "step": step,
        "epoch": step // steps_per_epoch,
        "position": step % steps_per_epoch,
        "phase": "pretrain" if step < pre else "gan",
        "pretrain_steps": pre,
        "steps_per_epoch": steps_per_epoch,
        "params_hash": inputs.params_hash,
        "data_manifest_sha256": inputs.data_manifest_sha256,
        **{k: state[k] for k in STATE_FIELDS[2:]},
    }
    from facesr.fsutil import atomic_write_json

    save(path_in(out), fields)
    atomic_write_json(path_in(out).with_name(INPUTS_FILE), {"variant": inputs.variant, "step": step,
                                                            **{k: v for k, v in asdict(inputs).items()
                                                               if k != "variant"}})


def is_stale(out: Path, inputs: Inputs) -> bool:
    """True when ``out``'s checkpoint was made with other params, prepared data, init weights or another variant."""
    ckpt = path_in(out)
    if not ckpt.exists():
        return False
    sidecar = ckpt.with_name(INPUTS_FILE)
    try:
        made_with = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):  # no record of its inputs: it cannot be shown to match
        log.warning("%s: no readable %s; treating the checkpoint as made with other inputs", ckpt, INPUTS_FILE)
        return True
    changed = [what for what, now, then in (
        ("variant", inputs.variant, made_with.get("variant")),
        ("params", inputs.params_hash, made_with.get("params_hash")),
        ("prepared data", inputs.data_manifest_sha256, made_with.get("data_manifest_sha256")),
        ("init weights", inputs.init_sha256, made_with.get("init_sha256")),
    ) if now != then]
    if changed:
        log.warning("--restart-if-changed: %s changed since %s was written; starting over", " and ".join(changed), ckpt)
    return bool(changed)


def discard(out: Path) -> None:
    """Remove ``out``'s checkpoint and its ``inputs.json`` (a stale run starts over)."""
    for name in (CHECKPOINT_FILE, INPUTS_FILE):
        path_in(out).with_name(name).unlink(missing_ok=True)


class PartMismatch(ValueError):
    """A part of a training state does not fit the Trainer (``part`` names it, the message says why)."""

    def __init__(self, part: str, reason: str) -> None:
        super().__init__(reason)
        self.part = part


class _Bad(ValueError):
    """A checkpoint field is missing or malformed (the message is the reason)."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _state_dict(v: Any, key: str) -> None:
    if not isinstance(v, Mapping) or not v:
        raise _Bad(f"{key!r} is not a state dict")
    bad = next((k for k, t in v.items() if not isinstance(k, str) or not isinstance(t, torch.Tensor)), None)
    if bad is not None:
        raise _Bad(f"{key!r} is not a state dict (entry {str(bad)[:60]!r} is not a named tensor)")


def _optimizer(v: Any, key: str) -> None:
    if not isinstance(v, Mapping) or not isinstance(v.get("state"), Mapping) or not isinstance(v.get("param_groups"),
                                                                                              list):
        raise _Bad(f"{key!r} is not an optimizer state (needs 'state' and 'param_groups')")
    if not all(isinstance(g, Mapping) and isinstance(g.get("params"), list) for g in v["param_groups"]):
        raise _Bad(f"{key!r}: malformed param_groups")


def _rng(v: Any) -> None:
    if not isinstance(v, Mapping):
        raise _Bad("'rng' is not a mapping of RNG states")
    # each state is tried on a private generator: the process-wide RNGs are not touched
    try:
        torch.Generator().set_state(v["torch"])
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise _Bad(f"'rng.torch' is not a torch RNG state ({str(exc)[:80]})") from None
    try:
        n = v["numpy"]
        np.random.RandomState().set_state((str(n[0]), np.asarray(n[1], dtype=np.uint32), int(n[2]), int(n[3]),
                                           float(n[4])))
    except (KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
        raise _Bad(f"'rng.numpy' is not a numpy RNG state ({str(exc)[:80]})") from None
    try:
        py = v["python"]
        random.Random().setstate((py[0], tuple(py[1]), py[2]))
    except (KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
        raise _Bad(f"'rng.python' is not a Python RNG state ({str(exc)[:80]})") from None


def validate(ck: Any) -> None:
    """Raise ValueError (a short reason) unless ``ck`` holds every field ``restore`` needs, each of the right kind."""
    if not isinstance(ck, Mapping):
        raise _Bad(f"expected a mapping of fields, got {type(ck).__name__}")
    if ck.get("format") != CHECKPOINT_FORMAT:
        raise _Bad(f"format is {str(ck.get('format'))[:60]!r}, expected {CHECKPOINT_FORMAT!r}")
    missing = [k for k in ("variant", *STATE_FIELDS) if k not in ck]
    if missing:
        raise _Bad(f"missing field(s) {', '.join(missing)}")
    if not isinstance(ck["variant"], str):
        raise _Bad("'variant' is not a string")
    for k in ("step", "pretrain_steps"):
        if not _is_int(ck[k]) or ck[k] < 0:
            raise _Bad(f"{k!r} must be an integer >= 0, got {str(ck[k])[:40]}")
    for k in STATE_DICTS:
        _state_dict(ck[k], k)
    ema = ck["ema"]
    if not isinstance(ema, Mapping) or not _is_int(ema.get("updates")) or ema["updates"] < 0:
        raise _Bad("'ema' needs 'updates' (an integer >= 0) and 'shadow'")
    _state_dict(ema.get("shadow"), "ema.shadow")
    if set(ema["shadow"]) != set(ck["generator"]):
        raise _Bad("'ema.shadow' does not hold the generator's parameters")
    for k in OPTIMIZERS:
        _optimizer(ck[k], k)
    for k in SCHEDULERS:
        if not isinstance(ck[k], Mapping):
            raise _Bad(f"{k!r} is not a scheduler state")
    _rng(ck["rng"])


def load(path: str | Path, variant: str | None = None) -> Checkpoint:
    """Read and validate a checkpoint; InputError (exit 2) naming ``path`` and what to do when anything is wrong."""
    path = Path(path)
    ck = safe_torch_load(path, "a facesr checkpoint", _REMEDY)
    try:
        validate(ck)
    except _Bad as exc:
        raise InputError(f"{path}: not a usable facesr checkpoint: {exc}; {_REMEDY}") from None
    if variant is not None and ck["variant"] != variant:
        raise InputError(f"{path}: made for variant {ck['variant']!r}, not {variant!r}; pass --variant "
                         f"{ck['variant']} to resume it, or use another --out")
    state = {k: ck[k] for k in STATE_FIELDS}
    return Checkpoint(path, ck["variant"], ck["step"], ck["pretrain_steps"], ck.get("params_hash"),
                      ck.get("data_manifest_sha256"), state)


def restore(ck: Checkpoint, load_state_dict: Callable[[dict[str, Any]], None]) -> None:
    """``load_state_dict(ck.state)`` (a Trainer's); a part that does not fit (a checkpoint of other model params)
    raises InputError naming the checkpoint and the part."""
    try:
        load_state_dict(ck.state)
    except PartMismatch as exc:
        raise InputError(f"{ck.path}: {exc.part!r} does not fit the model and optimiser built from the current params "
                         f"({exc}); resume with the params the run was started with, or {_REMEDY}") from None


__all__ = ["CHECKPOINT_FORMAT", "Checkpoint", "Inputs", "PartMismatch", "discard", "is_stale", "load", "path_in",
           "peek_step", "restore", "safe_torch_load", "save", "validate", "write"]
