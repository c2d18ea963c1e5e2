"""Generator I/O: our model folders (safetensors + model.json) and BasicSR/ESRGAN checkpoints as initialisation.

* ``find_model_folder(path)``: the model folder of a training output, a model folder or a downloaded MLflow model;
  ``model_location(path)``: that folder, or a ``.safetensors`` file as given (what ``--model`` may name).
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
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from facesr.errors import InputError
from facesr.fsutil import atomic_dir, atomic_write_json, canonical_json, sha256_file

log = logging.getLogger(__name__)

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


def find_model_folder(root: str | os.PathLike[str]) -> Path:
    """The model folder (the one holding ``model.json``) of a training output folder (``OUT/model``), a model folder,
    or a downloaded MLflow model (one ``model.json`` somewhere below). The one definition of "where is the model"."""
    root = Path(root)
    if (root / META_FILE).is_file():
        return root
    if (root / "model" / META_FILE).is_file():
        return root / "model"
    hits = sorted(p.parent for p in root.rglob(META_FILE))
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise InputError(f"{root}: no {META_FILE} found (expected a training output folder, a model folder, "
                         "a .safetensors file or an MLflow models:/ URI)")
    raise InputError(f"{root}: several {META_FILE} files found ({', '.join(map(str, hits[:4]))}); point at one")


def model_location(path: str | os.PathLike[str], label: str = "") -> Path:
    """What a model argument names, for ``load_generator``: a ``.safetensors`` file as given (any other file is
    refused: never a pickle), a folder -> ``find_model_folder``. ``label`` prefixes the messages (``"--model "``)."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise InputError(f"{label}{path}: a model file must be .safetensors (pickled .pt/.pth files are not "
                             "loaded for safety)")
        return path
    if not path.is_dir():
        raise InputError(f"{label}{path}: no such file or folder (expected a training output folder, a model folder, "
                         "a .safetensors file or an MLflow URI such as models:/facesr@champion)")
    return find_model_folder(path)


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


def infer_arch(state: Mapping[str, Any]) -> dict[str, int]:
    """RRDBNet hyper-parameters from a BasicSR-style state dict's shapes (tensors, or shapes as tuples)."""

    def shape(k: str) -> tuple[int, ...]:
        v = state[k]
        return tuple(v.shape) if hasattr(v, "shape") else tuple(v)

    try:
        w_first = shape("conv_first.weight")
        blocks = {int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.", k))}
        num_grow = shape("body.0.rdb1.conv1.weight")[0] if blocks else 32
        in_ch = int(w_first[1])
        scale = 8 if "conv_up3.weight" in state else 4
        if in_ch == 12 and scale == 4:
            in_ch, scale = 3, 2
        return {"num_in_ch": in_ch, "num_out_ch": int(shape("conv_last.weight")[0]),
                "num_feat": int(w_first[0]), "num_block": len(blocks), "num_grow_ch": int(num_grow),
                "scale": scale}
    except (KeyError, IndexError, AttributeError, TypeError) as exc:
        raise ValueError(f"not an RRDBNet state dict (missing {exc})") from None


_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}


@dataclass
class ModelFiles:
    """A checked model: the files, model.json (or what stands for it) and the architecture, before any weights load."""

    weights: Path
    meta_file: Path | None
    meta: dict[str, Any]
    arch: dict[str, int]


def _header(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str], dict[str, str]]:
    """(shapes, dtypes, metadata) from a safetensors header only: no tensor data is read."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            st_meta = dict(f.metadata() or {})
            shapes, dtypes = {}, {}
            for k in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                sl = f.get_slice(k)
                shapes[k], dtypes[k] = tuple(int(n) for n in sl.get_shape()), str(sl.get_dtype())
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"{path}: not a readable safetensors file ({str(exc)[:200]}); expected the "
                         f"{WEIGHTS_FILE} written by facesr train") from None
    if ST_META_KEY in st_meta:  # our layout: one canonical-JSON entry; files written by other tools keep flat keys
        try:
            packed = json.loads(st_meta.pop(ST_META_KEY))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: malformed '{ST_META_KEY}' metadata ({exc})") from None
        if isinstance(packed, dict):
            st_meta.update({str(k): str(v) for k, v in packed.items()})
    return shapes, dtypes, st_meta


def _check_arch(values: Mapping[str, Any], source: Path) -> dict[str, int]:
    """The architecture numbers, validated with the bounds of params (config.GeneratorParams, data.scale)."""
    from pydantic import TypeAdapter, ValidationError

    from facesr.config import DataParams, GeneratorParams, short

    errors = []
    for k in ("num_in_ch", "num_out_ch"):
        if type(values[k]) is not int or values[k] != 3:
            errors.append(f"{k}: must be 3 (RGB) (got {short(values[k])})")
    try:
        GeneratorParams.model_validate({k: values[k] for k in ("num_feat", "num_block", "num_grow_ch")})
    except ValidationError as exc:
        errors += [f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {short(e.get('input'))})" for e in exc.errors()]
    f = DataParams.model_fields["scale"]
    try:
        ann = Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation
        TypeAdapter(ann).validate_python(values["scale"], strict=True)
    except ValidationError as exc:
        errors.append(f"scale: {exc.errors()[0]['msg']} (got {short(values['scale'])})")
    if errors:
        raise InputError(f"{source}: invalid architecture: " + "; ".join(errors))
    return {k: int(values[k]) for k in _ARCH_KEYS}


def _check_residual(value: Any, source: Path) -> str:
    """model.json ``residual`` (RRDBNet's bicubic skip); folders written before it existed were trained without it."""
    from facesr.models.rrdbnet import RESIDUALS

    if value not in RESIDUALS:
        from facesr.config import short

        raise InputError(f"{source}: invalid architecture: residual must be one of {list(RESIDUALS)} "
                         f"(got {short(value)})")
    return str(value)


def _expected_shapes(arch: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of RRDBNet(**arch), built on the meta device (no memory)."""
    from facesr.models.rrdbnet import RRDBNet

    with torch.device("meta"):
        net = RRDBNet(**arch)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _shape_mismatch(own: Mapping[str, tuple[int, ...]], theirs: Mapping[str, tuple[int, ...]]) -> list[str]:
    missing = sorted(set(own) - set(theirs))
    unexpected = sorted(set(theirs) - set(own))
    wrong = sorted(k for k in set(own) & set(theirs) if tuple(own[k]) != tuple(theirs[k]))
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} key(s) e.g. {missing[:3]}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} key(s) e.g. {[k[:80] for k in unexpected[:3]]}")
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} shape mismatch(es) e.g. {k}: file {list(theirs[k])} vs model {list(own[k])}")
    return parts


def check_model(path: str | os.PathLike[str]) -> ModelFiles:
    """Check a model folder or ``.safetensors`` file without loading any weights (InputError naming the file).

    model.json must be ours (format, arch), its architecture numbers within the bounds of params
    (``config.GeneratorParams``, ``data.scale``), its ``generator_sha256`` equal to the weights file's digest, and the
    safetensors header's tensor names and shapes those of that architecture. Every loader calls this first, so a model
    that would allocate gigabytes or hold changed weights is refused before anything is built.
    """
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
    if not weights.is_file():
        raise InputError(f"{weights}: model weights not found (expected a model folder with {WEIGHTS_FILE}, "
                         "or a .safetensors file)")
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
        meta, meta_file = {"format": MODEL_FORMAT, "arch": "RRDBNet"}, None
    expected_sha = meta.get("generator_sha256")
    if expected_sha:
        actual = sha256_file(weights)
        if actual != expected_sha:
            raise InputError(
                f"{weights}: sha256 {actual[:16]}... does not match generator_sha256 {str(expected_sha)[:16]}... in "
                f"{meta_file}: the weights were changed or damaged after they were written; restore the model folder "
                "(train again, or download it again)")
    elif meta_file is not None:
        log.warning("%s: no generator_sha256; the weights in %s cannot be checked", meta_file, weights)
    shapes, dtypes, st_meta = _header(weights)
    source = meta_file or weights
    try:
        inferred = infer_arch(shapes)
    except ValueError as exc:
        raise InputError(f"{weights}: {exc}") from None
    values: dict[str, Any] = {}
    for k in _ARCH_KEYS:
        if k in meta:
            values[k] = meta[k]
        elif k in st_meta:  # safetensors metadata holds strings
            try:
                values[k] = int(st_meta[k])
            except ValueError:
                raise InputError(f"{weights}: metadata {k} must be an integer, got {st_meta[k][:40]!r}") from None
        else:
            values[k] = inferred[k]
    arch: dict[str, Any] = dict(_check_arch(values, source))
    arch["residual"] = _check_residual(meta.get("residual", st_meta.get("residual", "none")), source)
    bad_dtype = sorted(k for k, dt in dtypes.items() if dt.upper() not in _FLOAT_DTYPES)
    if bad_dtype:
        raise InputError(f"{weights}: tensor {bad_dtype[0]!r} has dtype {dtypes[bad_dtype[0]]}; generator weights "
                         "are floating point")
    parts = _shape_mismatch(_expected_shapes(arch), shapes)
    if parts:
        raise InputError(f"{weights}: weights do not match the generator {arch} of {source}: " + "; ".join(parts))
    return ModelFiles(weights, meta_file, meta, arch)


def load_generator(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Load our generator from a model folder or a ``.safetensors`` file; returns ``(model in eval mode, meta)``.

    The one loader of generator weights (upscale, evaluate, the MLflow pyfunc, train.init_from): ``check_model`` first
    (digest, bounds, header shapes), then the weights.
    """
    from facesr.models.rrdbnet import RRDBNet

    mf = check_model(path)
    try:
        state = load_file(str(mf.weights), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"{mf.weights}: not a readable safetensors file ({str(exc)[:200]})") from None
    model = RRDBNet(**mf.arch)
    _load_state(model, state, mf.weights)
    meta = {**mf.meta, "arch": "RRDBNet", **mf.arch}
    return model.to(device).eval(), meta


def _load_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: Path) -> None:
    own = model.state_dict()
    parts = _shape_mismatch({k: tuple(v.shape) for k, v in own.items()},
                            {k: tuple(getattr(v, "shape", ())) for k, v in state.items()})
    if parts:
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


def init_weights_file(path: str | os.PathLike[str]) -> Path:
    """The weights file ``train.init_from`` names: a training folder (its model/), a model folder, or a file."""
    path = Path(path)
    if path.is_dir() and (path / "model" / WEIGHTS_FILE).is_file():
        path = path / "model"
    return path / WEIGHTS_FILE if path.is_dir() else path


def read_init_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The generator state dict in a BasicSR/ESRGAN ``.pth`` or our ``.safetensors`` (BasicSR key names)."""
    path = init_weights_file(path)
    if not path.is_file():
        raise InputError(f"train.init_from: {path}: file not found (a BasicSR/ESRGAN .pth or a facesr .safetensors)")
    if path.suffix == ".safetensors":  # ours (digest, bounds and shapes checked) or any RRDBNet safetensors
        model, _ = load_generator(path)
        return dict(model.state_dict())
    from facesr.checkpoint import safe_torch_load

    obj = safe_torch_load(path, "a PyTorch weights file (a BasicSR/ESRGAN .pth)",
                          "point train.init_from at a BasicSR/ESRGAN .pth of tensors or a facesr model folder")
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
    _check_init_residual(target, Path(path))
    _load_state(target, state, Path(path))
    return model


def _check_init_residual(target: nn.Module, path: Path) -> None:
    """The init weights must have been trained with the target's residual mode (bicubic skip or none)."""
    want = getattr(target, "residual", None)
    weights = init_weights_file(path)
    if want is None:
        return
    recorded = None
    if weights.suffix == ".safetensors":
        mf = check_model(weights)
        recorded = mf.meta.get("residual", _header(weights)[2].get("residual"))
    if recorded is not None:  # a facesr model: it says how it was trained
        have = mf.arch["residual"]
        if have != want:
            raise InputError(f"train.init_from: {path} was trained with model.generator.residual={have!r}, the "
                             f"params say {want!r}; set model.generator.residual: {have} to start from it")
    elif want == "bicubic":
        log.warning("train.init_from: %s is not a facesr model (a BasicSR/ESRGAN checkpoint?), trained without facesr's bicubic skip; "
                    "set model.generator.residual: none to start from its exact outputs", path)


def read_model_meta(path: str | os.PathLike[str]) -> dict:
    """model.json of a model folder (or beside a .safetensors file)."""
    from facesr.fsutil import read_json

    path = Path(path)
    meta_file = path / META_FILE if path.is_dir() else path.with_name(META_FILE)
    meta = read_json(meta_file)
    return meta if isinstance(meta, dict) else {}


__all__ = ["MODEL_FORMAT", "META_FILE", "WEIGHTS_FILE", "ModelFiles", "check_model", "find_model_folder", "infer_arch",
           "init_weights_file", "load_generator", "load_init_weights", "model_location", "read_init_state",
           "read_model_meta", "save_generator"]
