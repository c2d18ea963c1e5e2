"""`facesr upscale` in bounded memory: bands of tile rows streamed into the output (PNG rows written as they come),
the same pixels as the tiled float path, the output-size limit, and the peak memory of a real `facesr upscale`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facesr import infer
from facesr.cli.main import main
from tiny_models import make_model_dir, models_api

REPO = Path(__file__).resolve().parents[2]


def _noisy(w: int, h: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, w * h * 3).reshape(h, w, 3) + rng.normal(0, 25, (h, w, 3))
    return base.clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
def test_png_row_writer_round_trips_in_uneven_bands(mode):
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    rng = np.random.default_rng(channels)
    px = rng.integers(0, 256, (37, 23, channels), dtype=np.uint8)
    px[10:20] = px[9]  # repeated rows: the Up filter's zero rows
    buf = io.BytesIO()
    w = infer.PngRowWriter(buf, 23, 37, mode)
    for a, b in [(0, 1), (1, 9), (9, 30), (30, 37)]:
        w.write(px[a:b, :, 0] if mode == "L" else px[a:b])
    w.close()
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        im.load()
        assert im.mode == mode and im.size == (23, 37)
        got = np.asarray(im)
    assert np.array_equal(got.reshape(37, 23, channels), px)


def test_png_row_writer_refuses_missing_or_extra_rows():
    w = infer.PngRowWriter(io.BytesIO(), 4, 3, "RGB")
    with pytest.raises(ValueError, match="PNG rows"):
        w.write(np.zeros((4, 4, 3), np.uint8))
    w.write(np.zeros((2, 4, 3), np.uint8))
    with pytest.raises(infer.FacesrError, match="1 rows were never written"):
        w.close()


def test_bands_equal_the_tiled_float_path_and_the_untiled_forward():
    rrdb, _, _ = models_api()
    torch.manual_seed(0)
    net = rrdb(num_in_ch=3, num_out_ch=3, scale=4, num_feat=4, num_block=1, num_grow_ch=4).eval()
    rgb = _noisy(90, 70)
    x = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255.0)
    bands = list(infer.upscale_bands(net, rgb, 4, tile=32, overlap=24, batch_size=3))
    assert [y0 for y0, _ in bands] == [0, 128, 256]  # one band per row of tiles, top to bottom
    streamed = np.concatenate([b for _, b in bands])
    assert streamed.shape == (280, 360, 3) and streamed.dtype == np.uint8
    tiled = infer.to_uint8(infer.upscale_tensor(net, x, 4, tile=32, overlap=24, batch_size=3)).permute(1, 2, 0)
    assert np.array_equal(streamed, tiled.numpy()), "the same pixels as the float path with the same tiles"
    # the receptive field fits the overlap: within one 8-bit step of the whole image run at once
    whole = infer.to_uint8(infer.forward(net, x[None]))[0].permute(1, 2, 0).numpy().astype(int)
    diff = np.abs(streamed.astype(int) - whole)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def test_cli_png_equals_the_untiled_forward_for_gray_and_alpha(tmp_path, repo_root):
    md = make_model_dir(tmp_path / "m", seed=3)
    rgba = np.dstack([_noisy(60, 44, 1), np.tile(np.linspace(0, 255, 60, dtype=np.uint8), (44, 1))])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    Image.fromarray(_noisy(50, 40, 2)).convert("L").save(tmp_path / "g.png")
    out = tmp_path / "out"
    rc = main(["--params", str(repo_root / "params.yaml"), "--profile", "ci", "upscale", str(tmp_path / "a.png"),
               str(tmp_path / "g.png"), "--model", str(md), "--out", str(out), "--tile", "16", "--overlap", "24",
               "--no-progress"])
    assert rc == 0
    lm = infer.load_model(str(md), None, "cpu")
    for name in ("a", "g"):
        img = infer.load_image(tmp_path / f"{name}.png")
        x = torch.from_numpy(img.rgb).permute(2, 0, 1).float().div(255.0)
        ref = Image.fromarray(infer.to_uint8(infer.forward(lm.model, x[None]))[0].permute(1, 2, 0).numpy())
        if img.gray:
            ref = ref.convert("L")
        if img.alpha is not None:
            ref.putalpha(img.alpha.resize(ref.size, Image.Resampling.BICUBIC))
        with Image.open(out / f"{name}.png") as got:
            got.load()
            assert got.mode == ref.mode == ("RGBA" if name == "a" else "L") and got.size == ref.size
            diff = np.abs(np.asarray(got, dtype=int) - np.asarray(ref, dtype=int))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.99, name


def test_output_larger_than_the_limit_is_refused_with_the_numbers(tmp_path, repo_root, capsys):
    md = make_model_dir(tmp_path / "m")
    Image.fromarray(_noisy(30, 20)).save(tmp_path / "big.png")
    Image.fromarray(_noisy(10, 10)).save(tmp_path / "small.png")
    out = tmp_path / "out"
    rc = main(["--params", str(repo_root / "params.yaml"), "--profile", "ci", "--set", "upscale.max_output_pixels=9000",
               "upscale", str(tmp_path / "big.png"), str(tmp_path / "small.png"), "--model", str(md), "--out", str(out),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "big.png: the x4 output would be 120x80 = 9600 pixels, above upscale.max_output_pixels (9000)" in err
    assert not (out / "big.png").exists() and (out / "small.png").is_file()  # 40x40 = 1600 px: written


def test_a_failed_encode_leaves_no_partial_file(tmp_path, monkeypatch):
    md = make_model_dir(tmp_path / "m")
    Image.fromarray(_noisy(40, 40)).save(tmp_path / "x.png")

    def boom(self, rows):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(infer.PngRowWriter, "write", boom)
    rep = infer.upscale(None, [str(tmp_path / "x.png")], str(md), tmp_path / "out", tile=16, progress=False)
    (failed,) = rep.failed  # a full disk while the rows stream out: reported for that image, naming the file
    assert failed["input"].endswith("x.png") and "x.png" in failed["error"] and not rep.outputs
    assert not list((tmp_path / "out").glob("*.png")) and not list((tmp_path / "out").glob(".x.png.*"))


_MEASURE = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def _peak_rss_mb(tmp_path: Path, image: Path, model: Path, *extra: str) -> float:
    """Peak RSS (MiB) of one `facesr upscale` child, measured by a parent that has no other child."""
    out = tmp_path / f"out-{image.stem}"
    cmd = [sys.executable, "-c", _MEASURE, sys.executable, "-c", "from facesr.cli.main import entrypoint; entrypoint()",
           "--params", str(REPO / "params.yaml"), "--profile", "ci", "upscale", str(image), "--model", str(model),
           "--out", str(out), "--no-progress", *extra]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "2"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    rc, kib = r.stdout.split()[-2:]
    assert rc == "0", r.stderr[-2000:]
    return int(kib) / 1024


@pytest.mark.slow
def test_peak_memory_of_a_real_upscale_does_not_grow_with_the_output(tmp_path):
    """2000x1500 -> 8000x6000 (48 MP): the whole-image float path held ~40 bytes per output pixel (+1.5 GB here);
    streamed, the child's peak stays within a few hundred MB of the same command on a 64x48 image."""
    model = make_model_dir(tmp_path / "m", num_feat=2, num_block=1, num_grow_ch=1)  # cheap: the test measures memory
    big, small = tmp_path / "big.png", tmp_path / "small.png"
    Image.fromarray(_noisy(2000, 1500)).save(big, compress_level=1)
    Image.fromarray(_noisy(64, 48)).save(small)
    opts = ("--tile", "256", "--overlap", "8", "--batch-size", "1")
    base = _peak_rss_mb(tmp_path, small, model, *opts)
    peak = _peak_rss_mb(tmp_path, big, model, *opts)
    with Image.open(tmp_path / "out-big" / "big.png") as im:
        assert im.size == (8000, 6000)
    print(json.dumps({"baseline_mb": round(base), "peak_mb": round(peak)}))
    assert peak - base < 400, f"peak {peak:.0f} MiB vs {base:.0f} MiB for a 64x48 image"


def test_upscale_images_is_the_one_forward_pass_batched_by_size(monkeypatch):
    """upscale_images (what evaluate and quality score) goes through forward and to_uint8, batching only images of
    one size, and equals the whole-image forward of each image."""
    rrdb, _, _ = models_api()
    torch.manual_seed(0)
    net = rrdb(num_in_ch=3, num_out_ch=3, scale=4, num_feat=4, num_block=1, num_grow_ch=4).eval()
    calls = []
    real = infer.forward

    def spy(model, batch, bf16=False):
        calls.append(tuple(batch.shape))
        return real(model, batch, bf16)

    monkeypatch.setattr(infer, "forward", spy)
    lrs = [_noisy(12, 10, i) for i in range(3)] + [_noisy(9, 7, 9)]
    srs = infer.upscale_images(net, lrs, torch.device("cpu"), batch_size=2)
    assert calls == [(2, 3, 10, 12), (1, 3, 10, 12), (1, 3, 7, 9)]
    assert [s.shape for s in srs] == [(40, 48, 3)] * 3 + [(28, 36, 3)] and all(s.dtype == np.uint8 for s in srs)
    for lr, sr in zip(lrs, srs):
        x = torch.from_numpy(lr).permute(2, 0, 1).float().div(255.0)
        assert np.array_equal(sr, infer.to_uint8(real(net, x[None]))[0].permute(1, 2, 0).numpy())


def test_to_uint8_rounds_half_up_after_clamping():
    y = torch.tensor([-0.5, 0.0, 0.5 / 255, 0.49 / 255, 1.5 / 255, 254.5 / 255, 1.0, 2.0])
    assert infer.to_uint8(y).tolist() == [0, 0, 1, 0, 2, 255, 255, 255]
