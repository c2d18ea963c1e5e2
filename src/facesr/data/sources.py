"""Where raw images come from: the bundled sample, a local folder or archive, S3 (or MinIO), or Kaggle.

Each source copies image files byte for byte into a destination folder, keeping their relative paths. Only files with
an image extension are taken and hidden files/folders (a name starting with ".") are skipped; content is judged later
by ``prepare``. Archives (.zip, .tar, .tar.gz, .tgz) are extracted with ``safe_extract``, which refuses members that
would land outside the destination (absolute paths, "..", links), so a crafted archive cannot write elsewhere, and
bounds what an archive may extract (``ExtractLimits``: total bytes and compression ratio, from the declared sizes first
and from the bytes really written), so a zip bomb cannot fill the disk.

A ``dir:`` folder is read without leaving it: a file symlink is followed only when its target lies inside the folder;
links to outside, broken or looping links, symlinked folders and non-regular files (fifos, devices) are skipped and
listed with a reason (the raw manifest's ``skipped``).
"""

from __future__ import annotations

import functools
import json
import logging
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import IO

from facesr.data import IMAGE_EXTENSIONS
from facesr.errors import ExternalServiceError, InputError, UserError
from facesr.fsutil import disk_full_error, is_disk_full

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ExtractLimits:
    """What one archive may extract: at most ``max_bytes`` in all, and at most ``max_ratio`` times its own size once
    more than ``ratio_floor`` bytes are out (a few small, very compressible files are no threat)."""

    max_bytes: int = 16 << 30
    max_ratio: float = 100.0
    ratio_floor: int = 64 << 20

    @classmethod
    def from_params(cls, params: object) -> ExtractLimits:
        d = getattr(params, "data", None)
        return cls(max_bytes=int(getattr(d, "max_extract_bytes", cls.max_bytes)),
                   max_ratio=float(getattr(d, "max_extract_ratio", cls.max_ratio)))

    def budget(self, archive_bytes: int) -> int:
        """The most bytes an archive of ``archive_bytes`` may extract to."""
        return min(self.max_bytes, max(self.ratio_floor, int(self.max_ratio * max(archive_bytes, 1))))

    def refusal(self, archive: Path, total: int, archive_bytes: int, declared: bool) -> InputError:
        how = "declares" if declared else "extracts (its headers said less) at least"
        if total > self.max_bytes:
            why = f"more than data.max_extract_bytes = {self.max_bytes}"
        else:
            why = (f"{total / max(archive_bytes, 1):.0f} times its own size of {archive_bytes} bytes, above "
                   f"data.max_extract_ratio = {self.max_ratio:g}")
        return InputError(f"{archive}: the archive {how} {total} bytes, {why} (a zip bomb?); nothing was "
                          "ingested. If the archive is genuine, raise the limit with --set data.max_extract_bytes=N "
                          "or --set data.max_extract_ratio=R")


@dataclass(frozen=True)
class Source:
    kind: str  # sample | dir | s3 | kaggle
    arg: str  # the path, s3 URL or dataset handle
    text: str  # normalised source string recorded in the manifest


def parse_source(text: str, default_kaggle: str = "ashwingupta3012/human-faces") -> Source:
    """Parse a --source value; bad values raise UserError listing the allowed forms."""
    t = (text or "").strip()
    allowed = "allowed: sample | dir:PATH | s3://bucket/prefix | kaggle:OWNER/DATASET (or kaggle for the default)"
    if t == "sample":
        return Source("sample", "", "sample")
    if t.startswith("dir:"):
        p = t[4:]
        if not p:
            raise UserError(f"--source {text!r}: dir: needs a path; {allowed}")
        return Source("dir", p, f"dir:{p}")
    if t.startswith("s3://"):
        rest = t[5:]
        bucket = rest.split("/", 1)[0]
        if not bucket:
            raise UserError(f"--source {text!r}: s3:// needs a bucket name; {allowed}")
        return Source("s3", t, t)
    if t == "kaggle" or t.startswith("kaggle:"):
        handle = t[7:] if t.startswith("kaggle:") else ""
        handle = handle or default_kaggle
        parts = handle.split("/")
        if len(parts) != 2 or not all(parts):
            raise UserError(f"--source {text!r}: expected kaggle:OWNER/DATASET (e.g. kaggle:{default_kaggle})")
        return Source("kaggle", handle, f"kaggle:{handle}")
    raise UserError(f"--source {text!r}: unknown source; {allowed}")


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def is_hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in PurePosixPath(rel).parts)


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _safe_rel(name: str) -> str | None:
    """A member name as a safe relative POSIX path, or None if it would escape the destination."""
    name = name.replace("\\", "/")
    if not name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def safe_extract(archive: Path, dest: Path, limits: ExtractLimits | None = None) -> list[str]:
    """Extract regular files of a zip/tar archive into ``dest``; refuse the archive if any member escapes it.

    Links, devices and members with absolute paths or ".." are refused (InputError naming the member) before anything
    is written; so is an archive whose declared sizes exceed ``limits``. While writing, the real bytes are counted
    (headers can lie): a member longer than it declared, or a total beyond the limits, stops the extraction with an
    InputError. Returns the relative paths written; on an error what was written stays in ``dest`` for the caller's
    temporary folder to remove.
    """
    archive, dest = Path(archive), Path(dest)
    limits = limits or ExtractLimits()
    archive_bytes = archive.stat().st_size
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        try:
            zf = zipfile.ZipFile(archive)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise InputError(f"{archive}: not a readable zip archive ({exc})") from None
        with zf:
            zmembers: list[tuple[str, int, Callable[[], IO[bytes] | None]]] = []
            for info in zf.infolist():
                if info.is_dir():
                    continue
                rel = _safe_rel(info.filename)
                mode = (info.external_attr >> 16) & 0o170000
                if rel is None or (mode and not stat.S_ISREG(mode)):
                    raise InputError(f"{archive}: unsafe archive member {info.filename!r} (absolute path, '..' or link); "
                                     "nothing was extracted")
                zmembers.append((rel, info.file_size, functools.partial(zf.open, info)))
            return _write_members(archive, dest, zmembers, limits, archive_bytes)
    try:
        tf = tarfile.open(archive)
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise InputError(f"{archive}: not a readable zip or tar archive ({exc})") from None
    with tf:
        tmembers: list[tuple[str, int, Callable[[], IO[bytes] | None]]] = []
        try:
            members = tf.getmembers()
        except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
            raise InputError(f"{archive}: corrupt or truncated tar archive ({exc}); nothing was extracted") from None
        for m in members:
            if m.isdir():
                continue
            rel = _safe_rel(m.name)
            if rel is None or not m.isfile():
                raise InputError(f"{archive}: unsafe archive member {m.name!r} (absolute path, '..', link or device); "
                                 "nothing was extracted")
            tmembers.append((rel, m.size, functools.partial(tf.extractfile, m)))
        return _write_members(archive, dest, tmembers, limits, archive_bytes)


_READ_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, NotImplementedError,
                RuntimeError, ValueError)


def _write_members(archive: Path, dest: Path, members: list[tuple[str, int, Callable[[], IO[bytes] | None]]],
                   limits: ExtractLimits, archive_bytes: int) -> list[str]:
    """Write each checked archive member (relative path, declared size, opener) under ``dest``, within ``limits``."""
    budget = limits.budget(archive_bytes)
    declared = sum(max(size, 0) for _, size, _ in members)
    if declared > budget:
        raise limits.refusal(archive, declared, archive_bytes, declared=True)
    written: list[str] = []
    total = 0
    for rel, size, open_member in members:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            src = open_member()
            if src is None:
                continue
            with src, open(target, "wb") as dst:
                n = 0
                while block := src.read(_CHUNK):
                    n += len(block)
                    total += len(block)
                    if n > size:
                        raise InputError(f"{archive}: member {rel!r} holds more than the {size} bytes its header "
                                         "declares; nothing was ingested")
                    if total > budget:
                        raise limits.refusal(archive, total, archive_bytes, declared=False)
                    dst.write(block)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(target, exc) from None
            raise InputError(f"{archive}: cannot extract member {rel!r} ({exc})") from None
        except _READ_ERRORS as exc:
            raise InputError(f"{archive}: cannot extract member {rel!r}: corrupt, truncated, encrypted or of an "
                             f"unsupported kind ({type(exc).__name__}: {exc})") from None
        written.append(rel)
    return written


def _skip(skipped: list[dict[str, str]] | None, rel: str, reason: str) -> None:
    log.warning("skipping %s: %s", rel, reason)
    if skipped is not None:
        skipped.append({"path": rel, "reason": reason})


def _copy_regular(src: Path, target: Path) -> None:
    """Copy a regular file without following a link at its last component and without blocking on a fifo."""
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise InputError(f"{src}: not a regular file")
        try:
            with open(target, "wb") as out:
                shutil.copyfileobj(f, out, _CHUNK)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(target, exc) from None
            raise


def _copy_tree_images(root: Path, dest: Path, skipped: list[dict[str, str]] | None = None,
                      move: bool = False) -> list[str]:
    """Copy (``move``: rename) the image files under ``root`` into ``dest``, never reading outside ``root``.

    Recursive; hidden names and non-image names are passed over. A symlinked file is followed only when its target
    lies inside ``root``; links to outside, broken or looping links, symlinked folders and non-regular files are
    skipped and appended to ``skipped`` as ``{"path", "reason"}``.
    """
    out: list[str] = []
    root_real = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            if (here / d).is_symlink():
                _skip(skipped, (here / d).relative_to(root).as_posix(),
                      "a symlinked folder: not followed (copy the folder itself into the source)")
                continue
            keep.append(d)
        dirnames[:] = keep
        for fn in sorted(filenames):
            if fn.startswith(".") or not is_image_name(fn):
                continue
            src = here / fn
            rel = src.relative_to(root).as_posix()
            try:
                st = os.lstat(src)
            except OSError as exc:
                _skip(skipped, rel, f"cannot read it ({exc.strerror})")
                continue
            if stat.S_ISLNK(st.st_mode):
                try:
                    real = src.resolve(strict=True)
                except (OSError, RuntimeError):
                    _skip(skipped, rel, "a broken or looping symlink")
                    continue
                if not real.is_relative_to(root_real):
                    _skip(skipped, rel, "a symlink to a file outside the source folder: not followed")
                    continue
                src = real
                st = os.stat(real)
            if not stat.S_ISREG(st.st_mode):
                _skip(skipped, rel, "not a regular file (fifo, socket or device)")
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                if move:
                    os.replace(src, target)
                else:
                    _copy_regular(src, target)
            except InputError as exc:
                _skip(skipped, rel, str(exc))
                continue
            except OSError as exc:
                if is_disk_full(exc):
                    raise disk_full_error(target, exc) from None
                _skip(skipped, rel, f"cannot read it ({exc.strerror or exc})")
                continue
            out.append(rel)
    return out


def sample_dir() -> Path:
    """The bundled public-domain sample (src/facesr/data/sample)."""
    return Path(str(resources.files("facesr.data").joinpath("sample")))


def fetch_sample(dest: Path, skipped: list[dict[str, str]] | None = None) -> list[str]:
    root = sample_dir()
    if not root.is_dir():
        raise InputError(f"{root}: the bundled sample is missing from this installation")
    return _copy_tree_images(root, dest, skipped)


def dir_source_path(path: str) -> Path:
    """The folder or archive of a ``dir:`` source; InputError when there is none (checked before anything is made)."""
    p = Path(path).expanduser()
    if not p.exists():
        glob_hint = " (dir: takes a folder or an archive; globs are not expanded)" if any(c in path for c in "*?[") \
            else ""
        raise InputError(f"dir:{path}: no such file or folder{glob_hint}")
    if p.is_file() and not is_archive(p):
        raise InputError(f"dir:{path}: a file, but not an archive ({', '.join(ARCHIVE_SUFFIXES)}); give a folder")
    if not p.is_file() and not p.is_dir():
        raise InputError(f"dir:{path}: neither a folder nor an archive file")
    return p


def fetch_dir(path: str, dest: Path, skipped: list[dict[str, str]] | None = None,
              limits: ExtractLimits | None = None) -> list[str]:
    p = dir_source_path(path)
    if p.is_file():
        with tempfile.TemporaryDirectory(prefix=".extract-", dir=dest.parent) as tmp:
            safe_extract(p, Path(tmp), limits)
            return _copy_tree_images(Path(tmp), dest, skipped, move=True)
    return _copy_tree_images(p, dest, skipped)


def s3_endpoint_url() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("FACESR_S3_ENDPOINT_URL") or None


def fetch_s3(url: str, dest: Path) -> list[str]:
    """Download image objects under s3://bucket/prefix (endpoint from AWS_ENDPOINT_URL or FACESR_S3_ENDPOINT_URL)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

    rest = url[5:]
    bucket, _, prefix = rest.partition("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    endpoint = s3_endpoint_url()
    where = f"{url}" + (f" (endpoint {endpoint})" if endpoint else "")
    no_creds = UserError(f"{where}: no AWS credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE "
                         "/ ~/.aws/credentials)")
    if boto3.session.Session().get_credentials() is None:
        raise no_creds
    client = boto3.client(
        "s3", endpoint_url=endpoint,
        config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"}),
    )
    out: list[str] = []
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []) or []:
                key = obj["Key"]
                if key.endswith("/"):
                    continue
                rel = _safe_rel(key[len(prefix):])
                if rel is None:
                    log.warning("skipping S3 key %r: its path would leave the output folder", key)
                    continue
                if is_hidden(rel) or not is_image_name(rel):
                    continue
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, key, str(target))
                out.append(rel)
    except NoCredentialsError:
        raise no_creds from None
    except EndpointConnectionError as exc:
        raise ExternalServiceError(f"{where}: S3 endpoint unreachable ({exc}); set AWS_ENDPOINT_URL or "
                                   "FACESR_S3_ENDPOINT_URL for MinIO/other S3 servers") from None
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        msg = exc.response.get("Error", {}).get("Message", str(exc))
        if code in ("NoSuchBucket", "404", "NotFound"):
            raise InputError(f"{where}: bucket {bucket!r} does not exist") from None
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"):
            raise UserError(f"{where}: access denied ({code}: {msg}); check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                            "and the bucket policy") from None
        raise ExternalServiceError(f"{where}: S3 request failed ({code}: {msg})") from None
    except BotoCoreError as exc:
        raise ExternalServiceError(f"{where}: S3 request failed ({exc})") from None
    return out


def kaggle_credentials_present() -> bool:
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return True
    if os.environ.get("KAGGLE_API_TOKEN"):
        return True
    cfg = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle") / "kaggle.json"
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
        return bool(data.get("username") and data.get("key"))
    except (OSError, ValueError, AttributeError):
        return False


def fetch_kaggle(handle: str, dest: Path, skipped: list[dict[str, str]] | None = None,
                 limits: ExtractLimits | None = None) -> list[str]:
    """Download a Kaggle dataset with kagglehub; archives found in it are extracted safely."""
    manual = (f"or download the archive from https://www.kaggle.com/datasets/{handle} yourself and run "
              "`facesr ingest --source dir:PATH/archive.zip`")
    if not kaggle_credentials_present():
        raise UserError(f"kaggle:{handle}: no Kaggle credentials; set KAGGLE_USERNAME and KAGGLE_KEY, or put "
                        f"kaggle.json in ~/.kaggle (https://www.kaggle.com/settings -> API), {manual}")
    try:
        import kagglehub
    except ImportError:  # pragma: no cover - kagglehub is a dependency
        raise UserError(f"kaggle:{handle}: the kagglehub package is not installed; {manual}") from None
    with tempfile.TemporaryDirectory(prefix=".kaggle-", dir=dest.parent) as tmp:
        try:
            got = Path(kagglehub.dataset_download(handle, output_dir=str(Path(tmp) / "dl")))
        except Exception as exc:  # noqa: BLE001 - network, auth and 404 all come as various exception types
            text = f"{type(exc).__name__}: {exc}"
            low = text.lower()
            if any(s in low for s in ("401", "403", "unauthori", "forbidden", "credential")):
                raise UserError(f"kaggle:{handle}: Kaggle refused the credentials ({text}); check KAGGLE_USERNAME and "
                                f"KAGGLE_KEY, {manual}") from None
            if "404" in low or "not found" in low:
                raise UserError(f"kaggle:{handle}: dataset not found on Kaggle ({text})") from None
            raise UserError(f"kaggle:{handle}: cannot download from Kaggle, offline or unreachable ({text}); "
                            f"{manual}") from None
        if got.is_file():
            if not is_archive(got):
                return _copy_single(got, dest)
            ex = Path(tmp) / "x"
            safe_extract(got, ex, limits)
            got = ex
        out = _copy_tree_images(got, dest, skipped)
        for arc in sorted(p for p in got.rglob("*") if is_archive(p) and not is_hidden(p.relative_to(got).as_posix())):
            ex = Path(tmp) / "nested" / arc.relative_to(got).as_posix()
            safe_extract(arc, ex, limits)
            out += _copy_tree_images(ex, dest / arc.relative_to(got).with_suffix(""), skipped, move=True)
        return out


def _copy_single(src: Path, dest: Path) -> list[str]:
    if not is_image_name(src.name):
        return []
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest / src.name)
    return [src.name]


def fetch(source: Source, dest: Path, skipped: list[dict[str, str]] | None = None,
          limits: ExtractLimits | None = None) -> list[str]:
    """Copy the source's image files into ``dest``; returns their relative paths (files passed over go to
    ``skipped`` with a reason; archives are extracted within ``limits``)."""
    dest.mkdir(parents=True, exist_ok=True)
    if source.kind == "sample":
        return fetch_sample(dest, skipped)
    if source.kind == "dir":
        return fetch_dir(source.arg, dest, skipped, limits)
    if source.kind == "s3":
        return fetch_s3(source.arg, dest)
    if source.kind == "kaggle":
        return fetch_kaggle(source.arg, dest, skipped, limits)
    raise UserError(f"unknown source kind {source.kind!r}")
