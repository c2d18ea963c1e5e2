from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facesr import infer
from facesr.cli.main import main
from tiny_models import make_model_dir, models_api


@pytest.fixture()
def model_dir(tmp_path):
    return make_model_dir(tmp_path / "train_out", seed=1)


def _cli(repo_root, *args):
    return main(["--params", str(repo_root / "params.yaml"), "--profile", "ci", *args])


def _face(tmp_path, name="face.png", size=(300, 200), mode="RGB"):
    rng = np.random.default_rng(0)
    w, h = size
    base = np.linspace(0, 255, w * h * 3).reshape(h, w, 3) + rng.normal(0, 20, (h, w, 3))
    img = Image.fromarray(base.clip(0, 255).astype(np.uint8), "RGB").convert(mode)
    p = tmp_path / name
    img.save(p)
    return p


def test_tile_windows_cover_axis_with_equal_windows():
    for size, tile, ov in [(100, 32, 8), (33, 32, 24), (10, 32, 4), (257, 64, 16)]:
        wins = infer.tile_windows(size, tile, ov)
        covered = np.zeros(size, int)
        win_len = min(size, tile + 2 * ov)
        for c0, c1, w0 in wins:
            covered[c0:c1] += 1
            assert 0 <= w0 and w0 + win_len <= size
            assert c0 - w0 >= ov or w0 == 0          # context before the core (or the border)
            assert w0 + win_len - c1 >= ov or w0 + win_len == size
        assert (covered == 1).all()


def test_tiled_equals_untiled_when_receptive_field_fits_overlap():
    rrdb, _, _ = models_api()
    torch.manual_seed(0)
    net = rrdb(num_in_ch=3, num_out_ch=3, scale=4, num_feat=4, num_block=1, num_grow_ch=4).eval()
    x = torch.rand(3, 70, 90)
    whole = infer.upscale_tensor(net, x, 4, tile=0)
    # receptive-field radius of a 1-block RRDBNet is ~19 LR px: overlap 24 covers it
    tiled = infer.upscale_tensor(net, x, 4, tile=32, overlap=24, batch_size=3)
    assert tiled.shape == (3, 280, 360)
    assert torch.allclose(whole, tiled, atol=1e-5)
    # too little context does leave seams: the check above is not vacuous
    seamy = infer.upscale_tensor(net, x, 4, tile=32, overlap=0, batch_size=3)
    assert (whole - seamy).abs().max() > 1e-3


def test_cli_upscale_300x200_to_1200x800_and_bad_input_kept_separate(tmp_path, repo_root, model_dir, capsys):
    good = _face(tmp_path, "good.png")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    out = tmp_path / "out"
    rc = _cli(repo_root, "upscale", str(good), str(bad), "--model", str(model_dir), "--out", str(out),
              "--tile", "64", "--overlap", "8", "--no-progress")
    assert rc == 2
    err = capsys.readouterr().err
    assert "broken.png" in err and "1 input(s) failed" in err
    with Image.open(out / "good.png") as im:
        assert im.size == (1200, 800) and im.mode == "RGB"
    assert not (out / "broken.png").exists()


def test_grayscale_rgba_and_formats(tmp_path, model_dir):
    gray = _face(tmp_path, "gray.png", (40, 30), "L")
    rgba_src = _face(tmp_path, "rgba.png", (40, 30), "RGBA")
    with Image.open(rgba_src) as im:
        a = np.zeros((30, 40), np.uint8)
        a[:, 20:] = 255
        im = im.copy()
        im.putalpha(Image.fromarray(a, "L"))
        im.save(rgba_src)
    out = tmp_path / "out"
    rep = infer.upscale(None, [str(gray), str(rgba_src)], str(model_dir), out, tile=16, overlap=8, progress=False)
    assert not rep.failed and len(rep.outputs) == 2
    with Image.open(out / "gray.png") as g:
        assert g.mode == "L" and g.size == (160, 120)
    with Image.open(out / "rgba.png") as r:
        assert r.mode == "RGBA" and r.size == (160, 120)
        alpha = np.asarray(r.getchannel("A"))
    expected = np.asarray(Image.fromarray(a, "L").resize((160, 120), Image.Resampling.BICUBIC))
    assert np.array_equal(alpha, expected)
    rep = infer.upscale(None, [str(rgba_src)], str(model_dir), tmp_path / "jpg", fmt="jpg", quality=80,
                        progress=False)
    with Image.open(rep.outputs[0]["output"]) as j:
        assert j.format == "JPEG" and j.mode == "RGB" and j.size == (160, 120)
    rep = infer.upscale(None, [str(gray)], str(model_dir), tmp_path / "webp", fmt="webp", progress=False)
    with Image.open(rep.outputs[0]["output"]) as wp:
        assert wp.format == "WEBP"


def test_folders_globs_and_safetensors_model(tmp_path, model_dir):
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    _face(d, "a.png", (20, 16))
    _face(d / "sub", "b.jpg", (16, 20))
    (d / "notes.txt").write_text("not an image")
    st = model_dir / "model" / "generator.safetensors"
    out = tmp_path / "out"
    rep = infer.upscale(None, [str(d), str(d / "*.png"), str(tmp_path / "nothing*.png")], str(st), out,
                        progress=False)
    outs = sorted(o["output"] for o in rep.outputs)
    assert outs == sorted([str(out / "a.png"), str(out / "sub" / "b.png"), str(out / "a-1.png")])
    assert len(rep.failed) == 1 and "nothing" in rep.failed[0]["error"]
    with Image.open(out / "sub" / "b.png") as im:
        assert im.size == (64, 80)
    # an output folder inside the input folder: its images are not taken as inputs on a rerun
    inner = d / "up"
    infer.upscale(None, [str(d)], str(st), inner, progress=False)
    rep2 = infer.upscale(None, [str(d)], str(st), inner, progress=False)
    assert sorted(Path(o["input"]).name for o in rep2.outputs) == ["a.png", "b.jpg"]


def test_bad_model_and_options(tmp_path, repo_root, model_dir, capsys):
    img = _face(tmp_path, "x.png", (8, 8))
    rc = _cli(repo_root, "upscale", str(img), "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert rc == 2 and "no such file or folder" in capsys.readouterr().err
    pt = tmp_path / "weights.pth"
    pt.write_bytes(b"pickle")
    rc = _cli(repo_root, "upscale", str(img), "--model", str(pt), "--out", str(tmp_path / "o"))
    assert rc == 2 and ".safetensors" in capsys.readouterr().err
    with pytest.raises(Exception, match="--format"):
        infer.upscale(None, [str(img)], str(model_dir), tmp_path / "o", fmt="gif")


def test_cli_resolves_an_mlflow_uri_through_the_registry(tmp_path, repo_root, model_dir, monkeypatch, capsys):
    """`facesr upscale --model models:/...`: the CLI asks the registry for the files (after the inputs were checked)
    and loads the model folder inside; facesr.infer itself takes only local models."""
    import shutil

    from facesr import registry

    calls = []

    def fetch_model(uri, params=None, dst=None):
        calls.append(uri)
        target = Path(dst) / "artifacts" / "data" / "model"
        shutil.copytree(model_dir / "model", target)
        return target

    monkeypatch.setattr(registry, "fetch_model", fetch_model)
    img = _face(tmp_path, "x.png", (12, 10))
    rc = _cli(repo_root, "upscale", str(tmp_path / "nothing*.png"), "--model", "models:/facesr@champion",
              "--out", str(tmp_path / "o1"))
    assert rc == 2 and calls == []  # no input image: nothing downloaded
    assert "no input image found" in capsys.readouterr().err
    rc = _cli(repo_root, "upscale", str(img), "--model", "models:/facesr@champion", "--out", str(tmp_path / "o2"),
              "--no-progress")
    assert rc == 0 and calls == ["models:/facesr@champion"]
    with Image.open(tmp_path / "o2" / "x.png") as im:
        assert im.size == (48, 40)
    with pytest.raises(infer.UserError, match="MLflow model URI"):
        infer.load_model("models:/facesr@champion")


def test_infer_and_evaluate_do_not_import_the_registry():
    import subprocess
    import sys

    code = ("import sys, facesr.infer, facesr.evaluate, facesr.quality; "
            "bad = sorted(m for m in sys.modules if m.startswith(('facesr.registry', 'mlflow'))); "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    # not even inside a function: the registry resolves MLflow URIs above these modules (the CLI)
    import ast

    import facesr

    src = Path(facesr.__file__).parent
    for rel in ("infer.py", "evaluate.py", "quality.py"):
        for node in ast.walk(ast.parse((src / rel).read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(n.startswith(("facesr.registry", "mlflow")) for n in names), (rel, names)
