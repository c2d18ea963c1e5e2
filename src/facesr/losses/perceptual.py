"""Perceptual loss: L1 between VGG19 features (conv5_4, before ReLU) of SR and HR, ImageNet-normalised, frozen VGG.

As BasicSR's ``PerceptualLoss`` in ESRGAN's recipe (``layer_weights: {conv5_4: 1}``, ``use_input_norm``, criterion
L1). The VGG19 weights are torchvision's ImageNet file (``facesr weights``: ``vgg19``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from facesr.losses._guard import load_or_untrained
from facesr.models.vgg import VGG19Features


class PerceptualLoss(nn.Module):
    def __init__(self, layer: str = "conv5_4", allow_untrained: bool = False, seed: int = 0) -> None:
        super().__init__()
        self.vgg, self.provenance = load_or_untrained(
            "vgg19", "perceptual loss (VGG19)", allow_untrained, seed,
            build=lambda: VGG19Features(layer),
            load=lambda net, state: net.load_torchvision(state))

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.vgg(hr)
        return F.l1_loss(self.vgg(sr), target)
