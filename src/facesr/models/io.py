"""Generator I/O: our model folders (safetensors + model.json) and BasicSR/ESRGAN checkpoints as initialisation.

* ``save_generator(model, folder, meta)`` writes ``folder/generator.safetensors`` and ``folder/model.json`` together,
  atomically (a temporary sibling folder renamed into place).
* ``load_generator(path, device)`` reads a model folder, or a ``.safetensors`` file (with its sibling ``model.json``
  when present; else the architecture stored in the safetensors metadata; else inferred from the tensor shapes).
  It never unpickles.
* ``load_init_weights(model, path)`` loads a BasicSR / Real-ESRGAN ``.pth`` (a dict with ``params_ema`` or ``params``,
  or a bare state dict; ``torch.load(weights_only=True)``), the original ESRGAN repo's ``RRDB_ESRGAN_x4.pth`` layout
  (``model.0.weight`` ...; converted), or one of our ``.safetensors`` files.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from facesr.errors import InputError
from facesr.fsutil import atomic_dir, atomic_write_json, canonical_json, sha256_file

MODEL_FORMAT = "facesr.model/1"
WEIGHTS_FILE = "generator.safetensors"
META_FILE = "model.json"
ST_META_KEY = "facesr"  # the safetensors metadata entry that holds our architecture as canonical JSON
_ARCH_KEYS = ("num_in_ch", "num_out_ch", "num_feat", "num_block", "num_grow_ch", "scale")


def _facesr_version() -> str:
    try:
        from importlib.metadata import version

        return version("facesr")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "unknown"


def save_generator(model: nn.Module, folder: str | os.PathLike[str], meta: Mapping[str, Any] | None = None) -> dict:
    """Write ``generator.safetensors`` + ``model.json`` into ``folder`` atomically; returns the model.json dict.

    ``meta`` adds keys to model.json (variant, weights provenance, params_hash, steps, ...); the architecture keys and
    ``format`` always come from the model itself.
    """
    from facesr.models.rrdbnet import RRDBNet

    model = getattr(model, "module", model)  # DDP / DataParallel
    model = getattr(model, "_orig_mod", model)  # torch.compile
    if not isinstance(model, RRDBNet):
        raise TypeError(f"save_generator expects an RRDBNet, got {type(model).__name__}")
    arch = model.config()
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    info: dict[str, Any] = {"format": MODEL_FORMAT, **arch}
    extra = dict(meta or {})
    info.update({k: v for k, v in extra.items() if k not in info})
    info.setdefault("facesr_version", _facesr_version())
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        # one metadata entry holding canonical JSON: safetensors writes a metadata map in arbitrary order, and
        # identical weights must give identical bytes (DVC and MLflow compare files by hash)
        st_meta = {ST_META_KEY: canonical_json({"format": MODEL_FORMAT, **{k: str(v) for k, v in arch.items()}})}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata=st_meta)
        info["generator_sha256"] = sha256_file(tmp / WEIGHTS_FILE)
        atomic_write_json(tmp / META_FILE, info)
    return info


def infer_arch(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """RRDBNet hyper-parameters from a BasicSR-style state dict's shapes."""
    try:
        w_first = state["conv_first.weight"]
        blocks = {int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.", k))}
        num_grow = state["body.0.rdb1.conv1.weight"].shape[0] if blocks else 32
        in_ch = int(w_first.shape[1])
        scale = 8 if "conv_up3.weight" in state else 4
        if in_ch == 12 and scale == 4:
            in_ch, scale = 3, 2
        return {"num_in_ch": in_ch, "num_out_ch": int(state["conv_last.weight"].shape[0]),
                "num_feat": int(w_first.shape[0]), "num_block": len(blocks), "num_grow_ch": int(num_grow),
                "scale": scale}
    except (KeyError, IndexError, AttributeError) as exc:
        raise ValueError(f"not an RRDBNet state dict (missing {exc})") from None


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise InputError(f"{path}: model weights not found (expected a model folder with {WEIGHTS_FILE}, "
                         "or a .safetensors file)")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            st_meta = dict(f.metadata() or {})
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"{path}: not a readable safetensors file ({exc})") from None
    if ST_META_KEY in st_meta:  # our layout: one canonical-JSON entry; files written by other tools keep flat keys
        try:
            packed = json.loads(st_meta.pop(ST_META_KEY))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: malformed '{ST_META_KEY}' metadata ({exc})") from None
        if isinstance(packed, dict):
            st_meta.update({str(k): str(v) for k, v in packed.items()})
    return state, st_meta


def load_generator(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Load our generator from a model folder or a ``.safetensors`` file; returns ``(model in eval mode, meta)``."""
    from facesr.models.rrdbnet import RRDBNet

    path = Path(path)
    if path.is_dir():
        weights, meta_file = path / WEIGHTS_FILE, path / META_FILE
    elif path.suffix == ".safetensors" or path.is_file():
        if path.suffix != ".safetensors":
            raise InputError(f"{path}: expected a model folder or a .safetensors file (never a pickle)")
        weights, meta_file = path, path.with_name(META_FILE)
    else:
        raise InputError(f"{path}: model not found (expected a model folder with {WEIGHTS_FILE} + {META_FILE}, "
                         "or a .safetensors file)")
    state, st_meta = _read_safetensors(weights)
    meta: dict[str, Any]
    if meta_file.is_file():
        from facesr.fsutil import read_json

        meta = read_json(meta_file)
        if not isinstance(meta, dict):
            raise InputError(f"{meta_file}: expected a JSON object")
        if meta.get("format", MODEL_FORMAT) != MODEL_FORMAT or meta.get("arch", "RRDBNet") != "RRDBNet":
            raise InputError(f"{meta_file}: unsupported model (format {meta.get('format')!r}, arch "
                             f"{meta.get('arch')!r}); expected format {MODEL_FORMAT!r}, arch 'RRDBNet'")
    else:  # a bare .safetensors: architecture from its metadata, else from the tensor shapes
        meta = {"format": MODEL_FORMAT, "arch": "RRDBNet"}
    try:
        inferred = infer_arch(state)
    except ValueError as exc:
        raise InputError(f"{weights}: {exc}") from None
    arch: dict[str, int] = {}
    for k in _ARCH_KEYS:
        v = meta.get(k, st_meta.get(k, inferred[k]))
        try:
            arch[k] = int(v)
        except (TypeError, ValueError):
            raise InputError(f"{meta_file}: {k} must be an integer, got {v!r}") from None
    try:
        model = RRDBNet(**arch)
    except ValueError as exc:
        raise InputError(f"{meta_file}: {exc}") from None
    _load_state(model, state, weights)
    meta = {**meta, "arch": "RRDBNet", **arch}
    return model.to(device).eval(), meta


def _load_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: Path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s) e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s) e.g. {unexpected[:3]}")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} shape mismatch(es) e.g. {k}: file {list(state[k].shape)} vs model "
                         f"{list(own[k].shape)}")
        cfg = model.config() if hasattr(model, "config") else {}
        raise InputError(f"{source}: weights do not match the generator {cfg}: " + "; ".join(parts))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


_OLD_ESRGAN = [  # original ESRGAN repo (xinntao/ESRGAN, old arch) -> BasicSR names
    (r"^model\.0\.", "conv_first."),
    (r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.", lambda m: f"body.{m[1]}.rdb{m[2]}.conv{m[3]}."),
    (r"^model\.1\.sub\.\d+\.", "conv_body."),
    (r"^model\.3\.", "conv_up1."),
    (r"^model\.6\.", "conv_up2."),
    (r"^model\.8\.", "conv_hr."),
    (r"^model\.10\.", "conv_last."),
]


def _convert_old_esrgan(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        nk = k
        for pat, rep in _OLD_ESRGAN:
            new = re.sub(pat, rep, k)
            if new != k:
                nk = new
                break
        out[nk] = v
    return out


def read_init_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The generator state dict in a BasicSR/ESRGAN ``.pth`` or our ``.safetensors`` (BasicSR key names)."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise InputError(f"train.init_from: {path}: file not found (a BasicSR/ESRGAN .pth or a facesr .safetensors)")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)[0]
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt file, or a pickle with objects weights_only refuses
        raise InputError(f"{path}: not a loadable PyTorch weights file with weights_only=True "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if isinstance(obj, Mapping):
        for key in ("params_ema", "params", "state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{path}: expected a state dict (or a dict with 'params_ema' / 'params')")
    state = {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}
    if "model.0.weight" in state:
        state = _convert_old_esrgan(state)
    return state


def load_init_weights(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Initialise ``model`` from a public ESRGAN / Real-ESRGAN / BasicSR checkpoint or our safetensors (strict)."""
    state = read_init_state(path)
    target = getattr(model, "module", model)
    _load_state(target, state, Path(path))
    return model


def read_model_meta(path: str | os.PathLike[str]) -> dict:
    """model.json of a model folder (or beside a .safetensors file)."""
    from facesr.fsutil import read_json

    path = Path(path)
    meta_file = path / META_FILE if path.is_dir() else path.with_name(META_FILE)
    meta = read_json(meta_file)
    return meta if isinstance(meta, dict) else {}


__all__ = ["MODEL_FORMAT", "META_FILE", "WEIGHTS_FILE", "infer_arch", "load_generator", "load_init_weights",
           "read_init_state", "read_model_meta", "save_generator"]
