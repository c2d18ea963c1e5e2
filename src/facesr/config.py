"""Typed params: load params.yaml, pick a profile, apply ``--set`` overrides, validate with clear errors.

params.yaml holds the paper's values at the top level and, under ``profiles``, per-profile overrides with the same
section layout (``profiles.ci.train.batch_size`` overrides ``train.batch_size``). The active profile is the top-level
key ``profile`` (or ``--profile``). Overrides are applied in this order: base -> profile -> ``--set KEY=VALUE``.
"""

from __future__ import annotations

import copy
import math
import os
import re
import reprlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator

from facesr.errors import ParamsError
from facesr.fsutil import canonical_json, sha256_bytes

DEFAULT_PARAMS_FILE = "params.yaml"
PSNR_MODEL = "psnr"  # the shared L1 pre-training stage's model (facesr pretrain), the GAN variants' starting point
BASELINE = "bicubic"  # the interpolation every model is compared with (evaluate, quality, the promotion guard)
# A variant is a key of loss.variants (nothing else defines one): a name that can be a folder, a DVC stage key, an
# MLflow tag and a KFP task name. `psnr` and `bicubic` are taken.
VARIANT_NAME = r"^[a-z][a-z0-9_]{0,39}$"
RESERVED_NAMES = (PSNR_MODEL, BASELINE)

# numbers are strict: YAML `true` is not 1 and `5.5` is not an int (an int is still a valid float)
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
PosInt = Annotated[Int, Field(gt=0)]
NonNegInt = Annotated[Int, Field(ge=0)]
Prob = Annotated[Float, Field(ge=0.0, le=1.0)]
NonNegFloat = Annotated[Float, Field(ge=0.0)]
PosFloat = Annotated[Float, Field(gt=0.0)]

# what a params file may be: a few KB of YAML; anything far beyond that is refused before it is parsed or expanded
MAX_PARAMS_BYTES = 1 << 20
MAX_YAML_NODES = 20_000  # scalars + lists + mappings after aliases are expanded (params.yaml: a few hundred)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataParams(_Section):
    source: str = Field("sample", description="default ingest source: sample | dir:PATH | s3://bucket/prefix | kaggle:OWNER/DATASET")
    kaggle_dataset: str = Field("ashwingupta3012/human-faces", description="the paper's dataset on Kaggle")
    hr_size: PosInt = Field(128, description="HR crop size (px)")
    scale: Literal[2, 4, 8] = Field(4, description="upscaling factor; LR size = hr_size / scale")
    test_fraction: Annotated[Float, Field(gt=0.0, lt=1.0)] = Field(0.3, description="share of images in the test split")
    hflip: Prob = Field(0.5, description="probability of a horizontal flip (training)")
    rot90: Prob = Field(0.5, description="probability of a 90-degree rotation (training)")
    max_train_side: PosInt = Field(512, description="longer side cap for stored training images (downscaled above it)")
    max_image_pixels: PosInt = Field(89_478_485, description="decompression-bomb limit (Pillow's default)")
    shard_size: PosInt = Field(256, description="images per training shard")
    num_workers: NonNegInt = Field(2, description="DataLoader workers")
    max_images: PosInt | None = Field(None, description="cap on accepted images (sorted by content hash); null = all")
    grid_faces: PosInt = Field(4, description="test faces shown in the comparison grids")
    max_extract_bytes: PosInt = Field(16 << 30, description="ingest: cap on the bytes an archive may extract to (16 GiB)")
    max_extract_ratio: PosFloat = Field(100.0, description="ingest: cap on an archive's uncompressed/compressed size "
                                                           "ratio (zip bombs; checked above 64 MiB extracted)")

    @model_validator(mode="after")
    def _divisible(self) -> DataParams:
        if self.hr_size % self.scale:
            raise ValueError(f"data.hr_size ({self.hr_size}) must be divisible by data.scale ({self.scale})")
        return self

    @property
    def lr_size(self) -> int:
        return self.hr_size // self.scale


class GeneratorParams(_Section):
    """RRDBNet size. The bounds also apply to every model.json that is loaded (facesr.models.io)."""

    num_feat: Annotated[PosInt, Field(le=256)] = 64
    num_block: Annotated[PosInt, Field(le=64)] = 23
    num_grow_ch: Annotated[PosInt, Field(le=128)] = 32
    residual: Literal["bicubic", "none"] = Field(
        "bicubic", description="bicubic: G adds its detail to the bicubic upsampling of the input (no extra "
                               "parameters); none: ESRGAN's exact forward, for public ESRGAN/BasicSR checkpoints")


class DiscriminatorParams(_Section):
    type: Literal["skip_relu", "vgg"] = Field("skip_relu", description="skip_relu: the paper's; vgg: ESRGAN baseline")
    num_feat: PosInt = 64


class ModelParams(_Section):
    generator: GeneratorParams = GeneratorParams()
    discriminator: DiscriminatorParams = DiscriminatorParams()


class LossWeights(_Section):
    pixel: NonNegFloat = 1e-2
    perceptual: NonNegFloat = 1.0
    gan: NonNegFloat = 5e-3
    pieapp: NonNegFloat = 0.0


class LossParams(_Section):
    perceptual_layer: str = Field("conv5_4", description="VGG19 layer, taken before its ReLU")
    pieapp_patch: PosInt = 64
    pieapp_stride: PosInt = 32
    variants: dict[str, LossWeights] = Field(
        default_factory=lambda: {
            "l1_vgg": LossWeights(),
            "l1_vgg_pieapp": LossWeights(pieapp=1e-2),
        }
    )

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, v: dict[str, LossWeights]) -> dict[str, LossWeights]:
        if not v:
            raise ValueError("at least one variant is needed")
        for name in v:
            if not re.match(VARIANT_NAME, name) or name in RESERVED_NAMES:
                raise ValueError(f"variant name {name!r}: lower-case letters, digits and _ (at most 40, starting "
                                 f"with a letter), not {' or '.join(RESERVED_NAMES)}")
        return v


class TrainParams(_Section):
    epochs: PosInt = 100
    max_steps: PosInt | None = Field(None, description="cap on GAN-phase optimiser steps; overrides epochs")
    pretrain_steps: NonNegInt = Field(0, description="phase 1: L1-only steps of G (0 = none)")
    batch_size: PosInt = 8
    lr_g: PosFloat = 1e-4
    lr_d: PosFloat = 1e-4
    betas: tuple[Annotated[Float, Field(ge=0, lt=1)], Annotated[Float, Field(ge=0, lt=1)]] = (0.9, 0.99)
    lr_milestones: list[PosInt] = Field(default_factory=list, description="MultiStepLR milestones (steps)")
    lr_gamma: PosFloat = 0.5
    ema_decay: Annotated[Float, Field(ge=0.0, lt=1.0)] = 0.999
    checkpoint_every: PosInt = 500
    log_every: PosInt = 10
    init_from: str | None = Field(None, description="BasicSR/ESRGAN .pth or our safetensors to initialise G")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "bf16", "off"] = Field("auto", description="auto = bf16 autocast on CUDA, off on CPU")
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = False


class PretrainParams(_Section):
    """The shared PSNR-oriented stage (`facesr pretrain`, BasicSR's RRDB_PSNR): G trained with L1 alone, once."""

    steps: PosInt = Field(20000, description="L1 optimiser steps")
    batch_size: PosInt = Field(16, description="patches per step")
    hr_size: PosInt = Field(128, description="HR patch size (px); the LR patch is hr_size / data.scale")
    lr: PosFloat = Field(2e-4, description="Adam learning rate (betas: train.betas)")
    lr_schedule: Literal["cosine", "constant"] = Field("cosine", description="cosine: from lr down to lr x lr_final")
    lr_final: Annotated[Float, Field(ge=0.0, le=1.0)] = Field(0.01, description="cosine: final lr as a share of lr")

    def lr_at(self, step: int) -> float:
        """The learning rate of optimiser step ``step`` (0-based): a pure function of the step, so resume is exact."""
        if self.lr_schedule == "constant" or self.steps <= 1:
            return self.lr
        t = min(max(step, 0), self.steps - 1) / (self.steps - 1)
        return self.lr * (self.lr_final + (1.0 - self.lr_final) * 0.5 * (1.0 + math.cos(math.pi * t)))


class EvaluateParams(_Section):
    metrics: list[str] = Field(
        default_factory=lambda: ["psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "lpips", "pieapp", "niqe", "ma", "pi", "dmos"]
    )
    bootstrap: PosInt = Field(1000, description="bootstrap resamples for the 95% intervals")
    batch_size: PosInt = 8
    device: Literal["auto", "cpu", "cuda"] = "auto"
    pieapp_stride: Annotated[Int, Field(gt=0, le=64)] = Field(
        32, description="PieAPP metric: stride of the 64x64 patches (whole image covered; 64 = no overlap, faster)")
    paired: tuple[str, str] | None = Field(
        ("l1_vgg", "l1_vgg_pieapp"),
        description="[A, B]: the paired-difference table reports B - A on the same images (variants or psnr; "
                    "null = no paired table; left unset, the default pair when both are variants, else none)")


class QualityParams(_Section):
    """Quality targets of the active profile, checked by `facesr quality` (figures, not a gate; see docs/evaluation.md)."""

    min_psnr_gain_db: Float = Field(2.0, description="the psnr model's PSNR-Y at least bicubic's + this")
    max_variant_drop_db: NonNegFloat = Field(1.0, description="GAN variants' PSNR-Y at most this under bicubic's")
    max_rgb_gap_db: NonNegFloat = Field(2.0, description="each model's PSNR-RGB within this of its PSNR-Y (colour)")
    border_px: PosInt = Field(4, description="width of the outer frame compared with bicubic's")
    max_border_drop_db: NonNegFloat = Field(0.5, description="frame PSNR-Y at most this under bicubic's frame")


class PromotionParams(_Section):
    primary_metric: str = Field("lpips", description="metric that decides registration and promotion")
    min_improvement: NonNegFloat = Field(0.0, description="required improvement of the primary metric")
    guards: dict[str, NonNegFloat] = Field(
        default_factory=lambda: {"psnr_y": 0.5, "ssim_y": 0.02},
        description="metric -> largest tolerated worsening",
    )
    require_significant: bool = Field(True, description="the paired 95% interval of the primary difference excludes 0")


class RegistryParams(_Section):
    tracking_uri: str = Field("sqlite:///mlflow.db", description="used when MLFLOW_TRACKING_URI is not set")
    experiment: str = "facesr"
    model_name: str = "facesr"
    promotion: PromotionParams = PromotionParams()


class GpuPoolParams(_Section):
    accelerator: str = Field("nvidia.com/gpu", description="resource name of the GPU")
    count: PosInt = 1
    accelerator_type: str = Field("nvidia-l4", description="node label value for the GPU type")
    node_selector: dict[str, str] = Field(default_factory=lambda: {"facesr.io/pool": "gpu"})
    toleration_key: str = "nvidia.com/gpu"
    toleration_value: str = "present"
    cpu: str = "8"
    memory: str = "32G"


class PipelineParams(_Section):
    name: str = "facesr-training"
    image: str = Field("ghcr.io/facesr/facesr:0.1.0", description="the one container image of every step")
    gpu: GpuPoolParams = GpuPoolParams()
    retries: NonNegInt = 2
    checkpoint_pvc: str | None = Field(
        "facesr-checkpoints", description="PVC (ReadWriteMany) the training tasks checkpoint to, so retries resume; null = none"
    )
    mlflow_uri: str = Field(
        "http://mlflow.facesr.svc.cluster.local:5000", description="MLflow URI of the cluster's register/promote tasks"
    )
    cron: str = Field("0 0 3 * * 0", description="KFP cron (6 fields, with seconds): Sundays 03:00")


class UpscaleParams(_Section):
    max_output_pixels: PosInt = Field(
        268_435_456, description="facesr upscale refuses (exit 2) an image whose output would have more pixels")


class Params(_Section):
    profile: str = Field("demo", description="active profile")
    seed: NonNegInt = 0
    allow_untrained_weights: bool = Field(False, description="let losses/metrics run on random weights (marked untrained)")
    data: DataParams = DataParams()
    model: ModelParams = ModelParams()
    loss: LossParams = LossParams()
    pretrain: PretrainParams = PretrainParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    quality: QualityParams = QualityParams()
    registry: RegistryParams = RegistryParams()
    pipeline: PipelineParams = PipelineParams()
    upscale: UpscaleParams = UpscaleParams()

    @model_validator(mode="after")
    def _pretrain_patch(self) -> Params:
        if self.pretrain.hr_size % self.data.scale:
            raise ValueError(f"pretrain.hr_size ({self.pretrain.hr_size}) must be divisible by data.scale "
                             f"({self.data.scale})")
        return self

    @model_validator(mode="after")
    def _paired_models(self) -> Params:
        if self.evaluate.paired is not None:
            known = [PSNR_MODEL, *self.loss.variants]
            bad = [m for m in self.evaluate.paired if m not in known]
            if bad and "paired" not in self.evaluate.model_fields_set:
                self.evaluate.paired = None  # the default pair, where those variants are not defined: no paired table
                return self
            if bad or self.evaluate.paired[0] == self.evaluate.paired[1]:
                raise ValueError(f"evaluate.paired {list(self.evaluate.paired)}: two different models of "
                                 f"{known} (the keys of loss.variants, or {PSNR_MODEL})")
        return self

    @property
    def variants(self) -> list[str]:
        """The GAN variants, in params order: the keys of ``loss.variants`` (the one definition)."""
        return list(self.loss.variants)

    @property
    def models(self) -> list[str]:
        """Every trained model a pipeline run makes: the psnr stage's, then each variant's."""
        return [PSNR_MODEL, *self.loss.variants]

    def check_variant(self, variant: str, option: str = "--variant") -> str:
        """``variant`` if it is a key of ``loss.variants``, else a ParamsError naming the defined ones."""
        if variant not in self.loss.variants:
            raise ParamsError(f"{option} {variant!r}: not a key of loss.variants; defined: {', '.join(self.variants)}")
        return variant

    def flat(self) -> dict[str, Any]:
        """Dotted-key view of every param (for MLflow params and logs)."""
        return flatten(self.model_dump(mode="json"))

    def hash(self) -> str:
        """sha256 of the resolved params (profile applied): identical params give identical hashes."""
        return sha256_bytes(canonical_json(self.model_dump(mode="json")).encode("utf-8"))


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def deep_merge(base: dict[str, Any], over: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """Recursively merge ``over`` into a copy of ``base``; mappings merge, everything else replaces."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(dict(out[k]), v, f"{where}{k}.")
        else:
            out[k] = copy.deepcopy(v)
    return out


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ParamsError(f"--set {short(item)}: expected KEY=VALUE with a dotted key, e.g. --set train.max_steps=10")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ParamsError(f"--set {short(item)}: the key must be a dotted path such as train.batch_size")
    value = yaml_load(raw, f"--set {short(item)}") if raw.strip() else None
    return key.split("."), value


def _set_dotted(d: dict[str, Any], parts: list[str], value: Any) -> None:
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines: list[str] = []
    errors = exc.errors(include_url=False)
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        typ = err.get("type", "")
        msg = err.get("msg", "invalid")
        if typ == "extra_forbidden":
            parent = ".".join(str(p) for p in err["loc"][:-1])
            allowed = _allowed_keys(parent)
            msg = f"unknown key; allowed here: {', '.join(allowed)}" if allowed else "unknown key"
        got = err.get("input")
        got_s = "" if typ == "extra_forbidden" or isinstance(got, dict) else f" (got {short(got)})"
        lines.append(f"{clip(loc, 200) or '<root>'}: {clip(msg)}{got_s}")
        if len(lines) >= MAX_ERROR_LINES:
            lines.append(f"... and {len(errors) - MAX_ERROR_LINES} more")
            break
    return f"{source}: invalid params:\n  " + "\n  ".join(lines)


def _allowed_keys(dotted_parent: str) -> list[str]:
    model: Any = Params
    for part in [p for p in dotted_parent.split(".") if p]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return []
    return sorted(getattr(model, "model_fields", {}).keys())


# -------------------------------------------------------------------------------------------------------------------
# reading YAML: bounded size, bounded expansion, bounded messages

MAX_ERROR_LINES = 20
_REPR = reprlib.Repr()  # Python 3.11: no keyword arguments
_REPR.maxlevel, _REPR.maxstring, _REPR.maxlong, _REPR.maxother = 3, 80, 40, 80
_REPR.maxtuple = _REPR.maxlist = _REPR.maxarray = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 6
_REPR.maxdeque = 6


def clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short(value: Any, limit: int = 120) -> str:
    """A bounded repr for messages: nested or huge values (an expanded YAML alias bomb) print as a short prefix."""
    return clip(_REPR.repr(value), limit)


class _ParamsLoader(yaml.SafeLoader):
    """yaml.SafeLoader that reads ``1e-4`` as a float (YAML 1.2; YAML 1.1 reads a string) and refuses documents whose
    alias-expanded tree exceeds ``MAX_YAML_NODES`` nodes (an alias bomb) or refers to itself."""

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        _check_expanded_size(node)
        return node


_ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class _YamlTooLarge(Exception):
    pass


def _check_expanded_size(root: yaml.Node) -> None:
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(n: yaml.Node) -> int:
        key = id(n)
        if key in memo:
            return memo[key]
        if key in active:
            raise _YamlTooLarge("an alias refers to the node that contains it (a recursive structure)")
        active.add(key)
        total = 1
        if isinstance(n, yaml.SequenceNode):
            total += sum(size(c) for c in n.value)
        elif isinstance(n, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in n.value)
        active.discard(key)
        memo[key] = total
        return total

    n = size(root)
    if n > MAX_YAML_NODES:
        raise _YamlTooLarge(f"it expands to more than {MAX_YAML_NODES} values (aliases included; a params file has a "
                            "few hundred)")


def yaml_load(text: str, source: str) -> Any:
    """Parse params YAML (a file's text or a --set value) with the limits above; errors name ``source``."""
    try:
        return yaml.load(text, Loader=_ParamsLoader)  # noqa: S506 - a SafeLoader subclass
    except _YamlTooLarge as exc:
        raise ParamsError(f"{source}: refused: {exc}") from None
    except RecursionError:
        raise ParamsError(f"{source}: refused: nested too deeply") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{source}: not valid YAML ({clip(str(exc), 500)})") from None


def params_path(path: str | os.PathLike[str] | None = None) -> Path:
    """``path``, else ``$FACESR_PARAMS``, else ./params.yaml."""
    return Path(path or os.environ.get("FACESR_PARAMS") or DEFAULT_PARAMS_FILE)


RESOLVED_HEADER = "# written by `facesr params resolve`"


def resolved_yaml(params: Params) -> str:
    """The resolved params as YAML, in field order (what `facesr params` prints and `params resolve` writes)."""
    return yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False)


def write_resolved(params: Params, out: str | os.PathLike[str], source: str | os.PathLike[str] | None = None) -> Path:
    """Write the resolved ``params`` as YAML to ``out`` (atomically), for DVC stages to track. ``out`` may be absent
    or an earlier file of this function (its first line is ``RESOLVED_HEADER``); never the params file it was read
    from (``source``) nor any other file, which is refused with a UserError naming it and left as it is. A link at
    ``out`` is replaced, never written through."""
    from facesr.errors import UserError
    from facesr.fsutil import atomic_write_text

    out = Path(out)
    if out.exists() and params_path(source).exists() and os.path.samefile(out, params_path(source)):
        raise UserError(f"--out {out}: that is the params file being read; write the resolved params elsewhere")
    if os.path.lexists(out) and not out.is_symlink():
        try:
            with open(out, encoding="utf-8", errors="replace") as f:
                first = f.read(len(RESOLVED_HEADER))
        except OSError as exc:
            raise UserError(f"--out {out}: cannot be read ({exc.strerror}); expected absent or an earlier resolved "
                            "params file") from None
        if first != RESOLVED_HEADER:
            raise UserError(f"--out {out}: exists and is not a file `facesr params resolve` wrote; not overwritten "
                            "(remove it or choose another path)")
    return atomic_write_text(out, f"{RESOLVED_HEADER} (profile {params.profile}); edit the params file instead\n"
                                  f"{resolved_yaml(params)}")


def load_raw(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Read params.yaml (or ``path``) as a plain mapping; missing, oversized, non-UTF-8 or malformed files raise
    ParamsError naming the file."""
    p = params_path(path)
    via = " ($FACESR_PARAMS points here)" if not path and os.environ.get("FACESR_PARAMS") else ""
    if p.is_dir():
        raise ParamsError(f"{p}: is a folder, not a params file{via}; pass --params PATH to a YAML file")
    if not p.exists():
        raise ParamsError(f"{p}: params file not found{via} (pass --params PATH or run from the project folder)")
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_PARAMS_BYTES + 1)
    except OSError as exc:
        raise ParamsError(f"{p}: cannot read the params file{via} ({exc.strerror or exc})") from None
    if len(data) > MAX_PARAMS_BYTES:
        raise ParamsError(f"{p}: larger than {MAX_PARAMS_BYTES // 1024} KiB{via}; a params file is a few KB of YAML")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{p}: not UTF-8 text (invalid byte at offset {exc.start}){via}; save it as UTF-8") from None
    raw = yaml_load(text, str(p))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{p}: the top level must be a mapping of keys to values")
    return raw


def resolve(
    raw: Mapping[str, Any],
    profile: str | None = None,
    overrides: Iterable[str] = (),
    source: str = DEFAULT_PARAMS_FILE,
) -> Params:
    """Apply the profile and overrides to a raw params mapping and validate it."""
    data = copy.deepcopy(dict(raw))
    profiles = data.pop("profiles", {}) or {}
    if not isinstance(profiles, dict):
        raise ParamsError(f"{source}: 'profiles' must be a mapping of profile name to overrides")
    parsed = [_parse_override(o) for o in overrides]
    # a --set profile=NAME chooses the profile too
    for parts, value in parsed:
        if parts == ["profile"]:
            profile = str(value)
    name = profile or data.get("profile") or "paper"
    if name != "paper" and name not in profiles:
        raise ParamsError(
            f"{source}: unknown profile {name!r}; allowed: {', '.join(sorted({'paper', *profiles}))}"
        )
    over = profiles.get(name) or {}
    if not isinstance(over, dict):
        raise ParamsError(f"{source}: profiles.{name} must be a mapping")
    if "profiles" in over or "profile" in over:
        raise ParamsError(f"{source}: profiles.{name} may not set 'profile' or 'profiles'")
    merged = deep_merge(data, over)
    merged["profile"] = name
    for parts, value in parsed:
        if parts[0] == "profiles":
            raise ParamsError("--set: set the resolved key (e.g. train.lr_g), not profiles.*")
        _set_dotted(merged, parts, value)
    try:
        return Params.model_validate(merged)
    except ValidationError as exc:
        raise ParamsError(_format_validation_error(exc, source)) from None


def load_params(
    path: str | os.PathLike[str] | None = None,
    profile: str | None = None,
    overrides: Iterable[str] = (),
) -> Params:
    """Load params.yaml (or ``path``), apply ``profile`` and ``--set`` overrides, validate."""
    src = str(params_path(path))
    return resolve(load_raw(path), profile=profile, overrides=overrides, source=src)
