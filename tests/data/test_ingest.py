"""ingest: sample, dir (folders and archives), S3 against a real moto server, Kaggle errors, path traversal."""

from __future__ import annotations

import io
import json
import os
import socket
import tarfile
import zipfile
from pathlib import Path

import pytest

from facesr.cli.main import main
from facesr.config import load_params
from facesr.data import sources
from facesr.data.ingest import ingest
from facesr.data.sources import parse_source, safe_extract
from facesr.errors import ExternalServiceError, InputError, UserError
from facesr.fsutil import sha256_file

from .imgs import rand_rgb, save

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "params.yaml"


@pytest.fixture(scope="module")
def p():
    return load_params(PARAMS, profile="ci")


def _png_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    from PIL import Image

    Image.fromarray(rand_rgb(40, 40, seed=seed)).save(buf, format="PNG")
    return buf.getvalue()


def test_sample_manifest(sample_raw):
    m = json.loads((sample_raw / "manifest.json").read_text())
    assert m["source"] == "sample" and m["created"].endswith("Z")
    names = {f["path"] for f in m["files"]}
    assert len(names) == m["count"] == 273
    assert not any(n.endswith((".md", ".csv")) for n in names)
    assert {(f["width"], f["height"], f["mode"]) for f in m["files"]} == {(225, 275, "RGB")}
    for f in m["files"][:10]:
        assert sha256_file(sample_raw / f["path"]) == f["sha256"]


def test_dir_recursive_skips_hidden_and_non_images(tmp_path, p):
    src = tmp_path / "src"
    save(rand_rgb(40, 40), src / "a.png")
    save(rand_rgb(40, 40, seed=1), src / "sub/deeper/b.JPG")
    save(rand_rgb(40, 40, seed=2), src / ".hidden/c.png")
    save(rand_rgb(40, 40, seed=3), src / "sub/.d.png")
    (src / "notes.txt").write_text("x")
    (src / "fake.jpg").write_text("not an image, but ingest does not judge")
    m = ingest(p, f"dir:{src}", tmp_path / "raw")
    paths = [f["path"] for f in m["files"]]
    assert paths == ["images/a.png", "images/fake.jpg", "images/sub/deeper/b.JPG"]
    fake = m["files"][1]
    assert fake["width"] is None and fake["mode"] is None and fake["bytes"] == len("not an image, but ingest does not judge")
    assert (tmp_path / "raw/images/sub/deeper/b.JPG").read_bytes() == (src / "sub/deeper/b.JPG").read_bytes()


def test_dir_zip_archive(tmp_path, p):
    arc = tmp_path / "faces.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("faces/one.png", _png_bytes(1))
        zf.writestr("faces/two.png", _png_bytes(2))
        zf.writestr("faces/readme.txt", "hi")
    m = ingest(p, f"dir:{arc}", tmp_path / "raw")
    assert [f["path"] for f in m["files"]] == ["images/faces/one.png", "images/faces/two.png"]
    assert (tmp_path / "raw/images/faces/one.png").read_bytes() == _png_bytes(1)


@pytest.mark.parametrize("bad", ["../evil.png", "/abs/evil.png", "a/../../evil.png"])
def test_zip_path_traversal_refused(tmp_path, bad):
    arc = tmp_path / "evil.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("ok.png", _png_bytes(1))
        zf.writestr(zipfile.ZipInfo(bad), _png_bytes(2))
    dest = tmp_path / "deep/dest"
    with pytest.raises(InputError, match="unsafe archive member"):
        safe_extract(arc, dest)
    assert not any(tmp_path.rglob("evil.png"))
    assert not (dest / "ok.png").exists()  # nothing extracted at all


def test_tar_traversal_and_symlink_refused(tmp_path):
    for kind in ("dotdot", "symlink"):
        arc = tmp_path / f"{kind}.tar"
        with tarfile.open(arc, "w") as tf:
            data = _png_bytes(1)
            if kind == "dotdot":
                ti = tarfile.TarInfo("../evil.png")
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                ti = tarfile.TarInfo("link.png")
                ti.type = tarfile.SYMTYPE
                ti.linkname = "/etc/passwd"
                tf.addfile(ti)
        with pytest.raises(InputError, match="unsafe archive member"):
            safe_extract(arc, tmp_path / "out" / kind)
    assert not (tmp_path / "out" / "evil.png").exists()
    assert not (tmp_path / "out" / "symlink" / "link.png").exists()


def test_tar_gz_ok(tmp_path):
    arc = tmp_path / "ok.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        data = _png_bytes(3)
        ti = tarfile.TarInfo("x/y.png")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    assert safe_extract(arc, tmp_path / "o") == ["x/y.png"]
    assert (tmp_path / "o/x/y.png").read_bytes() == _png_bytes(3)


def test_failed_ingest_keeps_earlier_output(tmp_path, p, capsys):
    out = tmp_path / "raw"
    ingest(p, "sample", out)
    before = sha256_file(out / "manifest.json")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no image files"):
        ingest(p, f"dir:{empty}", out)
    with pytest.raises(InputError, match="no such file"):
        ingest(p, f"dir:{tmp_path / 'missing'}", out)
    assert sha256_file(out / "manifest.json") == before
    assert sorted(q.name for q in tmp_path.iterdir()) == ["empty", "raw"]  # no temporary leftovers
    rc = main(["--params", str(PARAMS), "ingest", "--source", "ftp://x", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown source" in err and "s3://bucket/prefix" in err


def test_parse_source():
    assert parse_source("kaggle").arg == "ashwingupta3012/human-faces"
    assert parse_source("kaggle:a/b").text == "kaggle:a/b"
    assert parse_source("dir:/x").arg == "/x"
    for bad in ("kaggle:onlyowner", "dir:", "s3://", "http://x"):
        with pytest.raises(UserError):
            parse_source(bad)


# --- S3 against moto's real HTTP server --------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture()
def s3_env(s3_server, monkeypatch, tmp_path):
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("FACESR_S3_ENDPOINT_URL", s3_server)
    return s3_server


@pytest.mark.integration
def test_s3_ingest_from_moto_server(s3_env, tmp_path, p):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="faces")
    s3.put_object(Bucket="faces", Key="set1/a.png", Body=_png_bytes(1))
    s3.put_object(Bucket="faces", Key="set1/sub/b.png", Body=_png_bytes(2))
    s3.put_object(Bucket="faces", Key="set1/.hidden.png", Body=_png_bytes(3))
    s3.put_object(Bucket="faces", Key="set1/notes.txt", Body=b"x")
    s3.put_object(Bucket="faces", Key="set1/../escape.png", Body=_png_bytes(4))
    s3.put_object(Bucket="faces", Key="other/c.png", Body=_png_bytes(5))
    m = ingest(p, "s3://faces/set1", tmp_path / "raw")
    assert m["source"] == "s3://faces/set1"
    assert [f["path"] for f in m["files"]] == ["images/a.png", "images/sub/b.png"]
    assert (tmp_path / "raw/images/sub/b.png").read_bytes() == _png_bytes(2)
    assert not (tmp_path / "escape.png").exists()
    with pytest.raises(InputError, match="does not exist"):
        ingest(p, "s3://no-such-bucket/x", tmp_path / "raw2")
    assert not (tmp_path / "raw2").exists()


@pytest.mark.integration
def test_s3_unreachable_is_a_clear_error(s3_env, monkeypatch, tmp_path, p, capsys):
    monkeypatch.setenv("FACESR_S3_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(ExternalServiceError, match="unreachable"):
        ingest(p, "s3://faces/set1", tmp_path / "raw")
    rc = main(["--params", str(PARAMS), "ingest", "--source", "s3://faces/x", "--out", str(tmp_path / "raw")])
    err = capsys.readouterr().err
    assert rc == 1 and "S3 endpoint unreachable" in err and "Traceback" not in err


# --- Kaggle -------------------------------------------------------------------------------------------------------

@pytest.fixture()
def no_kaggle_creds(monkeypatch, tmp_path):
    for k in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_kaggle_without_credentials_exit_2(no_kaggle_creds, tmp_path, capsys):
    rc = main(["--params", str(PARAMS), "ingest", "--source", "kaggle", "--out", str(tmp_path / "raw")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "KAGGLE_USERNAME" in err and "KAGGLE_KEY" in err and "kaggle.json" in err and "dir:" in err
    assert "Traceback" not in err and not (tmp_path / "raw").exists()


def test_kaggle_offline_exit_2(no_kaggle_creds, monkeypatch, tmp_path, capsys):
    import kagglehub

    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "0" * 32)

    def offline(*a, **k):
        raise ConnectionError("Failed to resolve 'www.kaggle.com' (Temporary failure in name resolution)")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    rc = main(["--params", str(PARAMS), "ingest", "--source", "kaggle:owner/ds", "--out", str(tmp_path / "raw")])
    err = capsys.readouterr().err
    assert rc == 2 and "offline or unreachable" in err and "kaggle.com/datasets/owner/ds" in err
    assert not (tmp_path / "raw").exists()


def test_kaggle_download_archive_extracted_safely(no_kaggle_creds, monkeypatch, tmp_path, p):
    import kagglehub

    (tmp_path / "kaggle-config").mkdir()
    (tmp_path / "kaggle-config/kaggle.json").write_text(json.dumps({"username": "u", "key": "k"}))
    assert sources.kaggle_credentials_present()
    arc = tmp_path / "dl.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("Humans/1.png", _png_bytes(1))
        zf.writestr("Humans/2.png", _png_bytes(2))
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle, **k: str(arc))
    m = ingest(p, "kaggle:ashwingupta3012/human-faces", tmp_path / "raw")
    assert m["source"] == "kaggle:ashwingupta3012/human-faces"
    assert [f["path"] for f in m["files"]] == ["images/Humans/1.png", "images/Humans/2.png"]
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr(zipfile.ZipInfo("../../pwned.png"), _png_bytes(1))
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle, **k: str(evil))
    with pytest.raises(InputError, match="unsafe archive member"):
        ingest(p, "kaggle:a/b", tmp_path / "raw")
    assert not any(tmp_path.rglob("pwned.png"))
    assert len(json.loads((tmp_path / "raw/manifest.json").read_text())["files"]) == 2


def test_s3_access_denied_and_no_credentials(monkeypatch, tmp_path, p, capsys):
    import boto3
    from botocore.stub import Stubber

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    real_client = boto3.client

    def denied_client(*a, **k):
        c = real_client(*a, **k)
        stub = Stubber(c)
        stub.add_client_error("list_objects_v2", service_error_code="AccessDenied", service_message="Access Denied",
                              http_status_code=403)
        stub.activate()
        return c

    monkeypatch.setattr(boto3, "client", denied_client)
    rc = main(["--params", str(PARAMS), "ingest", "--source", "s3://locked/x", "--out", str(tmp_path / "raw")])
    err = capsys.readouterr().err
    assert rc == 2 and "access denied" in err and "AWS_ACCESS_KEY_ID" in err and "Traceback" not in err
    monkeypatch.setattr(boto3, "client", real_client)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("FACESR_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    with pytest.raises(UserError, match="no AWS credentials"):
        ingest(p, "s3://b/x", tmp_path / "raw")


# --- hostile input: zip/tar bombs, lying headers, links out of a dir: source, nothing to ingest --------------------

def _leftovers(folder: Path) -> list[str]:
    return sorted(q.name for q in folder.iterdir() if q.name.startswith("."))


def test_zip_bomb_refused_before_extraction(tmp_path, capsys):
    arc = tmp_path / "bomb.zip"
    with zipfile.ZipFile(arc, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("faces/ok.png", _png_bytes(1))
        zf.writestr("faces/huge.png", bytes(80 << 20))  # 80 MiB of zeros: about 80 kB compressed
    assert arc.stat().st_size < 1 << 20
    rc = main(["--params", str(PARAMS), "--profile", "ci", "ingest", "--source", f"dir:{arc}",
               "--out", str(tmp_path / "raw")])
    err = capsys.readouterr().err
    assert rc == 2 and "bomb.zip" in err and "data.max_extract_ratio" in err and "Traceback" not in err
    assert sorted(q.name for q in tmp_path.iterdir()) == ["bomb.zip"]  # nothing extracted, nothing left


def test_tar_gz_bomb_and_total_cap(tmp_path, p):
    arc = tmp_path / "bomb.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        ti = tarfile.TarInfo("huge.png")
        ti.size = 80 << 20
        tf.addfile(ti, io.BytesIO(bytes(ti.size)))
    with pytest.raises(InputError, match=r"bomb\.tar\.gz: .*max_extract_ratio"):
        ingest(p, f"dir:{arc}", tmp_path / "raw")
    # the total cap, for archives that do not compress (random PNGs)
    arc2 = tmp_path / "big.tar"
    with tarfile.open(arc2, "w") as tf:
        for i in range(3):
            data = os.urandom(400_000)
            ti = tarfile.TarInfo(f"r{i}.png")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    small = load_params(PARAMS, profile="ci", overrides=["data.max_extract_bytes=1000000"])
    with pytest.raises(InputError, match=r"big\.tar: the archive declares 1200000 bytes, more than data.max_extract_bytes = 1000000"):
        ingest(small, f"dir:{arc2}", tmp_path / "raw")
    assert ingest(p, f"dir:{arc2}", tmp_path / "raw")["count"] == 3  # the default cap lets it through
    assert _leftovers(tmp_path) == []


def _lie_about_size(arc: Path, name: str, declared: int) -> None:
    """Patch the uncompressed size of member ``name`` in both the local and the central header."""
    data = bytearray(arc.read_bytes())
    with zipfile.ZipFile(arc) as zf:
        info = zf.getinfo(name)
    local = info.header_offset
    assert data[local:local + 4] == b"PK\x03\x04"
    data[local + 22:local + 26] = declared.to_bytes(4, "little")
    central = data.rindex(b"PK\x01\x02")  # the one central entry of this archive (the central directory is last)
    data[central + 24:central + 28] = declared.to_bytes(4, "little")
    arc.write_bytes(bytes(data))


def test_zip_whose_header_lies_about_its_size(tmp_path, capsys):
    arc = tmp_path / "liar.zip"
    with zipfile.ZipFile(arc, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.png", bytes(5 << 20))
    _lie_about_size(arc, "a.png", 100)
    rc = main(["--params", str(PARAMS), "--profile", "ci", "ingest", "--source", f"dir:{arc}",
               "--out", str(tmp_path / "raw")])
    err = capsys.readouterr().err
    assert rc == 2 and "liar.zip" in err and "'a.png'" in err and "Traceback" not in err
    assert sorted(q.name for q in tmp_path.iterdir()) == ["liar.zip"]


def test_real_bytes_are_counted_while_writing(tmp_path):
    """A member that yields more than its header declared is stopped at the declared size (headers lie)."""
    from facesr.data.sources import ExtractLimits, _write_members

    src = tmp_path / "payload"
    src.write_bytes(os.urandom(3 << 20))
    members = [("x.png", 1000, lambda: open(src, "rb"))]
    with pytest.raises(InputError, match="more than the 1000 bytes its header declares"):
        _write_members(tmp_path / "a.zip", tmp_path / "dest", members, ExtractLimits(), 10)
    assert (tmp_path / "dest" / "x.png").stat().st_size == 0  # stopped at the first block, not after 3 MiB
    members = [("y.png", 3 << 20, lambda: open(src, "rb"))]
    with pytest.raises(InputError, match="max_extract_bytes = 2000000"):
        _write_members(tmp_path / "a.zip", tmp_path / "dest2", members, ExtractLimits(max_bytes=2_000_000), 10)


def test_dir_source_does_not_follow_links_out_of_the_folder(tmp_path, p):
    secret = tmp_path / "outside" / "secret.png"
    secret.parent.mkdir()
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    d = tmp_path / "D"
    save(rand_rgb(40, 40), d / "a.png")
    (d / "passwd.png").symlink_to("/etc/passwd")
    (d / "secret.png").symlink_to(secret)
    (d / "inside.png").symlink_to(d / "a.png")  # inside the folder: followed
    (d / "loop.png").symlink_to(d / "loop.png")
    (d / "dangling.png").symlink_to(d / "gone.png")
    (d / "outdir").symlink_to(secret.parent)
    (d / "self").symlink_to(d)  # a folder loop must not hang
    os.mkfifo(d / "fifo.png")
    m = ingest(p, f"dir:{d}", tmp_path / "raw")
    assert [f["path"] for f in m["files"]] == ["images/a.png", "images/inside.png"]
    reasons = {s["path"]: s["reason"] for s in m["skipped"]}
    assert set(reasons) == {"passwd.png", "secret.png", "loop.png", "dangling.png", "outdir", "self", "fifo.png"}
    assert "outside the source folder" in reasons["passwd.png"] and "outside" in reasons["secret.png"]
    assert "fifo" in reasons["fifo.png"] and "looping" in reasons["loop.png"]
    for f in (tmp_path / "raw").rglob("*"):
        assert not f.is_symlink()
        if f.is_file():
            assert b"root:x:0:0" not in f.read_bytes()


def test_nothing_to_ingest_creates_nothing(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    for source in (f"dir:{tmp_path}/nothing/*.png", f"dir:{empty}"):
        rc = main(["--params", str(PARAMS), "--profile", "ci", "ingest", "--source", source,
                   "--out", str(tmp_path / "new" / "deeper" / "raw")])
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err
    assert sorted(q.name for q in tmp_path.iterdir()) == ["empty"]  # neither --out nor its parents were made


@pytest.mark.parametrize("mode,suffix", [("w:gz", ".tar.gz"), ("w:bz2", ".tar.bz2"), ("w:xz", ".tar.xz")])
def test_truncated_compressed_tar_is_exit_2(tmp_path, p, mode, suffix):
    arc = tmp_path / f"cut{suffix}"
    with tarfile.open(arc, mode) as tf:
        data = os.urandom(300_000)
        ti = tarfile.TarInfo("a.png")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    arc.write_bytes(arc.read_bytes()[: arc.stat().st_size // 2])
    with pytest.raises(InputError, match=f"cut{suffix}"):
        ingest(p, f"dir:{arc}", tmp_path / "raw")
    assert sorted(q.name for q in tmp_path.iterdir()) == [arc.name]
