"""Atomic writes and folders: a failure never damages what was there before."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from facesr.errors import InputError
from facesr.fsutil import atomic_dir, atomic_write_json, read_json, sha256_file, tree_hash


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    f = tmp_path / "x.bin"
    data = bytes(range(256)) * 5000
    f.write_bytes(data)
    assert sha256_file(f) == hashlib.sha256(data).hexdigest()


def test_atomic_dir_replaces_on_success(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with atomic_dir(out) as tmp:
        assert tmp != out and tmp.parent == out.parent
        (tmp / "new.txt").write_text("new")
        assert (out / "old.txt").exists()  # the old output stays until the new one is complete
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folders left behind


def test_atomic_dir_keeps_old_output_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "good.txt").write_text("good")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("boom")
    assert (out / "good.txt").read_text() == "good"
    assert not (out / "half.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_write_json_and_read_json(tmp_path: Path) -> None:
    f = tmp_path / "sub" / "m.json"
    atomic_write_json(f, {"a": 1, "b": [1, 2]})
    assert read_json(f) == {"a": 1, "b": [1, 2]}
    with pytest.raises(InputError, match="not found"):
        read_json(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(InputError, match=r"bad\.json: not valid JSON"):
        read_json(tmp_path / "bad.json")


def test_tree_hash_depends_on_names_and_contents(tmp_path: Path) -> None:
    a = tmp_path / "a"
    (a / "s").mkdir(parents=True)
    (a / "s" / "1.txt").write_text("one")
    h1 = tree_hash(a)
    (a / "s" / "1.txt").write_text("uno")
    h2 = tree_hash(a)
    (a / "s" / "1.txt").rename(a / "s" / "2.txt")
    h3 = tree_hash(a)
    assert len({h1, h2, h3}) == 3
