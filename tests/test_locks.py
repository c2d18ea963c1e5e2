"""facesr.locks: an exclusive lock held by a real process, refused without waiting, freed when the holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facesr.locks import LockHeldError, exclusive, lock_file_for, owner_alive, owner_token

HOLD = """
import sys, time
from facesr.locks import exclusive
with exclusive(sys.argv[1], "the thing", command="holder"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_lock_held_by_another_process_is_refused_then_freed_by_its_death(tmp_path: Path) -> None:
    lock = lock_file_for(tmp_path / "out")
    assert lock == tmp_path / ".out.lock"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LockHeldError, match=rf"the thing: in use by holder \(pid {proc.pid}, since "), \
                exclusive(lock, "the thing"):
            pass
        t0 = time.monotonic()
        with pytest.raises(LockHeldError, match=r"waited"), exclusive(lock, "the thing", wait=0.3):
            pass
        assert time.monotonic() - t0 >= 0.3
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with exclusive(lock, "the thing"):  # kill -9 left the file; the kernel dropped the lock
        assert lock.exists()
        with pytest.raises(LockHeldError):  # one holder even within a process
            with exclusive(lock, "the thing"):
                pass
    assert not lock.exists()


def test_owner_tokens_tell_live_dead_and_foreign_processes_apart() -> None:
    assert owner_alive(owner_token()) is True
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    token = owner_token(proc.pid)
    proc.wait()
    assert owner_alive(token) is False
    host, pid, start = owner_token().rsplit(":", 2)
    assert owner_alive(f"{host}:{pid}:{int(start) + 1}") is False  # same pid, other start time: a reused pid
    assert owner_alive(f"elsewhere.example:{os.getpid()}:1") is None
