"""Atomic writes and folders: a failure never damages what was there before."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from facesr.errors import InputError, UserError
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


# --- what an --out may be (check_output_folder) --------------------------------------------------------------------

RAW = {"manifest.json": {"facesr.raw/1"}}


def test_check_output_folder_allows_absent_empty_and_own(tmp_path: Path) -> None:
    from facesr.fsutil import check_output_folder

    assert check_output_folder(tmp_path / "new" / "raw", markers=RAW) == tmp_path / "new" / "raw"
    (tmp_path / "empty").mkdir()
    check_output_folder(tmp_path / "empty", markers=RAW)
    (tmp_path / "empty" / ".gitignore").write_text("/grids\n")  # DVC's, beside its outs: still empty
    check_output_folder(tmp_path / "empty", markers=RAW)
    own = tmp_path / "own"
    own.mkdir()
    (own / "manifest.json").write_text('{"format": "facesr.raw/1"}')
    (own / "extra.txt").write_text("x")
    check_output_folder(own, markers=RAW)
    (own / "manifest.json").write_text('{"format": "facesr.prepared/1"}')  # another verb's output: not this one's
    with pytest.raises(UserError, match="not a raw"):
        check_output_folder(own, markers=RAW, kind="raw folder")
    assert not (tmp_path / "new").exists()  # the check creates nothing


def test_check_output_folder_refuses_inputs_files_and_the_cwd(tmp_path: Path, monkeypatch) -> None:
    from facesr.fsutil import check_output_folder

    inp = tmp_path / "data" / "raw"
    inp.mkdir(parents=True)
    with pytest.raises(UserError, match="also an input"):
        check_output_folder(inp, markers=RAW, inputs=[inp])
    with pytest.raises(UserError, match="holds the input"):
        check_output_folder(tmp_path / "data", markers=RAW, inputs=[inp])
    with pytest.raises(UserError, match="inside the input folder"):
        check_output_folder(inp / "out", markers=RAW, inputs=[inp])
    check_output_folder(inp / "out", markers=RAW, inputs=[inp], inside_inputs_ok=True)
    link = tmp_path / "link"
    link.symlink_to(inp)
    with pytest.raises(UserError, match="also an input"):
        check_output_folder(link, markers=RAW, inputs=[inp])
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        check_output_folder(tmp_path / "f", markers=RAW)
    monkeypatch.chdir(inp)
    with pytest.raises(UserError, match="current folder"):
        check_output_folder(".", markers=RAW)
    with pytest.raises(UserError, match="current folder"):
        check_output_folder(tmp_path, markers=RAW)
    with pytest.raises(UserError, match="root of the file system"):
        check_output_folder("/", markers=RAW, replaces=False)


def test_check_output_folder_own_names(tmp_path: Path) -> None:
    """A training run killed before its first marker holds only its own names: a rerun may use it; not with more."""
    from facesr.fsutil import check_output_folder

    kw = {"markers": {"model/model.json": {"facesr.model/1"}}, "own_names": ("metrics.jsonl", "checkpoints")}
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "metrics.jsonl").write_text("")
    check_output_folder(out, **kw)
    (out / "model").mkdir()  # a model/ without its model.json is not ours
    with pytest.raises(UserError, match="model"):
        check_output_folder(out, **kw)
    (out / "model" / "model.json").write_text('{"format": "facesr.model/1"}')
    check_output_folder(out, **kw)


# --- atomic writers: modes, full disks, stale temporaries ------------------------------------------------------------


def test_atomic_writers_follow_the_umask(tmp_path: Path) -> None:
    import os
    import stat

    from facesr.fsutil import atomic_copy_file, atomic_write_bytes

    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        atomic_copy_file(tmp_path / "a.bin", tmp_path / "b.bin")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"a.bin": 0o640, "b.bin": 0o640, "d": 0o750}


def test_disk_full_names_the_file_and_removes_the_partial_one(tmp_path: Path) -> None:
    import errno

    from facesr.errors import DiskFullError
    from facesr.fsutil import atomic_file

    target = tmp_path / "big.png"
    with pytest.raises(DiskFullError, match=r"big\.png: cannot write it: the disk is full \(no space left on device\)"):
        with atomic_file(target) as f:
            f.write(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []
    # inside an output folder: the message names the file as it would be in the output, not in the temporary
    out = tmp_path / "out"
    with pytest.raises(DiskFullError, match=r"quota exceeded") as info:
        with atomic_dir(out) as tmp:
            raise OSError(errno.EDQUOT, "Disk quota exceeded", str(tmp / "train" / "shard-0.safetensors"))
    assert str(info.value).startswith(f"{out}/train/shard-0.safetensors: ")
    with pytest.raises(DiskFullError) as info:
        with atomic_dir(out) as tmp:
            deep = tmp / "test" / "hr" / "x.png"
            with atomic_file(deep) as f:
                raise OSError(errno.ENOSPC, "No space left on device")
    assert str(info.value).startswith(f"{out}/test/hr/x.png: ")
    assert list(tmp_path.iterdir()) == []


def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(p.stdout)


def test_stale_old_folder_is_restored_when_the_output_is_missing(tmp_path: Path) -> None:
    """A kill between the two renames of a swap leaves the earlier output as .NAME.old-*: it comes back."""
    import socket

    from facesr.fsutil import _host_tag, clean_stale_temporaries

    pid = _dead_pid()
    old = tmp_path / f".out.old-{_host_tag()}-{pid}-abcd1234"
    old.mkdir()
    (old / "manifest.json").write_text("earlier")
    tmp = tmp_path / f".out.tmp-{_host_tag()}-{pid}-efgh5678"
    tmp.mkdir()
    (tmp / "half").write_text("x")
    legacy = tmp_path / ".out.tmp-q1w2e3r4"  # an older facesr's name (no host/pid)
    legacy.mkdir()
    foreign = tmp_path / f".out.tmp-not{socket.gethostname()}x-{pid}-zzzz0000"  # another host's: left alone
    foreign.mkdir()
    other = tmp_path / f".other.tmp-{_host_tag()}-{pid}-aaaa0000"  # another output's
    other.mkdir()
    notes = tmp_path / ".out.tmp-my-notes"  # a user's folder that only looks like one
    notes.mkdir()
    removed = clean_stale_temporaries(tmp_path / "out")
    assert sorted(removed) == sorted([tmp, legacy])
    assert (tmp_path / "out" / "manifest.json").read_text() == "earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", foreign.name, other.name, notes.name])


def test_failed_atomic_dir_removes_the_parents_it_made(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "a" / "b" / "out"):
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_nested_atomic_dir_on_the_enclosing_temporary_does_not_deadlock(tmp_path):
    """A writer that itself uses atomic_dir (save_generator) called on an enclosing atomic_dir's temporary."""
    import threading

    from facesr.fsutil import atomic_dir

    done = threading.Event()

    def write() -> None:
        with atomic_dir(tmp_path / "model") as outer:
            (outer / "a.txt").write_text("a")
            with atomic_dir(outer) as inner:
                (inner / "b.txt").write_text("b")
        done.set()

    t = threading.Thread(target=write, daemon=True)
    t.start()
    t.join(20)
    assert done.is_set(), "atomic_dir deadlocked on its own lock"
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["b.txt"]
