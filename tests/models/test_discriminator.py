"""Discriminators: shapes, activations, skip connections, gradients, parameter sanity."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facesr.config import resolve
from facesr.errors import ParamsError
from facesr.models import SkipReLUDiscriminator, VGGStyleDiscriminator, build_discriminator


def _params(dtype: str, hr: int = 128, nf: int = 8):
    return resolve({"data": {"hr_size": hr}, "model": {"discriminator": {"type": dtype, "num_feat": nf}}},
                   profile="paper")


@pytest.mark.parametrize("dtype,cls", [("skip_relu", SkipReLUDiscriminator), ("vgg", VGGStyleDiscriminator)])
@pytest.mark.parametrize("hr", [64, 128])
def test_one_logit_per_image_and_gradient(dtype, cls, hr):
    torch.manual_seed(0)
    d = build_discriminator(_params(dtype, hr))
    assert isinstance(d, cls)
    x = torch.rand(3, 3, hr, hr, requires_grad=True)
    out = d(x)
    assert out.shape == (3, 1)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_activations():
    skip = SkipReLUDiscriminator(num_feat=8)
    vgg = VGGStyleDiscriminator(num_feat=8)
    assert any(isinstance(m, nn.ReLU) for m in skip.modules())
    assert not any(isinstance(m, nn.LeakyReLU) for m in skip.modules())
    lre = [m for m in vgg.modules() if isinstance(m, nn.LeakyReLU)]
    assert lre and all(m.negative_slope == 0.2 for m in lre)


def test_vgg_keys_match_basicsr():
    keys = set(VGGStyleDiscriminator(num_feat=8).state_dict())
    for name in ("conv0_0.weight", "conv0_0.bias", "conv0_1.weight", "bn0_1.weight", "conv4_1.weight",
                 "bn4_1.running_mean", "linear1.weight", "linear2.bias"):
        assert name in keys
    assert "conv0_1.bias" not in keys  # BasicSR: bias=False after the first conv
    assert VGGStyleDiscriminator(num_feat=64).linear1.in_features == 64 * 8 * 4 * 4
    # VGGStyleDiscriminator(3, 64, 128): summed by hand from BasicSR's layer list (convs, BNs, 8192*100+100, 101)
    assert sum(p.numel() for p in VGGStyleDiscriminator(num_feat=64).parameters()) == 14_499_401
    # 256 px: BasicSR adds the conv5_*/bn5_* pair and keeps a 4x4 last map
    d256 = VGGStyleDiscriminator(num_feat=8, input_size=256)
    keys256 = set(d256.state_dict())
    assert {"conv5_0.weight", "bn5_0.weight", "conv5_1.weight", "bn5_1.weight"} <= keys256
    assert "conv6_0.weight" not in keys256 and d256.linear1.in_features == 8 * 8 * 4 * 4
    assert d256(torch.rand(2, 3, 256, 256)).shape == (2, 1)


def test_skip_connections_reach_the_head():
    """Features of the first (highest-resolution) stage reach linear1 directly, not only through deeper stages."""
    torch.manual_seed(0)
    d = SkipReLUDiscriminator(num_feat=8).eval()
    nf = 8
    final = 8 * 8 * 4 * 4
    assert d.linear1.in_features == final + 2 * (nf + 2 * nf + 4 * nf + 8 * nf + 8 * nf)
    # zero every weight of linear1 except the columns of stage 0's pooled vector: output must still depend on x
    with torch.no_grad():
        w = d.linear1.weight
        keep = torch.zeros_like(w)
        keep[:, final:final + nf] = 1
        w.mul_(keep)
    a = d(torch.rand(2, 3, 128, 128))
    b = d(torch.rand(2, 3, 128, 128))
    assert not torch.allclose(a, b)


def test_bad_sizes():
    with pytest.raises(ParamsError, match="hr_size"):
        build_discriminator(_params("vgg", hr=48))
    d = build_discriminator(_params("skip_relu"))
    with pytest.raises(ValueError, match="128"):
        d(torch.rand(1, 3, 64, 64))
