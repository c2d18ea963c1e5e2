"""Progress in logs: plain lines when stderr is not a terminal (DVC, KFP, CI logs), never carriage-return bars."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from facesr.progress import PlainProgress


def test_plain_progress_writes_about_twenty_lines_and_the_last_one():
    buf = io.StringIO()
    p = PlainProgress(1000, desc="train psnr", unit="step", stream=buf)
    for _ in range(1000):
        p.set_postfix({"loss_g": "0.02"})
        p.update(1)
    p.close()
    lines = buf.getvalue().splitlines()
    assert 18 <= len(lines) <= 21 and "\r" not in buf.getvalue()
    assert lines[-1].startswith("train psnr: 1000/1000 step") and "loss_g=0.02" in lines[-1]
    resumed = io.StringIO()
    q = PlainProgress(10, initial=7, desc="d", every=2, stream=resumed)
    q.update(1)
    q.close()  # the unprinted last step is written on close
    assert resumed.getvalue().splitlines() == [resumed.getvalue().splitlines()[0]] and "8/10" in resumed.getvalue()


def test_training_log_in_a_file_has_plain_lines(params_file, prepared_ci, tmp_path):
    """A real `facesr pretrain` with stderr to a file (as under DVC/KFP): no tqdm bar, a few plain lines."""
    log = tmp_path / "stderr.log"
    with open(log, "w") as err:
        rc = subprocess.run([sys.executable, "-m", "facesr", "--params", str(params_file), "--profile", "ci", "--set",
                             "pretrain.steps=40", "pretrain", "--data", str(prepared_ci), "--out", str(tmp_path / "p")],
                            stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
                            timeout=300).returncode
    text = log.read_text()
    assert rc == 0, text
    assert "\r" not in text
    lines = [x for x in text.splitlines() if x.startswith("train psnr: ")]
    assert 10 <= len(lines) <= 21 and lines[-1].startswith("train psnr: 40/40 step"), lines
