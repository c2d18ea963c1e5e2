"""Networks: the ESRGAN generator, the discriminators, PieAPP and VGG19 feature extractors, and model I/O.

API (docs/architecture.md section 3): ``RRDBNet``, ``build_generator(params)``, ``build_discriminator(params)``,
``io.save_generator``, ``io.load_generator``, ``io.load_init_weights``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from facesr.models import io
from facesr.models.discriminator import DISCRIMINATORS, SkipReLUDiscriminator, VGGStyleDiscriminator
from facesr.models.rrdbnet import RRDB, RRDBNet, ResidualDenseBlock, count_parameters

if TYPE_CHECKING:
    from facesr.config import Params

__all__ = [
    "RRDB", "RRDBNet", "ResidualDenseBlock", "SkipReLUDiscriminator", "VGGStyleDiscriminator",
    "build_discriminator", "build_generator", "count_parameters", "io",
]


def build_generator(params: Params) -> RRDBNet:
    """RRDBNet from ``params.model.generator`` and ``params.data.scale`` (3 channels in and out)."""
    g = params.model.generator
    return RRDBNet(num_in_ch=3, num_out_ch=3, scale=params.data.scale, num_feat=g.num_feat,
                   num_block=g.num_block, num_grow_ch=g.num_grow_ch, residual=g.residual)


def build_discriminator(params: Params) -> nn.Module:
    """Discriminator ``params.model.discriminator.type`` for ``params.data.hr_size`` inputs; one logit per image."""
    from facesr.errors import ParamsError

    d = params.model.discriminator
    cls = DISCRIMINATORS.get(d.type)
    if cls is None:
        raise ParamsError(f"model.discriminator.type: unknown {d.type!r}; allowed: {sorted(DISCRIMINATORS)}")
    try:
        return cls(num_in_ch=3, num_feat=d.num_feat, input_size=params.data.hr_size)
    except ValueError as exc:
        raise ParamsError(f"data.hr_size / model.discriminator: {exc}") from None
