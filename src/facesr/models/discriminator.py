"""Discriminators. Both take an RGB batch ``[N, 3, hr_size, hr_size]`` in [0, 1] and return one logit per image,
shape ``[N, 1]`` (the relativistic-average loss in ``facesr.losses.adversarial`` works on any shape, maps included).

* ``vgg`` -- ESRGAN's baseline, BasicSR's ``VGGStyleDiscriminator`` (same module names, so BasicSR ``net_d``
  checkpoints for 128 and 256 px load): ten convs (3x3 stride 1 / 4x4 stride 2 pairs), batch-norm, LeakyReLU 0.2,
  five halvings (128 -> 4; 256 adds BasicSR's conv5_* pair), then Linear(8*nf*4*4, 100) -> LeakyReLU ->
  Linear(100, 1). Other sizes divisible by 32 work (the first linear layer grows with the last map).
* ``skip_relu`` -- the paper's discriminator: the same VGG-style encoder with ReLU activations, plus skip connections
  that carry features from *every* scale to the classifier: each stage's feature map is global-average- and
  max-pooled, and these vectors are concatenated with the flattened last map before the MLP head (ReLU). This is the
  "pooled features from every scale concatenated into the classifier" design of the paper's public code; we
  chose it over Real-ESRGAN's U-Net because it keeps one logit per image (the paper's relativistic-average formulation
  on image-level scores), is a small change to the ESRGAN baseline (a clean ablation), and lets low-level texture
  statistics from the high-resolution stages reach the decision directly.
"""

from __future__ import annotations

import torch
from torch import nn


def _check_input(x: torch.Tensor, size: int, name: str) -> None:
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != size or x.shape[3] != size:
        raise ValueError(f"{name}: expected input [N, 3, {size}, {size}], got {list(x.shape)}")


class VGGStyleDiscriminator(nn.Module):
    """ESRGAN's VGG-style discriminator (BasicSR ``VGGStyleDiscriminator`` keys), LeakyReLU 0.2."""

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, input_size: int = 128) -> None:
        super().__init__()
        if input_size % 32 or input_size < 32:
            raise ValueError(f"vgg discriminator: input size {input_size} must be a multiple of 32")
        self.input_size = input_size
        nf = num_feat
        self.conv0_0 = nn.Conv2d(num_in_ch, nf, 3, 1, 1, bias=True)
        self.conv0_1 = nn.Conv2d(nf, nf, 4, 2, 1, bias=False)
        self.bn0_1 = nn.BatchNorm2d(nf, affine=True)
        self.conv1_0 = nn.Conv2d(nf, nf * 2, 3, 1, 1, bias=False)
        self.bn1_0 = nn.BatchNorm2d(nf * 2, affine=True)
        self.conv1_1 = nn.Conv2d(nf * 2, nf * 2, 4, 2, 1, bias=False)
        self.bn1_1 = nn.BatchNorm2d(nf * 2, affine=True)
        self.conv2_0 = nn.Conv2d(nf * 2, nf * 4, 3, 1, 1, bias=False)
        self.bn2_0 = nn.BatchNorm2d(nf * 4, affine=True)
        self.conv2_1 = nn.Conv2d(nf * 4, nf * 4, 4, 2, 1, bias=False)
        self.bn2_1 = nn.BatchNorm2d(nf * 4, affine=True)
        self.conv3_0 = nn.Conv2d(nf * 4, nf * 8, 3, 1, 1, bias=False)
        self.bn3_0 = nn.BatchNorm2d(nf * 8, affine=True)
        self.conv3_1 = nn.Conv2d(nf * 8, nf * 8, 4, 2, 1, bias=False)
        self.bn3_1 = nn.BatchNorm2d(nf * 8, affine=True)
        self.conv4_0 = nn.Conv2d(nf * 8, nf * 8, 3, 1, 1, bias=False)
        self.bn4_0 = nn.BatchNorm2d(nf * 8, affine=True)
        self.conv4_1 = nn.Conv2d(nf * 8, nf * 8, 4, 2, 1, bias=False)
        self.bn4_1 = nn.BatchNorm2d(nf * 8, affine=True)
        # BasicSR adds conv5_* / bn5_* for 256 px so the last map is 4x4; we continue the same way for larger powers
        # of two (conv6_* ...). Other sizes keep the 128 layout with a larger last map.
        final = input_size // 32
        self.extra_stages = 0
        while final > 4 and final % 2 == 0:
            i = 5 + self.extra_stages
            setattr(self, f"conv{i}_0", nn.Conv2d(nf * 8, nf * 8, 3, 1, 1, bias=False))
            setattr(self, f"bn{i}_0", nn.BatchNorm2d(nf * 8, affine=True))
            setattr(self, f"conv{i}_1", nn.Conv2d(nf * 8, nf * 8, 4, 2, 1, bias=False))
            setattr(self, f"bn{i}_1", nn.BatchNorm2d(nf * 8, affine=True))
            self.extra_stages += 1
            final //= 2
        self.linear1 = nn.Linear(nf * 8 * final * final, 100)
        self.linear2 = nn.Linear(100, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.input_size, "vgg discriminator")
        act = self.lrelu
        feat = act(self.conv0_0(x))
        feat = act(self.bn0_1(self.conv0_1(feat)))
        feat = act(self.bn1_0(self.conv1_0(feat)))
        feat = act(self.bn1_1(self.conv1_1(feat)))
        feat = act(self.bn2_0(self.conv2_0(feat)))
        feat = act(self.bn2_1(self.conv2_1(feat)))
        feat = act(self.bn3_0(self.conv3_0(feat)))
        feat = act(self.bn3_1(self.conv3_1(feat)))
        feat = act(self.bn4_0(self.conv4_0(feat)))
        feat = act(self.bn4_1(self.conv4_1(feat)))
        for i in range(5, 5 + self.extra_stages):
            feat = act(getattr(self, f"bn{i}_0")(getattr(self, f"conv{i}_0")(feat)))
            feat = act(getattr(self, f"bn{i}_1")(getattr(self, f"conv{i}_1")(feat)))
        feat = feat.flatten(1)
        feat = act(self.linear1(feat))
        return self.linear2(feat)


class _Stage(nn.Module):
    """conv3x3 (stride 1) -> BN -> ReLU -> conv4x4 (stride 2) -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int, first: bool = False) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(cin, cout, 3, 1, 1, bias=first)
        self.bn0 = nn.Identity() if first else nn.BatchNorm2d(cout)
        self.conv1 = nn.Conv2d(cout, cout, 4, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn0(self.conv0(x)))
        return self.relu(self.bn1(self.conv1(x)))


class SkipReLUDiscriminator(nn.Module):
    """The paper's discriminator: VGG-style encoder, ReLU, multi-scale pooled skip features into the classifier."""

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, input_size: int = 128) -> None:
        super().__init__()
        if input_size % 32 or input_size < 32:
            raise ValueError(f"skip_relu discriminator: input size {input_size} must be a multiple of 32")
        self.input_size = input_size
        nf = num_feat
        widths = [nf, nf * 2, nf * 4, nf * 8, nf * 8]
        stages = []
        cin = num_in_ch
        for i, w in enumerate(widths):
            stages.append(_Stage(cin, w, first=(i == 0)))
            cin = w
        self.stages = nn.ModuleList(stages)
        final = input_size // 32
        skip_dim = 2 * sum(widths)  # avg + max pooled vector of every scale
        self.linear1 = nn.Linear(widths[-1] * final * final + skip_dim, 100)
        self.linear2 = nn.Linear(100, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.input_size, "skip_relu discriminator")
        skips = []
        feat = x
        for stage in self.stages:
            feat = stage(feat)
            skips.append(feat.mean(dim=(2, 3)))
            skips.append(feat.amax(dim=(2, 3)))
        head = torch.cat([feat.flatten(1), *skips], dim=1)
        return self.linear2(self.relu(self.linear1(head)))


DISCRIMINATORS = {"skip_relu": SkipReLUDiscriminator, "vgg": VGGStyleDiscriminator}
