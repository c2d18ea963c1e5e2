"""VGG19 feature extractor for the perceptual loss (torchvision layout, ImageNet normalisation, frozen)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torchvision
from torch import nn

# torchvision vgg19().features indices of the conv layers, named as in BasicSR (conv{block}_{n})
_BLOCKS = (2, 2, 4, 4, 4)


def _layer_index() -> dict[str, int]:
    names: dict[str, int] = {}
    i = 0
    for b, n_conv in enumerate(_BLOCKS, 1):
        for c in range(1, n_conv + 1):
            names[f"conv{b}_{c}"] = i
            names[f"relu{b}_{c}"] = i + 1
            i += 2
        names[f"pool{b}"] = i
        i += 1
    return names


VGG19_LAYERS = _layer_index()
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    """``vgg19().features`` cut after ``layer`` (``conv5_4`` = before its ReLU); input RGB in [0, 1], normalised here.

    Parameters are frozen (``requires_grad=False``) and the module stays in eval mode; gradients still flow to the
    input. State-dict keys ``features.N.weight`` are torchvision's, so ``vgg19-dcbb9e9d.pth`` loads (classifier
    keys ignored).
    """

    def __init__(self, layer: str = "conv5_4") -> None:
        super().__init__()
        if layer not in VGG19_LAYERS:
            raise ValueError(f"unknown VGG19 layer {layer!r}; allowed: {', '.join(VGG19_LAYERS)}")
        self.layer = layer
        # only the conv trunk (torchvision's make_layers, config "E" = VGG19): the 120M-parameter classifier is
        # never built; init as torchvision's VGG (kaiming fan_out) for the untrained case
        full = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"], batch_norm=False)
        self.features = nn.Sequential(*list(full.children())[: VGG19_LAYERS[layer] + 1])
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    def freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG19Features:  # always eval (no dropout/bn here, but be explicit)
        return super().train(False)

    def load_torchvision(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load the ``features.*`` tensors this cut needs from a torchvision VGG19 state dict (strict on those)."""
        own = self.state_dict()
        need = {k: state[k] for k in own if k in state}
        missing = sorted(set(own) - set(need))
        if missing:
            raise KeyError(f"missing {missing[:3]}")
        for k, v in need.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise KeyError(f"{k}: shape {list(v.shape)} vs {list(own[k].shape)}")
        self.load_state_dict(need, strict=True)
        self.freeze()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x - self.mean) / self.std)
