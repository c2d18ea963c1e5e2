"""prepare: validation with reasons, deduplication, split by hash, shards, test pairs, determinism, exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file

from facesr.cli.main import main
from facesr.config import load_params
from facesr.data.degrade import bicubic_downscale
from facesr.data.ingest import ingest
from facesr.data.prepare import prepare, split_of
from facesr.errors import InputError
from facesr.fsutil import tree_hash

from .imgs import exif_rotated_jpeg, png16, png_bomb_header, rand_rgb, save, truncated

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "params.yaml"


def params(**sets):
    return load_params(PARAMS, profile="ci", overrides=[f"{k}={v}" for k, v in sets.items()])


@pytest.fixture(scope="module")
def mixed_raw(tmp_path_factory) -> Path:
    """A raw folder with good images of every mode and every kind of bad file."""
    src = tmp_path_factory.mktemp("mixed-src")
    for i in range(8):
        save(rand_rgb(160, 144, seed=i), src / f"good/g{i}.png")
    save(rand_rgb(150, 140, seed=20), src / "good/j.jpg", quality=92)
    (src / "modes").mkdir()
    Image.fromarray(rand_rgb(150, 140, seed=21)).convert("CMYK").save(src / "modes/cmyk.jpg", quality=95)
    png16(np.random.default_rng(3).integers(0, 65536, (140, 150)).astype(np.uint16), src / "modes/g16.png")
    Image.fromarray(rand_rgb(140, 150, seed=22)).convert("P").save(src / "modes/pal.png")
    save(np.dstack([rand_rgb(140, 150, seed=23), np.full((140, 150), 200, np.uint8)]), src / "modes/rgba.png")
    exif_rotated_jpeg(rand_rgb(130, 200, seed=24), src / "modes/rot.jpg")
    # duplicates: same bytes, and same pixels in different bytes
    (src / "dups").mkdir()
    shutil.copyfile(src / "good/g0.png", src / "dups/g0-copy.png")
    with Image.open(src / "good/g1.png") as im:
        im.save(src / "dups/g1-recompressed.png", compress_level=1)
    # bad files
    (src / "bad").mkdir()
    (src / "bad/empty.jpg").write_bytes(b"")
    (src / "bad/notes.jpg").write_text("not an image")
    truncated(src / "good/j.jpg", src / "bad/trunc.jpg")
    save(rand_rgb(64, 64, seed=30), src / "bad/tiny.png")
    png_bomb_header(src / "bad/bomb.png", 30000, 30000)
    raw = tmp_path_factory.mktemp("mixed") / "raw"
    ingest(params(), f"dir:{src}", raw)
    return raw


@pytest.fixture(scope="module")
def mixed_prep(mixed_raw, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("mixed-prep") / "prep"
    m = prepare(params(**{"data.max_images": "null", "data.max_train_side": 150}), mixed_raw, out)
    return out, m


def test_rejections_have_reasons(mixed_prep):
    _, m = mixed_prep
    reasons = {r["file"]: r["reason"] for r in m["rejected"]}
    assert reasons["images/bad/empty.jpg"].startswith("empty")
    assert reasons["images/bad/notes.jpg"].startswith("not_an_image")
    assert reasons["images/bad/trunc.jpg"].startswith("truncated")
    assert reasons["images/bad/tiny.png"].startswith("too_small")
    assert reasons["images/bad/bomb.png"].startswith("too_large")
    # one copy of each duplicate pair is kept, the other is rejected naming the kept one
    assert sum(f in reasons for f in ("images/good/g0.png", "images/dups/g0-copy.png")) == 1
    assert sum(f in reasons for f in ("images/good/g1.png", "images/dups/g1-recompressed.png")) == 1
    dup_reasons = [r for f, r in reasons.items() if "g0" in f or "g1" in f]
    assert any("same bytes" in r for r in dup_reasons) and any("same decoded pixels" in r for r in dup_reasons)
    assert len(m["rejected"]) == 7
    assert m["accepted"] == 9 + 5  # 8 png + 1 jpg + 5 modes; the 2 duplicate files are among the rejected
    assert m["accepted"] + len(m["rejected"]) == len(m["inputs"]["files"])


def test_modes_accepted_and_exif_applied(mixed_prep):
    _, m = mixed_prep
    by_src = {a["source"]: a for a in m["images"]}
    for f in ("cmyk.jpg", "g16.png", "pal.png", "rgba.png", "rot.jpg"):
        assert f"images/modes/{f}" in by_src
    assert (by_src["images/modes/rot.jpg"]["width"], by_src["images/modes/rot.jpg"]["height"]) == (130, 200)


def test_layout_shards_and_test_pairs(mixed_prep):
    out, m = mixed_prep
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(m))
    assert m["format"] == "facesr.prepared/1"
    assert m["split"]["train"] + m["split"]["test"] == m["accepted"]
    assert m["split"]["train"] > 0 and m["split"]["test"] > 0
    train = {a["name"] for a in m["images"] if a["split"] == "train"}
    test = {a["name"] for a in m["images"] if a["split"] == "test"}
    for a in m["images"]:
        assert a["name"] == a["sha256"][:16]
    stored = {}
    for rel in m["shards"]:
        stored.update(load_file(str(out / rel)))
    assert set(stored) == train
    for arr in stored.values():
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
        # longer side capped at 150, unless that would take the shorter side under hr_size (then it stays 128)
        assert min(arr.shape[:2]) >= 128
        assert max(arr.shape[:2]) <= 150 or min(arr.shape[:2]) == 128
    assert (150, 135, 3) in {a.shape for a in stored.values()}  # a 160x144 source image, shrunk
    for n in test:
        hr = np.asarray(Image.open(out / "test/hr" / f"{n}.png"))
        lr = np.asarray(Image.open(out / "test/lr" / f"{n}.png"))
        fhr = np.asarray(Image.open(out / "test/full_hr" / f"{n}.png"))
        flr = np.asarray(Image.open(out / "test/full_lr" / f"{n}.png"))
        assert hr.shape == (128, 128, 3) and np.array_equal(lr, bicubic_downscale(hr, 4))
        assert fhr.shape[0] % 4 == 0 and fhr.shape[1] % 4 == 0
        assert np.array_equal(flr, bicubic_downscale(fhr, 4))
    assert sorted(p.stem for p in (out / "test/hr").iterdir()) == sorted(test)


def test_split_is_by_hash_and_stable_as_data_grows(tmp_path):
    for i in range(14):
        save(rand_rgb(136, 136, seed=100 + i), tmp_path / ("small" if i < 7 else "extra") / f"{i}.png")
    shutil.copytree(tmp_path / "small", tmp_path / "big", dirs_exist_ok=True)
    shutil.copytree(tmp_path / "extra", tmp_path / "big", dirs_exist_ok=True)
    p = params(**{"data.max_images": "null"})
    sides = []
    for name in ("small", "big"):
        ingest(p, f"dir:{tmp_path / name}", tmp_path / f"raw-{name}")
        m = prepare(p, tmp_path / f"raw-{name}", tmp_path / f"prep-{name}")
        sides.append({a["name"]: a["split"] for a in m["images"]})
        for a in m["images"]:
            if m["split"]["train"] > 1 and m["split"]["test"] > 1:
                assert a["split"] == split_of(a["sha256"], 0.3)
    small, big = sides
    assert len(big) == 14 and set(small) <= set(big)
    assert all(big[n] == s for n, s in small.items())


def test_max_images_is_a_deterministic_prefix(sample_raw, tmp_path):
    m5 = prepare(params(**{"data.max_images": 5}), sample_raw, tmp_path / "p5")
    m9 = prepare(params(**{"data.max_images": 9}), sample_raw, tmp_path / "p9")
    n5 = {a["name"] for a in m5["images"]}
    n9 = {a["name"] for a in m9["images"]}
    assert len(n5) == 5 and len(n9) == 9 and n5 < n9
    assert m9["skipped_by_max_images"] == m9["inputs"]["files"].__len__() - 9 - len(m9["rejected"])


def test_byte_identical_output_even_after_reingest(sample_raw, tmp_path):
    p = params(**{"data.max_images": 6, "data.shard_size": 2})
    prepare(p, sample_raw, tmp_path / "a")
    ingest(p, "sample", tmp_path / "raw2")  # a new 'created' time in the raw manifest
    prepare(p, tmp_path / "raw2", tmp_path / "b")
    prepare(p, sample_raw, tmp_path / "a")  # rerun over the same output: idempotent
    assert tree_hash(tmp_path / "a") == tree_hash(tmp_path / "b")
    files = sorted(q.relative_to(tmp_path / "a").as_posix() for q in (tmp_path / "a").rglob("*") if q.is_file())
    assert any(f.endswith(".safetensors") for f in files) and any(f.endswith(".png") for f in files)
    assert not any("tmp" in f for f in files)
    assert "created" not in (tmp_path / "a" / "manifest.json").read_text()
    # a different param changes the output
    prepare(params(**{"data.max_images": 6, "data.shard_size": 2, "data.test_fraction": 0.5}), sample_raw,
            tmp_path / "c")
    assert tree_hash(tmp_path / "a") != tree_hash(tmp_path / "c")


@pytest.fixture()
def broken_raw(tmp_path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"")
    (src / "b.png").write_text("hello")
    save(rand_rgb(40, 40), src / "c.png")
    ingest(params(), f"dir:{src}", tmp_path / "raw")
    return tmp_path / "raw"


def test_all_broken_keeps_earlier_output(broken_raw, tmp_path):
    out = tmp_path / "prep"
    out.mkdir()
    (out / "manifest.json").write_text('{"format": "facesr.prepared/1"}')  # an earlier prepared folder
    (out / "keep.txt").write_text("earlier good output")
    with pytest.raises(InputError, match="no usable images"):
        prepare(params(), broken_raw, out)
    assert (out / "keep.txt").read_text() == "earlier good output"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_all_broken_exit_2_no_traceback(broken_raw, tmp_path, capsys):
    rc = main(["--params", str(PARAMS), "--profile", "ci", "prepare", "--raw", str(broken_raw),
               "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "no usable images" in err and "a.jpg: empty" in err and "c.png: too_small" in err
    assert "Traceback" not in err
    assert not (tmp_path / "p").exists()


def test_cli_missing_raw_exit_2(tmp_path, capsys):
    rc = main(["--params", str(PARAMS), "--profile", "ci", "prepare", "--raw", str(tmp_path / "nope"),
               "--out", str(tmp_path / "p")])
    assert rc == 2 and "raw folder not found" in capsys.readouterr().err


def test_cli_subprocess_all_broken(broken_raw, tmp_path):
    exe = Path(sys.executable).parent / "facesr"
    r = subprocess.run([str(exe), "--params", str(PARAMS), "--profile", "ci", "prepare", "--raw", str(broken_raw),
                        "--out", str(tmp_path / "p")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "no usable images" in r.stderr and "Traceback" not in r.stderr


def test_cli_ingest_and_prepare_ok(tmp_path, capsys):
    src = tmp_path / "src"
    for i in range(4):
        save(rand_rgb(136, 136, seed=200 + i), src / f"{i}.png")
    base = ["--params", str(PARAMS), "--profile", "ci"]
    # no --source: params data.source is the default
    assert main([*base, "--set", f"data.source=dir:{src}", "ingest", "--out", str(tmp_path / "raw")]) == 0
    assert main([*base, "prepare", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "prep")]) == 0
    out = capsys.readouterr().out
    assert "ingested 4 files" in out and "prepared 4 images" in out
    m = json.loads((tmp_path / "prep/manifest.json").read_text())
    assert m["accepted"] == 4


def test_tiny_dataset_gets_both_sides(tmp_path):
    for i in range(3):
        save(rand_rgb(132, 132, seed=300 + i), tmp_path / "src" / f"{i}.png")
    ingest(params(), f"dir:{tmp_path / 'src'}", tmp_path / "raw")
    for frac in (0.001, 0.999):
        m = prepare(params(**{"data.test_fraction": frac}), tmp_path / "raw", tmp_path / f"p{frac}")
        assert m["split"]["train"] >= 1 and m["split"]["test"] >= 1
        assert len(list((tmp_path / f"p{frac}" / "test/hr").iterdir())) == m["split"]["test"]
        assert not (tmp_path / f"p{frac}" / ".work").exists()


def test_identical_empty_files_are_empty_not_duplicates(tmp_path):
    src = tmp_path / "src"
    for i in range(3):
        save(rand_rgb(140, 140, seed=40 + i), src / f"g{i}.png")
    for name in ("e1.jpg", "e2.png", "sub/e3.png"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(b"")
    ingest(params(), f"dir:{src}", tmp_path / "raw")
    m = prepare(params(), tmp_path / "raw", tmp_path / "prep")
    reasons = {r["file"]: r["reason"] for r in m["rejected"]}
    assert reasons == {f"images/{n}": "empty: the file has 0 bytes" for n in ("e1.jpg", "e2.png", "sub/e3.png")}


def test_manifest_paths_that_leave_the_raw_folder_are_not_read(tmp_path):
    src = tmp_path / "src"
    for i in range(3):
        save(rand_rgb(140, 140, seed=50 + i), src / f"g{i}.png")
    raw = tmp_path / "raw"
    ingest(params(), f"dir:{src}", raw)
    outside = save(rand_rgb(140, 140, seed=60), tmp_path / "outside.png")
    m = json.loads((raw / "manifest.json").read_text())
    m["files"] += [{"path": str(outside)}, {"path": "images/../../outside.png"}]
    (raw / "manifest.json").write_text(json.dumps(m))
    out = prepare(params(), raw, tmp_path / "prep")
    assert out["accepted"] == 3
    bad = {r["file"]: r["reason"] for r in out["rejected"]}
    assert set(bad) == {str(outside), "images/../../outside.png"}
    assert all(r.startswith("outside:") for r in bad.values())
    assert str(outside) not in out["inputs"]["files"]
