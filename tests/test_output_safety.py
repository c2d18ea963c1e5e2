"""Never lose a user's data: what a verb's --out may be, leftovers of killed runs, disk-full errors, readable modes.

Real files, real `facesr` processes (kill -9 included) and, where the machine allows an unprivileged mount namespace,
a real full file system (a 1 MiB tmpfs).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facesr.cli.main import main
from facesr.config import load_params
from facesr.data.ingest import ingest
from facesr.data.prepare import prepare
from facesr.errors import UserError
from facesr.fsutil import clean_stale_temporaries, tree_hash

from .data.imgs import rand_rgb, save

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"
FACESR = [sys.executable, "-m", "facesr"]
ENV = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "CUDA_VISIBLE_DEVICES": ""}


def _params(**sets):
    return load_params(PARAMS, profile="ci", overrides=[f"{k}={v}" for k, v in sets.items()])


def _cli(*args: str) -> int:
    return main(["--params", str(PARAMS), "--profile", "ci", *args])


def _src(folder: Path, n: int = 4) -> Path:
    for i in range(n):
        save(rand_rgb(140, 140, seed=100 + i), folder / f"f{i}.png")
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


# --------------------------------------------------------------------------------------------------- --out


def test_ingest_refuses_a_folder_it_did_not_make(tmp_path, capsys):
    user = tmp_path / "u"
    user.mkdir()
    (user / "thesis.txt").write_text("four years of work")
    rc = _cli("ingest", "--source", "sample", "--out", str(user))
    err = capsys.readouterr().err
    assert rc == 2
    assert (user / "thesis.txt").read_text() == "four years of work"
    assert str(user) in err and "thesis.txt" in err and "choose a new or empty folder" in err
    assert "Traceback" not in err and err.count("error:") == 1
    assert _leftovers(tmp_path) == []
    # an empty folder and an earlier raw folder are fine; the rerun replaces it
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _cli("ingest", "--source", f"dir:{_src(tmp_path / 's')}", "--out", str(empty)) == 0
    assert _cli("ingest", "--source", f"dir:{tmp_path / 's'}", "--out", str(empty)) == 0
    assert json.loads((empty / "manifest.json").read_text())["count"] == 4


def test_prepare_never_writes_over_its_raw_input(tmp_path, capsys):
    raw = tmp_path / "P" / "raw"
    ingest(_params(), f"dir:{_src(tmp_path / 's')}", raw)
    before = tree_hash(raw)
    for out in (raw, tmp_path / "P", raw / "prepared"):
        rc = _cli("prepare", "--raw", str(raw), "--out", str(out))
        err = capsys.readouterr().err
        assert rc == 2, out
        assert str(out) in err and "input" in err and "Traceback" not in err
    assert tree_hash(raw) == before
    assert sorted(p.name for p in (tmp_path / "P").iterdir()) == ["raw"]


def test_out_dot_is_refused_and_leaves_no_copy(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert _cli("ingest", "--source", "sample", "--out", ".") == 2
    assert "current folder" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert _cli("ingest", "--source", "sample", "--out", "..") == 2
    assert list(work.iterdir()) == [] and _leftovers(tmp_path) == [] and _leftovers(tmp_path.parent) == []


def test_a_file_or_a_foreign_folder_is_refused_for_evaluate_and_train(tmp_path, prepared_ci, ci_params):
    from facesr.evaluate import evaluate
    from facesr.train import train

    before = tree_hash(prepared_ci)
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.md").write_text("keep")
    for out in (user, prepared_ci, prepared_ci / "eval"):
        with pytest.raises(UserError, match="--out"):
            evaluate(ci_params, prepared_ci, {}, out)
        with pytest.raises(UserError, match="--out"):
            train(ci_params, prepared_ci, "l1_vgg", out, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        evaluate(ci_params, prepared_ci, {}, tmp_path / "file")
    assert (user / "notes.md").read_text() == "keep" and sorted(os.listdir(user)) == ["notes.md"]
    assert tree_hash(prepared_ci) == before


def test_upscale_writes_only_into_its_own_folder(tmp_path, capsys):
    from tests.infer.tiny_models import make_model_dir

    model = make_model_dir(tmp_path / "train_out", seed=1)
    img = save(rand_rgb(16, 16, seed=1), tmp_path / "in" / "face.png")
    # a folder of the user's own files: refused, its face.png (the output's name) untouched
    pics = tmp_path / "pics"
    pics.mkdir()
    (pics / "face.png").write_bytes(b"my own picture")
    base = ["upscale", "--model", str(model), "--no-progress", "--tile", "0"]
    assert _cli(*base, str(img), "--out", str(pics)) == 2
    assert "pics" in capsys.readouterr().err and (pics / "face.png").read_bytes() == b"my own picture"
    # the folder that holds the input: refused
    assert _cli(*base, str(img), "--out", str(tmp_path / "in")) == 2
    assert sorted(os.listdir(tmp_path / "in")) == ["face.png"]
    # a glob that matches nothing: exit 2 before anything is made
    assert _cli(*base, str(tmp_path / "none*.png"), "--out", str(tmp_path / "new" / "up")) == 2
    assert "nothing was written" in capsys.readouterr().err and not (tmp_path / "new").exists()
    # a new folder, then a rerun into it
    up = tmp_path / "up"
    assert _cli(*base, str(img), "--out", str(up)) == 0
    assert _cli(*base, str(img), "--out", str(up)) == 0
    assert sorted(os.listdir(up)) == [".facesr-upscale.json", "face.png"]


# ----------------------------------------------------------------------------------------- killed runs


def _wait_for(pred, timeout: float = 60.0) -> None:
    t = time.time()
    while not pred():
        if time.time() - t > timeout:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_kill_9_leftovers_are_removed_by_the_next_run(tmp_path, sample_raw):
    out = tmp_path / "prep"
    cmd = [*FACESR, "--params", str(PARAMS), "--profile", "ci", "--set", "data.max_images=null", "prepare",
           "--raw", str(sample_raw), "--out", str(out)]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def spilled() -> bool:
            return any(t.is_dir() and len(list((t / ".work").glob("*.npy"))) >= 3
                       for t in tmp_path.glob(".prep.tmp-*") if (t / ".work").is_dir())

        _wait_for(spilled)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    left = _leftovers(tmp_path)
    assert len(left) == 1 and f"-{proc.pid}-" in left[0]  # the temporary names its writer
    assert not out.exists()
    r = subprocess.run(cmd[:7] + cmd[9:], env=ENV, capture_output=True, text=True)  # ci profile, a small run
    assert r.returncode == 0, r.stderr
    assert _leftovers(tmp_path) == [] and (out / "manifest.json").is_file()


_HOLDER = """
import sys, time
from facesr.fsutil import atomic_dir
with atomic_dir(sys.argv[1]) as tmp:
    (tmp / "part.bin").write_bytes(b"x" * 1000)
    print(tmp, flush=True)
    time.sleep(120)
"""


def test_a_live_writer_keeps_its_temporary(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        live = Path(holder.stdout.readline().strip())
        assert live.is_dir() and f"-{holder.pid}-" in live.name
        # another run of the same output: its cleanup must not touch the live temporary
        assert clean_stale_temporaries(out) == []
        ingest(_params(), f"dir:{_src(tmp_path / 's', 2)}", out)
        assert (live / "part.bin").is_file() and (out / "manifest.json").is_file()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert clean_stale_temporaries(out) == [live] and not live.exists()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


# ------------------------------------------------------------------------------------------------- modes


@pytest.mark.parametrize("umask,fmode,dmode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_outputs_get_the_umask_modes(tmp_path, umask, fmode, dmode):
    src = _src(tmp_path / "s", 3)
    raw, prep = tmp_path / "raw", tmp_path / "prep"

    def run(*args: str) -> None:
        r = subprocess.run([*FACESR, "--params", str(PARAMS), "--profile", "ci", *args], env=ENV,
                           capture_output=True, text=True, preexec_fn=lambda: os.umask(umask))
        assert r.returncode == 0, r.stderr

    run("ingest", "--source", f"dir:{src}", "--out", str(raw))
    run("prepare", "--raw", str(raw), "--out", str(prep))
    for top in (raw, prep):
        paths = [top, *top.rglob("*")]
        assert len(paths) > 3
        for p in paths:
            mode = stat.S_IMODE(p.lstat().st_mode)
            assert mode == (dmode if p.is_dir() else fmode), (p, oct(mode))


# ---------------------------------------------------------------------------------------------- full disk


def _can_mount_tmpfs(tmp_path: Path) -> bool:
    if not shutil.which("unshare"):
        return False
    m = tmp_path / "probe"
    m.mkdir()
    r = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k none {m}"], capture_output=True)
    m.rmdir()
    return r.returncode == 0


def test_disk_full_names_the_file_and_leaves_nothing(tmp_path, sample_raw):
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("no unprivileged mount namespace here (unshare -rm) for a small tmpfs")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    facesr = " ".join([sys.executable, "-m", "facesr", "--params", str(PARAMS), "--profile", "ci"])
    script = (f"mount -t tmpfs -o size=1m none {mnt} && cd {REPO} && "
              f"{facesr} prepare --raw {sample_raw} --out {mnt}/prep; rc=$?; ls -A {mnt}; exit $rc")
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=ENV, capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    err = r.stderr.strip().splitlines()
    assert len([ln for ln in err if ln.startswith("error:")]) == 1
    line = next(ln for ln in err if ln.startswith("error:"))
    assert f"{mnt}/prep/" in line and "disk is full" in line and "no space left on device" in line
    assert ".tmp-" not in line and "requested and" not in line
    assert "Traceback" not in r.stderr
    assert r.stdout.strip() == ""  # nothing left on the full file system
