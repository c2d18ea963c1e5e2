"""Training against hostile input and interruptions: damaged checkpoints, the NaN guard's message, SIGINT, and two
trainings into one --out (real files, real processes, real signals)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from facesr import checkpoint
from facesr import train as train_mod
from facesr.cli.main import main as cli_main
from facesr.errors import InputError

REPO = Path(__file__).resolve().parents[2]


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(f): (f.read_bytes(), f.stat().st_mtime_ns) for f in folder.rglob("*") if f.is_file()}


@pytest.fixture
def cut_run(params_ci, prepared, tmp_path):
    """A run stopped after step 2 (a checkpoint at step 2, metrics.jsonl with steps 1-2)."""
    p = params_ci(train__max_steps=4, train__checkpoint_every=100)
    out = tmp_path / "cut"
    train_mod.train(p, prepared, "l1_vgg", out, False, progress=False, stop_at_step=2)
    assert (out / "checkpoints" / "last.pt").is_file() and (out / "metrics.jsonl").read_text().strip()
    return p, out


def _garbage_numpy(ck):
    ck["rng"]["numpy"] = ["MT19937", [1, 2, 3], 0, 0, 0.0]


@pytest.mark.parametrize(("mutate", "fragment"), [
    (lambda ck: ck.pop("generator"), "missing field(s) generator"),
    (lambda ck: ck.update(step=-100), "'step' must be an integer >= 0"),
    (lambda ck: ck.update(step="12"), "'step' must be an integer >= 0"),
    (lambda ck: ck["rng"].update(torch=torch.zeros(3)), "'rng.torch' is not a torch RNG state"),
    (_garbage_numpy, "'rng.numpy' is not a numpy RNG state"),
    (lambda ck: ck["rng"].update(python=[3, [1, 2], None]), "'rng.python' is not a Python RNG state"),
    (lambda ck: ck["ema"].update(shadow={"x": torch.zeros(1)}), "'ema.shadow' does not hold"),
    (lambda ck: ck.update(opt_g={"state": {}}), "'opt_g' is not an optimizer state"),
    (lambda ck: ck.update(discriminator={"w": [1, 2]}), "'discriminator' is not a state dict"),
    (lambda ck: ck["generator"].update({"conv_first.weight": torch.zeros(1)}), "'generator' does not fit"),
    (lambda ck: ck.update(format="other/1"), "format is 'other/1'"),
])
def test_a_checkpoint_with_bad_fields_is_refused_before_any_file_changes(cut_run, prepared, mutate, fragment):
    p, out = cut_run
    ckpt = out / "checkpoints" / "last.pt"
    ck = torch.load(ckpt, map_location="cpu", weights_only=True)
    mutate(ck)
    checkpoint.save(ckpt, ck)
    before = _snapshot(out)
    with pytest.raises(InputError) as exc:
        train_mod.train(p, prepared, "l1_vgg", out, True, progress=False)
    msg = str(exc.value)
    assert str(ckpt) in msg and fragment in msg
    assert _snapshot(out) == before  # metrics.jsonl (and everything else) untouched


def test_bad_checkpoint_fields_exit_2_from_the_cli_naming_last_pt(cut_run, prepared, params_file, capsys):
    p, out = cut_run
    ckpt = out / "checkpoints" / "last.pt"
    ck = torch.load(ckpt, map_location="cpu", weights_only=True)
    ck["step"] = -100
    checkpoint.save(ckpt, ck)
    metrics = (out / "metrics.jsonl").read_text()
    code = cli_main(["--params", str(params_file), "--profile", "ci", "--set", "train.deterministic=true", "--set",
                     "data.num_workers=0", "--set", "data.hr_size=64", "--set", "train.max_steps=4", "--set",
                     "train.checkpoint_every=100", "train", "--data", str(prepared), "--variant", "l1_vgg", "--out",
                     str(out), "--resume", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and str(ckpt) in err and "KeyError" not in err and "ValueError" not in err
    assert (out / "metrics.jsonl").read_text() == metrics


def test_truncated_and_pickled_checkpoints_say_what_they_are(cut_run, prepared, tmp_path):
    p, out = cut_run
    ckpt = out / "checkpoints" / "last.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as exc:
        train_mod.train(p, prepared, "l1_vgg", out, True, progress=False)
    msg = str(exc.value)
    assert msg.startswith(f"{ckpt}: ") and "truncated or unreadable" in msg and msg.endswith("put back a good copy")

    torch.save({"format": "facesr.checkpoint/1", "odd": Path("x")}, ckpt)  # a pickled object weights_only refuses
    with pytest.raises(InputError) as exc:
        train_mod.train(p, prepared, "l1_vgg", out, True, progress=False)
    msg = str(exc.value)
    assert str(ckpt) in msg and "not a facesr checkpoint" in msg and "pickled Python objects" in msg
    assert "weights_only" not in msg and "trust" not in msg


def test_the_nan_guard_names_only_a_checkpoint_that_exists(params_file, prepared, tmp_path, capsys):
    out = tmp_path / "o"
    code = cli_main(["--params", str(params_file), "--profile", "ci", "--set", "data.hr_size=64", "--set",
                     "data.num_workers=0", "--set", "train.lr_g=1e30", "--set", "train.lr_d=1e30", "--set",
                     "train.checkpoint_every=100", "train", "--data", str(prepared), "--variant", "l1_vgg", "--out",
                     str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "non-finite" in err, err
    assert not (out / "checkpoints" / "last.pt").exists()
    assert "No checkpoint was written yet" in err and "last.pt" not in err


def _train_cmd(out: Path, prepared: Path, steps: int = 100000, *extra: str) -> list[str]:
    return [sys.executable, "-m", "facesr", "--params", str(REPO / "params.yaml"), "--profile", "ci", "--set",
            "data.hr_size=64", "--set", "data.num_workers=0", "--set", f"train.max_steps={steps}", "--set",
            "train.pretrain_steps=0", "--set", "train.checkpoint_every=1", "train", "--data", str(prepared),
            "--variant", "l1_vgg", "--out", str(out), "--no-progress", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}


def _popen(cmd: list[str]) -> subprocess.Popen:
    # a shell starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT: give the child the default
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_sigint_says_where_the_checkpoint_is_and_that_resume_continues(prepared, tmp_path):
    out = tmp_path / "o"
    proc = _popen(_train_cmd(out, prepared))
    try:
        _wait_for(out / "checkpoints" / "last.pt", proc)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err and str(out / "checkpoints" / "last.pt") in err and "Traceback" not in err
    step = int(err.split("The last checkpoint (step ")[1].split(")")[0])
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == step
    assert not (out.parent / f".{out.name}.lock").exists()  # the lock went with the process


def test_sigterm_checkpoints_the_current_step_and_resume_continues(prepared, tmp_path):
    """A preempted pod gets SIGTERM: training keeps the step it is at (not only the last periodic checkpoint) and exits
    143; --resume continues from exactly there."""
    out = tmp_path / "o"

    def cmd(steps: int, *extra: str) -> list[str]:
        c = _train_cmd(out, prepared, steps, *extra)
        return [x if x != "train.checkpoint_every=1" else "train.checkpoint_every=100000" for x in c]

    proc = _popen(cmd(100000))
    try:
        _wait_for(out / "metrics.jsonl", proc)  # the first log line: steps done, none checkpointed yet
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert "SIGTERM" in err and "--resume" in err and "Traceback" not in err
    step = int(err.split("The last checkpoint (step ")[1].split(")")[0])
    assert step >= 1 and torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == step
    assert all(json.loads(x)["step"] <= step for x in (out / "metrics.jsonl").read_text().splitlines())
    assert not (out.parent / f".{out.name}.lock").exists()
    done = subprocess.run(cmd(step + 2, "--resume"), capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == step + 2


def test_a_second_training_into_the_same_out_gets_exit_2_naming_the_holder(prepared, tmp_path):
    out = tmp_path / "o"
    first = _popen(_train_cmd(out, prepared))
    try:
        _wait_for(out.parent / f".{out.name}.lock", first)
        second = subprocess.run(_train_cmd(out, prepared, 2, "--resume"), capture_output=True, text=True, env=_env(),
                                timeout=120)
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
        first.kill()
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"--out {out}: in use by facesr train (pid {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr
