"""Training: L1 pre-training of the generator, then ESRGAN-style GAN training with a variant's loss.

``train(params, data, variant, out, resume)`` is the one entry point (the CLI, DVC and KFP call it). Variant ``psnr``
is the shared PSNR-oriented stage (``facesr pretrain``, BasicSR's RRDB_PSNR): ``pretrain.steps`` L1 steps of G on
``pretrain.hr_size`` patches, ``pretrain.batch_size`` at a time, with ``pretrain.lr``'s schedule, and no loss network;
the GAN variants then start from its model (``train.init_from``, ``facesr train --init-from``). Under
``torchrun --nproc_per_node=N`` the same function trains with DistributedDataParallel (gloo on CPU, nccl on CUDA);
rank 0 writes every output.

Steps are counted globally: steps ``1..P`` are phase 1 (L1 pre-training, ``P = train.pretrain_steps``, 0 when
``train.init_from`` gives a pre-trained generator), steps ``P+1..P+T`` are phase 2 (GAN). ``T = train.max_steps`` when
set, else ``train.epochs`` x the steps in one epoch. Global step ``s`` consumes batch ``s-1`` of the data stream:
epoch ``(s-1) // steps_per_epoch``, position ``(s-1) % steps_per_epoch``; the order of an epoch and every random crop
depend only on (seed, epoch), so a resumed run continues exactly where it stopped.

Output folder (docs/architecture.md section 3)::

    OUT/model/generator.safetensors + model.json   G-EMA (written at the end, atomically)
    OUT/checkpoints/last.pt                         full training state (atomic; loaded with weights_only=True)
    OUT/metrics.jsonl                               one JSON object per logged step
    OUT/plots/train_log.csv                         step, phase, epoch, losses, lr (for `dvc plots`)
    OUT/train_summary.json
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facesr import checkpoint, locks
from facesr.config import PSNR_MODEL, Params
from facesr.errors import FacesrError, InputError, Interrupted, ParamsError, UserError
from facesr.fsutil import atomic_dir, atomic_write_json, atomic_write_text, sha256_file

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = checkpoint.CHECKPOINT_FORMAT
CHECKPOINT_INPUTS = "inputs.json"  # beside last.pt: the params hash, data hash and variant it was made with
SUMMARY_FORMAT = "facesr.train_summary/1"
CSV_COLUMNS = ("step", "phase", "epoch", "loss_g", "loss_d", "lr", "lr_d", "imgs_per_s")


class NonFiniteLossError(FacesrError):
    """A loss became NaN or infinite: training stops, the last good checkpoint stays (exit 1)."""


# ---------------------------------------------------------------------------------------------------------------------
# components (separate functions so tests and the benchmark can swap them)


@dataclass
class Components:
    generator: nn.Module
    discriminator: nn.Module
    gen_loss: nn.Module | None  # forward(sr, hr, real_logits, fake_logits) -> (total, terms); None: L1 only
    disc_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def build_components(params: Params, variant: str, device: torch.device) -> Components:
    """Build G, D and the variant's losses (facesr.models / facesr.losses); the psnr stage needs no loss network."""
    from facesr.losses import build_generator_loss, discriminator_loss
    from facesr.models import build_discriminator, build_generator

    g = build_generator(params)
    d = build_discriminator(params)
    loss = None if variant == PSNR_MODEL else build_generator_loss(params, variant, device)
    return Components(g, d, loss, discriminator_loss)


def load_init_weights(model: nn.Module, path: str) -> None:
    from facesr.models import io as model_io

    model_io.load_init_weights(model, path)


def save_generator(model: nn.Module, folder: Path, meta: dict[str, Any]) -> None:
    from facesr.models import io as model_io

    model_io.save_generator(model, folder, meta)


def make_dataset(params: Params, data: Path, variant: str = "") -> Any:
    """The training patches (facesr.data.dataset.TrainPatches): items {"lr", "hr"} uint8 CHW, set_epoch(e).

    The psnr stage cuts ``pretrain.hr_size`` patches; the GAN variants ``data.hr_size`` ones.
    """
    from facesr.data.dataset import TrainPatches

    d = params.data
    size = params.pretrain.hr_size if variant == PSNR_MODEL else d.hr_size
    return TrainPatches(data, size, d.scale, d.hflip, d.rot90, params.seed)


def batch_size(params: Params, variant: str) -> int:
    """Images per step and process: ``pretrain.batch_size`` for the psnr stage, ``train.batch_size`` otherwise."""
    return params.pretrain.batch_size if variant == PSNR_MODEL else params.train.batch_size


# ---------------------------------------------------------------------------------------------------------------------
# helpers


def resolve_device(want: str) -> torch.device:
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ParamsError("train.device: 'cuda' was asked for but no CUDA device is available; use auto or cpu")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device("cuda", local % max(1, torch.cuda.device_count()))
    return torch.device("cpu")


def amp_dtype(params: Params, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA for amp=auto; amp=bf16 also on CPU; amp=off never."""
    amp = params.train.amp
    if amp == "off":
        return None
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(state["cuda"])


def _sched_state(s: torch.optim.lr_scheduler.LRScheduler) -> dict[str, Any]:
    st = s.state_dict()
    if isinstance(st.get("milestones"), Counter):  # Counter is not allowed by torch.load(weights_only=True)
        st["milestones"] = dict(st["milestones"])
    return st


def _load_sched_state(s: torch.optim.lr_scheduler.LRScheduler, st: dict[str, Any]) -> None:
    st = dict(st)
    if isinstance(st.get("milestones"), dict):
        st["milestones"] = Counter(st["milestones"])
    s.load_state_dict(st)


def _unwrap(m: nn.Module) -> nn.Module:
    m = getattr(m, "module", m)  # DDP
    return getattr(m, "_orig_mod", m)  # torch.compile


class EMA:
    """Exponential moving average of a model's parameters and buffers.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` over the first updates (the usual TF/timm rule), so a short
    run's G-EMA follows the trained weights instead of staying at the random start; long runs use ``decay``.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in _unwrap(model).state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in _unwrap(model).state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point():
                s.mul_(d).add_(v.detach().to(s.dtype), alpha=1 - d)
            else:
                s.copy_(v)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.updates = int(st["updates"])
        for k, v in st["shadow"].items():
            self.shadow[k].copy_(v)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_pref: str) -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); otherwise single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    here = False
    if not dist.is_initialized():
        use_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
        if use_cuda:
            torch.cuda.set_device(local % max(1, torch.cuda.device_count()))
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        here = True
    return Dist(rank, world, local, here)


def _to_float(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 NCHW batch -> float in [0, 1] on ``device`` (converted there: 4x less to copy)."""
    x = x.to(device, non_blocking=True).float().div_(255.0)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _item(v: Any) -> float:
    if isinstance(v, torch.Tensor):
        return float(v.detach().float().item())
    return float(v)


def _finite(*values: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(v.detach()).all()) for v in values)


# ---------------------------------------------------------------------------------------------------------------------
# the data stream


class EpochStream:
    """Batches of an epoch in a fixed order that depends only on (seed, epoch); can start at any position."""

    def __init__(self, dataset: Any, params: Params, dist: Dist, pin: bool, bs: int | None = None,
                 bs_key: str = "train.batch_size") -> None:
        self.ds = dataset
        self.params = params
        self.dist = dist
        self.bs = params.train.batch_size if bs is None else bs
        n = len(dataset)
        self.steps_per_epoch = n // (self.bs * dist.world)
        if self.steps_per_epoch < 1:
            raise InputError(
                f"the prepared training split has {n} image(s), fewer than {bs_key} ({self.bs}) x processes "
                f"({dist.world}); lower {bs_key} or prepare more images"
            )
        self.pin = pin

    def order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.params.seed * 100_003 + epoch)
        perm = torch.randperm(len(self.ds), generator=g).tolist()
        per_rank = self.steps_per_epoch * self.bs
        return perm[self.dist.rank :: self.dist.world][:per_rank]

    def batches(self, epoch: int, start: int) -> Iterator[dict[str, torch.Tensor]]:
        """Batches ``start..steps_per_epoch-1`` of ``epoch`` for this rank."""
        if hasattr(self.ds, "set_epoch"):
            self.ds.set_epoch(epoch)
        idx = self.order(epoch)[start * self.bs :]
        if not idx:
            return iter(())
        workers = self.params.data.num_workers
        loader = torch.utils.data.DataLoader(
            self.ds,
            batch_size=self.bs,
            sampler=idx,
            num_workers=workers,
            pin_memory=self.pin,
            drop_last=True,
            persistent_workers=False,
            prefetch_factor=4 if workers > 0 else None,
            # the loader's own seed from a private generator: the global RNG is not consumed, so resuming mid-epoch
            # leaves it exactly as an uninterrupted run has it
            generator=torch.Generator().manual_seed(self.params.seed * 100_003 + epoch),
        )
        return iter(loader)


# ---------------------------------------------------------------------------------------------------------------------
# the training run


def _data_manifest_sha(data: Path) -> str:
    m = data / "manifest.json"
    if not data.is_dir():
        raise InputError(f"--data {data}: folder not found (expected the output of `facesr prepare`)")
    if not m.is_file():
        raise InputError(f"--data {data}: no manifest.json (expected the output of `facesr prepare`)")
    return sha256_file(m)


def total_steps(params: Params, steps_per_epoch: int, variant: str = "") -> tuple[int, int]:
    """(L1 steps, GAN steps) for these params: the psnr stage is ``pretrain.steps`` L1 steps and nothing else."""
    if variant == PSNR_MODEL:
        return params.pretrain.steps, 0
    pre = 0 if params.train.init_from else params.train.pretrain_steps
    gan = params.train.max_steps if params.train.max_steps is not None else params.train.epochs * steps_per_epoch
    return pre, gan


def gan_step(
    g_run: nn.Module,
    d: nn.Module,
    d_for_g: nn.Module,
    d_for_d: nn.Module,
    gen_loss: nn.Module,
    disc_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    lr_t: torch.Tensor,
    hr_t: torch.Tensor,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]],
    *,
    check: Callable[[str, torch.Tensor], None] | None = None,
    mark: Callable[[str], None] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """One GAN-phase step, ESRGAN style: a G step with D frozen, then a D step on real and fake batches apart.

    ``d`` is the discriminator whose parameters are frozen for the G step; ``d_for_g`` is what the G step calls (D
    without DDP gradient sync) and ``d_for_d`` what the D step calls (DDP-wrapped or compiled). ``check(which, loss)``
    may raise on a bad loss before its backward; ``mark(phase)`` is called after "g_forward", "g_backward",
    "d_forward" and "d_backward" (the bench times the phases with it). Returns (G loss, its terms, D loss).
    """
    check = check or (lambda which, loss: None)
    mark = mark or (lambda phase: None)
    for p in d.parameters():
        p.requires_grad_(False)
    opt_g.zero_grad(set_to_none=True)
    with autocast():
        sr = g_run(lr_t)
        real_logits = d_for_g(hr_t).detach()
        fake_logits = d_for_g(sr)
        loss_g, terms = gen_loss(sr, hr_t, real_logits, fake_logits)
    check("generator", loss_g)
    mark("g_forward")
    loss_g.backward()
    opt_g.step()
    mark("g_backward")
    for p in d.parameters():
        p.requires_grad_(True)
    opt_d.zero_grad(set_to_none=True)
    with autocast():
        # separate calls, as BasicSR: D's batch-norm sees real and fake batches apart
        real_d = d_for_d(hr_t)
        fake_d = d_for_d(sr.detach())
        loss_d = disc_loss(real_d.float(), fake_d.float())
    check("discriminator", loss_d)
    mark("d_forward")
    loss_d.backward()
    opt_d.step()
    mark("d_backward")
    return loss_g, terms, loss_d


def init_sha256(params: Params) -> str | None:
    """sha256 of the ``train.init_from`` weights file (a model folder's generator.safetensors), None without one."""
    from facesr.models.io import init_weights_file

    src = params.train.init_from
    if not src:
        return None
    p = init_weights_file(src)
    if not p.is_file():
        raise InputError(f"train.init_from: {p}: file not found (a facesr model folder, a .safetensors file or a "
                         "BasicSR/ESRGAN .pth)")
    return sha256_file(p)


def _checkpoint_is_stale(out: Path, variant: str, params_hash: str, data_sha: str,
                         init_sha: str | None = None) -> bool:
    """True when ``out``'s checkpoint was made with other params, prepared data, init weights or another variant."""
    ckpt = out / "checkpoints" / "last.pt"
    if not ckpt.exists():
        return False
    sidecar = out / "checkpoints" / CHECKPOINT_INPUTS
    try:
        made_with = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):  # no record of its inputs: it cannot be shown to match
        log.warning("%s: no readable %s; treating the checkpoint as made with other inputs", ckpt, CHECKPOINT_INPUTS)
        return True
    changed = [what for what, now, then in (
        ("variant", variant, made_with.get("variant")),
        ("params", params_hash, made_with.get("params_hash")),
        ("prepared data", data_sha, made_with.get("data_manifest_sha256")),
        ("init weights", init_sha, made_with.get("init_sha256")),
    ) if now != then]
    if changed:
        log.warning("--restart-if-changed: %s changed since %s was written; starting over", " and ".join(changed), ckpt)
    return bool(changed)


def _read_metrics(path: Path, upto: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                row = json.loads(line)
                if int(row.get("step", 0)) <= upto:
                    rows.append(row)
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys = list(CSV_COLUMNS)
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in keys})
    atomic_write_text(path, buf.getvalue())


def train(
    params: Params,
    data: Path,
    variant: str,
    out: Path,
    resume: bool = False,
    *,
    stop_at_step: int | None = None,
    progress: bool = True,
    restart_if_changed: bool = False,
) -> dict[str, Any]:
    """Train one variant on a prepared folder; write the model folder; return the summary.

    ``stop_at_step`` (for tests and preemption drills) checkpoints and returns after that global step, as if killed.
    Without ``resume``, an ``out`` that already holds a run is refused (delete it or pass --resume); with ``resume``,
    training continues from ``out/checkpoints/last.pt`` and a finished run is left as it is. With
    ``restart_if_changed`` too, a checkpoint made with other params or other prepared data is discarded and training
    starts over (what a pipeline re-run after a params or data change needs; an interruption still resumes exactly).
    """
    data, out = Path(data), Path(out)
    if variant == PSNR_MODEL:
        if params.train.init_from:
            params = params.model_copy(update={"train": params.train.model_copy(update={"init_from": None})})
    else:
        params.check_variant(variant)
    # one writer per --out (rank 0 of a DDP run holds it for all ranks): a second `facesr train` gets exit 2
    verb = "facesr pretrain" if variant == PSNR_MODEL else "facesr train"
    lock = (locks.exclusive(locks.lock_file_for(out), f"--out {out}", command=verb,
                            hint="wait for that training to finish, or choose another --out")
            if os.environ.get("RANK", "0") == "0" else contextlib.nullcontext())
    with lock:
        return _train_locked(params, data, variant, out, resume, stop_at_step, progress, restart_if_changed)


def _train_locked(params: Params, data: Path, variant: str, out: Path, resume: bool, stop_at_step: int | None,
                  progress: bool, restart_if_changed: bool) -> dict[str, Any]:
    data_sha = _data_manifest_sha(data)
    from facesr.fsutil import check_output_folder  # what --out may be: docs/data.md

    check_output_folder(out, markers={"train_summary.json": {SUMMARY_FORMAT}, "model/model.json": {"facesr.model/1"}},
                        own_names=("metrics.jsonl", "plots", "checkpoints", "train_summary.json"),
                        inputs=[data, *filter(None, [params.train.init_from])], replaces=False,
                        kind="training folder made by `facesr train`")
    ckpt_path = out / "checkpoints" / "last.pt"
    if not resume and (ckpt_path.exists() or (out / "model").exists()):
        raise UserError(
            f"--out {out}: already holds a training run; pass --resume to continue it, or delete the folder / choose "
            "another --out to start again"
        )
    init_sha = init_sha256(params)
    stale = resume and restart_if_changed and _checkpoint_is_stale(out, variant, params.hash(), data_sha, init_sha)

    tp = params.train
    dist = init_distributed(tp.device)
    # process-wide switches _train may flip; restored afterwards (callers such as tests share the process)
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark)
    if stale and dist.main:
        for name in ("last.pt", CHECKPOINT_INPUTS):
            (out / "checkpoints" / name).unlink(missing_ok=True)
    try:
        return _train(params, data, data_sha, init_sha, variant, out, resume and not stale, dist, stop_at_step,
                      progress)
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]
        if dist.initialised_here:
            import torch.distributed as tdist

            with contextlib.suppress(Exception):
                tdist.destroy_process_group()


def _train(
    params: Params,
    data: Path,
    data_sha: str,
    init_sha: str | None,
    variant: str,
    out: Path,
    resume: bool,
    dist: Dist,
    stop_at_step: int | None,
    progress: bool,
) -> dict[str, Any]:
    tp = params.train
    device = resolve_device(tp.device)
    dtype = amp_dtype(params, device)
    cuda = device.type == "cuda"
    channels_last = tp.channels_last
    if tp.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        if cuda:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # the same seed on every rank: identical initial weights; the data order is split by rank
    seed_everything(params.seed)
    comp = build_components(params, variant, device)
    g, d, gen_loss, disc_loss = comp.generator, comp.discriminator, comp.gen_loss, comp.disc_loss
    if tp.init_from:
        load_init_weights(g, tp.init_from)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    g = g.to(device, memory_format=fmt)
    d = d.to(device, memory_format=fmt)
    gen_loss = gen_loss.to(device, memory_format=fmt) if isinstance(gen_loss, nn.Module) else gen_loss
    if isinstance(gen_loss, nn.Module):  # frozen loss networks: no parameter gradients, eval mode
        gen_loss.eval()
        for p in gen_loss.parameters():
            p.requires_grad_(False)
    provenance = dict(getattr(gen_loss, "provenance", {}) or {})
    if variant != PSNR_MODEL and tp.batch_size < 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in d.modules()):
        raise ParamsError(
            "train.batch_size: the discriminator uses batch-norm, which needs at least 2 images per batch (per "
            f"process); got {tp.batch_size}"
        )

    ema = EMA(g, tp.ema_decay)
    adam_kw: dict[str, Any] = {"betas": tuple(tp.betas)}
    if cuda:
        adam_kw["fused"] = True
    # L1 steps: the psnr stage follows pretrain.lr's schedule (set per step: a pure function of the step, nothing
    # to checkpoint); the inline warm-up of a GAN run without init_from keeps train.lr_g
    pre_lr: Callable[[int], float] = params.pretrain.lr_at if variant == PSNR_MODEL else (lambda _step: tp.lr_g)
    opt_pre = torch.optim.Adam(g.parameters(), lr=pre_lr(0), **adam_kw)
    opt_g = torch.optim.Adam(g.parameters(), lr=tp.lr_g, **adam_kw)
    opt_d = torch.optim.Adam(d.parameters(), lr=tp.lr_d, **adam_kw)
    sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, milestones=list(tp.lr_milestones), gamma=tp.lr_gamma)
    sched_d = torch.optim.lr_scheduler.MultiStepLR(opt_d, milestones=list(tp.lr_milestones), gamma=tp.lr_gamma)

    dataset = make_dataset(params, data, variant)
    stream = EpochStream(dataset, params, dist, pin=cuda, bs=batch_size(params, variant),
                         bs_key="pretrain.batch_size" if variant == PSNR_MODEL else "train.batch_size")
    spe = stream.steps_per_epoch
    pre_steps, gan_steps = total_steps(params, spe, variant)
    total = pre_steps + gan_steps

    step = 0
    if resume and (out / "checkpoints" / "last.pt").exists():
        ckpt = out / "checkpoints" / "last.pt"
        ck = checkpoint.load(ckpt, variant=variant)  # every field validated: exit 2 naming it, no file touched yet
        if ck.get("data_manifest_sha256") != data_sha:
            log.warning("--resume: the prepared data changed since the checkpoint (manifest sha256 differs)")
        if ck.get("params_hash") != params.hash():
            log.warning("--resume: params differ from the checkpoint's; continuing (only max_steps/epochs changes keep "
                        "the run identical to an uninterrupted one)")
        step = ck["step"]
        if ck["pretrain_steps"] != pre_steps and step > min(pre_steps, ck["pretrain_steps"]):
            raise UserError(
                f"--resume: the checkpoint used train.pretrain_steps={ck['pretrain_steps']}, params now say "
                f"{pre_steps}; keep it unchanged to resume"
            )
        checkpoint.restore(ck, ckpt, {
            "generator": g.load_state_dict, "discriminator": d.load_state_dict, "ema": ema.load_state_dict,
            "opt_pre": opt_pre.load_state_dict, "opt_g": opt_g.load_state_dict, "opt_d": opt_d.load_state_dict,
            "sched_g": lambda st: _load_sched_state(sched_g, st), "sched_d": lambda st: _load_sched_state(sched_d, st),
            "rng": set_rng_state,
        })
        log.info("resumed %s from step %d of %d", out, step, total)
        if step >= total and (out / "model" / "model.json").exists() and (out / "train_summary.json").exists():
            log.info("%s: training already finished (%d steps); nothing to do", out, step)
            summary = json.loads((out / "train_summary.json").read_text(encoding="utf-8"))
            summary["resumed_noop"] = True
            return summary
    elif resume:
        log.info("--resume: no checkpoint in %s; starting from the beginning", out)

    g_ddp, d_ddp = g, d
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if cuda else None
        g_ddp = DDP(g, device_ids=ids)
        d_ddp = DDP(d, device_ids=ids)
    if tp.compile:
        g_ddp = torch.compile(g_ddp)
        d_ddp = torch.compile(d_ddp)
    d_plain = d  # the G step reads D without gradient sync (D's parameters are frozen there)

    metrics_path = out / "metrics.jsonl"
    rows: list[dict[str, Any]] = []
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        rows = _read_metrics(metrics_path, step)  # drop lines logged after the checkpoint we resumed from
        atomic_write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    def autocast() -> contextlib.AbstractContextManager[Any]:
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)

    def save_checkpoint() -> None:
        if not dist.main:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "variant": variant,
            "step": step,
            "epoch": (step // spe),
            "position": step % spe,
            "phase": "pretrain" if step < pre_steps else "gan",
            "pretrain_steps": pre_steps,
            "steps_per_epoch": spe,
            "params_hash": params.hash(),
            "data_manifest_sha256": data_sha,
            "generator": _unwrap(g).state_dict(),
            "discriminator": _unwrap(d).state_dict(),
            "ema": ema.state_dict(),
            "opt_pre": opt_pre.state_dict(),
            "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(),
            "sched_g": _sched_state(sched_g),
            "sched_d": _sched_state(sched_d),
            "rng": rng_state(),
        }
        checkpoint.save(out / "checkpoints" / "last.pt", state)
        # what the checkpoint was made with, readable without loading it (--restart-if-changed reads this)
        atomic_write_json(out / "checkpoints" / CHECKPOINT_INPUTS,
                          {"variant": variant, "step": step, "params_hash": state["params_hash"],
                           "data_manifest_sha256": data_sha, "init_sha256": init_sha})
        _write_csv(out / "plots" / "train_log.csv", rows)

    pbar = None
    if progress and dist.main:
        from facesr.progress import progress as make_progress

        pbar = make_progress(total, initial=step, desc=f"train {variant}", unit="step")

    last_good = step
    t_start = time.perf_counter()
    imgs_done = 0
    mfile = open(metrics_path, "a", encoding="utf-8") if dist.main else None  # noqa: SIM115
    try:
        while step < total and (stop_at_step is None or step < stop_at_step):
            epoch, pos = divmod(step, spe)
            for batch in stream.batches(epoch, pos):
                if step >= total or (stop_at_step is not None and step >= stop_at_step):
                    break
                t0 = time.perf_counter()
                lr_t = _to_float(batch["lr"], device, channels_last)
                hr_t = _to_float(batch["hr"], device, channels_last)
                phase = "pretrain" if step < pre_steps else "gan"
                terms: dict[str, float] = {}
                loss_d_val: float | None = None
                if phase == "pretrain":
                    g_ddp.train()
                    for group in opt_pre.param_groups:
                        group["lr"] = pre_lr(step)
                    opt_pre.zero_grad(set_to_none=True)
                    with autocast():
                        sr = g_ddp(lr_t)
                        loss_g = F.l1_loss(sr.float(), hr_t)
                    if not _finite(loss_g):
                        raise NonFiniteLossError(
                            f"non-finite L1 loss at step {step + 1} (pre-training); stopped. "
                            f"{_checkpoint_note(out, last_good)}; lower "
                            f"{'pretrain.lr' if variant == PSNR_MODEL else 'train.lr_g'}"
                        )
                    loss_g.backward()
                    opt_pre.step()
                    terms["pixel"] = _item(loss_g)
                    lr_now = opt_pre.param_groups[0]["lr"]
                else:
                    g_ddp.train()
                    d_ddp.train()
                    def check(which: str, loss: torch.Tensor, _step: int = step) -> None:
                        if not _finite(loss):
                            hint = "train.lr_g" if which == "generator" else "train.lr_d"
                            raise NonFiniteLossError(
                                f"non-finite {which} loss at step {_step + 1} ({variant}); stopped. "
                                f"{_checkpoint_note(out, last_good)}; lower {hint}"
                            )

                    loss_g, t, loss_d = gan_step(g_ddp, d, d_plain, d_ddp, gen_loss, disc_loss, opt_g, opt_d,
                                                 lr_t, hr_t, autocast, check=check)
                    terms = {k: _item(v) for k, v in t.items()}
                    sched_g.step()
                    sched_d.step()
                    loss_d_val = _item(loss_d)
                    lr_now = opt_g.param_groups[0]["lr"]
                ema.update(g)
                if cuda:
                    torch.cuda.synchronize(device)
                dt = max(time.perf_counter() - t0, 1e-9)
                step += 1
                n_imgs = hr_t.shape[0] * dist.world
                imgs_done += n_imgs
                ips = n_imgs / dt
                loss_val = _item(loss_g)
                if dist.main:
                    if step % tp.log_every == 0 or step == total or step == pre_steps:
                        row: dict[str, Any] = {
                            "phase": phase,
                            "step": step,
                            "epoch": epoch,
                            "loss_g": loss_val,
                            **{f"loss_{k}" if not k.startswith("loss") else k: v for k, v in terms.items()},
                            "loss_d": loss_d_val,
                            "lr": lr_now,
                            "lr_d": opt_d.param_groups[0]["lr"] if phase == "gan" else None,
                            "imgs_per_s": ips,
                        }
                        rows.append(row)
                        assert mfile is not None
                        mfile.write(json.dumps(row) + "\n")
                        mfile.flush()
                    if pbar is not None:
                        post = {"phase": phase, "loss_g": f"{loss_val:.4g}", "img/s": f"{ips:.1f}"}
                        if loss_d_val is not None:
                            post["loss_d"] = f"{loss_d_val:.4g}"
                        pbar.set_postfix(post, refresh=False)
                        pbar.update(1)
                if step % tp.checkpoint_every == 0:
                    save_checkpoint()
                    last_good = step
        if step > last_good or step == 0 or not (out / "checkpoints" / "last.pt").exists():
            save_checkpoint()
    except KeyboardInterrupt:  # Ctrl-C / SIGINT: say where the run stands and how to continue it
        raise Interrupted(f"training stopped at step {step} of {total}. {_checkpoint_note(out, last_good)}; "
                          f"run the same command with --resume to continue") from None
    finally:
        if mfile is not None:
            mfile.close()
        if pbar is not None:
            pbar.close()

    if dist.world > 1:  # DDP keeps the replicas identical; check it before rank 0 saves (cheap: one number each)
        import torch.distributed as tdist

        with torch.no_grad():
            mine = torch.stack([p.double().sum() for p in _unwrap(g).parameters()]).sum().reshape(1).to(device)
        every = [torch.zeros_like(mine) for _ in range(dist.world)]
        tdist.all_gather(every, mine)
        if any(not torch.equal(every[0], x) for x in every):
            raise FacesrError(f"DDP: the generator replicas diverged ({[float(x) for x in every]}); not saving")
    elapsed = time.perf_counter() - t_start
    if step < total:  # stopped on purpose (stop_at_step)
        return {"format": SUMMARY_FORMAT, "variant": variant, "step": step, "total_steps": total, "finished": False}

    summary: dict[str, Any] = {
        "format": SUMMARY_FORMAT,
        "variant": variant,
        "finished": True,
        "steps": step,
        "total_steps": total,
        "pretrain_steps": pre_steps,
        "gan_steps": gan_steps,
        "steps_per_epoch": spe,
        "epochs": math.ceil(step / spe),
        "batch_size": stream.bs,
        "world_size": dist.world,
        "device": str(device),
        "amp": str(dtype).replace("torch.", "") if dtype else "off",
        "params_hash": params.hash(),
        "data_manifest_sha256": data_sha,
        "weights": provenance,
        "untrained_weights": _untrained(provenance),
        "init_from": tp.init_from,
        "init_sha256": init_sha,
        "seconds_this_session": round(elapsed, 3),
        "imgs_per_s_this_session": round(imgs_done / elapsed, 3) if elapsed > 0 else None,
        "final": {k: v for k, v in (rows[-1].items() if rows else []) if k.startswith("loss")},
    }
    if dist.main:
        _write_model(params, _ema_model(g, ema), variant, out, provenance, data_sha, step, init_sha)
        atomic_write_json(out / "train_summary.json", summary)
    return summary


def _checkpoint_note(out: Path, last_good: int) -> str:
    """What a stopped run left: the checkpoint that really exists (its step as on disk), or that there is none yet."""
    ckpt = out / "checkpoints" / "last.pt"
    if ckpt.is_file():
        step = checkpoint.peek_step(ckpt)  # a signal during a save may have left a newer file than last_good says
        return f"The last checkpoint (step {last_good if step is None else step}) is {ckpt}"
    return (f"No checkpoint was written yet (the first comes at step train.checkpoint_every), so nothing is kept; "
            f"--resume in {out} starts from step 0")


def _untrained(provenance: dict[str, Any]) -> bool:
    return any(isinstance(v, dict) and v.get("status") != "real" for v in provenance.values())


def _ema_model(g: nn.Module, ema: EMA) -> nn.Module:
    import copy

    m = copy.deepcopy(_unwrap(g)).to("cpu", memory_format=torch.contiguous_format)
    m.load_state_dict({k: v.to("cpu") for k, v in ema.shadow.items()})
    return m.eval()


def _write_model(
    params: Params, model: nn.Module, variant: str, out: Path, provenance: dict[str, Any], data_sha: str, steps: int,
    init_sha: str | None = None,
) -> None:
    from facesr import __version__

    gp = params.model.generator
    meta = {
        "format": "facesr.model/1",
        "arch": "RRDBNet",
        "num_in_ch": 3,
        "num_out_ch": 3,
        "num_feat": gp.num_feat,
        "num_block": gp.num_block,
        "num_grow_ch": gp.num_grow_ch,
        "scale": params.data.scale,
        "variant": variant,
        "weights": provenance,
        "untrained_weights": _untrained(provenance),
        "params_hash": params.hash(),
        "data_manifest_sha256": data_sha,
        "steps": steps,
        "init_sha256": init_sha,  # the generator it started from (the psnr stage's, in the pipeline); lineage
        "facesr_version": __version__,
    }
    with atomic_dir(out / "model") as tmp:
        save_generator(model, tmp, meta)
        if not (tmp / "model.json").exists():  # io.save_generator writes it; keep the contract if it does not
            atomic_write_json(tmp / "model.json", meta)
