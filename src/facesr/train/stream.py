"""The training data stream and the process group: what each step of each rank reads.

Global step ``s`` consumes batch ``s-1`` of one stream: epoch ``(s-1) // steps_per_epoch``, position
``(s-1) % steps_per_epoch``. The order of an epoch is a permutation seeded by (seed, epoch), split across ranks; the
crops come from ``facesr.data.dataset.TrainPatches`` and depend on (seed, epoch, index). Nothing depends on the run's
length, so a resumed or extended run reads exactly what an uninterrupted one does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from facesr.config import PSNR_MODEL, Params
from facesr.errors import InputError


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
        from facesr.device import resolve_device

        device = resolve_device(device_pref, "train.device")  # this rank's GPU (LOCAL_RANK) or the CPU
        use_cuda = device.type == "cuda"
        if use_cuda:
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        here = True
    return Dist(rank, world, local, here)


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


class _AsFloat(torch.utils.data.Dataset):
    """float32 items in [0, 1] made on the host (BasicSR's ``img2tensor``): the bench's reference data path."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.ds, "set_epoch"):
            self.ds.set_epoch(epoch)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = self.ds[i]
        return {k: item[k].float().div(255.0) for k in ("lr", "hr")}


class EpochStream:
    """Batches of an epoch in a fixed order that depends only on (seed, epoch); can start at any position.

    ``uint8=False`` hands out float32 batches made on the host instead (the bench's reference); ``pin``: pinned memory.
    """

    def __init__(self, dataset: Any, params: Params, dist: Dist, pin: bool, variant: str = "",
                 uint8: bool = True) -> None:
        self.ds = dataset if uint8 else _AsFloat(dataset)
        self.params = params
        self.dist = dist
        self.bs = batch_size(params, variant)
        n = len(dataset)
        self.steps_per_epoch = n // (self.bs * dist.world)
        if self.steps_per_epoch < 1:
            key = "pretrain.batch_size" if variant == PSNR_MODEL else "train.batch_size"
            raise InputError(f"the prepared training split has {n} image(s), fewer than {key} ({self.bs}) x processes "
                             f"({dist.world}); lower {key} or prepare more images")
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

    def forever(self, step: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """Every batch from global step ``step`` on, epoch after epoch (as a run of unlimited length reads them)."""
        while True:
            epoch, pos = divmod(step, self.steps_per_epoch)
            for batch in self.batches(epoch, pos):
                step += 1
                yield batch


__all__ = ["Dist", "EpochStream", "batch_size", "init_distributed", "make_dataset"]
