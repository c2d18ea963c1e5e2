"""The pretrained files the metrics need, and their status: ``real``, ``untrained`` or ``missing``.

Files come from the project's weights cache (``facesr.weights``: ``facesr weights list|fetch|import|verify``), which
checks their digests and never downloads behind the user's back. Names used here: ``alexnet`` (LPIPS trunk),
``lpips_alex_v0.1`` (LPIPS linear heads, shipped in the lpips wheel), ``pieapp``, ``niqe_pristine``, ``brisque_svr``,
``ma_nrqm``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facesr import weights as project_weights
from facesr.errors import WeightsMissingError


@dataclass
class WeightInfo:
    name: str
    status: str  # real | untrained | missing
    path: Path | None = None
    reason: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "reason": self.reason, **self.provenance}


def locate(name: str) -> WeightInfo:
    """The verified file for ``name`` (status ``real``, with sha256 and URL) or status ``missing`` with the reason."""
    entry = project_weights.get(name)
    prov: dict[str, Any] = {"file": entry.file, "url": entry.url, "sha256": None}
    try:
        path = project_weights.resolve(name)
    except WeightsMissingError as exc:
        return WeightInfo(name, "missing", None, str(exc), prov)
    prov["sha256"] = project_weights.file_digest(path)
    # "ok", or "ok (UNPINNED ...)" / "ok (TRUSTED ...)" when the digest could not be checked: said in the table
    prov["check"] = str(project_weights.status(name).get("state", "ok"))
    return WeightInfo(name, "real", path, None, prov)
