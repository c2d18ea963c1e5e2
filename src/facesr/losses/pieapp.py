"""PieAPP loss: a differentiable, whole-image, sign-safe PieAPP term for the generator.

What the term guarantees (docs/models.md):

* gradient: computed with autograd on, back to the generator (the PieAPP network itself is frozen);
* coverage: 64x64 patches on a ``loss.pieapp_stride`` grid plus a last row/column at ``H-64`` / ``W-64``, so every
  pixel is in at least one patch (``facesr.models.pieapp.patch_positions``);
* range: SR is clamped into [0, 1] with a *straight-through* clamp (forward sees the clamped image PieAPP was trained
  on; backward passes the gradient unchanged, so out-of-range pixels still learn -- a hard clamp would give them zero
  gradient);
* sign: PieAPP predicts an error (higher = worse) that can be negative, and an image scored against itself gets a
  constant ``s0`` (the network's offset), not 0. The loss is ``mean_n |S(sr_n, hr_n) - s0|``: zero exactly when SR
  matches HR, positive otherwise. (``abs(S)`` would be minimised where S crosses 0, not at the reference, and would
  flip the gradient's sign for negative scores.)
"""

from __future__ import annotations

import torch
from torch import nn

from facesr.losses._guard import load_or_untrained
from facesr.models.pieapp import PieAPPNet, fix_state_dict


def _load(net: nn.Module, state: dict) -> None:
    net.load_state_dict(fix_state_dict(state), strict=True)


def straight_through_clamp(x: torch.Tensor, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    return x + (x.clamp(lo, hi) - x).detach()


class PieAPPLoss(nn.Module):
    def __init__(self, stride: int = 32, allow_untrained: bool = False, seed: int = 0) -> None:
        super().__init__()
        self.stride = stride
        self.net, self.provenance = load_or_untrained(
            "pieapp", "PieAPP loss", allow_untrained, seed, build=PieAPPNet, load=_load)
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.net.eval()

    def train(self, mode: bool = True) -> PieAPPLoss:  # the network stays frozen in eval mode
        super().train(mode)
        self.net.eval()
        return self

    def scores(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """Per-image PieAPP scores of SR against HR (after the straight-through clamp)."""
        x = straight_through_clamp(sr.float())
        ref = hr.float().clamp(0, 1)
        return self.net.score(x, ref, stride=self.stride)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        # fp32 even under bf16 autocast: the loss is a small difference of two scores (bf16 keeps ~3 digits)
        with torch.autocast(device_type=sr.device.type, enabled=False):
            s = self.scores(sr, hr)
            return (s - self.net.identity_score()).abs().mean()
