"""facesr.weights and `facesr weights`: table, resolve/provenance, import, verify, fetch offline, torch.hub bridge."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest
import torch

from facesr import weights as w
from facesr.cli.main import main
from facesr.errors import InputError, WeightsMissingError


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv(w.ENV_DIR, str(d))
    monkeypatch.delenv(w.ENV_TRUST, raising=False)
    return d


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection fails like on the offline build machine (also when a network exists)."""
    def refuse(*a, **k):
        raise OSError("network disabled in this test")
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def _fake(folder: Path, name: str) -> tuple[Path, str]:
    """A small random state dict saved under the registry's file name; returns (path, sha256)."""
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / w.get(name).file
    torch.save({"weight": torch.randn(4, 4)}, p)
    return p, hashlib.sha256(p.read_bytes()).hexdigest()


def _run(args, params_file, capsys):
    rc = main(["--params", str(params_file), *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_table_has_every_needed_file():
    names = {e.name for e in w.entries()}
    assert {"vgg19", "alexnet", "lpips_alex_v0.1", "pieapp"} <= names
    for e in map(w.get, ("vgg19", "alexnet", "lpips_alex_v0.1", "pieapp")):
        assert e.sha256 or e.sha256_prefix, e.name
        if e.sha256:
            assert len(e.sha256) == 64 and int(e.sha256, 16) >= 0
        assert e.url and e.url.startswith("https://") and e.used_by
    # torchvision names carry their sha256 prefix
    assert w.get("vgg19").sha256_prefix in w.get("vgg19").file
    assert w.get("alexnet").sha256_prefix in w.get("alexnet").file


def test_bundled_lpips_heads_verify_against_the_wheel():
    p = w.resolve("lpips_alex_v0.1")
    assert p.is_file() and "lpips" in str(p)
    assert w.provenance("lpips_alex_v0.1")["status"] == "real"


def test_resolve_missing_names_file_url_and_import(cache):
    with pytest.raises(WeightsMissingError) as ei:
        w.resolve("vgg19")
    msg = str(ei.value)
    assert "vgg19-dcbb9e9d.pth" in msg and w.get("vgg19").url in msg and "facesr weights import" in msg
    assert str(cache) in msg
    assert w.provenance("vgg19") == {"status": "missing", "sha256": None, "file": "vgg19-dcbb9e9d.pth"}
    assert w.provenance("vgg19", used_untrained=True)["status"] == "untrained"


def test_fake_file_rejected_unless_overridden(cache, tmp_path, monkeypatch):
    p, digest = _fake(cache, "pieapp")
    with pytest.raises(WeightsMissingError, match="expected 0937b014"):
        w.resolve("pieapp")
    with w.override("pieapp", sha256=digest):
        assert w.resolve("pieapp") == p
        assert w.provenance("pieapp") == {"status": "real", "sha256": digest, "file": "PieAPPv0.1.pth"}
    with pytest.raises(WeightsMissingError):  # override is gone again
        w.resolve("pieapp")
    monkeypatch.setenv(w.ENV_TRUST, "1")
    assert w.resolve("pieapp") == p
    assert w.status("pieapp")["state"].startswith("ok (TRUSTED")


def test_prefix_check(cache):
    p, digest = _fake(cache, "vgg19")
    with w.override("vgg19", sha256_prefix=digest[:8]):
        assert w.resolve("vgg19") == p
    with w.override("vgg19", sha256_prefix=digest[:7] + ("0" if digest[7] != "0" else "1")):
        with pytest.raises(WeightsMissingError):
            w.resolve("vgg19")


def test_import_verify_cli(cache, tmp_path, params_file, capsys):
    src = tmp_path / "downloads" / "nested"
    p, digest = _fake(src, "pieapp")
    (tmp_path / "downloads" / "unrelated.bin").write_bytes(b"x")
    with w.override("pieapp", sha256=digest):
        rc, out, err = _run(["weights", "import", str(tmp_path / "downloads")], params_file, capsys)
        assert rc == 0, err
        assert "pieapp: imported" in out
        assert (cache / "PieAPPv0.1.pth").read_bytes() == p.read_bytes()
        rc, out, err = _run(["weights", "verify", "pieapp"], params_file, capsys)
        assert rc == 0 and " ok " in out
        # corrupt the cached copy: verify re-hashes and fails with exit 2
        (cache / "PieAPPv0.1.pth").write_bytes(b"corrupt")
        rc, out, err = _run(["weights", "verify"], params_file, capsys)
        assert rc == 2 and "corrupt" in err and "pieapp" in err
    rc, out, err = _run(["weights", "verify", "--require", "vgg19"], params_file, capsys)
    assert rc == 2 and "missing" in err and "facesr weights fetch vgg19" in err


def test_import_rejects_wrong_digest_and_empty_folder(cache, tmp_path, params_file, capsys):
    _fake(tmp_path / "dl", "pieapp")  # digest does not match the real one
    with pytest.raises(InputError, match="not the published file"):
        w.import_dir(tmp_path / "dl")
    assert not (cache / "PieAPPv0.1.pth").exists()
    (tmp_path / "empty").mkdir()
    rc, out, err = _run(["weights", "import", str(tmp_path / "empty")], params_file, capsys)
    assert rc == 2 and "none of the known files" in err and "vgg19-dcbb9e9d.pth" in err
    rc, out, err = _run(["weights", "import", str(tmp_path / "nope")], params_file, capsys)
    assert rc == 2 and "not a folder" in err


def test_list_cli(cache, params_file, capsys):
    rc, out, err = _run(["weights", "list"], params_file, capsys)
    assert rc == 0, err
    for e in w.entries():
        assert e.name in out and e.file in out
    assert "missing" in out and str(cache) in out


def test_fetch_offline_exit_2_names_file_url_and_import(cache, params_file, capsys, no_network):
    rc, out, err = _run(["weights", "fetch", "vgg19", "--timeout", "2"], params_file, capsys)
    assert rc == 2
    assert "vgg19-dcbb9e9d.pth" in err and "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in err
    assert "facesr weights import DIR" in err and "Traceback" not in err
    assert not list(cache.glob("*.part")) and not list(cache.glob(".*.part"))
    rc, out, err = _run(["weights", "fetch", "nosuch"], params_file, capsys)
    assert rc == 2 and "unknown name" in err


def test_fetch_downloads_and_checks(cache, tmp_path, monkeypatch):
    """fetch through a file:// URL (urllib) -- a real download path without a network."""
    p, digest = _fake(tmp_path / "srv", "pieapp")
    with w.override("pieapp", url=p.as_uri(), sha256=digest):
        old = os.umask(0o022)
        try:
            rep = w.fetch(["pieapp"])
        finally:
            os.umask(old)
        assert rep[0]["action"] == "downloaded" and (cache / "PieAPPv0.1.pth").is_file()
        assert (cache / "PieAPPv0.1.pth").stat().st_mode & 0o777 == 0o644  # the umask's mode, not mkstemp's 0600
        assert w.fetch(["pieapp"])[0]["action"] == "present"
    with w.override("pieapp", url=p.as_uri()):  # real digest expected: the download is refused
        with pytest.raises(WeightsMissingError, match="expected"):
            w.fetch(["pieapp"], force=True)


def test_torch_home_lets_torchvision_load_without_download(cache, tmp_path, no_network):
    """A fake AlexNet in our cache is what torchvision loads through the prepared hub folder."""
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.alexnet(weights=None)
    cache.mkdir(parents=True)
    torch.save(ref.state_dict(), cache / "alexnet-owt-7be5be79.pth")
    digest = hashlib.sha256((cache / "alexnet-owt-7be5be79.pth").read_bytes()).hexdigest()
    with w.override("alexnet", sha256=digest, sha256_prefix=None):
        with w.torch_home(["alexnet"], tmp_path / "th") as home:
            assert (home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth").exists()
            net = torchvision.models.alexnet(weights=torchvision.models.AlexNet_Weights.IMAGENET1K_V1)
    assert torch.equal(net.features[0].weight, ref.features[0].weight)
    assert torch.hub.get_dir() != str(tmp_path / "th" / "hub")  # restored


def test_unpinned_entry_is_accepted_but_flagged(cache):
    entry = w.WeightFile(name="test_unpinned", file="unpinned.bin", url="https://example.invalid/unpinned.bin",
                         used_by=("tests",))
    w.register(entry)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "unpinned.bin").write_bytes(b"abc")
        assert w.resolve("test_unpinned") == cache / "unpinned.bin"
        assert w.status("test_unpinned")["state"].startswith("ok (UNPINNED")
        src = cache.parent / "srv" / "unpinned.bin"
        src.parent.mkdir()
        src.write_bytes(b"served")
        with w.override("test_unpinned", url=src.as_uri()):
            assert w.fetch(["test_unpinned"], force=True)[0]["action"] == "downloaded"
        assert (cache / "unpinned.bin").read_bytes() == b"served"
        with pytest.raises(ValueError, match="already registered"):
            w.register(w.WeightFile(name="test_unpinned", file="other.bin", url=None, used_by=("x",)))
    finally:
        w._REGISTRY.pop("test_unpinned", None)
        w.ENTRIES[:] = [e for e in w.ENTRIES if e.name != "test_unpinned"]
