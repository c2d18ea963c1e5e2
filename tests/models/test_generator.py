"""Generator: shapes, parameter count, BasicSR key compatibility, save/load round trip, init from .pth."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from facesr.config import resolve
from facesr.errors import InputError
from facesr.models import RRDBNet, build_generator, count_parameters
from facesr.models.io import infer_arch, load_generator, load_init_weights, save_generator

TINY = dict(num_feat=8, num_block=1, num_grow_ch=4)


def basicsr_keys(num_block: int) -> list[str]:
    """Key names of BasicSR's basicsr/archs/rrdbnet_arch.py RRDBNet (x4), written out by hand."""
    keys = ["conv_first.weight", "conv_first.bias"]
    for b in range(num_block):
        for r in (1, 2, 3):
            for c in range(1, 6):
                keys += [f"body.{b}.rdb{r}.conv{c}.weight", f"body.{b}.rdb{r}.conv{c}.bias"]
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"):
        keys += [f"{name}.weight", f"{name}.bias"]
    return keys


def test_default_parameter_count_is_esrgan():
    assert count_parameters(RRDBNet()) == 16_697_987


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_output_shape_per_scale(scale):
    torch.manual_seed(0)
    m = RRDBNet(scale=scale, **TINY).eval()
    with torch.no_grad():
        y = m(torch.rand(2, 3, 8, 12))
    assert y.shape == (2, 3, 8 * scale, 12 * scale)
    assert torch.isfinite(y).all()


def test_keys_match_basicsr():
    m = RRDBNet(num_block=2, num_feat=8, num_grow_ch=4)
    assert list(m.state_dict().keys()) == basicsr_keys(2)


def test_build_generator_from_params():
    p = resolve({"model": {"generator": TINY}, "data": {"scale": 4}}, profile="paper")
    g = build_generator(p)
    assert (g.num_feat, g.num_block, g.num_grow_ch, g.scale) == (8, 1, 4, 4)


def _assert_same(a: torch.nn.Module, b: torch.nn.Module):
    x = torch.rand(1, 3, 6, 6)
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(1)
    m = RRDBNet(**TINY)
    info = save_generator(m, tmp_path / "model", {"variant": "l1_vgg", "steps": 3})
    files = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert files == ["generator.safetensors", "model.json"]
    meta_disk = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta_disk == info
    assert meta_disk["format"] == "facesr.model/1" and meta_disk["arch"] == "RRDBNet"
    assert meta_disk["num_block"] == 1 and meta_disk["variant"] == "l1_vgg"
    loaded, meta = load_generator(tmp_path / "model")
    assert meta["steps"] == 3 and not loaded.training
    _assert_same(m, loaded)
    # the bare file works too (sibling model.json), and without it (metadata / shapes)
    loaded2, _ = load_generator(tmp_path / "model" / "generator.safetensors")
    _assert_same(m, loaded2)
    lone = tmp_path / "lone" / "g.safetensors"
    lone.parent.mkdir()
    lone.write_bytes((tmp_path / "model" / "generator.safetensors").read_bytes())
    loaded3, meta3 = load_generator(lone)
    assert meta3["num_feat"] == 8
    _assert_same(m, loaded3)


def test_save_is_atomic_and_keeps_old_on_failure(tmp_path):
    m = RRDBNet(**TINY)
    save_generator(m, tmp_path / "model", {"steps": 1})
    with pytest.raises(TypeError):
        save_generator(torch.nn.Linear(2, 2), tmp_path / "model", {"steps": 2})
    assert json.loads((tmp_path / "model" / "model.json").read_text())["steps"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_load_errors_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_generator(tmp_path / "nope")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(InputError, match="bad.safetensors"):
        load_generator(bad)
    pkl = tmp_path / "g.pth"
    torch.save({"a": torch.zeros(1)}, pkl)
    with pytest.raises(InputError, match="never a pickle"):
        load_generator(pkl)
    # model.json says 2 blocks, the file has 1: mismatch names the file
    m = RRDBNet(**TINY)
    save_generator(m, tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    meta["num_block"] = 2
    (tmp_path / "model" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="do not match"):
        load_generator(tmp_path / "model")


@pytest.mark.parametrize("wrapper", ["params_ema", "params", None])
def test_load_init_weights_from_basicsr_pth(tmp_path, wrapper):
    torch.manual_seed(2)
    src = RRDBNet(**TINY)
    sd = src.state_dict()
    assert list(sd) == basicsr_keys(1)
    obj = {wrapper: sd, "other": {"x": torch.zeros(1)}} if wrapper else sd
    if wrapper == "params":  # a BasicSR file with both: params_ema wins; here only params
        obj = {"params": sd}
    torch.save(obj, tmp_path / "net_g.pth")
    dst = RRDBNet(**TINY)
    load_init_weights(dst, tmp_path / "net_g.pth")
    _assert_same(src, dst)


def test_load_init_weights_prefers_ema_and_converts_old_esrgan(tmp_path):
    torch.manual_seed(3)
    ema, plain = RRDBNet(**TINY), RRDBNet(**TINY)
    torch.save({"params": plain.state_dict(), "params_ema": ema.state_dict()}, tmp_path / "both.pth")
    dst = RRDBNet(**TINY)
    load_init_weights(dst, tmp_path / "both.pth")
    _assert_same(ema, dst)
    # original xinntao/ESRGAN layout (model.0 / model.1.sub.N.RDBk.convj.0 / model.3 ...)
    old = {}
    for k, v in ema.state_dict().items():
        k2 = k.replace("conv_first.", "model.0.").replace("conv_body.", "model.1.sub.1.")
        k2 = k2.replace("conv_up1.", "model.3.").replace("conv_up2.", "model.6.")
        k2 = k2.replace("conv_hr.", "model.8.").replace("conv_last.", "model.10.")
        if k2.startswith("body."):
            _, b, r, c, wb = k2.split(".")
            k2 = f"model.1.sub.{b}.RDB{r[-1]}.{c}.0.{wb}"
        old[k2] = v
    torch.save(old, tmp_path / "RRDB_ESRGAN_x4.pth")
    dst2 = RRDBNet(**TINY)
    load_init_weights(dst2, tmp_path / "RRDB_ESRGAN_x4.pth")
    _assert_same(ema, dst2)


def test_load_init_weights_errors(tmp_path):
    dst = RRDBNet(**TINY)
    with pytest.raises(InputError, match="not found"):
        load_init_weights(dst, tmp_path / "missing.pth")
    torch.save({"params": RRDBNet(num_feat=16, num_block=1, num_grow_ch=4).state_dict()}, tmp_path / "big.pth")
    with pytest.raises(InputError, match="shape mismatch"):
        load_init_weights(dst, tmp_path / "big.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="junk.pth"):
        load_init_weights(dst, tmp_path / "junk.pth")
    # our own safetensors initialise too
    src = RRDBNet(**TINY)
    save_file(src.state_dict(), str(tmp_path / "ours.safetensors"))
    load_init_weights(dst, tmp_path / "ours.safetensors")
    _assert_same(src, dst)


def test_infer_arch():
    assert infer_arch(RRDBNet(num_feat=8, num_block=3, num_grow_ch=4, scale=2).state_dict()) == {
        "num_in_ch": 3, "num_out_ch": 3, "num_feat": 8, "num_block": 3, "num_grow_ch": 4, "scale": 2}


def test_same_weights_give_identical_bytes_and_a_bare_file_keeps_its_arch(tmp_path):
    """DVC and MLflow compare models by file hash: saving the same weights twice must give the same bytes."""
    torch.manual_seed(0)
    net = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4, scale=4)
    digests = set()
    for i in range(4):
        folder = tmp_path / f"m{i}"
        save_generator(net, folder, {"variant": "l1_vgg"})
        digests.add((folder / "generator.safetensors").read_bytes())
    assert len(digests) == 1
    # the architecture travels inside the .safetensors too: a bare file (no model.json beside it) loads as scale 4
    bare = tmp_path / "bare" / "g.safetensors"
    bare.parent.mkdir()
    bare.write_bytes(digests.pop())
    model, meta = load_generator(bare)
    assert model.config()["scale"] == 4 and model.config()["num_feat"] == 8
    assert model(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)


def test_bicubic_residual_starts_at_bicubic_and_keeps_basicsr_keys():
    """residual='bicubic' adds no parameter, and an untrained net outputs (almost) the bicubic upsampling."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    res, plain = RRDBNet(**TINY, residual="bicubic"), RRDBNet(**TINY, residual="none")
    assert res.state_dict().keys() == plain.state_dict().keys()
    assert count_parameters(res) == count_parameters(plain)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        bic = F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
        err_res = (res(x) - bic).abs().mean().item()
        res.load_state_dict(plain.state_dict())  # same weights: the outputs differ by exactly the bicubic image
        assert torch.allclose(res(x) - plain(x), bic, atol=1e-5)
    assert err_res < 0.05, err_res
    with pytest.raises(ValueError, match="residual"):
        RRDBNet(**TINY, residual="nearest")


def test_residual_mode_is_saved_and_checked_on_init(tmp_path):
    from facesr.models.io import load_generator, save_generator

    src = RRDBNet(**TINY, residual="bicubic")
    save_generator(src, tmp_path / "m")
    loaded, meta = load_generator(tmp_path / "m")
    assert meta["residual"] == "bicubic" and loaded.residual == "bicubic"
    _assert_same(src, loaded)
    # a facesr model trained with the other mode is refused as init, naming the param to change
    with pytest.raises(InputError, match="model.generator.residual"):
        load_init_weights(RRDBNet(**TINY, residual="none"), tmp_path / "m")
    load_init_weights(RRDBNet(**TINY, residual="bicubic"), tmp_path / "m")
    # weights that do not record the field (written before it existed, or by other tools) had no skip
    save_file(src.state_dict(), str(tmp_path / "bare.safetensors"))
    assert load_generator(tmp_path / "bare.safetensors")[0].residual == "none"
