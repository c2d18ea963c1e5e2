"""Where raw images come from: the bundled sample, a local folder or archive, S3 (or MinIO), or Kaggle.

Each source copies image files byte for byte into a destination folder, keeping their relative paths. Only files with
an image extension are taken and hidden files/folders (a name starting with ".") are skipped; content is judged later
by ``prepare``. Archives (.zip, .tar, .tar.gz, .tgz) are extracted with ``safe_extract``, which refuses members that
would land outside the destination (absolute paths, "..", links), so a crafted archive cannot write elsewhere.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import IO

from facesr.data import IMAGE_EXTENSIONS
from facesr.errors import ExternalServiceError, InputError, UserError

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


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


def safe_extract(archive: Path, dest: Path) -> list[str]:
    """Extract regular files of a zip/tar archive into ``dest``; refuse the archive if any member escapes it.

    Links, devices and members with absolute paths or ".." are refused (InputError naming the member) before anything
    is written. Returns the relative paths written.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            zmembers: list[tuple[str, Callable[[], IO[bytes] | None]]] = []
            for info in zf.infolist():
                if info.is_dir():
                    continue
                rel = _safe_rel(info.filename)
                mode = (info.external_attr >> 16) & 0o170000
                if rel is None or (mode and not stat.S_ISREG(mode)):
                    raise InputError(f"{archive}: unsafe archive member {info.filename!r} (absolute path, '..' or link); "
                                     "nothing was extracted")
                zmembers.append((rel, functools.partial(zf.open, info)))
            return _write_members(dest, zmembers)
    try:
        tf = tarfile.open(archive)
    except (tarfile.TarError, OSError) as exc:
        raise InputError(f"{archive}: not a readable zip or tar archive ({exc})") from None
    with tf:
        tmembers: list[tuple[str, Callable[[], IO[bytes] | None]]] = []
        for m in tf.getmembers():
            if m.isdir():
                continue
            rel = _safe_rel(m.name)
            if rel is None or not m.isfile():
                raise InputError(f"{archive}: unsafe archive member {m.name!r} (absolute path, '..', link or device); "
                                 "nothing was extracted")
            tmembers.append((rel, functools.partial(tf.extractfile, m)))
        return _write_members(dest, tmembers)


def _write_members(dest: Path, members: list[tuple[str, Callable[[], IO[bytes] | None]]]) -> list[str]:
    """Write each checked archive member (relative path, opener) under ``dest``; returns the paths written."""
    written: list[str] = []
    for rel, open_member in members:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        src = open_member()
        if src is None:
            continue
        with src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        written.append(rel)
    return written


def _copy_tree_images(root: Path, dest: Path) -> list[str]:
    """Copy image files under ``root`` (recursive, hidden skipped, symlinked files followed) into ``dest``."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if fn.startswith(".") or not is_image_name(fn):
                continue
            src = Path(dirpath) / fn
            if not src.is_file():
                continue
            rel = src.relative_to(root).as_posix()
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            out.append(rel)
    return out


def sample_dir() -> Path:
    """The bundled public-domain sample (src/facesr/data/sample)."""
    return Path(str(resources.files("facesr.data").joinpath("sample")))


def fetch_sample(dest: Path) -> list[str]:
    root = sample_dir()
    if not root.is_dir():
        raise InputError(f"{root}: the bundled sample is missing from this installation")
    return _copy_tree_images(root, dest)


def fetch_dir(path: str, dest: Path) -> list[str]:
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"dir:{path}: no such file or folder")
    if p.is_file():
        if not is_archive(p):
            raise InputError(f"dir:{path}: a file, but not an archive ({', '.join(ARCHIVE_SUFFIXES)}); give a folder")
        with tempfile.TemporaryDirectory(prefix=".extract-", dir=dest.parent) as tmp:
            safe_extract(p, Path(tmp))
            return _copy_tree_images(Path(tmp), dest)
    return _copy_tree_images(p, dest)


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


def fetch_kaggle(handle: str, dest: Path) -> list[str]:
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
            safe_extract(got, ex)
            got = ex
        out = _copy_tree_images(got, dest)
        for arc in sorted(p for p in got.rglob("*") if is_archive(p) and not is_hidden(p.relative_to(got).as_posix())):
            ex = Path(tmp) / "nested" / arc.relative_to(got).as_posix()
            safe_extract(arc, ex)
            out += _copy_tree_images(ex, dest / arc.relative_to(got).with_suffix(""))
        return out


def _copy_single(src: Path, dest: Path) -> list[str]:
    if not is_image_name(src.name):
        return []
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest / src.name)
    return [src.name]


def fetch(source: Source, dest: Path) -> list[str]:
    """Copy the source's image files into ``dest``; returns their relative paths."""
    dest.mkdir(parents=True, exist_ok=True)
    if source.kind == "sample":
        return fetch_sample(dest)
    if source.kind == "dir":
        return fetch_dir(source.arg, dest)
    if source.kind == "s3":
        return fetch_s3(source.arg, dest)
    if source.kind == "kaggle":
        return fetch_kaggle(source.arg, dest)
    raise UserError(f"unknown source kind {source.kind!r}")
