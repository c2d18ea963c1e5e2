"""ESRGAN generator: RRDBNet (Residual-in-Residual Dense Blocks, no batch-norm).

The module tree and therefore the state-dict keys are those of BasicSR's ``basicsr/archs/rrdbnet_arch.py``
(``conv_first``, ``body.N.rdb{1,2,3}.conv{1..5}``, ``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``,
``conv_last``), so public ESRGAN / Real-ESRGAN checkpoints load into it and our checkpoints load into BasicSR.
At the defaults (23 blocks, 64 features, growth 32, x4) it has exactly 16,697,987 parameters.

``residual="bicubic"`` (facesr's default, ``model.generator.residual``) adds the bicubic upsampling of the input to the
network's output, so the convolutions learn only the detail that bicubic misses; ``conv_last`` then starts at a tenth
of its usual initial scale, so an untrained network already outputs (almost) the bicubic image, colours and borders
included. This adds no parameter: the state dict is unchanged. ``residual="none"`` is ESRGAN's exact forward pass;
use it to start from (or to export to) public ESRGAN / BasicSR checkpoints, whose weights were trained without it.

Scale 4 is the ESRGAN layout (two nearest-neighbour x2 upsamplings). Scale 2 follows BasicSR (pixel-unshuffle the
input by 2, so ``conv_first`` takes 12 channels, then the same two upsamplings). Scale 8 (not in BasicSR) adds a third
upsampling conv ``conv_up3``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn import init as nn_init

SUPPORTED_SCALES = (2, 4, 8)
RESIDUALS = ("bicubic", "none")


def _init_weights(modules: list[nn.Module], scale: float = 1.0) -> None:
    """Kaiming-normal init scaled down (BasicSR ``default_init_weights``): keeps the deep residual net stable."""
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn_init.kaiming_normal_(m.weight)
                m.weight.data *= scale
                if m.bias is not None:
                    m.bias.data.zero_()


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; output scaled by 0.2 and added to the input."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        _init_weights([self.conv1, self.conv2, self.conv3, self.conv4, self.conv5], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual in Residual Dense Block: three dense blocks, residual scaling 0.2."""

    def __init__(self, num_feat: int, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rdb3(self.rdb2(self.rdb1(x)))
        return out * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN generator (BasicSR-compatible keys). Input and output in [0, 1] (not clamped), NCHW RGB."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, scale: int = 4, num_feat: int = 64,
                 num_block: int = 23, num_grow_ch: int = 32, residual: str = "bicubic") -> None:
        super().__init__()
        if scale not in SUPPORTED_SCALES:
            raise ValueError(f"RRDBNet: scale {scale} not supported; allowed: {list(SUPPORTED_SCALES)}")
        if residual not in RESIDUALS:
            raise ValueError(f"RRDBNet: residual {residual!r} not supported; allowed: {list(RESIDUALS)}")
        if residual == "bicubic" and num_in_ch != num_out_ch:
            raise ValueError("RRDBNet: residual 'bicubic' needs as many output channels as input channels")
        self.residual = residual
        self.scale = scale
        self.num_in_ch = num_in_ch
        self.num_out_ch = num_out_ch
        self.num_feat = num_feat
        self.num_block = num_block
        self.num_grow_ch = num_grow_ch
        first_in = num_in_ch * 4 if scale == 2 else num_in_ch
        self.conv_first = nn.Conv2d(first_in, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        if scale == 8:
            self.conv_up3 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        if residual == "bicubic":  # start at (almost) the bicubic image: the convs add detail to it
            with torch.no_grad():
                self.conv_last.weight.mul_(0.1)
                if self.conv_last.bias is not None:
                    self.conv_last.bias.zero_()

    def config(self) -> dict[str, int | str]:
        """The architecture as written to model.json."""
        return {"arch": "RRDBNet", "num_in_ch": self.num_in_ch, "num_out_ch": self.num_out_ch,
                "num_feat": self.num_feat, "num_block": self.num_block, "num_grow_ch": self.num_grow_ch,
                "scale": self.scale, "residual": self.residual}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._body(x)
        if self.residual == "bicubic":
            base = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
            out = out + base.to(out.dtype)
        return out

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        feat = F.pixel_unshuffle(x, 2) if self.scale == 2 else x
        feat = self.conv_first(feat)
        body_feat = self.conv_body(self.body(feat))
        feat = feat + body_feat
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        if self.scale == 8:
            feat = self.lrelu(self.conv_up3(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
