"""ingest: copy images from a source into a raw folder with a manifest (docs/architecture.md section 1).

```
RAW/images/<relative path as in the source>
RAW/manifest.json  {"format": "facesr.raw/1", "source", "created", "count", "files": [{"path", "sha256", "bytes",
                    "width", "height", "mode"}], "skipped": [{"path", "reason"}]}
```
Files are copied byte for byte; width/height/mode come from the header (null when unreadable). Ingest does not judge
content: ``prepare`` does; ``skipped`` lists the files the source did not take (links out of a ``dir:`` folder, fifos,
...). The folder is written atomically: a failed ingest leaves an earlier RAW untouched. ``--out`` may be absent, an
empty folder or an earlier raw folder (``facesr.fsutil.check_output_folder``); never the source or a folder around it.
"""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path
from typing import Any

from facesr.config import Params
from facesr.data.images import read_header
from facesr.data.sources import ExtractLimits, dir_source_path, fetch, parse_source, sample_dir
from facesr.errors import InputError
from facesr.fsutil import atomic_dir, atomic_write_json, check_output_folder, sha256_file

log = logging.getLogger(__name__)

RAW_FORMAT = "facesr.raw/1"


def describe_files(root: Path, rels: list[str]) -> list[dict[str, Any]]:
    files = []
    for rel in sorted(set(rels)):
        p = root / "images" / rel
        w, h, mode = read_header(p)
        files.append({"path": f"images/{rel}", "sha256": sha256_file(p), "bytes": p.stat().st_size,
                      "width": w, "height": h, "mode": mode})
    return files


def ingest(params: Params, source: str | None, out: Path) -> dict[str, Any]:
    """Copy the image files of ``source`` (default params data.source) into ``out``; returns the manifest."""
    src = parse_source(source or params.data.source, default_kaggle=params.data.kaggle_dataset)
    out = Path(out)
    inputs = [dir_source_path(src.arg)] if src.kind == "dir" else [sample_dir()] if src.kind == "sample" else []
    check_output_folder(out, markers={"manifest.json": {RAW_FORMAT}}, inputs=inputs,
                        kind="raw folder made by `facesr ingest`")
    skipped: list[dict[str, str]] = []
    with atomic_dir(out) as tmp:
        rels = fetch(src, tmp / "images", skipped, ExtractLimits.from_params(params))
        if not rels:
            why = "; skipped: " + "; ".join(f"{k['path']}: {k['reason']}" for k in skipped[:3]) if skipped else ""
            raise InputError(f"{src.text}: no image files found (looked for "
                             f".jpg .jpeg .png .bmp .gif .tif .tiff .webp, hidden files skipped){why}; nothing was "
                             f"written to {out}")
        files = describe_files(tmp, rels)
        manifest = {
            "format": RAW_FORMAT,
            "source": src.text,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "count": len(files),
            "files": files,
            "skipped": sorted(skipped, key=lambda s: s["path"]),
        }
        atomic_write_json(tmp / "manifest.json", manifest)
    log.info("ingested %d files from %s into %s", len(files), src.text, out)
    return manifest
