"""Relativistic average GAN loss (ESRGAN; BasicSR ``ESRGANModel``), binary cross-entropy on logits.

With C(x) the discriminator's logit and E[.] the batch mean:

* generator:     ``(BCE(C(hr) - E[C(sr)], 0) + BCE(C(sr) - E[C(hr)], 1)) / 2``  (``real_logits`` detached by the caller
  or not -- only the fake branch needs a gradient to G);
* discriminator: ``BCE(C(hr) - E[C(sr)].detach(), 1) / 2 + BCE(C(sr) - E[C(hr)].detach(), 0) / 2``: each half sends a
  gradient through one branch only, exactly as BasicSR's two backward passes.

Logits may be one per image (``[N, 1]``, our discriminators) or maps (``[N, 1, h, w]``): the mean is over all
elements, and BCE averages over all elements.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def generator_adversarial_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    real_logits = real_logits.float()
    fake_logits = fake_logits.float()
    l_real = _bce(real_logits - fake_logits.mean(), 0.0)
    l_fake = _bce(fake_logits - real_logits.mean(), 1.0)
    return (l_real + l_fake) / 2


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Relativistic average D loss. Call with ``fake_logits = D(sr.detach())``."""
    real_logits = real_logits.float()
    fake_logits = fake_logits.float()
    l_real = _bce(real_logits - fake_logits.detach().mean(), 1.0) * 0.5
    l_fake = _bce(fake_logits - real_logits.detach().mean(), 0.0) * 0.5
    return l_real + l_fake
