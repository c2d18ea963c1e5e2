"""Reading the step folders register logs: the evaluate output and one training output per model name."""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facesr.errors import InputError, UserError
from facesr.fsutil import read_json
from facesr.registry.names import TAG
from facesr.stats import lower_is_better

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """One model evaluate scored: its training folder, model folder, model.json, test-set metrics and per-image rows."""

    name: str
    train_dir: Path
    model_dir: Path
    meta: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    per_image: list[dict[str, str]] = field(default_factory=list)

    @property
    def variant(self) -> str:
        return str(self.meta.get("variant") or self.name)

    @property
    def weights(self) -> str:
        untrained = bool(self.meta.get("untrained_weights"))
        statuses = {str(m.get("weights")) for m in self.metrics.values() if isinstance(m, dict)}
        return "untrained" if untrained or "untrained" in statuses else "real"

    def mean(self, metric: str) -> float | None:
        m = self.metrics.get(metric)
        if isinstance(m, dict) and m.get("mean") is not None:
            return float(m["mean"])
        return None


def read_per_image(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found (evaluate writes per_image.csv)") from None
    if rows and not {"model", "image"} <= set(rows[0]):
        raise InputError(f"{path}: expected columns model,image,<metric>...; got {list(rows[0])}")
    return rows


def rows_to_csv(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def load_candidates(eval_dir: Path, models: dict[str, Path]) -> list[Candidate]:
    """The named models of an evaluate output; each model folder is checked (digest, architecture) first."""
    from facesr.models.io import check_model, find_model_folder

    eval_dir = Path(eval_dir)
    if not eval_dir.is_dir():
        raise InputError(f"--eval {eval_dir}: not a folder (expected the output of facesr evaluate)")
    metrics = read_json(eval_dir / "metrics.json")
    if not isinstance(metrics, dict):
        raise InputError(f"{eval_dir / 'metrics.json'}: expected a JSON object of model -> metrics")
    per_image = read_per_image(eval_dir / "per_image.csv")
    if not models:
        raise UserError("register: give at least one --model NAME=DIR (a training output folder)")
    out = []
    for name, d in models.items():
        if name not in metrics:
            raise UserError(f"--model {name}={d}: {eval_dir / 'metrics.json'} has no model {name!r}; "
                            f"it has: {', '.join(sorted(metrics))}")
        mdir = find_model_folder(Path(d))
        meta = check_model(mdir).meta  # digest, architecture bounds and header shapes, before anything is logged
        rows = [r for r in per_image if r.get("model") == name]
        out.append(Candidate(name, Path(d), mdir, meta, metrics[name], rows))
    return out


def pick_best(cands: list[Candidate], metric: str) -> Candidate:
    """The candidate with the best mean of ``metric`` (direction aware)."""
    scored = [(c.mean(metric), c) for c in cands]
    missing = [c.name for v, c in scored if v is None]
    if missing:
        raise UserError(f"registry.promotion.primary_metric {metric!r}: not in metrics.json for {', '.join(missing)} "
                        f"(available: {', '.join(sorted(cands[0].metrics))})")
    sign = 1.0 if lower_is_better(metric) else -1.0
    return min(scored, key=lambda t: sign * t[0])[1]  # type: ignore[operator]


def read_metrics_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s line %d: not JSON, skipped", path, i + 1)
    return rows


def loss_curve_png(rows: list[dict[str, Any]], title: str) -> bytes | None:
    """A PNG of every ``loss*`` series over the steps (None without losses or matplotlib)."""
    keys = sorted({k for r in rows for k, v in r.items() if k.startswith("loss") and isinstance(v, (int, float))})
    if not keys:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k in keys:
        pts = [(r.get("step", i), r[k]) for i, r in enumerate(rows) if isinstance(r.get(k), (int, float))]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k)
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def model_card(c: Candidate, tags: dict[str, str], primary: str) -> str:
    lines = [f"# facesr model card: {c.variant}", "",
             "x4 face super-resolution, ESRGAN generator (RRDBNet). Input float32 [N,3,H,W] in [0,1]; output "
             "[N,3,4H,4W].", "",
             f"- weights provenance: **{c.weights}**" + (" (losses/metrics ran on random backbones: numbers are not "
                                                         "meaningful)" if c.weights == "untrained" else ""),
             f"- architecture: num_feat={c.meta.get('num_feat')}, num_block={c.meta.get('num_block')}, "
             f"num_grow_ch={c.meta.get('num_grow_ch')}, scale={c.meta.get('scale')}",
             f"- training steps: {c.meta.get('steps')}",
             f"- git commit: {tags.get(TAG + 'git_commit')} (dirty: {tags.get(TAG + 'git_dirty')})",
             f"- data hash: {tags.get(TAG + 'data_hash')}", f"- params hash: {tags.get(TAG + 'params_hash')}",
             f"- pipeline run: {tags.get(TAG + 'pipeline_run_id')}", "", "## Test-set metrics (mean, 95% CI)", "",
             "| metric | mean | ci95 | n |", "|---|---|---|---|"]
    for k, m in sorted(c.metrics.items()):
        if isinstance(m, dict):
            star = " (primary)" if k == primary else ""
            lines.append(f"| {k}{star} | {m.get('mean')} | {m.get('ci95')} | {m.get('n')} |")
    lines += ["", "Intended use: research on face super-resolution. Faces are personal data: do not use to identify "
              "people. Trained on the Kaggle 'human faces' dataset (see the data hash)."]
    return "\n".join(lines) + "\n"
