"""Pretrained weight files the system needs: a table of name -> file, sha256, size, source URL, users.

Nothing downloads behind your back: losses and metrics call ``resolve(name)``, which only looks in the cache
(``$FACESR_WEIGHTS_DIR``, default ``~/.cache/facesr/weights``) or, for files shipped inside a wheel, the installed
package. ``facesr weights fetch`` downloads (checksum-verified); on an offline machine download the files elsewhere
and ``facesr weights import DIR``.

Checksums: where the full sha256 is known it is checked; torchvision's files carry only the first 8 hex digits of
their sha256 in their names (``vgg19-dcbb9e9d.pth``), which is what torch.hub itself checks, so for them we check that
prefix (``sha256_prefix``) and record the full digest we computed.

Tests: fake weight files have other digests. ``override(name, sha256=...)`` (a context manager) swaps an entry's
digest, and ``FACESR_WEIGHTS_TRUST=1`` accepts any digest -- every file accepted that way is logged as a WARNING,
and ``facesr weights verify`` / ``list`` show it. Neither is ever set by the code itself.

Adding a file (e.g. NIQE/BRISQUE/Ma parameters for the metrics): append a ``WeightFile`` to ``ENTRIES`` below (or call
``register(WeightFile(...))`` from your module) -- list/fetch/import/verify/resolve pick it up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import logging
import os
import shutil
import socket
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facesr.errors import InputError, UserError, WeightsMissingError
from facesr.fsutil import atomic_copy_file, file_mode, sha256_file

log = logging.getLogger(__name__)

ENV_DIR = "FACESR_WEIGHTS_DIR"
ENV_TRUST = "FACESR_WEIGHTS_TRUST"
DEFAULT_DIR = Path("~/.cache/facesr/weights")
FETCH_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class WeightFile:
    """One pretrained file. Exactly one of ``sha256`` / ``sha256_prefix`` should be set (prefix = only that is known)."""

    name: str                      # registry key: `facesr weights fetch NAME`
    file: str                      # file name in the cache (and in an import folder)
    url: str | None                # where `fetch` downloads it from
    used_by: tuple[str, ...]       # modules that load it
    sha256: str | None = None      # full hex digest, when known
    sha256_prefix: str | None = None  # leading hex digits, when only those are published (torchvision names)
    size: int | None = None        # bytes, when known exactly (checked)
    size_hint: str = ""            # human size for `list` when the exact size is not pinned
    torch_hub_file: str | None = None  # file name torch.hub expects under $TORCH_HOME/hub/checkpoints/
    bundled: str | None = None     # "package:relative/path" shipped inside an installed wheel (no fetch needed)
    note: str = ""

    def digest_ok(self, digest: str) -> bool:
        if self.sha256:
            return digest == self.sha256
        if self.sha256_prefix:
            return digest.startswith(self.sha256_prefix)
        return False

    @property
    def expected(self) -> str:
        if self.sha256:
            return self.sha256
        if self.sha256_prefix:
            return f"{self.sha256_prefix}... (prefix)"
        return "unknown"


ENTRIES: list[WeightFile] = [
    WeightFile(
        name="vgg19", file="vgg19-dcbb9e9d.pth",
        url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
        used_by=("losses.perceptual",), sha256_prefix="dcbb9e9d", size_hint="548 MiB",
        torch_hub_file="vgg19-dcbb9e9d.pth",
        note="torchvision VGG19_Weights.IMAGENET1K_V1; the name carries the sha256 prefix (checked as torch.hub does)",
    ),
    WeightFile(
        name="alexnet", file="alexnet-owt-7be5be79.pth",
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        used_by=("metrics.lpips",), sha256_prefix="7be5be79", size_hint="233 MiB",
        torch_hub_file="alexnet-owt-7be5be79.pth",
        note="torchvision AlexNet_Weights.IMAGENET1K_V1: the LPIPS backbone",
    ),
    WeightFile(
        name="lpips_alex_v0.1", file="alex.pth",
        url="https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth",
        used_by=("metrics.lpips",),
        sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0", size_hint="6 KiB",
        bundled="lpips:weights/v0.1/alex.pth",
        note="LPIPS v0.1 linear heads, shipped in the lpips wheel (0.1.4)",
    ),
    WeightFile(
        name="pieapp", file="PieAPPv0.1.pth",
        url="https://github.com/photosynthesis-team/piq/releases/download/v0.5.4/PieAPPv0.1.pth",
        used_by=("losses.pieapp", "metrics.pieapp"),
        sha256="0937b01480c7a637ae3018af755faa8ecde4788b52bb246b7ae62cf96fb6baf0", size_hint="~250 MB",
        torch_hub_file="PieAPPv0.1.pth",
        note="piq's published PieAPP v0.1 weights (piq 0.8.0 _weights_url); sha256 as pinned by a third-party "
             "project, not yet checked against the file by us",
    ),
    # metrics. NIQE's pristine model ships inside facesr (pinned). BRISQUE's SVR and Ma's forests have no digest we
    # could confirm (no published one, no network here to compute one): until they are pinned, `resolve` accepts any
    # file of that name with a WARNING, and `list`/`verify` show it as "ok (UNPINNED ...)"; pin sha256 after a
    # verified fetch.
    WeightFile(
        name="niqe_pristine", file="niqe_pris_params.npz",
        url="https://github.com/XPixelGroup/BasicSR/raw/master/basicsr/metrics/niqe_pris_params.npz",
        used_by=("metrics.noref",), size=11850,
        sha256="2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296",
        bundled="facesr:metrics/data/niqe_pris_params.npz",
        note="NIQE pristine model (mu_pris_param, cov_pris_param) of the MATLAB niqe_release, as BasicSR ships it; "
             "bundled with facesr (permissive LIVE licence: metrics/data/NOTICE.md), sha256 checked against BasicSR "
             "1.4.2's source distribution",
    ),
    WeightFile(
        name="brisque_svr", file="brisque_svm_weights.pt",
        url="https://github.com/photosynthesis-team/piq/releases/download/v0.4.0/brisque_svm_weights.pt",
        used_by=("metrics.noref",), size_hint="~112 KiB", torch_hub_file="brisque_svm_weights.pt",
        note="BRISQUE SVR (sv_coef, sv) fit on LIVE IQA DMOS, piq's conversion of the MATLAB release: our DMOS predictor",
    ),
    WeightFile(
        name="ma_nrqm", file="NRQM_model.mat",
        url="https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/NRQM_model.mat",
        used_by=("metrics.ma",), size_hint="size not pinned",
        note="Ma et al. (CVIU 2017) NRQM model: three regression forests (DCT / GSM / SVD features) and the linear "
             "fusion, as pyiqa downloads it (from chaoma99/sr-metric's model.mat); Ma, and PI with NIQE",
    ),
]

_REGISTRY: dict[str, WeightFile] = {e.name: e for e in ENTRIES}


def register(entry: WeightFile, replace: bool = False) -> WeightFile:
    """Add a file to the table (e.g. from a metrics module). Re-registering an identical entry is a no-op."""
    old = _REGISTRY.get(entry.name)
    if old is not None and old != entry and not replace:
        raise ValueError(f"weights: {entry.name!r} is already registered with different values")
    _REGISTRY[entry.name] = entry
    if entry not in ENTRIES:
        ENTRIES[:] = [e for e in ENTRIES if e.name != entry.name] + [entry]
    return entry


def entries() -> list[WeightFile]:
    return list(_REGISTRY.values())


def get(name: str) -> WeightFile:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"weights: unknown name {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


@contextlib.contextmanager
def override(name: str, **changes: Any) -> Iterator[WeightFile]:
    """Temporarily change an entry (tests: ``override("vgg19", sha256=digest_of_fake, sha256_prefix=None)``)."""
    old = get(name)
    new = dataclasses.replace(old, **changes)
    _REGISTRY[name] = new
    try:
        yield new
    finally:
        _REGISTRY[name] = old


def cache_dir() -> Path:
    raw = os.environ.get(ENV_DIR)
    return Path(raw).expanduser() if raw else DEFAULT_DIR.expanduser()


def trust_any_digest() -> bool:
    return os.environ.get(ENV_TRUST, "").strip().lower() in ("1", "true", "yes")


def _bundled_path(entry: WeightFile) -> Path | None:
    if not entry.bundled:
        return None
    pkg, _, rel = entry.bundled.partition(":")
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / rel
        if p.is_file():
            return p
    return None


def cached_path(name: str) -> Path:
    """Where the file lives (bundled files: inside the installed package), whether or not it exists."""
    entry = get(name)
    return _bundled_path(entry) or cache_dir() / entry.file


_digest_memo: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file, memoised on (path, size, mtime) so repeated resolves of big files stay cheap."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _digest_memo:
        _digest_memo[key] = sha256_file(path)
    return _digest_memo[key]


def _how_to_get(entry: WeightFile) -> str:
    return (f"fetch it with `facesr weights fetch {entry.name}` (downloads {entry.url}), or, offline, download that "
            f"URL elsewhere, put the file in a folder and run `facesr weights import DIR` "
            f"(cache: {cache_dir()}, set by ${ENV_DIR})")


def check_file(entry: WeightFile, path: Path) -> tuple[bool, str, bool]:
    """(accepted, digest, trusted_override): verify a file against its entry."""
    digest = file_digest(path)
    if entry.size is not None and path.stat().st_size != entry.size and not trust_any_digest():
        return False, digest, False
    ok, trusted = accept_digest(entry, digest, path)
    return ok, digest, trusted


def accept_digest(entry: WeightFile, digest: str, path: Path | str) -> tuple[bool, bool]:
    """(accepted, trusted_override) for a computed digest; logs a WARNING whenever it accepts without a match."""
    if entry.digest_ok(digest):
        return True, False
    if not entry.sha256 and not entry.sha256_prefix:
        log.warning("weights: %s (%s) has no pinned sha256 in the table; accepted unverified (sha256 %s)",
                    entry.name, path, digest)
        return True, False
    if trust_any_digest():
        log.warning("weights: %s (%s) has sha256 %s, expected %s: accepted only because %s=1 (tests); "
                    "do not use these results as real", entry.name, path, digest, entry.expected, ENV_TRUST)
        return True, True
    return False, False


def resolve(name: str) -> Path:
    """Path of a verified weight file; ``WeightsMissingError`` (exit 2) naming the file, its URL and the fix."""
    entry = get(name)
    path = cached_path(name)
    if not path.is_file():
        raise WeightsMissingError(f"weights: {entry.file} ({entry.name}, used by {', '.join(entry.used_by)}) is not "
                                  f"in {path.parent}: {_how_to_get(entry)}")
    ok, digest, _ = check_file(entry, path)
    if not ok:
        raise WeightsMissingError(f"weights: {path} has sha256 {digest}, expected {entry.expected}: the file is "
                                  f"corrupt or not the published one; delete it and {_how_to_get(entry)}")
    return path


def provenance(name: str, used_untrained: bool = False) -> dict[str, Any]:
    """What a loss/metric ran on: ``{"status": "real"|"untrained"|"missing", "sha256", "file"}``."""
    entry = get(name)
    if used_untrained:
        return {"status": "untrained", "sha256": None, "file": entry.file}
    try:
        path = resolve(name)
    except WeightsMissingError:
        return {"status": "missing", "sha256": None, "file": entry.file}
    return {"status": "real", "sha256": file_digest(path), "file": entry.file}


def status(name: str) -> dict[str, Any]:
    """For `list` / `verify`: present / missing / corrupt / trusted, with the computed digest."""
    entry = get(name)
    path = cached_path(name)
    row: dict[str, Any] = {"name": entry.name, "file": entry.file, "path": str(path), "bundled": bool(entry.bundled),
                           "expected": entry.expected, "url": entry.url, "used_by": list(entry.used_by)}
    if not path.is_file():
        row.update(state="missing", sha256=None, bytes=None)
        return row
    ok, digest, trusted = check_file(entry, path)
    unpinned = not entry.sha256 and not entry.sha256_prefix
    label = "ok (TRUSTED: digest not checked)" if trusted else "ok (UNPINNED: no digest known)" if unpinned else "ok"
    row.update(sha256=digest, bytes=path.stat().st_size, state=label if ok else "corrupt")
    return row


# ---------------------------------------------------------------------------------------------- fetch / import

def _copy_verified(entry: WeightFile, src: Path) -> Path:
    """Copy ``src`` into the cache through a temporary file and a rename, after checking its digest."""
    ok, digest, _ = check_file(entry, src)
    if not ok:
        raise InputError(f"weights: {src} has sha256 {digest}, expected {entry.expected} for {entry.name}: "
                         "not the published file")
    dest = cache_dir() / entry.file
    # the shared atomic writer: the umask's mode (a pipeline pod under another uid reads the cache), DiskFullError
    # naming the file, nothing half-written
    return atomic_copy_file(src, dest)


def fetch(names: Iterable[str] | None = None, timeout: float = FETCH_TIMEOUT_S,
          force: bool = False) -> list[dict[str, Any]]:
    """Download the named files (all non-bundled when ``names`` is empty) into the cache, checksum-verified.

    Offline / unreachable -> ``WeightsMissingError`` naming the file, its URL and the import command (exit 2).
    """
    chosen = [get(n) for n in names] if names else [e for e in entries() if not e.bundled]
    report = []
    for entry in chosen:
        dest = cached_path(entry.name)
        if entry.bundled:
            if dest.is_file():
                report.append({"name": entry.name, "action": "bundled", "path": str(dest)})
                continue
            raise WeightsMissingError(f"weights: {entry.name} is shipped in the {entry.bundled.split(':')[0]} "
                                      f"package, which is not installed (expected {entry.bundled})")
        if dest.is_file() and not force and check_file(entry, dest)[0]:
            report.append({"name": entry.name, "action": "present", "path": str(dest)})
            continue
        if not entry.url:
            raise WeightsMissingError(f"weights: {entry.file} has no download URL; {_how_to_get(entry)}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{entry.file}.", suffix=".part", dir=dest.parent)
        os.fchmod(fd, file_mode())  # the user's umask, not mkstemp's 0600: a teammate or a pod reads the cache too
        tmp = Path(tmp_name)
        h = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                req = urllib.request.Request(entry.url, headers={"User-Agent": "facesr-weights"})
                with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - fixed https URLs
                    for block in iter(lambda: resp.read(1 << 20), b""):
                        h.update(block)
                        out.write(block)
            digest = h.hexdigest()
            if not accept_digest(entry, digest, entry.url)[0]:
                raise WeightsMissingError(f"weights: download of {entry.url} has sha256 {digest}, expected "
                                          f"{entry.expected}; not installed")
            os.replace(tmp, dest)
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise WeightsMissingError(
                f"weights: cannot download {entry.file} from {entry.url} ({reason}). Offline? Download that URL on "
                f"a connected machine, copy it into a folder here and run `facesr weights import DIR` "
                f"(cache: {cache_dir()})") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        report.append({"name": entry.name, "action": "downloaded", "path": str(dest), "sha256": digest})
    return report


def import_dir(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Copy every known weight file found in ``folder`` (searched recursively, by file name) into the cache.

    Files whose digest does not match are not copied; they are reported and make the call fail (``InputError``)
    after the good ones are in place. A folder with none of the files is an ``InputError`` listing the names.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"weights import: {folder} is not a folder")
    by_name: dict[str, list[Path]] = {}
    for p in folder.rglob("*"):
        if p.is_file():
            by_name.setdefault(p.name, []).append(p)
    report: list[dict[str, Any]] = []
    bad: list[str] = []
    for entry in entries():
        if entry.bundled:
            continue
        candidates = by_name.get(entry.file, []) + (by_name.get(entry.torch_hub_file, [])
                                                    if entry.torch_hub_file and entry.torch_hub_file != entry.file
                                                    else [])
        if not candidates:
            continue
        src = sorted(candidates)[0]
        try:
            dest = _copy_verified(entry, src)
        except InputError as exc:
            bad.append(str(exc))
            report.append({"name": entry.name, "action": "rejected", "path": str(src)})
            continue
        report.append({"name": entry.name, "action": "imported", "path": str(dest), "sha256": file_digest(dest)})
    if bad:
        raise InputError("weights import: " + "; ".join(bad)
                         + (f" (imported: {', '.join(r['name'] for r in report if r['action'] == 'imported')})"
                            if any(r["action"] == "imported" for r in report) else ""))
    if not report:
        wanted = ", ".join(e.file for e in entries() if not e.bundled)
        raise InputError(f"weights import: {folder} holds none of the known files ({wanted})")
    return report


def verify(names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Re-hash the files (no memo): rows as ``status``."""
    _digest_memo.clear()
    return [status(n) for n in (list(names) if names else [e.name for e in entries()])]


# ------------------------------------------------------------------------------------------ torch.hub bridge

def prepare_torch_home(names: Iterable[str], root: str | os.PathLike[str] | None = None) -> Path:
    """A TORCH_HOME-style folder whose ``hub/checkpoints/`` holds (links to) our verified files.

    torchvision / lpips / piq constructors then load from it without downloading (torch.hub uses a file already
    present under ``hub/checkpoints``). Raises ``WeightsMissingError`` if a file is missing. Returns the root.
    Use it with ``torch_home(names)`` (a context manager that points torch.hub at it) or set ``TORCH_HOME``.
    """
    base = Path(root) if root is not None else cache_dir() / "torch_home"
    ckpt = base / "hub" / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    for name in names:
        entry = get(name)
        src = resolve(name)
        target = ckpt / (entry.torch_hub_file or entry.file)
        if target.is_symlink() or target.exists():
            if target.resolve() == src.resolve():
                continue
            target.unlink()
        try:
            target.symlink_to(src.resolve())
        except OSError:
            shutil.copyfile(src, target)
    return base


@contextlib.contextmanager
def torch_home(names: Iterable[str], root: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """Point ``torch.hub`` at ``prepare_torch_home(names)`` for the duration (restores the previous hub dir)."""
    import torch.hub

    base = prepare_torch_home(names, root)
    prev = torch.hub._hub_dir  # None = derived from $TORCH_HOME
    torch.hub.set_dir(str(base / "hub"))
    try:
        yield base
    finally:
        torch.hub._hub_dir = prev


def load_state_dict(name: str) -> dict[str, Any]:
    """torch.load(weights_only=True) of a resolved file; a corrupt file -> WeightsMissingError naming it."""
    import torch

    path = resolve(name)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise WeightsMissingError(f"weights: {path} ({name}) cannot be loaded ({type(exc).__name__}: {exc}); "
                                  f"delete it and {_how_to_get(get(name))}") from None
    if not isinstance(obj, dict):
        raise WeightsMissingError(f"weights: {path} ({name}) is not a state dict")
    return obj
