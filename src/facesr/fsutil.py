"""File-system helpers: hashing, atomic writes, atomic output folders and the one check of what an output may replace.

Every step writes its outputs to a temporary sibling and renames it into place, so a failed or interrupted step never
leaves a half-written output and never damages the output of an earlier successful run.

- ``atomic_write_bytes/text/json``, ``atomic_copy_file``: a temporary file in the same folder, fsync, rename. Modes
  follow the user's umask (0644 with umask 022), not mkstemp's 0600. A full disk (ENOSPC/EDQUOT) raises one
  ``DiskFullError`` (exit 1) naming the file; the temporary file is removed.
- ``atomic_dir(final)``: a temporary folder ``.NAME.tmp-HOST-PID-XXXX`` beside ``final`` (mode from the umask, held
  under an flock while it is written), renamed into place on success. On entry it removes the stale temporaries of the
  same output that earlier runs left behind after a kill -9 (never one a live process on this host still holds), and it
  restores an earlier output that a kill between the two renames of the swap left as ``.NAME.old-*``.
- ``check_output_folder(out, markers=..., inputs=...)``: what a verb's ``--out`` may be: absent, an empty folder, or a
  facesr output recognised by its format marker; never an input, a folder holding an input, a folder inside an input,
  or the current folder. Anything else is a ``UserError`` (exit 2) naming the folder and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from facesr.errors import DiskFullError, UserError
from facesr.locks import pid_alive, try_flock

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_TMP_TAG, _OLD_TAG = ".tmp-", ".old-"
_MKDTEMP_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace variation: stable input for hashes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


# ------------------------------------------------------------------------------------------- modes and full disks

def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask can only be read by setting it)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return old


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file: 0o666 less the umask."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode ``mkdir`` gives a new folder: 0o777 less the umask."""
    return 0o777 & ~current_umask()


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL


def disk_full_error(path: str | os.PathLike[str], exc: OSError) -> DiskFullError:
    """The one message for a full disk or an exceeded quota while writing ``path``."""
    what = "disk quota exceeded" if exc.errno == errno.EDQUOT else "no space left on device"
    return DiskFullError(f"{path}: cannot write it: the disk is full ({what}); nothing half-written was kept. "
                         "Free some space (or choose an --out on another disk) and run again", path=path)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` incrementally (e.g. an image encoded row by row): a temporary file in the same
    folder, fsynced and renamed into place when the block ends; on an exception it is removed and ``path`` is left
    exactly as it was. The file gets the umask's mode (0644 with umask 022); a full disk raises ``DiskFullError``
    naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if is_disk_full(exc):
            raise disk_full_error(path, exc) from None  # type: ignore[arg-type]
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    with atomic_file(path) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False, ensure_ascii=False, default=str) + "\n")


def atomic_copy_file(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Copy the bytes of ``src`` to ``dest`` atomically (same guarantees as ``atomic_write_bytes``)."""
    with open(src, "rb") as s, atomic_file(dest) as f:
        shutil.copyfileobj(s, f, _CHUNK)
    return Path(dest)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file; a missing or malformed file raises InputError naming the file."""
    from facesr.errors import InputError

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None


# ---------------------------------------------------------------------------------------------- atomic folders

def _host_tag() -> str:
    return "".join(c if c.isalnum() or c in "._" else "_" for c in socket.gethostname()) or "host"


def _temporary_owner(name: str, final_name: str) -> tuple[str, str, int | None] | None:
    """``(tag, host, pid)`` when ``name`` is a temporary of the output ``final_name`` (None: not one of its own)."""
    for tag in (_TMP_TAG, _OLD_TAG):
        prefix = f".{final_name}{tag}"
        if name.startswith(prefix):
            parts = name[len(prefix):].rsplit("-", 2)
            if len(parts) == 3 and parts[1].isdigit():
                return tag, parts[0], int(parts[1])
            rest = name[len(prefix):]
            if len(rest) == 8 and all(c in _MKDTEMP_CHARS for c in rest):
                return tag, "", None  # written by an older facesr (mkdtemp's 8 characters, no host/pid)
    return None


def clean_stale_temporaries(final: str | os.PathLike[str]) -> list[Path]:
    """Remove the ``.NAME.tmp-*`` / ``.NAME.old-*`` folders that killed runs left beside ``final``; returns them.

    A temporary is stale when no process holds its flock (the kernel drops the lock of a killed process) and the pid
    in its name is gone. Temporaries made on another host are left alone
    (their process cannot be checked from here). A stale ``.old-*`` while ``final`` is missing is the earlier output
    (the run was killed between the two renames of the swap): it is put back as ``final`` instead of being deleted.
    """
    final = Path(os.path.abspath(final))
    removed: list[Path] = []
    try:
        entries = sorted(os.scandir(final.parent), key=lambda e: e.name)
    except OSError:
        return removed
    host = _host_tag()
    for entry in entries:
        owner = _temporary_owner(entry.name, final.name)
        if owner is None or not entry.is_dir(follow_symlinks=False):
            continue
        tag, ehost, pid = owner
        if ehost and ehost != host:
            continue
        p = Path(entry.path)
        try:
            fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            # free lock (or no locks here) and, where the name has one, a pid that is gone: a pid alone can be reused,
            # a lock alone has a moment between mkdtemp and flock
            if try_flock(fd) is False or (pid is not None and pid_alive(pid)):
                continue
            if tag == _OLD_TAG and not os.path.lexists(final):
                os.replace(p, final)
                log.warning("restored %s from %s (an earlier run was killed while replacing it)", final, p.name)
                continue
            shutil.rmtree(p, ignore_errors=True)
            log.info("removed %s, left behind by an interrupted run%s", p, f" (pid {pid})" if pid else "")
            removed.append(p)
        finally:
            os.close(fd)
    return removed


def _missing_parents(folder: Path) -> list[Path]:
    missing = []
    for p in [folder, *folder.parents]:
        if os.path.lexists(p):
            break
        missing.append(p)
    return missing


def _in_output(name: str | os.PathLike[str], tmp: Path, final: Path) -> str:
    """A path inside the temporary folder as its path in the final output (the temporary name means nothing)."""
    p = Path(os.fsdecode(name))
    with contextlib.suppress(ValueError):
        return str(final / p.relative_to(tmp))
    return str(p)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``final``; on success it replaces ``final`` atomically.

    On an exception the temporary folder (and any parent folder this call created) is removed and ``final`` (if it
    existed) is left exactly as it was; a full disk becomes one ``DiskFullError`` naming the file (as its path in
    ``final``). Stale temporaries of the same output are cleaned first (``clean_stale_temporaries``). This replaces
    whatever ``final`` is: a verb checks a user-given path with ``check_output_folder`` first.
    """
    final = Path(os.path.abspath(final))
    if final.is_symlink():
        final = final.resolve()
    created = _missing_parents(final.parent)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}{_TMP_TAG}{_host_tag()}-{os.getpid()}-", dir=final.parent))
    lock_fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
    old_fd: int | None = None
    try:
        try_flock(lock_fd)  # held to the end: another run's cleanup sees that this folder is alive
        os.chmod(tmp, dir_mode())
        try:
            yield tmp
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            for p in created:
                with contextlib.suppress(OSError):
                    p.rmdir()
            if isinstance(exc, DiskFullError) and exc.path is not None:
                named = _in_output(exc.path, tmp, final)
                raise DiskFullError(str(exc).replace(str(exc.path), named, 1), path=named) from None
            if is_disk_full(exc):
                name = getattr(exc, "filename2", None) or getattr(exc, "filename", None) or final
                raise disk_full_error(_in_output(name, tmp, final), exc) from None  # type: ignore[arg-type]
            raise
        old: Path | None = None
        if final.exists() or final.is_symlink():
            with contextlib.suppress(OSError):
                old_fd = os.open(final, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
                # so that no other run's cleanup takes it for a stale .old- folder; never blocks: ``final`` may be
                # the temporary of an enclosing atomic_dir of this very process (a model folder written inside a
                # training folder's temporary), whose lock is already held
                try_flock(old_fd)
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}{_OLD_TAG}{_host_tag()}-{os.getpid()}-",
                                        dir=final.parent))
            old.rmdir()
            os.replace(final, old)
        try:
            os.replace(tmp, final)
        except BaseException:
            if old is not None:
                os.replace(old, final)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        os.close(lock_fd)
        if old_fd is not None:
            os.close(old_fd)


# ------------------------------------------------------------------------------------------ what --out may be

def _format_of(path: Path) -> Any:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("format") if isinstance(data, dict) else None


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


# a folder holding only these counts as empty: DVC writes a .gitignore into the folder of its outs
_NEUTRAL_NAMES = frozenset({".gitignore"})


def check_output_folder(
    out: str | os.PathLike[str],
    *,
    markers: Mapping[str, Collection[str]],
    inputs: Iterable[str | os.PathLike[str]] = (),
    own_names: Collection[str] = (),
    flag: str = "--out",
    kind: str = "",
    inside_inputs_ok: bool = False,
    replaces: bool = True,
) -> Path:
    """Refuse (``UserError``, exit 2) an output folder that facesr must not write; returns its absolute path.

    Allowed: a path that does not exist, an empty folder (a ``.gitignore`` does not count: DVC writes one beside its
    outs), or a folder that a facesr verb made, recognised by one of
    ``markers`` (relative path of a JSON file -> allowed values of its ``format`` key), or, where ``own_names`` is
    given, a folder holding nothing but those names (a verb's own files, e.g. a training run killed before it wrote a
    marker). Refused: a file; any other folder (it would be deleted or written over); a path that is an input, holds
    an input or (unless ``inside_inputs_ok``) lies inside an input folder; and, for a verb that ``replaces`` the
    folder as a whole, the current folder or a parent of it. Nothing is created.
    """
    given = Path(out)
    path = Path(os.path.abspath(given))
    real = path.resolve()
    what = kind or "output made by facesr"
    how = "choose a new or empty folder, or move that folder away (or delete it) yourself first"
    if real == Path(real.anchor):
        raise UserError(f"{flag} {given}: the root of the file system cannot be an output folder; {how}")
    for inp in inputs:
        i = Path(os.path.abspath(inp)).resolve()
        if real == i:
            raise UserError(f"{flag} {given}: it is also an input ({inp}); writing the output would destroy the "
                            f"input: {how}")
        if _is_within(i, real):
            raise UserError(f"{flag} {given}: it holds the input {inp}; writing the output would destroy the input: "
                            f"{how}")
        if not inside_inputs_ok and _is_within(real, i) and i.is_dir():
            raise UserError(f"{flag} {given}: it lies inside the input folder {inp}; the output would become part "
                            f"of its own input: {how}")
    if replaces and _is_within(Path.cwd().resolve(), real):
        raise UserError(f"{flag} {given}: it is the current folder (or holds it); facesr replaces an output folder "
                        f"as a whole: {how}")
    if not os.path.lexists(path):
        return path
    if not real.is_dir():
        raise UserError(f"{flag} {given}: exists and is not a folder; {how}")
    try:
        names = sorted(n for n in os.listdir(real) if n not in _NEUTRAL_NAMES)
    except OSError as exc:
        raise UserError(f"{flag} {given}: cannot list the folder ({exc.strerror}); {how}") from None
    if not names:
        return path
    for rel, formats in markers.items():
        if _format_of(real / rel) in formats:
            return path
    if own_names and all(n in own_names or any(_temporary_owner(n, o) for o in own_names) for n in names):
        return path
    visible = [n for n in names if not n.startswith(".")]
    listed = ", ".join(visible[:3] or names[:3]) + (", ..." if len(names) > 3 else "")
    marker_text = " or ".join(f"{r} with format {' / '.join(sorted(f))}" for r, f in markers.items())
    verb = "replaces its output folder as a whole" if replaces else "writes its files into the output folder"
    raise UserError(f"{flag} {given}: the folder is not empty ({len(names)} {'entry' if len(names) == 1 else 'entries'}"
                    f": {listed}) and is not a {what} (no {marker_text}); facesr {verb}, so it would delete or "
                    f"overwrite what is there: {how}")


def write_output_marker(folder: str | os.PathLike[str], marker: str, fmt: str, **extra: Any) -> Path:
    """Create ``folder`` if needed and write the marker that ``check_output_folder`` recognises it by."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / marker
    if _format_of(path) != fmt:
        atomic_write_json(path, {"format": fmt, **extra})
    return path


def tree_hash(root: str | os.PathLike[str]) -> str:
    """sha256 over the relative paths and contents of every file under ``root`` (sorted): a folder's content hash."""
    root = Path(root)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        rel = p.relative_to(root).as_posix()
        h.update(rel.encode("utf-8") + b"\0" + sha256_file(p).encode("ascii") + b"\n")
    return h.hexdigest()
