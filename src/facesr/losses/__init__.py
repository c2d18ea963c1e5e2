"""Losses: pixel (L1), perceptual (VGG19 conv5_4), relativistic-average GAN, PieAPP; variants = weighted sums.

``build_generator_loss(params, variant, device)`` returns a module whose ``forward(sr, hr, real_logits, fake_logits)``
gives ``(total, {term: unweighted value (detached)})`` and whose ``.provenance`` maps each pretrained network used to
``{"status": "real"|"untrained", "sha256", "file"}`` (train writes it to model.json). Terms with weight 0 are not
built (their networks are never loaded). ``discriminator_loss(real_logits, fake_logits)`` is the D side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from facesr.errors import ParamsError
from facesr.losses.adversarial import discriminator_loss, generator_adversarial_loss
from facesr.losses.perceptual import PerceptualLoss
from facesr.losses.pieapp import PieAPPLoss, straight_through_clamp
from facesr.losses.pixel import L1Loss

if TYPE_CHECKING:
    from facesr.config import LossWeights, Params

__all__ = ["GeneratorLoss", "L1Loss", "PerceptualLoss", "PieAPPLoss", "build_generator_loss",
           "discriminator_loss", "generator_adversarial_loss", "straight_through_clamp"]


class GeneratorLoss(nn.Module):
    """Weighted sum of the variant's terms. ``real_logits``/``fake_logits`` may be None (then no GAN term)."""

    def __init__(self, weights: LossWeights, *, perceptual_layer: str = "conv5_4", pieapp_stride: int = 32,
                 allow_untrained: bool = False, seed: int = 0) -> None:
        super().__init__()
        self.weights = {"pixel": weights.pixel, "perceptual": weights.perceptual, "gan": weights.gan,
                        "pieapp": weights.pieapp}
        self.provenance: dict[str, dict] = {}
        self.pixel = L1Loss() if weights.pixel > 0 else None
        self.perceptual = None
        self.pieapp = None
        if weights.perceptual > 0:
            self.perceptual = PerceptualLoss(perceptual_layer, allow_untrained=allow_untrained, seed=seed)
            self.provenance["vgg19"] = self.perceptual.provenance
        if weights.pieapp > 0:
            self.pieapp = PieAPPLoss(pieapp_stride, allow_untrained=allow_untrained, seed=seed + 1)
            self.provenance["pieapp"] = self.pieapp.provenance

    @property
    def untrained(self) -> bool:
        return any(v.get("status") != "real" for v in self.provenance.values())

    def forward(self, sr: torch.Tensor, hr: torch.Tensor, real_logits: torch.Tensor | None = None,
                fake_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        sr = sr.float()
        hr = hr.float()
        terms: dict[str, torch.Tensor] = {}
        total = sr.new_zeros(())
        if self.pixel is not None:
            terms["pixel"] = self.pixel(sr, hr)
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(sr, hr)
        if self.weights["gan"] > 0 and real_logits is not None and fake_logits is not None:
            terms["gan"] = generator_adversarial_loss(real_logits, fake_logits)
        if self.pieapp is not None:
            terms["pieapp"] = self.pieapp(sr, hr)
        for k, v in terms.items():
            total = total + self.weights[k] * v
        return total, {k: v.detach() for k, v in terms.items()}


def build_generator_loss(params: Params, variant: str, device: str | torch.device = "cpu") -> GeneratorLoss:
    """The generator loss of ``params.loss.variants[variant]``, on ``device``, frozen networks in eval mode.

    Missing pretrained weights -> ``UntrainedWeightsError`` (exit 2) unless ``params.allow_untrained_weights``.
    """
    variants = params.loss.variants
    if variant not in variants:
        raise ParamsError(f"loss.variants: unknown variant {variant!r}; defined: {sorted(variants)}")
    loss = GeneratorLoss(variants[variant], perceptual_layer=params.loss.perceptual_layer,
                         pieapp_stride=params.loss.pieapp_stride,
                         allow_untrained=params.allow_untrained_weights, seed=params.seed)
    if params.loss.pieapp_patch != 64 and loss.pieapp is not None:
        raise ParamsError(f"loss.pieapp_patch: PieAPP works on 64x64 patches only, got {params.loss.pieapp_patch}")
    if loss.pieapp is not None and params.data.hr_size < 64:
        raise ParamsError(f"data.hr_size ({params.data.hr_size}) is below PieAPP's 64-pixel patch; set "
                          f"loss.variants.{variant}.pieapp: 0 or a larger hr_size")
    loss = loss.to(device)
    for p in loss.parameters():
        p.requires_grad_(False)
    return loss.eval()
