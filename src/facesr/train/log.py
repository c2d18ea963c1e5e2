"""The training log: ``OUT/metrics.jsonl`` (one JSON object per logged step) and ``OUT/plots/train_log.csv``.

``MetricsLog(out, step)`` keeps the lines logged up to ``step`` (the checkpoint a run resumes from; 0 for a fresh run)
and rewrites the file atomically, so a resumed log holds each step once; ``append(row)`` writes and flushes one line;
``write_csv()`` rewrites the CSV (atomically, at every checkpoint). ``enabled=False`` (DDP ranks other than 0) reads,
keeps and writes nothing.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path
from typing import Any

from facesr.fsutil import atomic_write_text

CSV_COLUMNS = ("step", "phase", "epoch", "loss_g", "loss_d", "lr", "lr_d", "imgs_per_s")


def read_rows(path: Path, upto: int) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl with ``step <= upto`` (lines that are not such a JSON object are skipped)."""
    rows: list[dict[str, Any]] = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError, TypeError):  # not JSON, not an object, a step that is no number
                row = json.loads(line)
                if isinstance(row, dict) and int(row.get("step", 0)) <= upto:
                    rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """``rows`` as CSV: CSV_COLUMNS first, then every other key in order of appearance."""
    keys = list(CSV_COLUMNS)
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in keys})
    atomic_write_text(path, buf.getvalue())


class MetricsLog:
    """The append log of one training folder (see the module docstring); a context manager that closes the file."""

    def __init__(self, out: Path, step: int, enabled: bool = True) -> None:
        self.path = Path(out) / "metrics.jsonl"
        self.csv_path = Path(out) / "plots" / "train_log.csv"
        self.enabled = enabled
        self.rows: list[dict[str, Any]] = []
        self._file = None
        if enabled:
            Path(out).mkdir(parents=True, exist_ok=True)
            self.rows = read_rows(self.path, step)  # drop lines logged after the checkpoint we resumed from
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def append(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.rows.append(row)
        assert self._file is not None
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def write_csv(self) -> None:
        if self.enabled:
            write_csv(self.csv_path, self.rows)

    def final_losses(self) -> dict[str, Any]:
        """The ``loss*`` values of the last row (the summary's ``final``)."""
        return {k: v for k, v in (self.rows[-1].items() if self.rows else []) if k.startswith("loss")}

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["CSV_COLUMNS", "MetricsLog", "read_rows", "write_csv"]
