"""prepare: validate, deduplicate, split and package a raw folder (docs/architecture.md section 2).

Every file is decoded fully (images.load_rgb); unusable files are listed in ``rejected`` with a reason and never stop
the run. Duplicates (same bytes, or same decoded pixels) keep the copy with the smallest file sha256. The split is by
content hash: image ``h`` goes to test when int(h[:16], 16) / 2**64 < data.test_fraction, so an image never changes
side when the dataset grows. ``data.max_images`` keeps the first accepted images in ``subset_key`` order (a second hash of the content
hash; files are examined in that order and the run stops once enough are accepted).

Training images are stored as uint8 [H, W, 3] safetensors shards with the longer side capped at data.max_train_side
(bicubic, shorter side kept >= hr_size); test pairs are PNG files made from the same capped image. The output is
byte-identical for the same inputs and params: there is no timestamp in it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from safetensors.numpy import save as st_save

from facesr.config import Params
from facesr.data.degrade import bicubic_downscale, resize_longer_side
from facesr.data.images import DUPLICATE, EMPTY, TOO_SMALL, ImageRejected, load_rgb, to_array
from facesr.errors import InputError
from facesr.fsutil import (atomic_dir, atomic_write_bytes, atomic_write_json, canonical_json, check_output_folder,
                           read_json, sha256_bytes, sha256_file)

log = logging.getLogger(__name__)

PREPARED_FORMAT = "facesr.prepared/1"
NAME_LEN = 16


def image_name(sha256: str) -> str:
    return sha256[:NAME_LEN]


def split_of(sha256: str, test_fraction: float) -> str:
    """'test' or 'train' from the content hash alone (stable as the dataset grows)."""
    return "test" if int(sha256[:16], 16) / float(1 << 64) < test_fraction else "train"


def subset_key(sha256: str) -> str:
    """Order in which files are examined (and kept under data.max_images): a second hash of the content hash, so the
    subset is independent of the split (ordering by the split hash itself would put the whole subset in one split)."""
    return hashlib.sha256(b"facesr-subset:" + sha256.encode("ascii")).hexdigest()


def png_bytes(arr: np.ndarray) -> bytes:
    """Deterministic PNG encoding (no metadata, fixed compression)."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=6, optimize=False)
    return buf.getvalue()


def center_crop(arr: np.ndarray, size: int) -> np.ndarray:
    h, w = arr.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(arr[y:y + size, x:x + size])


def crop_to_multiple(arr: np.ndarray, m: int) -> np.ndarray:
    h, w = arr.shape[:2]
    return np.ascontiguousarray(arr[: h - h % m, : w - w % m])


def _pixel_hash(arr: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(f"{arr.shape[0]}x{arr.shape[1]}x{arr.shape[2]}:".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def _raw_files(raw: Path) -> tuple[list[dict[str, Any]], str]:
    mpath = raw / "manifest.json"
    if not raw.is_dir():
        raise InputError(f"{raw}: raw folder not found (make it with `facesr ingest --out {raw}`)")
    if not mpath.is_file():
        raise InputError(f"{mpath}: not found; {raw} is not an ingested raw folder (run `facesr ingest --out {raw}`)")
    m = read_json(mpath)
    files = m.get("files") if isinstance(m, dict) else None
    if not isinstance(files, list) or any(not isinstance(f, dict) or "path" not in f for f in files):
        raise InputError(f"{mpath}: not a facesr raw manifest (expected 'files': [{{'path', ...}}])")
    # the file list alone (not the 'created' time): re-ingesting the same files gives the same prepared bytes
    return files, sha256_bytes(canonical_json(files).encode("utf-8"))


def _save_npy(path: Path, arr: np.ndarray) -> None:
    """np.save through the atomic writer: a full disk names the file (np.save's own error says only "N requested and M
    written") and leaves no partial file."""
    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(path, buf.getvalue())


def data_params_used(params: Params) -> dict[str, Any]:
    d = params.data
    return {"hr_size": d.hr_size, "scale": d.scale, "test_fraction": d.test_fraction,
            "max_train_side": d.max_train_side, "max_image_pixels": d.max_image_pixels, "shard_size": d.shard_size,
            "max_images": d.max_images}


Entry = tuple[str, str, str, Path, bool]  # (subset key, sha256, path in the manifest, file, empty)


def hash_files(raw: Path, files: list[dict[str, Any]]
               ) -> tuple[list[Entry], dict[str, str], list[dict[str, str]]]:
    """Hash every listed file (the examination order, and data.max_images, are by content hash, not by name):
    ``(entries sorted by subset_key, {path: sha256}, rejected)``; a path that leaves the raw folder or is missing
    is rejected unread."""
    entries: list[Entry] = []
    input_hashes: dict[str, str] = {}
    rejected: list[dict[str, str]] = []
    for f in files:
        rel = str(f["path"])
        p = raw / rel
        # lexical only: a raw folder checked out by DVC with cache.type symlink links its files into the cache
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            rejected.append({"file": rel, "reason": "outside: the manifest path leaves the raw folder; not read"})
            continue
        if not p.is_file():
            rejected.append({"file": rel, "reason": "missing: listed in the raw manifest but not in the raw folder"})
            continue
        sha = sha256_file(p)
        input_hashes[rel] = sha
        entries.append((subset_key(sha), sha, rel, p, p.stat().st_size == 0))
    entries.sort()
    return entries, input_hashes, rejected


def examine(entries: list[Entry], params: Params, work: Path,
            rejected: list[dict[str, str]]) -> tuple[list[dict[str, Any]], int]:
    """Decode each file in order (``images.load_rgb``) until data.max_images are accepted: ``(accepted, skipped)``.

    Unusable files and duplicates (same bytes, or same decoded pixels) are appended to ``rejected``; each accepted
    image is spilled to ``work/NAME.npy`` (longer side capped at data.max_train_side), so memory stays at one image
    whatever the dataset size.
    """
    d = params.data
    accepted: list[dict[str, Any]] = []
    seen_bytes: dict[str, str] = {}
    seen_pixels: dict[str, str] = {}
    skipped = 0
    for k, (_, sha, rel, p, empty) in enumerate(entries):
        if k and k % 500 == 0:
            log.info("prepare: examined %d of %d files (%d accepted)", k, len(entries), len(accepted))
        if d.max_images is not None and len(accepted) >= d.max_images:
            skipped += 1
            continue
        if empty:  # before the duplicate check: every 0-byte file has the same hash, and "empty" is the reason
            rejected.append({"file": rel, "reason": f"{EMPTY}: the file has 0 bytes"})
            continue
        if sha in seen_bytes:
            rejected.append({"file": rel, "reason": f"{DUPLICATE}: same bytes as {seen_bytes[sha]}"})
            continue
        seen_bytes[sha] = rel
        try:
            arr = to_array(load_rgb(p, d.max_image_pixels))
            h, w = arr.shape[:2]
            if min(h, w) < d.hr_size:
                raise ImageRejected(p, TOO_SMALL, f"{w}x{h} is smaller than data.hr_size={d.hr_size} on a side")
        except ImageRejected as exc:
            rejected.append({"file": rel, "reason": exc.reason})
            continue
        ph = _pixel_hash(arr)
        if ph in seen_pixels:
            rejected.append({"file": rel, "reason": f"{DUPLICATE}: same decoded pixels as {seen_pixels[ph]}"})
            continue
        seen_pixels[ph] = rel
        name = image_name(sha)
        _save_npy(work / f"{name}.npy", resize_longer_side(arr, d.max_train_side, min_short=d.hr_size))
        accepted.append({"name": name, "source": rel, "sha256": sha, "split": split_of(sha, d.test_fraction),
                         "width": int(w), "height": int(h)})
    return accepted, skipped


def fill_both_splits(accepted: list[dict[str, Any]], test_fraction: float) -> None:
    """A tiny dataset must still have both sides: move the image closest to the split boundary into an empty one."""
    if len(accepted) < 2:
        return
    for side, other in (("test", "train"), ("train", "test")):
        if not any(a["split"] == side for a in accepted):
            cand = min((a for a in accepted if a["split"] == other),
                       key=lambda a: abs(int(a["sha256"][:16], 16) / float(1 << 64) - test_fraction))
            cand["split"] = side
            log.warning("the %s split was empty; moved %s there", side, cand["name"])


def write_splits(tmp: Path, work: Path, train: list[dict[str, Any]], test: list[dict[str, Any]],
                 params: Params) -> list[str]:
    """The training shards (uint8 [H, W, 3] safetensors) and the test PNGs (hr, lr, full_hr, full_lr) from the
    spilled images; returns the shard paths."""
    d = params.data

    def spilled(a: dict[str, Any]) -> np.ndarray:
        return np.load(work / f"{a['name']}.npy")

    shards: list[str] = []
    for i in range(0, len(train), d.shard_size):
        chunk = train[i:i + d.shard_size]
        rel = f"train/shard-{i // d.shard_size:05d}.safetensors"
        atomic_write_bytes(tmp / rel, st_save({a["name"]: spilled(a) for a in chunk}))
        shards.append(rel)
    for a in test:
        img = spilled(a)
        hr = center_crop(img, d.hr_size)
        full = crop_to_multiple(img, d.scale)
        for sub, arr in (("hr", hr), ("lr", bicubic_downscale(hr, d.scale)), ("full_hr", full),
                         ("full_lr", bicubic_downscale(full, d.scale))):
            atomic_write_bytes(tmp / "test" / sub / f"{a['name']}.png", png_bytes(arr))
    return shards


def prepare(params: Params, raw: Path, out: Path) -> dict[str, Any]:
    """Build the prepared folder ``out`` from the raw folder ``raw``; returns the manifest."""
    raw, out = Path(raw), Path(out)
    files, raw_manifest_sha = _raw_files(raw)
    check_output_folder(out, markers={"manifest.json": {PREPARED_FORMAT}}, inputs=[raw],
                        kind="prepared folder made by `facesr prepare`")
    entries, input_hashes, rejected = hash_files(raw, files)
    with atomic_dir(out) as tmp:
        work = tmp / ".work"
        work.mkdir()
        accepted, skipped = examine(entries, params, work, rejected)
        if not accepted:
            reasons = "; ".join(f"{r['file']}: {r['reason']}" for r in rejected[:5])
            more = f" (and {len(rejected) - 5} more)" if len(rejected) > 5 else ""
            raise InputError(f"{raw}: no usable images: all {len(rejected)} file(s) were rejected: {reasons}{more}")
        fill_both_splits(accepted, params.data.test_fraction)
        accepted.sort(key=lambda a: a["name"])
        train = [a for a in accepted if a["split"] == "train"]
        test = [a for a in accepted if a["split"] == "test"]
        rejected.sort(key=lambda r: r["file"])
        shards = write_splits(tmp, work, train, test, params)
        shutil.rmtree(work)
        manifest = {
            "format": PREPARED_FORMAT,
            "accepted": len(accepted),
            "rejected": rejected,
            "skipped_by_max_images": skipped,
            "split": {"train": len(train), "test": len(test)},
            "params": data_params_used(params),
            "inputs": {"raw_manifest_sha256": raw_manifest_sha, "files": dict(sorted(input_hashes.items()))},
            "images": accepted,
            "shards": shards,
        }
        atomic_write_json(tmp / "manifest.json", manifest)
    log.info("prepared %d images (%d train, %d test), rejected %d, into %s",
             len(accepted), len(train), len(test), len(rejected), out)
    return manifest
