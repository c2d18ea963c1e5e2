"""Lineage facts recorded on every registration: git commit, pipeline run id and the prepared data's hash."""

from __future__ import annotations

import os
import subprocess
import uuid
from datetime import datetime, timezone
from pathlib import Path

from facesr.errors import InputError
from facesr.fsutil import read_json, tree_hash


def git_info(cwd: str | os.PathLike[str] | None = None) -> tuple[str, str]:
    """(commit, dirty) of the working tree; $FACESR_GIT_COMMIT wins (containers have no .git)."""
    env = os.environ.get("FACESR_GIT_COMMIT")
    if env:
        return env, os.environ.get("FACESR_GIT_DIRTY", "unknown")
    # the project folder first (where DVC runs); else the checkout holding this source (an editable install)
    for where in (cwd, Path(__file__).resolve().parent):
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                                    timeout=10, check=True).stdout.strip()
            status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                                    capture_output=True, text=True, timeout=30, check=True).stdout
            return commit, "true" if status.strip() else "false"
        except (OSError, subprocess.SubprocessError):
            continue
    return "unknown", "unknown"


def pipeline_run_id() -> str:
    """$FACESR_PIPELINE_RUN_ID, else KFP's run id, else a generated one."""
    for var in ("FACESR_PIPELINE_RUN_ID", "KFP_RUN_ID", "PIPELINE_RUN_ID"):
        if os.environ.get(var):
            return os.environ[var]
    return "local-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def dvc_lock_hash(data: Path | None, dvc_lock: Path) -> tuple[str, str] | None:
    """(md5, source) of the prepared data in ``dvc.lock``: the out at ``data``, else the ``prepare`` stage's out.

    Reads the lock file as YAML (no DVC import); None when it has no such out.
    """
    if not dvc_lock.is_file():
        return None
    import yaml

    try:
        lock = yaml.safe_load(dvc_lock.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        lock = {}
    base = dvc_lock.resolve().parent
    for stage_name, stage in (lock.get("stages") or {}).items():
        for out in (stage or {}).get("outs") or []:
            path, md5 = out.get("path"), out.get("md5")
            if not path or not md5:
                continue
            if data is not None:
                if (base / path).resolve() == Path(data).resolve():
                    return md5, f"dvc.lock:{stage_name}:{path}"
            elif stage_name.split("@")[0] == "prepare":
                return md5, f"dvc.lock:{stage_name}:{path}"
    return None


def data_hash(data: Path | None, eval_dir: Path | None = None, dvc_lock: Path = Path("dvc.lock")) -> tuple[str, str]:
    """(hash, source) of the prepared data: dvc.lock md5, else our tree hash of --data, else the eval manifest."""
    found = dvc_lock_hash(data, dvc_lock)
    if found is not None:
        return found
    if data is not None:
        if not Path(data).is_dir():
            raise InputError(f"--data {data}: not a folder (expected the prepared data folder)")
        return tree_hash(data), f"tree_hash:{data}"
    if eval_dir is not None and (eval_dir / "manifest.json").is_file():
        man = read_json(eval_dir / "manifest.json")
        inputs = man.get("inputs", {}) if isinstance(man, dict) else {}
        for key in ("prepared_manifest_sha256", "data_manifest_sha256", "prepared_sha256"):
            if isinstance(inputs, dict) and inputs.get(key):
                return str(inputs[key]), f"eval manifest:{key}"
    return "unknown", "none (pass --data or run under DVC)"
