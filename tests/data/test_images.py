"""load_rgb: every supported mode becomes 8-bit RGB; every bad file is rejected with its reason code."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facesr.data.images import ImageRejected, load_rgb, read_header
from facesr.errors import InputError

from .imgs import exif_rotated_jpeg, linear_rgb_icc, png16, png_bomb_header, rand_rgb, save, truncated

BIG = 10**8


def test_rgb_png_roundtrip_exact(tmp_path):
    a = rand_rgb()
    out = np.asarray(load_rgb(save(a, tmp_path / "a.png"), BIG))
    assert out.dtype == np.uint8 and np.array_equal(out, a)


@pytest.mark.parametrize("mode", ["L", "1", "CMYK"])
def test_modes_converted_like_pillow(tmp_path, mode):
    a = rand_rgb()
    src = Image.fromarray(a).convert(mode)
    ext = "jpg" if mode == "CMYK" else "png"
    p = tmp_path / f"x.{ext}"
    src.save(p, quality=95) if ext == "jpg" else src.save(p)
    with Image.open(p) as im:
        assert im.mode == mode
        expected = np.asarray(im.convert("RGB"))
    got = load_rgb(p, BIG)
    assert got.mode == "RGB" and got.size == (a.shape[1], a.shape[0])
    assert np.array_equal(np.asarray(got), expected)
    if mode == "CMYK":  # colours survive the CMYK round trip approximately
        assert np.abs(np.asarray(got).astype(int) - a.astype(int)).mean() < 6


def test_palette_with_and_without_transparency(tmp_path):
    a = rand_rgb()
    pal = Image.fromarray(a).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    pal.save(tmp_path / "p.png")
    got = np.asarray(load_rgb(tmp_path / "p.png", BIG))
    assert np.array_equal(got, np.asarray(pal.convert("RGB")))
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pt.png", transparency=0)
    got_t = np.asarray(load_rgb(tmp_path / "pt.png", BIG))
    idx = np.asarray(pal)
    assert (got_t[idx == 0] == 255).all()  # the transparent palette entry becomes white
    assert np.array_equal(got_t[idx != 0], np.asarray(pal.convert("RGB"))[idx != 0])


def test_rgba_composited_on_white(tmp_path):
    a = rand_rgb(64, 64)
    alpha = np.zeros((64, 64), np.uint8)
    alpha[:, 32:] = 255
    save(np.dstack([a, alpha]), tmp_path / "a.png")
    got = np.asarray(load_rgb(tmp_path / "a.png", BIG))
    assert (got[:, :32] == 255).all()
    assert np.array_equal(got[:, 32:], a[:, 32:])


def test_16bit_gray_and_rgb_scaled_not_clipped(tmp_path):
    rng = np.random.default_rng(1)
    g = rng.integers(0, 65536, (40, 50)).astype(np.uint16)
    rgb = rng.integers(0, 65536, (40, 50, 3)).astype(np.uint16)
    for arr, name in ((g, "g16.png"), (rgb, "rgb16.png")):
        got = np.asarray(load_rgb(png16(arr, tmp_path / name), BIG)).astype(int)
        exp = arr.astype(float) / 257.0
        exp = np.repeat(exp[:, :, None], 3, axis=2) if arr.ndim == 2 else exp
        assert got.shape == (40, 50, 3)
        assert np.abs(got - exp).max() <= 1.0  # 8-bit rounding (or high byte) of the 16-bit value
        assert got.max() > 250 and got.min() < 5  # full range kept


def test_exif_orientation_applied(tmp_path):
    a = rand_rgb(96, 160)
    p = exif_rotated_jpeg(a, tmp_path / "r.jpg", orientation=6)  # 6 = rotate 90 clockwise to display
    got = np.asarray(load_rgb(p, BIG))
    assert got.shape == (160, 96, 3)
    expected = np.rot90(a, k=-1)
    assert np.abs(got.astype(int) - expected.astype(int)).mean() < 4


def _reason(path, max_pixels=BIG):
    with pytest.raises(ImageRejected) as ei:
        load_rgb(path, max_pixels)
    assert isinstance(ei.value, InputError)  # a user error (exit 2) that names the file
    assert str(path) in str(ei.value)
    return ei.value.code


def test_bad_files_rejected_with_reason(tmp_path):
    a = rand_rgb()
    good_png, good_jpg = save(a, tmp_path / "g.png"), save(a, tmp_path / "g.jpg", quality=90)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not an image\n")
    corrupt = bytearray(good_png.read_bytes())
    corrupt[60:400] = b"\x00" * 340
    (tmp_path / "corrupt.png").write_bytes(bytes(corrupt))
    assert _reason(tmp_path / "empty.jpg") == "empty"
    assert _reason(tmp_path / "text.jpg") == "not_an_image"
    assert _reason(truncated(good_png, tmp_path / "t.png")) == "truncated"
    assert _reason(truncated(good_jpg, tmp_path / "t.jpg")) == "truncated"
    assert _reason(tmp_path / "corrupt.png") in ("corrupt", "truncated")
    assert _reason(tmp_path / "missing.png") == "corrupt"


def test_bomb_rejected_from_header_without_decoding(tmp_path):
    p = png_bomb_header(tmp_path / "bomb.png", 30000, 30000)
    assert p.stat().st_size < 200
    assert _reason(p, max_pixels=89_478_485) == "too_large"
    # the limit is ours (params), not Pillow's: a normal image over a small limit is rejected too
    assert _reason(save(rand_rgb(), tmp_path / "n.png"), max_pixels=1000) == "too_large"


def test_read_header(tmp_path):
    assert read_header(save(rand_rgb(30, 40), tmp_path / "a.png")) == (40, 30, "RGB")
    (tmp_path / "x.jpg").write_text("nope")
    assert read_header(tmp_path / "x.jpg") == (None, None, None)
    assert read_header(png_bomb_header(tmp_path / "b.png", 30000, 30000)) == (30000, 30000, "RGB")


def test_icc_profile_converted_to_srgb(tmp_path):
    from PIL import ImageCms

    a = np.full((16, 16, 3), 128, np.uint8)
    a[:8] = (200, 30, 30)
    # linear-light profile: grey 128 (0.502 linear) is 188 in sRGB
    Image.fromarray(a).save(tmp_path / "lin.png", icc_profile=linear_rgb_icc())
    out = np.asarray(load_rgb(tmp_path / "lin.png", BIG)).astype(int)
    assert np.abs(out[12, 0] - 188).max() <= 2
    assert out[0, 0, 0] > 200 and out[0, 0, 1] > 30  # colours converted too, not just grey
    # an sRGB profile changes nothing; a broken profile is ignored (the image is kept)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(a).save(tmp_path / "s.png", icc_profile=srgb)
    assert np.array_equal(np.asarray(load_rgb(tmp_path / "s.png", BIG)), a)
    Image.fromarray(a).save(tmp_path / "b.png", icc_profile=b"not a profile" * 8)
    assert np.array_equal(np.asarray(load_rgb(tmp_path / "b.png", BIG)), a)


def _srgb_decode(v):
    v = np.asarray(v, float) / 255.0
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _srgb_encode(v):
    v = np.clip(v, 0.0, 1.0)
    return 255.0 * np.where(v <= 0.0031308, 12.92 * v, 1.055 * v ** (1 / 2.4) - 0.055)


def _p3_to_srgb(rgb):
    """Display P3 -> sRGB by the matrices of the two profiles (D50 colorants), independent of LittleCMS."""
    from .imgs import P3_COLORANTS, SRGB_COLORANTS

    p3, srgb = np.array(P3_COLORANTS).T, np.array(SRGB_COLORANTS).T  # columns: the XYZ of R, G, B
    return _srgb_encode(np.linalg.solve(srgb, p3 @ _srgb_decode(rgb)))


def test_display_p3_decodes_to_the_same_srgb_in_prepare_and_upscale(tmp_path):
    """A phone photo tagged Display P3: prepare (load_rgb) and upscale (infer.load_image) see the same sRGB pixels,
    converted (not the stored numbers), for RGB and for RGBA (upscale keeps the alpha, prepare composites it)."""
    from facesr import infer

    from .imgs import display_p3_icc

    colours = [(200, 120, 80), (60, 160, 90), (90, 90, 200), (128, 128, 128)]
    a = np.zeros((8, 8, 3), np.uint8)
    for i, c in enumerate(colours):
        a[2 * i:2 * i + 2] = c
    Image.fromarray(a).save(tmp_path / "p3.png", icc_profile=display_p3_icc())
    prep = np.asarray(load_rgb(tmp_path / "p3.png", BIG))
    up = infer.load_image(tmp_path / "p3.png")
    assert up.alpha is None and not up.gray
    assert np.array_equal(prep, up.rgb)
    for i, c in enumerate(colours):
        assert np.abs(prep[2 * i, 0].astype(float) - _p3_to_srgb(c)).max() <= 2.0, c
    assert tuple(prep[0, 0]) != colours[0]  # converted: not the stored numbers
    # with an alpha channel: the same colour; prepare composites it onto white, upscale keeps it apart
    alpha = np.tile(np.array([255, 255, 0, 128, 255, 0, 64, 255], np.uint8), (8, 1))
    Image.fromarray(np.dstack([a, alpha])).save(tmp_path / "p3a.png", icc_profile=display_p3_icc())
    up_a = infer.load_image(tmp_path / "p3a.png")
    assert np.array_equal(up_a.rgb, prep) and np.array_equal(np.asarray(up_a.alpha), alpha)
    prep_a = np.asarray(load_rgb(tmp_path / "p3a.png", BIG)).astype(float)
    w = alpha[..., None] / 255.0
    assert np.abs(prep_a - (prep * w + 255.0 * (1 - w))).max() <= 1.0


def test_16bit_and_float_images_decode_the_same_in_prepare_and_upscale(tmp_path):
    from facesr import infer

    from .imgs import png16

    rng = np.random.default_rng(2)
    cases = {
        "g16.png": png16(rng.integers(0, 65536, (20, 24)).astype(np.uint16), tmp_path / "g16.png"),
        # a 16-bit file whose values all happen to be <= 255: still 16-bit (dark), not taken as 8-bit
        "g16low.png": png16(rng.integers(0, 256, (20, 24)).astype(np.uint16), tmp_path / "g16low.png"),
        "rgb16.png": png16(rng.integers(0, 65536, (20, 24, 3)).astype(np.uint16), tmp_path / "rgb16.png"),
    }
    f = rng.random((20, 24)).astype(np.float32)
    Image.fromarray(f, "F").save(tmp_path / "f.tif")
    cases["f.tif"] = tmp_path / "f.tif"
    for name, path in cases.items():
        prep = np.asarray(load_rgb(path, BIG))
        up = infer.load_image(path)
        assert np.array_equal(prep, up.rgb), name
        assert up.gray == (name != "rgb16.png"), name
    g16low = np.asarray(load_rgb(cases["g16low.png"], BIG))
    assert g16low.max() <= 1  # value / 257
    ftif = np.asarray(load_rgb(cases["f.tif"], BIG))[..., 0]
    assert np.array_equal(ftif, np.rint(f.astype(np.float64) * 255).astype(np.uint8))


def test_palette_gray_and_la_decode_the_same_colour_in_prepare_and_upscale(tmp_path):
    from facesr import infer

    a = rand_rgb(32, 40)
    pal = Image.fromarray(a).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    pal.save(tmp_path / "p.png")
    Image.fromarray(a).convert("L").save(tmp_path / "l.png")
    la = Image.fromarray(a).convert("LA")
    la.putalpha(255)
    la.save(tmp_path / "la.png")
    for name, gray in (("p.png", False), ("l.png", True), ("la.png", True)):
        up = infer.load_image(tmp_path / name)
        assert up.gray == gray and (up.alpha is not None) == (name == "la.png"), name
        assert np.array_equal(np.asarray(load_rgb(tmp_path / name, BIG)), up.rgb), name  # opaque: the same pixels
