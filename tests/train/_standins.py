"""Stand-ins for modules other engineers are still writing (used only while those modules are missing)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facesr import train as train_mod

HAVE_DATASET = importlib.util.find_spec("facesr.data.dataset") is not None
HAVE_LOSSES = (Path(train_mod.__file__).parent / "losses" / "__init__.py").exists()


class _FakePatches(torch.utils.data.Dataset):
    """Stand-in for facesr.data.dataset.TrainPatches: random crops of tiny images, depending on (seed, epoch, i)."""

    def __init__(self, n: int, hr: int, scale: int, seed: int) -> None:
        g = torch.Generator().manual_seed(1234)
        self.imgs = (torch.rand(n, 3, hr + 8, hr + 8, generator=g) * 255).to(torch.uint8)
        self.hr, self.scale, self.seed, self.epoch = hr, scale, seed, 0

    def set_epoch(self, e: int) -> None:
        self.epoch = e

    def __len__(self) -> int:
        return len(self.imgs)

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, i])
        y, x = rng.integers(0, 9, size=2)
        hr = self.imgs[i, :, y : y + self.hr, x : x + self.hr].contiguous()
        lr = F.interpolate(hr[None].float(), scale_factor=1 / self.scale, mode="bicubic", antialias=True)
        return {"lr": lr[0].round().clamp(0, 255).to(torch.uint8), "hr": hr}


class _FakeGenLoss(nn.Module):
    """Stand-in for facesr.losses.build_generator_loss: weighted L1 + RaGAN + (pieapp) a feature term."""

    def __init__(self, params, variant: str) -> None:
        super().__init__()
        self.w = params.loss.variants[variant]
        self.feat = nn.Conv2d(3, 4, 3, padding=1)
        self.provenance = {"vgg19": {"status": "untrained", "sha256": None}}

    def forward(self, sr, hr, real_logits, fake_logits):
        pixel = F.l1_loss(sr, hr)
        perc = F.l1_loss(self.feat(sr), self.feat(hr))
        gan = F.binary_cross_entropy_with_logits(fake_logits - real_logits.mean(), torch.ones_like(fake_logits))
        pie = (sr - hr).pow(2).mean().sqrt()
        terms = {"pixel": pixel, "perceptual": perc, "gan": gan}
        total = self.w.pixel * pixel + self.w.perceptual * perc + self.w.gan * gan
        if self.w.pieapp > 0:
            terms["pieapp"] = pie
            total = total + self.w.pieapp * pie
        return total, terms


def _fake_d_loss(real, fake):
    return 0.5 * (
        F.binary_cross_entropy_with_logits(real - fake.mean(), torch.ones_like(real))
        + F.binary_cross_entropy_with_logits(fake - real.mean(), torch.zeros_like(fake))
    )


def fake_prepared(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"format": "facesr.prepared/1", "fake": True}))
    return folder


def fake_dataset(params, data):
    return _FakePatches(8, params.data.hr_size, params.data.scale, params.seed)


def fake_components(params, variant, device):
    from facesr.models import build_discriminator, build_generator

    return train_mod.Components(build_generator(params), build_discriminator(params), _FakeGenLoss(params, variant),
                                _fake_d_loss)


def install(data_needed: bool) -> None:
    """Patch facesr.train in this process where the real modules are missing."""
    if data_needed and not HAVE_DATASET:
        train_mod.make_dataset = fake_dataset
    if not HAVE_LOSSES:
        train_mod.build_components = fake_components
