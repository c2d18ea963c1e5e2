"""PieAPP v0.1 (Prashnani et al., CVPR 2018) as a differentiable network, state-dict compatible with piq 0.8.0.

``PieAPPNet`` has piq's ``PieAPPModel`` module names and maths (so piq's published ``PieAPPv0.1.pth`` loads, and the
scores equal ``piq.PieAPP``'s on the same state dict and the same patches -- tested). What differs from piq:

* patches: ``patch_positions`` covers the whole image -- a grid with the given stride plus a last patch at
  ``H - 64`` (``W - 64``) when the stride does not land there (piq's ``unfold`` drops the border remainder);
* gradients flow to the distorted input (piq needs ``enable_grad=True``);
* ``score(x, ref)`` returns one score per image, the weighted mean of patch scores (piq's formula).

PieAPP scores predict the perceptual error of ``x`` w.r.t. ``ref``: higher = worse, and they can be negative. For two
identical images every patch gives the same value, ``identity_score()`` (the network's offset).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

PATCH = 64


def patch_positions(size: int, patch: int = PATCH, stride: int = 32) -> list[int]:
    """Top-left coordinates along one axis: ``0, stride, 2*stride, ...`` plus ``size - patch`` if not on the grid."""
    if size < patch:
        raise ValueError(f"PieAPP: image side {size} is smaller than the {patch}-pixel patch")
    if stride <= 0:
        raise ValueError(f"PieAPP: stride must be positive, got {stride}")
    pos = list(range(0, size - patch + 1, stride))
    if pos[-1] != size - patch:
        pos.append(size - patch)
    return pos


def extract_patches(x: torch.Tensor, patch: int = PATCH, stride: int = 32) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N * P, C, patch, patch]`` (image-major), covering every pixel."""
    n, c, h, w = x.shape
    ys, xs = patch_positions(h, patch, stride), patch_positions(w, patch, stride)
    if ys == list(range(0, h - patch + 1, stride)) and xs == list(range(0, w - patch + 1, stride)):
        p = x.unfold(2, patch, stride).unfold(3, patch, stride)  # N, C, ny, nx, patch, patch
    else:
        p = torch.stack([torch.stack([x[:, :, y:y + patch, xx:xx + patch] for xx in xs], 2) for y in ys], 2)
    return p.permute(0, 2, 3, 1, 4, 5).reshape(n * len(ys) * len(xs), c, patch, patch)


class PieAPPNet(nn.Module):
    """piq's PieAPPModel, same keys: conv1..conv11, fc1_score, fc2_score, fc1_weight, fc2_weight, ref_score_subtract."""

    FEATURES = 64
    EPS = 1e-6

    def __init__(self) -> None:
        super().__init__()
        f = self.FEATURES
        chans = [(3, f), (f, f), (f, f), (f, 2 * f), (2 * f, 2 * f), (2 * f, 2 * f), (2 * f, 4 * f), (4 * f, 4 * f),
                 (4 * f, 4 * f), (4 * f, 8 * f), (8 * f, 8 * f)]
        for i, (cin, cout) in enumerate(chans, 1):
            setattr(self, f"conv{i}", nn.Conv2d(cin, cout, kernel_size=3, padding=1))
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1_score = nn.Linear(120832, 512)
        self.fc2_score = nn.Linear(512, 1)
        self.fc1_weight = nn.Linear(2048, 512)
        self.fc2_weight = nn.Linear(512, 1)
        self.ref_score_subtract = nn.Linear(1, 1)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """64x64 patches in [0, 255] -> (multi-scale features [P, 120832], last-layer features [P, 2048])."""
        if x.shape[-2:] != (PATCH, PATCH):
            raise ValueError(f"PieAPP: expected {PATCH}x{PATCH} patches, got {list(x.shape)}")
        x3 = F.relu(self.conv3(self.pool(F.relu(self.conv2(F.relu(self.conv1(x)))))))
        x5 = F.relu(self.conv5(self.pool(F.relu(self.conv4(x3)))))
        x7 = F.relu(self.conv7(self.pool(F.relu(self.conv6(x5)))))
        x9 = F.relu(self.conv9(self.pool(F.relu(self.conv8(x7)))))
        x11 = F.relu(self.conv11(self.pool(F.relu(self.conv10(x9))))).flatten(1)
        feats = torch.cat((x3.flatten(1), x5.flatten(1), x7.flatten(1), x9.flatten(1), x11), dim=1)
        return feats, x11

    def compare(self, feat_diff: torch.Tensor, weight_diff: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reference - distorted) features -> (patch scores, patch weights), as piq's ``compute_difference``."""
        scores = self.ref_score_subtract(0.01 * self.fc2_score(F.relu(self.fc1_score(feat_diff))))
        weights = self.fc2_weight(F.relu(self.fc1_weight(weight_diff))) + self.EPS
        return scores, weights

    def identity_score(self) -> torch.Tensor:
        """The score of an image against itself (zero feature difference): a constant of the weights."""
        p = next(self.parameters())
        s, _ = self.compare(torch.zeros(1, 120832, device=p.device, dtype=p.dtype),
                            torch.zeros(1, 2048, device=p.device, dtype=p.dtype))
        return s.reshape(())

    def score(self, x: torch.Tensor, ref: torch.Tensor, stride: int = 32, data_range: float = 1.0,
              ref_features: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Per-image PieAPP score ``[N]`` of ``x`` against ``ref`` (both ``[N, 3, H, W]`` in [0, data_range]).

        Gradients flow into ``x`` (and ``ref`` if it requires grad); weighted mean over whole-image patches.
        """
        if x.shape != ref.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"PieAPP: expected two [N, 3, H, W] tensors of one shape, got {list(x.shape)} and "
                             f"{list(ref.shape)}")
        n = x.shape[0]
        fx, wx = self.features(extract_patches(x * (255.0 / data_range), PATCH, stride))
        if ref_features is None:
            fr, wr = self.features(extract_patches(ref * (255.0 / data_range), PATCH, stride))
        else:
            fr, wr = ref_features
        s, w = self.compare(fr - fx, wr - wx)
        s, w = s.reshape(n, -1), w.reshape(n, -1)
        return (s * w).sum(1) / w.sum(1)


def fix_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The published file stores ``ref_score_subtract.weight`` as shape [1]; nn.Linear(1, 1) wants [1, 1] (as piq)."""
    out = dict(state)
    w = out.get("ref_score_subtract.weight")
    if w is not None and w.dim() == 1:
        out["ref_score_subtract.weight"] = w.unsqueeze(1)
    return out
