"""PieAPP: our network reproduces piq's scores on the same state dict; patches cover the whole image; loss sign."""

from __future__ import annotations

import hashlib
import socket

import pytest
import torch

from facesr import weights as w
from facesr.losses.pieapp import PieAPPLoss, straight_through_clamp
from facesr.models.pieapp import PieAPPNet, extract_patches, fix_state_dict, patch_positions


@pytest.mark.parametrize("size,stride", [(128, 32), (128, 27), (100, 32), (64, 32), (130, 64), (96, 48)])
def test_patch_positions_cover_every_pixel(size, stride):
    pos = patch_positions(size, 64, stride)
    assert pos[0] == 0 and pos[-1] == size - 64
    covered = torch.zeros(size, dtype=torch.bool)
    for p in pos:
        covered[p:p + 64] = True
    assert covered.all()
    assert all(b - a <= stride for a, b in zip(pos, pos[1:]))


def test_patches_reach_the_borders():
    x = torch.zeros(1, 3, 100, 90)
    x[..., -1, -1] = 1.0  # bottom-right corner pixel
    patches = extract_patches(x, 64, 32)
    assert patches.shape == (len(patch_positions(100)) * len(patch_positions(90)), 3, 64, 64)
    assert patches.amax() == 1.0
    with pytest.raises(ValueError, match="smaller"):
        patch_positions(50)


def _fake_published_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random PieAPP weights in the published file's layout (ref_score_subtract.weight of shape [1])."""
    torch.manual_seed(seed)
    net = PieAPPNet()
    with torch.no_grad():  # make scores vary visibly between inputs
        net.fc2_score.weight.mul_(50)
        net.ref_score_subtract.weight.fill_(1.3)
        net.ref_score_subtract.bias.fill_(-0.4)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["ref_score_subtract.weight"] = state["ref_score_subtract.weight"].reshape(1)
    return state


@pytest.mark.slow
def test_scores_equal_piq_on_the_same_state_dict(tmp_path, monkeypatch):
    """piq.PieAPP built offline from our cache (torch.hub bridge) and our PieAPPNet give the same scores."""
    import piq

    def refuse(*a, **k):
        raise OSError("network disabled in this test")
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv(w.ENV_DIR, str(tmp_path / "cache"))
    state = _fake_published_state()
    (tmp_path / "cache").mkdir()
    f = tmp_path / "cache" / "PieAPPv0.1.pth"
    torch.save(state, f)
    digest = hashlib.sha256(f.read_bytes()).hexdigest()
    with w.override("pieapp", sha256=digest):
        with w.torch_home(["pieapp"], tmp_path / "th"):
            ref_metric = piq.PieAPP(reduction="none", data_range=1.0, stride=32)
        ours = PieAPPNet()
        ours.load_state_dict(fix_state_dict(w.load_state_dict("pieapp")))
    ours.eval()
    torch.manual_seed(1)
    # 96 px with stride 32: piq's unfold reaches the border too, so both use the same patches
    hr = torch.rand(2, 3, 96, 96)
    x = (hr + 0.2 * torch.randn_like(hr)).clamp(0, 1)
    with torch.no_grad():
        want = ref_metric(x, hr)
        got = ours.score(x, hr, stride=32)
    assert want.shape == got.shape == (2,)
    assert not torch.allclose(want[0], want[1])  # informative inputs
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)
    # the loss module loads the same file: provenance real, same scores
    with w.override("pieapp", sha256=digest):
        loss = PieAPPLoss(stride=32)
    assert loss.provenance == {"status": "real", "sha256": digest, "file": "PieAPPv0.1.pth"}
    with torch.no_grad():
        assert torch.allclose(loss.scores(x, hr), want, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    n = PieAPPNet().eval()
    with torch.no_grad():
        n.fc2_score.weight.mul_(50)
        n.ref_score_subtract.bias.fill_(-0.5)  # an offset that makes identity scores negative
    for p in n.parameters():
        p.requires_grad_(False)
    return n


def test_identity_score_is_the_offset(net):
    hr = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        s = net.score(hr, hr)
    assert torch.allclose(s, net.identity_score().reshape(1), atol=1e-6)
    assert s.item() < 0  # PieAPP scores can be negative: the loss must not just take abs()


def _loss_with(net, stride=32):
    loss = PieAPPLoss.__new__(PieAPPLoss)
    torch.nn.Module.__init__(loss)
    loss.stride, loss.net, loss.provenance = stride, net, {"status": "untrained"}
    return loss


def test_loss_zero_at_reference_positive_elsewhere(net):
    loss = _loss_with(net)
    torch.manual_seed(2)
    hr = torch.rand(2, 3, 96, 96)
    assert loss(hr, hr).item() == pytest.approx(0.0, abs=1e-6)
    assert loss((hr + 0.3 * torch.randn_like(hr)), hr).item() > 1e-4


def test_border_pixels_get_gradient(net):
    """Every pixel of a 128x128 SR is inside a scored patch: a change in the last row/col has a gradient."""
    loss = _loss_with(net, stride=48)  # 0, 48 and the added 64: without the border patch, cols 112..127 are unseen
    torch.manual_seed(3)
    hr = torch.rand(1, 3, 128, 128)
    sr = (hr + 0.2 * torch.randn_like(hr)).clamp(0, 1).requires_grad_(True)
    loss(sr, hr).backward()
    g = sr.grad.abs().sum(dim=1)[0]
    assert g[-1, :].sum() > 0 and g[:, -1].sum() > 0 and g[-1, -1] > 0 and g[0, 0] > 0
    assert (g > 0).float().mean() > 0.99


def test_straight_through_clamp():
    x = torch.tensor([-0.5, 0.5, 1.5], requires_grad=True)
    y = straight_through_clamp(x)
    assert torch.equal(y.detach(), torch.tensor([0.0, 0.5, 1.0]))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(3))  # out-of-range pixels still get a gradient
