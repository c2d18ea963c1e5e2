"""A pipeline task passes SIGTERM (a preempted or deleted pod) on to the facesr verb it runs, which then keeps its
state (facesr train checkpoints the step it is at) and stops; the task reports the verb's exit status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path


def test_run_cli_forwards_sigterm_to_the_verb(tmp_path: Path) -> None:
    marker = tmp_path / "child-got-term"
    started = tmp_path / "child-started"
    verb = textwrap.dedent(f"""
        import pathlib, signal, sys, time
        def term(signum, frame):
            pathlib.Path({str(marker)!r}).write_text("TERM")
            sys.exit(143)
        signal.signal(signal.SIGTERM, term)
        pathlib.Path({str(started)!r}).write_text("up")
        time.sleep(120)
    """)
    task = textwrap.dedent(f"""
        import sys
        from facesr.kfp import runtime
        runtime.command = lambda argv, nproc_per_node=1: [sys.executable, "-c", {verb!r}]
        try:
            runtime.run_cli(["train"])
        except runtime.StepFailed as exc:
            print("STEPFAILED", exc.code)
            sys.exit(3)
    """)
    proc = subprocess.Popen([sys.executable, "-c", task], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert marker.read_text() == "TERM", err[-2000:]  # the verb got it (without forwarding it would sleep on)
    assert proc.returncode == 3 and "STEPFAILED 143" in out, (out, err[-2000:])
