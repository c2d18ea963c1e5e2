"""Exclusive locks between processes (``fcntl.flock`` on a small lock file), and whether a process still lives.

``exclusive(lock_file, what)`` holds an exclusive lock for a ``with`` block. By default it does not wait: a second
process gets ``LockHeldError`` (exit 2) naming ``what`` and the holder (pid, host, since when), read from the lock file.
With ``wait=S`` it retries for up to S seconds first (first use of a SQLite store: the second process waits for the
first to finish creating it). The kernel drops a flock when its holder dies (even on ``kill -9``), so a lock is never
stale; the lock file is removed on release (and a leftover one is simply reused).

``lock_file_for(path)`` is the lock file of a folder or file: a hidden sibling ``.NAME.lock`` (outside the folder, so
DVC outputs and model folders hold only what they should).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from facesr.errors import UserError


class LockHeldError(UserError):
    """Another process holds the lock (exit status 2)."""

    def __init__(self, message: str, holder: dict[str, Any]) -> None:
        super().__init__(message)
        self.holder = holder


def lock_file_for(path: str | os.PathLike[str]) -> Path:
    p = Path(path).absolute()
    return p.parent / f".{p.name}.lock"


def process_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (/proc/PID/stat field 22): tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # fields after "(comm)": state is field 3, starttime field 22


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one that is not ours to signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def try_flock(fd: int) -> bool | None:
    """Take an exclusive flock on ``fd`` without waiting: True when taken, False when another process holds it, None
    when the file system has no locks."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return None


def owner_token(pid: int | None = None) -> str:
    """``host:pid:start`` of this (or ``pid``'s) process, for records that outlive it (lock files, MLflow run tags)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{process_start(pid) or '?'}"


def owner_alive(token: str) -> bool | None:
    """True/False for a token of this host (pid alive and not reused); None when it belongs to another host."""
    try:
        host, pid_s, start = token.rsplit(":", 2)
        pid = int(pid_s)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    if not pid_alive(pid):
        return False
    now = process_start(pid)
    return not (start != "?" and now is not None and now != start)


def _holder(fd: int) -> dict[str, Any]:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder.get("pid"):
        return "another process"
    where = f" on {holder['host']}" if holder.get("host") and holder["host"] != socket.gethostname() else ""
    since = f", since {holder['since']}" if holder.get("since") else ""
    cmd = f"{holder['command']} " if holder.get("command") else ""
    return f"{cmd}(pid {holder['pid']}{where}{since})"


@contextlib.contextmanager
def exclusive(lock_file: str | os.PathLike[str], what: str, *, wait: float = 0.0, command: str = "",
              hint: str = "wait for it to finish, or use another one") -> Iterator[Path]:
    """Hold an exclusive lock on ``lock_file`` (created with its folder); ``what`` names the thing for messages."""
    path = Path(lock_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + max(0.0, wait)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a file system without locks raises: no silent lock
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            if time.monotonic() >= deadline:
                waited = f" (waited {wait:.0f} s)" if wait > 0 else ""
                raise LockHeldError(f"{what}: in use by {_describe(holder)}{waited}; {hint}", holder) from None
            time.sleep(0.05)
            continue
        # the previous holder removes the file on release: make sure we locked the file that is there now
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                "since": datetime.now(timezone.utc).isoformat(timespec="seconds"), "owner": owner_token()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)  # forked children (DataLoader workers) share the lock: drop it for all
        os.close(fd)


__all__ = ["LockHeldError", "exclusive", "lock_file_for", "owner_alive", "owner_token", "pid_alive", "process_start",
           "try_flock"]
