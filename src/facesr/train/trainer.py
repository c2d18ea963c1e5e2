"""The Trainer: one object that owns what a training step needs, and the step itself.

It owns the nets (G, D, G-EMA), the variant's losses, the three Adam optimisers (the L1 steps, G, D), both LR
schedulers, and how they run (``Speed``: channels_last, bf16 autocast, fused Adam, torch.compile, DDP wrapping, the
global torch switches). ``step(batch)`` is one optimisation step of the current phase and returns the scalars to log;
``state_dict()`` / ``load_state_dict()`` are its whole training state (``facesr.checkpoint`` stores it). ``facesr
train`` and ``facesr bench`` both build Trainers; neither sets anything up by hand.

Phases, by the number of steps done ``n``: ``n < pretrain_steps`` is an L1 step of G (the psnr stage, or the inline
warm-up of a GAN run without ``train.init_from``), otherwise a GAN step, ESRGAN style: a G step with D frozen (the
variant's weighted loss from ``facesr.losses``), then a D step on the real and the detached fake batches apart
(relativistic average). The EMA of G is updated after every step of both phases.
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facesr.checkpoint import PartMismatch
from facesr.config import PSNR_MODEL, Params
from facesr.errors import FacesrError, ParamsError
from facesr.train.stream import Dist
from facesr.train.switches import torch_switches


class NonFiniteLossError(FacesrError):
    """A loss became NaN or infinite: training stops, the last good checkpoint stays (exit 1).

    ``hint`` names the param to lower (``train.lr_g``, ``train.lr_d`` or ``pretrain.lr``).
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


# ---------------------------------------------------------------------------------------------------------------------
# what a Trainer is built from


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


def amp_dtype(params: Params, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA for amp=auto; amp=bf16 also on CPU; amp=off never."""
    amp = params.train.amp
    if amp == "off":
        return None
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def total_steps(params: Params, steps_per_epoch: int, variant: str = "") -> tuple[int, int]:
    """(L1 steps, GAN steps) for these params: the psnr stage is ``pretrain.steps`` L1 steps and nothing else."""
    if variant == PSNR_MODEL:
        return params.pretrain.steps, 0
    pre = 0 if params.train.init_from else params.train.pretrain_steps
    gan = params.train.max_steps if params.train.max_steps is not None else params.train.epochs * steps_per_epoch
    return pre, gan


@dataclass(frozen=True)
class Speed:
    """How a Trainer runs. ``training(params, device)`` is what ``facesr train`` does; ``reference()`` is eager fp32,
    channels-first, PyTorch defaults, float32 batches made on the host (BasicSR's ``img2tensor``), the bench's baseline.

    ``cudnn_benchmark`` / ``tf32`` / ``deterministic``: the global switches (facesr.train.switches; None = as they are).
    """

    name: str
    channels_last: bool
    amp: torch.dtype | None
    fused_adam: bool
    compile: bool
    uint8_transfer: bool  # batches stay uint8 until on the device (pinned memory on CUDA)
    cudnn_benchmark: bool | None
    tf32: bool | None
    deterministic: bool | None

    @classmethod
    def training(cls, params: Params, device: torch.device) -> Speed:
        tp, cuda = params.train, device.type == "cuda"
        fast = cuda and not tp.deterministic  # cudnn.benchmark and TF32 on CUDA, unless determinism is asked for
        return cls("optimised", tp.channels_last, amp_dtype(params, device), cuda, tp.compile, True,
                   cudnn_benchmark=False if tp.deterministic else (True if cuda else None),
                   tf32=True if fast else None, deterministic=True if tp.deterministic else None)

    @classmethod
    def reference(cls) -> Speed:
        return cls("reference", False, None, False, False, False, cudnn_benchmark=False, tf32=None, deterministic=None)

    def switches(self) -> contextlib.AbstractContextManager[None]:
        """The global torch switches of this setting, set for a ``with`` block and restored after it."""
        return torch_switches(cudnn_benchmark=self.cudnn_benchmark, tf32=self.tf32, deterministic=self.deterministic)

    def describe(self) -> dict[str, Any]:
        return {k: (str(v).replace("torch.", "") if isinstance(v, torch.dtype) else v) for k, v in asdict(self).items()}


# ---------------------------------------------------------------------------------------------------------------------
# process RNGs and small helpers


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


def unwrap(m: nn.Module) -> nn.Module:
    """The plain module under DDP and torch.compile wrappers."""
    m = getattr(m, "module", m)  # DDP
    return getattr(m, "_orig_mod", m)  # torch.compile


def _item(v: Any) -> float:
    if isinstance(v, torch.Tensor):
        return float(v.detach().float().item())
    return float(v)


def _finite(*values: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(v.detach()).all()) for v in values)


def _no_mark(_phase: str) -> None:
    return None


class EMA:
    """Exponential moving average of a model's parameters and buffers.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` over the first updates (the usual TF/timm rule), so a short
    run's G-EMA follows the trained weights instead of staying at the random start; long runs use ``decay``.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in unwrap(model).state_dict().items():
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


# ---------------------------------------------------------------------------------------------------------------------
# the Trainer


class Trainer:
    """G, D, G-EMA, losses, optimisers and schedulers of one variant, and its optimisation step.

    ``pretrain_steps``: the L1 steps before the GAN phase (default: from the params, ``total_steps``); ``speed``: how it
    runs (default ``Speed.training``). Builds with the process RNGs seeded by ``params.seed`` (the same on every DDP
    rank: identical initial weights). The global switches are not set here: run steps inside ``speed.switches()``.
    """

    def __init__(self, params: Params, variant: str, device: torch.device, *, dist: Dist | None = None,
                 speed: Speed | None = None, pretrain_steps: int | None = None) -> None:
        from facesr.models import io as model_io

        tp = params.train
        self.params, self.variant, self.device = params, variant, device
        self.dist = dist or Dist()
        self.speed = speed or Speed.training(params, device)
        self.pretrain_steps = total_steps(params, 1, variant)[0] if pretrain_steps is None else pretrain_steps
        self.steps_done = 0
        self.fmt = torch.channels_last if self.speed.channels_last else torch.contiguous_format

        seed_everything(params.seed)
        comp = build_components(params, variant, device)
        if tp.init_from:
            model_io.load_init_weights(comp.generator, tp.init_from)
        self.g = comp.generator.to(device, memory_format=self.fmt)
        self.d = comp.discriminator.to(device, memory_format=self.fmt)
        self.gen_loss, self.disc_loss = comp.gen_loss, comp.disc_loss
        if isinstance(self.gen_loss, nn.Module):  # frozen loss networks: no parameter gradients, eval mode
            self.gen_loss = self.gen_loss.to(device, memory_format=self.fmt).eval()
            for p in self.gen_loss.parameters():
                p.requires_grad_(False)
        self.provenance: dict[str, Any] = dict(getattr(self.gen_loss, "provenance", {}) or {})
        if (variant != PSNR_MODEL and tp.batch_size < 2
                and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.d.modules())):
            raise ParamsError("train.batch_size: the discriminator uses batch-norm, which needs at least 2 images per "
                              f"batch (per process); got {tp.batch_size}")

        self.ema = EMA(self.g, tp.ema_decay)
        adam_kw: dict[str, Any] = {"betas": tuple(tp.betas), **({"fused": True} if self.speed.fused_adam else {})}
        # the psnr stage's L1 rate follows pretrain.lr's schedule (a pure function of the step: nothing to save); the
        # inline warm-up of a GAN run without init_from keeps train.lr_g
        self.l1_lr: Callable[[int], float] = params.pretrain.lr_at if variant == PSNR_MODEL else (lambda _s: tp.lr_g)
        self.opt_pre = torch.optim.Adam(self.g.parameters(), lr=self.l1_lr(0), **adam_kw)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=tp.lr_g, **adam_kw)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=tp.lr_d, **adam_kw)
        self.sched_g = torch.optim.lr_scheduler.MultiStepLR(self.opt_g, list(tp.lr_milestones), gamma=tp.lr_gamma)
        self.sched_d = torch.optim.lr_scheduler.MultiStepLR(self.opt_d, list(tp.lr_milestones), gamma=tp.lr_gamma)
        self.g_run, self.d_run = self._wrap(self.g), self._wrap(self.d)

    def _wrap(self, m: nn.Module) -> nn.Module:
        """DDP under torchrun, then torch.compile when asked; the plain module otherwise."""
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            m = DDP(m, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return torch.compile(m) if self.speed.compile else m

    @property
    def phase(self) -> str:
        """``pretrain`` (the next step is an L1 step) or ``gan``."""
        return "pretrain" if self.steps_done < self.pretrain_steps else "gan"

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.speed.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.speed.amp)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        """A batch on the device as float in [0, 1]: uint8 is converted there (4x less to copy)."""
        if x.dtype == torch.uint8:
            x = x.to(self.device, non_blocking=True).float().div_(255.0)
        else:
            x = x.to(self.device)
        return x.contiguous(memory_format=self.fmt)

    # -- the step -------------------------------------------------------------------------------------------------

    def step(self, batch: dict[str, torch.Tensor], mark: Callable[[str], None] = _no_mark) -> dict[str, Any]:
        """One optimisation step of the current phase on ``batch`` ({"lr", "hr"}, uint8 or float NCHW).

        Returns the logged scalars: ``phase``, ``loss_g`` (L1 in an L1 step, else the weighted total), ``loss_<term>``
        (unweighted terms), ``loss_d`` (None in an L1 step), ``lr`` (G's), ``lr_d``. ``mark(name)`` is called after
        "data" (batch on the device), "g_forward", "g_backward", "d_forward", "d_backward" (GAN steps) and "ema": the
        bench times the parts with it. A NaN or infinite loss raises NonFiniteLossError before its backward.
        """
        lr_t, hr_t = self.to_device(batch["lr"]), self.to_device(batch["hr"])
        mark("data")
        phase = self.phase
        row = self._l1_step(lr_t, hr_t) if phase == "pretrain" else self._gan_step(lr_t, hr_t, mark)
        self.ema.update(self.g)
        mark("ema")
        self.steps_done += 1
        return {"phase": phase, **row}

    def _l1_step(self, lr_t: torch.Tensor, hr_t: torch.Tensor) -> dict[str, Any]:
        self.g_run.train()
        for group in self.opt_pre.param_groups:
            group["lr"] = self.l1_lr(self.steps_done)
        self.opt_pre.zero_grad(set_to_none=True)
        with self.autocast():
            sr = self.g_run(lr_t)
            loss = F.l1_loss(sr.float(), hr_t)
        if not _finite(loss):
            raise NonFiniteLossError(f"non-finite L1 loss at step {self.steps_done + 1} (pre-training); stopped",
                                     "pretrain.lr" if self.variant == PSNR_MODEL else "train.lr_g")
        loss.backward()
        self.opt_pre.step()
        value = _item(loss)
        return {"loss_g": value, "loss_pixel": value, "loss_d": None, "lr": self.opt_pre.param_groups[0]["lr"],
                "lr_d": None}

    def _check(self, which: str, loss: torch.Tensor) -> None:
        if not _finite(loss):
            raise NonFiniteLossError(f"non-finite {which} loss at step {self.steps_done + 1} ({self.variant}); stopped",
                                     "train.lr_g" if which == "generator" else "train.lr_d")

    def _gan_step(self, lr_t: torch.Tensor, hr_t: torch.Tensor, mark: Callable[[str], None]) -> dict[str, Any]:
        # the G step reads D through the plain module: D's parameters are frozen there, so no DDP gradient sync
        assert self.gen_loss is not None, "a GAN step needs the variant's loss"
        self.g_run.train()
        self.d_run.train()
        for p in self.d.parameters():
            p.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        with self.autocast():
            sr = self.g_run(lr_t)
            real_logits = self.d(hr_t).detach()
            fake_logits = self.d(sr)
            loss_g, terms = self.gen_loss(sr, hr_t, real_logits, fake_logits)
        self._check("generator", loss_g)
        mark("g_forward")
        loss_g.backward()
        self.opt_g.step()
        mark("g_backward")
        for p in self.d.parameters():
            p.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        with self.autocast():
            # separate calls, as BasicSR: D's batch-norm sees real and fake batches apart
            real_d = self.d_run(hr_t)
            fake_d = self.d_run(sr.detach())
            loss_d = self.disc_loss(real_d.float(), fake_d.float())
        self._check("discriminator", loss_d)
        mark("d_forward")
        loss_d.backward()
        self.opt_d.step()
        mark("d_backward")
        self.sched_g.step()
        self.sched_d.step()
        return {"loss_g": _item(loss_g), **{k if k.startswith("loss") else f"loss_{k}": _item(v)
                                            for k, v in terms.items()},
                "loss_d": _item(loss_d), "lr": self.opt_g.param_groups[0]["lr"],
                "lr_d": self.opt_d.param_groups[0]["lr"]}

    # -- the training state ---------------------------------------------------------------------------------------

    def _parts(self) -> Iterator[tuple[str, Callable[[], Any], Callable[[Any], Any]]]:
        """(name, save, load) of each part of the training state, in load order."""
        g, d = unwrap(self.g), unwrap(self.d)
        yield "generator", g.state_dict, g.load_state_dict
        yield "discriminator", d.state_dict, d.load_state_dict
        yield "ema", self.ema.state_dict, self.ema.load_state_dict
        for name in ("opt_pre", "opt_g", "opt_d"):
            opt = getattr(self, name)
            yield name, opt.state_dict, opt.load_state_dict
        for name in ("sched_g", "sched_d"):
            s = getattr(self, name)
            yield name, (lambda s=s: _sched_state(s)), (lambda st, s=s: _load_sched_state(s, st))
        yield "rng", rng_state, set_rng_state

    def state_dict(self) -> dict[str, Any]:
        """The whole training state: steps done, the phase boundary, every part of ``_parts`` (RNGs included).

        Tensors are the live ones (as ``nn.Module.state_dict``): serialise or copy before the next step.
        """
        return {"step": self.steps_done, "pretrain_steps": self.pretrain_steps,
                **{name: save() for name, save, _ in self._parts()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``'s output; a part that does not fit raises checkpoint.PartMismatch naming it."""
        for name, _, load in self._parts():
            try:
                load(state[name])
            except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                raise PartMismatch(name, first) from None
        self.steps_done = int(state["step"])

    def ema_model(self) -> nn.Module:
        """A CPU copy of G holding the EMA weights, in eval mode (the model that is saved)."""
        import copy

        m = copy.deepcopy(unwrap(self.g)).to("cpu", memory_format=torch.contiguous_format)
        m.load_state_dict({k: v.to("cpu") for k, v in self.ema.shadow.items()})
        return m.eval()


__all__ = ["EMA", "Components", "NonFiniteLossError", "Speed", "Trainer", "amp_dtype",
           "build_components", "rng_state", "seed_everything", "set_rng_state", "total_steps", "unwrap"]
