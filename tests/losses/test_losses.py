"""Losses: gradients into G through every term, the untrained-weights guard, variants, relativistic GAN, VGG."""

from __future__ import annotations

import hashlib
import logging

import pytest
import torch
import torchvision

from facesr import weights as w
from facesr.config import resolve
from facesr.errors import ParamsError, UntrainedWeightsError
from facesr.losses import (
    GeneratorLoss,
    build_generator_loss,
    discriminator_loss,
    generator_adversarial_loss,
)
from facesr.models import RRDBNet
from facesr.models.vgg import VGG19Features


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(w.ENV_DIR, str(tmp_path / "weights"))
    monkeypatch.delenv(w.ENV_TRUST, raising=False)
    return tmp_path / "weights"


def _params(allow: bool = True, **extra):
    raw = {"allow_untrained_weights": allow, "data": {"hr_size": 64}, **extra}
    return resolve(raw, profile="paper")


@pytest.fixture(scope="module")
def pieapp_loss_module():
    """One untrained l1_vgg_pieapp loss for the module's gradient tests (building PieAPP takes a few seconds)."""
    mp = pytest.MonkeyPatch()
    import tempfile

    mp.setenv(w.ENV_DIR, tempfile.mkdtemp())
    try:
        yield build_generator_loss(_params(True), "l1_vgg_pieapp")
    finally:
        mp.undo()


def test_guard_refuses_random_weights(empty_cache):
    with pytest.raises(UntrainedWeightsError) as ei:
        build_generator_loss(_params(False), "l1_vgg")
    msg = str(ei.value)
    assert "vgg19-dcbb9e9d.pth" in msg and "facesr weights import" in msg and "allow_untrained_weights" in msg
    with pytest.raises(UntrainedWeightsError, match="PieAPPv0.1.pth"):
        build_generator_loss(_params(False, loss={"variants": {"l1_vgg_pieapp": {"perceptual": 0, "pieapp": 1}}}),
                             "l1_vgg_pieapp")


def test_untrained_allowed_warns_marks_and_is_seeded(caplog):
    p = _params(True, loss={"variants": {"l1_vgg": {"pixel": 0.01, "perceptual": 1.0, "gan": 0.005, "pieapp": 0}}})
    state = torch.random.get_rng_state()
    with caplog.at_level(logging.WARNING, logger="facesr.losses"):
        a = build_generator_loss(p, "l1_vgg")
    assert torch.equal(state, torch.random.get_rng_state())  # caller's RNG untouched
    assert any("RANDOM weights" in r.getMessage() and "vgg19" in r.getMessage() for r in caplog.records)
    assert a.provenance == {"vgg19": {"status": "untrained", "sha256": None, "file": "vgg19-dcbb9e9d.pth"}}
    assert a.untrained
    b = build_generator_loss(p, "l1_vgg")
    assert torch.equal(a.perceptual.vgg.features[0].weight, b.perceptual.vgg.features[0].weight)
    c = build_generator_loss(_params(True, seed=5), "l1_vgg")
    assert not torch.equal(a.perceptual.vgg.features[0].weight, c.perceptual.vgg.features[0].weight)


def test_zero_weight_terms_are_not_built(monkeypatch):
    calls = []
    real = w.load_state_dict
    monkeypatch.setattr(w, "load_state_dict", lambda name: calls.append(name) or real(name))
    p = _params(False, loss={"variants": {"l1_vgg": {"pixel": 1.0, "perceptual": 0, "gan": 0.005, "pieapp": 0}}})
    loss = build_generator_loss(p, "l1_vgg")  # allow_untrained false, yet no error: nothing to load
    assert calls == [] and loss.perceptual is None and loss.pieapp is None and loss.provenance == {}
    sr, hr = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    total, terms = loss(sr, hr, torch.randn(2, 1), torch.randn(2, 1))
    assert set(terms) == {"pixel", "gan"}
    assert torch.allclose(total, terms["pixel"] + 0.005 * terms["gan"])


def test_real_vgg_file_is_used(empty_cache):
    """A (fake) torchvision VGG19 file in the cache is loaded: provenance real, features equal the file's."""
    torch.manual_seed(3)
    feats = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"])  # vgg19().features, no classifier
    state = {f"features.{k}": v for k, v in feats.state_dict().items()}
    empty_cache.mkdir(parents=True)
    f = empty_cache / "vgg19-dcbb9e9d.pth"
    torch.save(state, f)
    digest = hashlib.sha256(f.read_bytes()).hexdigest()
    p = _params(False, loss={"variants": {"l1_vgg": {"pixel": 0, "perceptual": 1.0, "gan": 0, "pieapp": 0}}})
    with w.override("vgg19", sha256=digest, sha256_prefix=None):
        loss = build_generator_loss(p, "l1_vgg")
    assert loss.provenance["vgg19"] == {"status": "real", "sha256": digest, "file": "vgg19-dcbb9e9d.pth"}
    assert torch.equal(loss.perceptual.vgg.features[34].weight, state["features.34.weight"])


def test_vgg_layer_is_conv5_4_before_relu_and_frozen():
    m = VGG19Features("conv5_4")
    assert len(m.features) == 35 and isinstance(m.features[-1], torch.nn.Conv2d)
    assert not any(p.requires_grad for p in m.parameters())
    m.train()
    assert not m.training
    x = torch.rand(1, 3, 32, 32)
    y = m(x)
    assert y.shape == (1, 512, 2, 2) and (y < 0).any()  # before ReLU: negative values survive
    # ImageNet normalisation is inside: equal to the raw features on a normalised input
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(y, m.features((x - mean) / std))
    with pytest.raises(ValueError, match="allowed"):
        VGG19Features("conv6_1")


def test_gradient_reaches_generator_through_every_term(pieapp_loss_module):
    """Each term alone sends a non-zero gradient to G's parameters (PieAPP included)."""
    torch.manual_seed(0)
    g = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4)
    lr = torch.rand(2, 3, 16, 16)
    hr = torch.rand(2, 3, 64, 64)
    loss = pieapp_loss_module
    for term in ("pixel", "perceptual", "gan", "pieapp"):
        g.zero_grad()
        sr = g(lr)
        fake_logits = sr.mean(dim=(1, 2, 3)).unsqueeze(1) * 10  # stands in for D(sr): differentiable in sr
        real_logits = torch.randn(2, 1)
        total, terms = loss(sr, hr, real_logits, fake_logits)
        assert set(terms) == {"pixel", "perceptual", "gan", "pieapp"}
        terms_live = {
            "pixel": lambda: loss.pixel(sr, hr),
            "perceptual": lambda: loss.perceptual(sr, hr),
            "gan": lambda: generator_adversarial_loss(real_logits, fake_logits),
            "pieapp": lambda: loss.pieapp(sr, hr),
        }
        value = terms_live[term]()
        assert value.requires_grad, term
        value.backward()
        gnorm = sum(p.grad.abs().sum() for p in g.parameters() if p.grad is not None)
        assert gnorm > 0, f"no gradient from {term}"
        assert g.conv_first.weight.grad is not None and g.conv_first.weight.grad.abs().sum() > 0, term
        assert not any(p.grad is not None for p in loss.parameters()), "loss networks must stay frozen"
    weighted = sum(loss.weights[k] * v for k, v in terms.items())
    assert torch.allclose(total.detach(), weighted, rtol=1e-5)


def test_unknown_variant_and_bad_pieapp_settings():
    with pytest.raises(ParamsError, match="unknown variant"):
        build_generator_loss(_params(True), "nope")
    with pytest.raises(ParamsError, match="pieapp_patch"):
        build_generator_loss(_params(True, loss={"pieapp_patch": 32, "variants": {
            "l1_vgg_pieapp": {"pixel": 1, "perceptual": 0, "gan": 0, "pieapp": 1}}}), "l1_vgg_pieapp")


def test_relativistic_gan_matches_formula_and_directions():
    torch.manual_seed(0)
    real = torch.randn(4, 1)
    fake = torch.randn(4, 1, requires_grad=True)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    want_g = (bce(real - fake.mean(), torch.zeros_like(real)) + bce(fake - real.mean(), torch.ones_like(fake))) / 2
    assert torch.allclose(generator_adversarial_loss(real, fake), want_g)
    # G's loss falls when fakes look more real than reals
    assert generator_adversarial_loss(real, real + 5) < generator_adversarial_loss(real, real - 5)
    # D's loss falls when it separates them
    assert discriminator_loss(real + 5, real) < discriminator_loss(real, real + 5)
    # each half sends gradient through its own branch only (BasicSR's two backward passes)
    r = torch.randn(4, 1, requires_grad=True)
    f = torch.randn(4, 1, requires_grad=True)
    discriminator_loss(r, f).backward()
    want_r = torch.autograd.grad(0.5 * bce(r - f.detach().mean(), torch.ones_like(r)), r)[0]
    assert torch.allclose(r.grad, want_r)
    # maps work too
    assert discriminator_loss(torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)).dim() == 0


def test_generator_loss_without_logits_skips_gan():
    loss = GeneratorLoss(_params(True).loss.variants["l1_vgg"].model_copy(update={"perceptual": 0.0}))
    total, terms = loss(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    assert set(terms) == {"pixel"} and torch.allclose(total, 0.01 * terms["pixel"])
