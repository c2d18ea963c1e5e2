"""Evaluate: score the bicubic baseline and each model on the fixed test pairs; tables, intervals, grids.

Outputs (one atomic folder): metrics.json (DVC metrics form), per_image.csv, table.md (the paper's Table 1 layout with
paired bootstrap intervals of B - A for ``evaluate.paired = [A, B]``), paired_differences.json, grids/*.png,
manifest.json. See docs/evaluation.md.

The models run through the one forward pass of ``facesr.infer`` (``load_model``, ``upscale_images``: clamped to
[0, 1] and rounded ``floor(255 y + 0.5)``, as ``facesr upscale`` writes them); the baseline is
``facesr.data.degrade.bicubic_upscale``. The device is ``evaluate.device`` (``facesr.device.resolve_device``).

Helpers the registry's promotion gate uses: ``paired_bootstrap(a, b, n, seed)``, ``load_per_image(eval_dir)``,
``paired_scores(per_a, per_b)``.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import math
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from facesr import infer
from facesr.config import BASELINE, PSNR_MODEL, Params
from facesr.data.dataset import TestPair, load_test_pairs
from facesr.data.degrade import bicubic_upscale
from facesr.device import resolve_device
from facesr.errors import InputError, UserError
from facesr.fsutil import (atomic_dir, atomic_write_bytes, atomic_write_json, atomic_write_text, check_output_folder,
                           sha256_file, tree_hash)
from facesr.models.io import model_location
from facesr.metrics import METRICS
from facesr.metrics.fidelity import psnr, ssim
from facesr.metrics.ma import MA_MISSING_REASON, MA_NEEDS, MaMetric, pi_score
from facesr.metrics.noref import NIQE_MIN_SIDE, BRISQUEMetric, NIQEMetric, niqe_size_ok
from facesr.metrics.perceptual import LPIPSMetric, PieAPPMetric
from facesr.stats import LOWER_IS_BETTER, bootstrap_ci, paired_bootstrap

log = logging.getLogger(__name__)

BICUBIC_NOTE = "bicubic = PIL Image.resize(..., Image.BICUBIC) x scale of the LR test image (the same bicubic family as the LR operator)"
FORMAT = "facesr.eval/1"
# NIQE, Ma and PI are computed on the whole test images (test/full_lr upscaled, compared with nothing): the LR is
# centre-cropped to at most this many pixels per side so the cost stays bounded; images whose SR output (minus the
# border crop) is below NIQE_MIN_SIDE on a side are skipped (for all three, so that PI combines Ma and NIQE of the same
# images).
NIQE_MAX_LR_SIDE = 128
TABLE_COLUMNS = [("psnr_y", "PSNR"), ("ssim_y", "SSIM"), ("lpips", "LPIPS*"), ("dmos", "DMOS*"), ("pi", "PI*"),
                 ("pieapp", "PieAPP*")]
EXTRA_COLUMNS = [("psnr_rgb", "PSNR (RGB)"), ("ssim_rgb", "SSIM (RGB)"), ("niqe", "NIQE*"), ("ma", "Ma")]
Upscaler = Callable[[list[np.ndarray]], list[np.ndarray]]


def load_per_image(eval_dir: str | Path) -> dict[str, dict[str, dict[str, float]]]:
    """Read EVAL/per_image.csv -> ``{model: {metric: {image: score}}}`` (missing scores are left out)."""
    path = Path(eval_dir) / "per_image.csv"
    if not path.is_file():
        raise InputError(f"{path}: not found; expected the output folder of `facesr evaluate`")
    out: dict[str, dict[str, dict[str, float]]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or reader.fieldnames[:2] != ["model", "image"]:
            raise InputError(f"{path}: expected the columns model,image,<metric>...; got {reader.fieldnames}")
        metrics = reader.fieldnames[2:]
        for row in reader:
            per_model = out.setdefault(row["model"], {m: {} for m in metrics})
            for m in metrics:
                v = row.get(m, "")
                if v not in ("", None):
                    val = float(v)
                    if math.isfinite(val):
                        per_model[m][row["image"]] = val
    return out


def paired_scores(per_a: dict[str, float], per_b: dict[str, float]) -> tuple[list[str], list[float], list[float]]:
    """Align two ``{image: score}`` maps on the images both have (sorted names) -> (names, a, b)."""
    names = sorted(set(per_a) & set(per_b))
    return names, [per_a[n] for n in names], [per_b[n] for n in names]


# ---------------------------------------------------------------------------------------------------- inputs


def load_pairs(data: Path, scale: int) -> list[TestPair]:
    """The fixed test pairs of a prepared folder, sorted by name; each HR must be ``scale`` x its LR."""
    if not data.is_dir():
        raise InputError(f"--data {data}: not a folder; expected the output folder of `facesr prepare`")
    pairs = load_test_pairs(data)
    if not pairs:
        raise InputError(f"{data}/test: no test pairs; expected test/hr/*.png and test/lr/*.png from `facesr prepare`")
    for p in pairs:
        if p.hr.shape[:2] != (p.lr.shape[0] * scale, p.lr.shape[1] * scale):
            raise InputError(f"{data}/test: {p.name}: HR {p.hr.shape[:2]} is not {scale}x LR {p.lr.shape[:2]} "
                             f"(data.scale = {scale})")
    return pairs


def load_full_lr(data: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """test/full_lr/NAME.png for the names that have one, centre-cropped to NIQE_MAX_LR_SIDE per side."""
    out = {}
    try:
        full = {p.name: p.lr for p in load_test_pairs(data, full=True)}
    except InputError as exc:  # an older prepared folder without full images: NIQE is then reported n/a
        log.warning("evaluate: no full test images (%s); NIQE/PI not computed", exc)
        full = {}
    for name in names:
        if name in full:
            img = full[name]
            h, w = img.shape[:2]
            ch, cw = min(h, NIQE_MAX_LR_SIDE), min(w, NIQE_MAX_LR_SIDE)
            top, left = (h - ch) // 2, (w - cw) // 2
            out[name] = img[top:top + ch, left:left + cw]
    return out


# ---------------------------------------------------------------------------------------------------- upscalers


def load_upscalers(params: Params, models: dict[str, Path],
                   device: torch.device) -> tuple[dict[str, Upscaler], dict[str, dict[str, Any]]]:
    """``({name: uint8 LR images -> uint8 SR images}, {name: provenance})``: bicubic first, then each model (loaded
    with ``facesr.infer.load_model``, run by ``facesr.infer.upscale_images``); a model of another scale is an
    InputError."""
    scale = params.data.scale
    upscalers: dict[str, Upscaler] = {BASELINE: lambda xs: [bicubic_upscale(x, scale) for x in xs]}
    model_meta: dict[str, dict[str, Any]] = {BASELINE: {"method": BICUBIC_NOTE}}
    for name, path in models.items():
        lm = infer.load_model(path, params, device)
        if lm.scale != scale:
            raise InputError(f"--model {name}={path}: the model upscales x{lm.scale}, data.scale is {scale}")
        upscalers[name] = functools.partial(infer.upscale_images, lm.model, device=device,
                                            batch_size=params.evaluate.batch_size)
        meta = lm.meta
        model_meta[name] = {"path": str(path), "sha256": _input_hash(model_location(path)),
                            "variant": meta.get("variant"),
                            "untrained_weights": bool(meta.get("untrained_weights", False)),
                            "steps": meta.get("steps"), "params_hash": meta.get("params_hash")}
    return upscalers, model_meta


# ---------------------------------------------------------------------------------------------------- scoring


def _fidelity(srs: list[np.ndarray], hrs: list[np.ndarray], border: int) -> dict[str, list[float]]:
    return {
        "psnr_y": [psnr(s, h, border, True) for s, h in zip(srs, hrs)],
        "ssim_y": [ssim(s, h, border, True) for s, h in zip(srs, hrs)],
        "psnr_rgb": [psnr(s, h, border, False) for s, h in zip(srs, hrs)],
        "ssim_rgb": [ssim(s, h, border, False) for s, h in zip(srs, hrs)],
    }


def _batched(fn: Callable[..., list[float]], bs: int, *lists: list[np.ndarray]) -> list[float]:
    out: list[float] = []
    for i in range(0, len(lists[0]), bs):
        out.extend(fn(*[lst[i:i + bs] for lst in lists]))
    return out


class Scorer:
    """Builds each requested metric once (weights resolved once) and scores one model's outputs."""

    def __init__(self, params: Params, device: torch.device) -> None:
        self.params = params
        self.wanted = list(params.evaluate.metrics)
        unknown = [m for m in self.wanted if m not in METRICS]
        if unknown:
            raise UserError(f"evaluate.metrics: unknown metric(s) {unknown}; allowed: {', '.join(METRICS)}")
        allow = params.allow_untrained_weights
        self.scale = params.data.scale
        self.bs = params.evaluate.batch_size
        self.lpips = LPIPSMetric(allow, device) if "lpips" in self.wanted else None
        self.pieapp = PieAPPMetric(allow, device, params.evaluate.pieapp_stride) if "pieapp" in self.wanted else None
        self.niqe = NIQEMetric() if {"niqe", "pi"} & set(self.wanted) else None
        self.ma = MaMetric() if {"ma", "pi"} & set(self.wanted) else None
        self.dmos = BRISQUEMetric() if "dmos" in self.wanted else None

    def status(self) -> dict[str, dict[str, Any]]:
        """metric -> {"weights": real|untrained|missing|none, "reason", "provenance"}."""
        st: dict[str, dict[str, Any]] = {}
        for m in self.wanted:
            if m in ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"):
                st[m] = {"weights": "none", "reason": None}
            elif m == "ma":
                assert self.ma is not None
                st[m] = {"weights": self.ma.status,
                         "reason": MA_MISSING_REASON if self.ma.status == "missing" else None,
                         "provenance": self.ma.weights.as_dict()}
            elif m == "pi":  # ((10 - Ma) + NIQE) / 2: real only when both files are
                assert self.ma is not None and self.niqe is not None
                missing = []
                if self.ma.status == "missing":
                    missing.append(MA_NEEDS)
                if self.niqe.status == "missing":
                    missing.append(f"NIQE's pristine model is missing ({self.niqe.weights.reason})")
                st[m] = {"weights": "missing" if missing else "real",
                         "reason": "PI = ((10 - Ma) + NIQE) / 2 needs both Ma and NIQE: " + "; ".join(missing)
                         if missing else None,
                         "provenance": {"ma": self.ma.weights.as_dict(), "niqe": self.niqe.weights.as_dict()}}
            else:
                obj = {"lpips": self.lpips, "pieapp": self.pieapp, "niqe": self.niqe, "dmos": self.dmos}[m]
                st[m] = {"weights": obj.status, "reason": obj.weights.reason, "provenance": obj.weights.as_dict()}
        if "pieapp" in st:
            st["pieapp"]["settings"] = {"patch": 64, "stride": self.pieapp.stride if self.pieapp else None}
        return st

    def niqe_scores(self, full_srs: dict[str, np.ndarray], names: list[str]) -> list[float]:
        """NIQE per test image from its full-size SR output (NaN where absent or too small)."""
        assert self.niqe is not None
        return [self.niqe(full_srs[n], border=self.scale) if n in full_srs else float("nan") for n in names]

    @property
    def full_size_metrics(self) -> bool:
        """Whether any metric scored on the full-size SR outputs (NIQE, Ma) has its weights."""
        return any(m is not None and m.status == "real" for m in (self.niqe, self.ma))

    def full_size_scores(self, full_srs: dict[str, np.ndarray], names: list[str]) -> dict[str, list[float]]:
        """``{"niqe": [...], "ma": [...]}`` per test image from its full-size SR output (NaN where absent, too small
        (< NIQE_MIN_SIDE after the border crop, for both: PI combines them) or the weights are missing)."""
        nan = [float("nan")] * len(names)
        out = {"niqe": self.niqe_scores(full_srs, names) if self.niqe is not None and self.niqe.status == "real"
               else list(nan)}
        if self.ma is not None and self.ma.status == "real":
            out["ma"] = [self.ma(full_srs[n], border=self.scale)
                         if n in full_srs and niqe_size_ok(*full_srs[n].shape[:2], border=self.scale)
                         else float("nan") for n in names]
        else:
            out["ma"] = list(nan)
        return out

    def score_all(self, srs: dict[str, list[np.ndarray]], hrs: list[np.ndarray],
                  full: dict[str, dict[str, list[float]]], names: list[str]) -> dict[str, dict[str, list[float]]]:
        """Per-image scores ``{model: {metric: [score per image]}}`` (NaN = not computed).

        ``full``: ``{model: full_size_scores(...)}`` (NIQE and Ma of the full-size outputs); PI is derived from them.
        """
        wanted = set(self.wanted)
        res: dict[str, dict[str, list[float]]] = {}
        for model, out in srs.items():
            t = time.time()
            r: dict[str, list[float]] = {}
            if {"psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"} & wanted:
                r.update({m: v for m, v in _fidelity(out, hrs, self.scale).items() if m in wanted})
            if self.lpips is not None:
                r["lpips"] = _batched(self.lpips, self.bs, out, hrs)
            if self.dmos is not None:
                r["dmos"] = _batched(self.dmos, self.bs, out)
            nan = [float("nan")] * len(names)
            fs = full.get(model, {})
            if "niqe" in wanted:
                r["niqe"] = list(fs.get("niqe", nan))
            if "ma" in wanted:
                r["ma"] = list(fs.get("ma", nan))
            if "pi" in wanted:  # PIRM 2018: ((10 - Ma) + NIQE) / 2, per image (NaN where either is)
                r["pi"] = [pi_score(a, b) for a, b in zip(fs.get("ma", nan), fs.get("niqe", nan))]
            res[model] = r
            log.info("evaluate: %s scored on %d images in %.1f s", model, len(names), time.time() - t)
        if self.pieapp is not None:
            t = time.time()
            for model, scores in self.pieapp.score_models(srs, hrs, self.bs).items():
                res[model]["pieapp"] = scores
            log.info("evaluate: PieAPP for %d models in %.1f s", len(srs), time.time() - t)
        return res


# ---------------------------------------------------------------------------------------------------- outputs


def _fmt(v: float | None, metric: str) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:.4f}" if metric.startswith("ssim") or metric == "lpips" else f"{v:.3f}"


def _cell(entry: dict[str, Any], metric: str) -> str:
    if entry["weights"] == "missing":
        return "missing"
    if entry["mean"] is None:
        return "n/a"
    s = _fmt(entry["mean"], metric)
    if entry.get("ci95"):
        s += f" [{_fmt(entry['ci95'][0], metric)}, {_fmt(entry['ci95'][1], metric)}]"
    if entry["weights"] == "untrained":
        s += " (untrained)"
    return s


def render_table(metrics: dict[str, Any], diffs: dict[str, Any], status: dict[str, dict[str, Any]],
                 model_meta: dict[str, dict[str, Any]], n_images: int, n_boot: int, hr_desc: str,
                 paired: tuple[str, str] | None = None) -> str:
    """table.md: the paper's Table 1 layout, the other metrics, the paired differences ``diffs`` of ``paired = (A,
    B)`` (B - A) and the notes on weights and methods."""
    cols = [(m, t) for m, t in TABLE_COLUMNS if m in status]
    extra = [(m, t) for m, t in EXTRA_COLUMNS if m in status]
    lines = ["# Evaluation (the paper's Table 1 layout)", "",
             f"Mean over {n_images} fixed test images (HR {hr_desc}), with the 95% bootstrap interval "
             f"of the mean ({n_boot} resamples). * = lower is better. PSNR/SSIM on the Y channel (ITU-R BT.601), "
             "border crop = scale.", ""]

    def table(columns: list[tuple[str, str]]) -> list[str]:
        out = ["| Model | " + " | ".join(t for _, t in columns) + " |", "|---|" + "---|" * len(columns)]
        for model, entries in metrics.items():
            name = model + (" †" if model_meta.get(model, {}).get("untrained_weights") else "")
            out.append(f"| {name} | " + " | ".join(_cell(entries[m], m) for m, _ in columns) + " |")
        return out

    lines += table(cols)
    if extra:
        lines += ["", "Also computed:", ""] + table(extra)
    if diffs and paired:
        lines += _paired_table(diffs, *paired)
    lines += ["", "Notes:", "", f"- {BICUBIC_NOTE}."]
    lines += _weights_notes(status)
    lines.append(f"- NIQE, Ma and PI are computed on the whole test images (test/full_lr, centre-cropped to at most "
                 f"{NIQE_MAX_LR_SIDE} px per side, upscaled), only where the output minus the border is at least "
                 f"{NIQE_MIN_SIDE} px per side; on a 128x128 crop NIQE would be one 96x96 block (degenerate). Ma "
                 "(higher is better) is Ma et al.'s NRQM as pyiqa computes it, on the rounded Y channel with border "
                 "crop = scale (PIRM's PI convention).")
    lines.append("- DMOS* is BRISQUE's predicted DMOS (piq; SVR trained on LIVE IQA DMOS): the paper does not name its predictor.")
    if any(mm.get("untrained_weights") for mm in model_meta.values()):
        lines.append("- † model trained with untrained (random) loss networks (VGG19/PieAPP): a pipeline check, not a result.")
    return "\n".join(lines) + "\n"


def _paired_table(diffs: dict[str, Any], a: str, b: str) -> list[str]:
    """The paired-difference section of table.md: ``b - a`` per metric, and which is better where it is clear."""
    lines = ["", f"## Paired difference {b} − {a} (same images; 95% paired bootstrap interval)", "",
             "| Metric | Mean difference | 95% interval | n | Interval excludes 0 | Better |", "|---|---|---|---|---|---|"]
    for m, d in diffs.items():
        if d["mean_diff"] is None:
            lines.append(f"| {m} | n/a | n/a | 0 | no | |")
            continue
        better = ""
        if d["significant"]:
            lower_b = d["mean_diff"] < 0
            better = b if (lower_b == (m in LOWER_IS_BETTER)) else a
        lines.append(f"| {m} | {d['mean_diff']:+.4f} | [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] | {d['n']} | "
                     f"{'yes' if d['significant'] else 'no'} | {better} |")
    return lines


def _weights_notes(status: dict[str, dict[str, Any]]) -> list[str]:
    """One note per metric with weights: the file used (and whether it is the published one), or why not."""
    lines = []

    def weights_file(prov: dict[str, Any]) -> str:
        check = str(prov.get("check", "ok"))
        unverified = "" if check == "ok" else f"; {check.removeprefix('ok ').strip('()')}: NOT verified as the published file"
        return f"weights {prov.get('file')} (sha256 {str(prov.get('sha256'))[:12]}…{unverified})"

    for m, st in status.items():
        if st["weights"] in ("real", "untrained", "missing"):
            prov = st.get("provenance") or {}
            real = (f"((10 - Ma) + NIQE) / 2 (PIRM 2018) with Ma's {weights_file(prov['ma'])} and NIQE's "
                    f"{weights_file(prov['niqe'])}" if m == "pi" and "ma" in prov else weights_file(prov))
            what = {"real": real,
                    "untrained": "UNTRAINED (random) weights: scores are not comparable with published numbers",
                    "missing": f"missing: {st.get('reason')}"}[st["weights"]]
            if st.get("settings"):
                what += " (" + ", ".join(f"{k} {v}" for k, v in st["settings"].items()) + ")"
            lines.append(f"- {m}: {what}")
    return lines


def _label_font() -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # older Pillow
        return ImageFont.load_default()


def make_grid(columns: list[tuple[str, np.ndarray]]) -> Image.Image:
    """One row of equally sized images with a label above each."""
    h, w = columns[0][1].shape[:2]
    pad, head = 4, 18
    grid = Image.new("RGB", (len(columns) * (w + pad) + pad, h + head + pad), "white")
    draw = ImageDraw.Draw(grid)
    font = _label_font()
    for i, (label, img) in enumerate(columns):
        x = pad + i * (w + pad)
        draw.text((x, 2), label, fill="black", font=font)
        grid.paste(Image.fromarray(img), (x, head))
    return grid


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------- the step


def _model_inputs(models: dict[str, Path]) -> None:
    for name, path in models.items():
        if name == BASELINE:
            raise UserError(f"--model {name}=...: the name {BASELINE!r} is reserved for the baseline; choose another")
        if not path.exists():
            raise InputError(f"--model {name}={path}: {path} not found; expected NAME=DIR with DIR a model folder from "
                             "`facesr train` (OUT or OUT/model) or a generator .safetensors file (a bare DIR is named "
                             "after its folder)")


def _input_hash(path: Path) -> str:
    return tree_hash(path) if path.is_dir() else sha256_file(path)


def no_score_reason(metric: str, n_large: int) -> str:
    """Why a metric has no finite score for a model; ``n_large``: full test images big enough for NIQE / Ma / PI."""
    if metric not in ("niqe", "ma", "pi"):
        return "no finite scores"
    if n_large == 0:
        return f"no image large enough (needs >= {NIQE_MIN_SIDE} px per side after the border crop)"
    return (f"no finite score on the {n_large} image(s) large enough: the outputs are flat or degenerate "
            "(NIQE and Ma fit statistics of image structure; a constant image has none)")


def upscale_and_score(scorer: Scorer, upscalers: dict[str, Upscaler], pairs: list[TestPair],
                      full_lr: dict[str, np.ndarray], n_keep: int
                      ) -> tuple[dict[str, dict[str, list[float]]], dict[str, list[np.ndarray]]]:
    """Upscale the test pairs (and the full-size test images, for NIQE / Ma) with each upscaler and score them:
    ``({model: {metric: [score per image]}}, {model: the first n_keep SR outputs (for the grids)})``."""
    names, lrs, hrs = [p.name for p in pairs], [p.lr for p in pairs], [p.hr for p in pairs]
    srs_by_model: dict[str, list[np.ndarray]] = {}
    full_by_model: dict[str, dict[str, list[float]]] = {}
    for name, up in upscalers.items():
        t = time.time()
        srs = up(lrs)
        for n, s, h in zip(names, srs, hrs):
            if s.shape != h.shape:
                raise InputError(f"--model {name}: output for {n} is {s.shape}, expected {h.shape}")
        srs_by_model[name] = srs
        if scorer.full_size_metrics:  # NIQE / Ma scored now: the full-size outputs are not kept
            full = {n: up([img])[0] for n, img in full_lr.items()}
            tf = time.time()
            full_by_model[name] = scorer.full_size_scores(full, names)
            log.info("evaluate: %s NIQE/Ma on %d full-size images in %.1f s", name, len(full), time.time() - tf)
        log.info("evaluate: %s upscaled %d (+%d full) images in %.1f s", name, len(names), len(full_lr),
                 time.time() - t)
    per_image = scorer.score_all(srs_by_model, hrs, full_by_model, names)
    return per_image, {k: v[:n_keep] for k, v in srs_by_model.items()}


def summarise(per_image: dict[str, dict[str, list[float]]], wanted: list[str], status: dict[str, dict[str, Any]],
              n_boot: int, seed: int, n_large: int) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """``(metrics.json, notes)``: per model and metric the mean, its bootstrap interval, n and the weights status
    (``missing``: no numbers); ``notes[model][metric]`` says why a metric has no finite score."""
    metrics: dict[str, Any] = {}
    notes: dict[str, dict[str, str]] = {}
    for name, scores in per_image.items():
        metrics[name] = {}
        for m in wanted:
            vals = np.asarray(scores[m], dtype=np.float64)
            finite = vals[np.isfinite(vals)]
            st = status[m]
            entry: dict[str, Any] = {"mean": float(finite.mean()) if finite.size else None,
                                     "ci95": bootstrap_ci(finite, n_boot, seed), "n": int(finite.size),
                                     "weights": st["weights"]}
            # metrics.json stays numbers + status (DVC shows it as a table); reasons go to manifest.json
            if st["weights"] == "missing":
                entry.update(mean=None, ci95=None, n=0)
            elif not finite.size:
                notes.setdefault(name, {})[m] = no_score_reason(m, n_large)
            metrics[name][m] = entry
    return metrics, notes


def paired_differences(per_image: dict[str, dict[str, list[float]]], paired: tuple[str, str] | None,
                       wanted: list[str], status: dict[str, dict[str, Any]], n_boot: int,
                       seed: int) -> dict[str, Any]:
    """``{metric: paired_bootstrap(A, B)}`` (B - A on the same images) for ``paired = (A, B)``
    (``params.evaluate.paired``); empty when it is None or either model was not evaluated."""
    if paired is None or any(m not in per_image for m in paired):
        return {}
    a, b = paired
    return {m: paired_bootstrap(per_image[a][m], per_image[b][m], n_boot, seed)
            for m in wanted if status[m]["weights"] != "missing"}


def per_image_csv(per_image: dict[str, dict[str, list[float]]], wanted: list[str], names: list[str]) -> str:
    """per_image.csv: ``model,image,<metric>...``, an empty cell where a score was not computed."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["model", "image", *wanted])
    for name, scores in per_image.items():
        for i, n in enumerate(names):
            row = [scores[m][i] for m in wanted]
            writer.writerow([name, n, *("" if not math.isfinite(v) else repr(float(v)) for v in row)])
    return buf.getvalue()


def write_grids(folder: Path, pairs: list[TestPair], outputs: dict[str, list[np.ndarray]]) -> list[str]:
    """grids/NN-NAME.png for the first test pairs: LR (nearest) | each upscaler's output, in order | HR."""
    paths = []
    for i in range(min(len(v) for v in outputs.values())):
        hr_h, hr_w = pairs[i].hr.shape[:2]
        lr_big = np.asarray(Image.fromarray(pairs[i].lr).resize((hr_w, hr_h), Image.NEAREST))
        cols = [("LR", lr_big)] + [(m, outputs[m][i]) for m in outputs] + [("HR", pairs[i].hr)]
        rel = f"grids/{i:02d}-{pairs[i].name}.png"
        atomic_write_bytes(folder / rel, _png_bytes(make_grid(cols)))
        paths.append(rel)
    return paths


def evaluate(params: Params, data: Path, models: dict[str, Path], out: Path) -> dict[str, Any]:
    """Score the bicubic baseline and each model; write the eval folder; return the metrics dict (metrics.json).

    Rows and grid columns: bicubic, the psnr stage's model, then the others in the order given. The paired
    differences are those of ``params.evaluate.paired``.
    """
    t0 = time.time()
    data, out = Path(data), Path(out)
    models = {k: Path(v) for k, v in sorted(models.items(), key=lambda kv: kv[0] != PSNR_MODEL)}
    _model_inputs(models)
    check_output_folder(out, markers={"manifest.json": {FORMAT}}, inputs=[data, *models.values()],
                        kind="evaluation folder made by `facesr evaluate`")  # what --out may be: docs/data.md
    scale = params.data.scale
    pairs = load_pairs(data, scale)
    names = [p.name for p in pairs]
    full_lr = load_full_lr(data, names)
    device = resolve_device(params.evaluate.device, "evaluate.device")
    scorer = Scorer(params, device)
    status = scorer.status()
    n_boot, seed, paired = params.evaluate.bootstrap, params.seed, params.evaluate.paired
    upscalers, model_meta = load_upscalers(params, models, device)
    per_image, outputs = upscale_and_score(scorer, upscalers, pairs, full_lr, min(params.data.grid_faces, len(names)))
    n_large = sum(1 for img in full_lr.values()
                  if niqe_size_ok(img.shape[0] * scale, img.shape[1] * scale, border=scale))
    metrics, notes = summarise(per_image, scorer.wanted, status, n_boot, seed, n_large)
    diffs = paired_differences(per_image, paired, scorer.wanted, status, n_boot, seed)
    hr_h, hr_w = pairs[0].hr.shape[:2]
    table = render_table(metrics, diffs, status, model_meta, len(names), n_boot, f"{hr_h}x{hr_w} crops", paired)

    with atomic_dir(out) as tmp:
        atomic_write_json(tmp / "metrics.json", metrics)
        atomic_write_text(tmp / "per_image.csv", per_image_csv(per_image, scorer.wanted, names))
        atomic_write_text(tmp / "table.md", table)
        if diffs and paired:
            atomic_write_json(tmp / "paired_differences.json", {"difference": f"{paired[1]} - {paired[0]}", **diffs})
        grid_paths = write_grids(tmp, pairs, outputs)
        prep_manifest = data / "manifest.json"
        manifest = {
            "format": FORMAT,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "inputs": {
                "data": str(data),
                "prepared_manifest_sha256": sha256_file(prep_manifest) if prep_manifest.is_file() else None,
                "test_images": {p.name: {"lr_sha256": _arr_hash(p.lr), "hr_sha256": _arr_hash(p.hr)} for p in pairs},
                "models": model_meta,
            },
            "params": params.model_dump(mode="json"),
            "params_hash": params.hash(),
            "metrics": status,
            "notes": notes,
            "bicubic": BICUBIC_NOTE,
            "niqe": {"on": "test/full_lr upscaled", "max_lr_side": NIQE_MAX_LR_SIDE, "min_side": NIQE_MIN_SIDE,
                     "images": list(full_lr), "also": ["ma", "pi"]},
            "grids": grid_paths,
            "device": str(device),
            "seconds": round(time.time() - t0, 2),
        }
        atomic_write_json(tmp / "manifest.json", manifest)
    log.info("evaluate: wrote %s in %.1f s", out, time.time() - t0)
    return metrics


def _arr_hash(a: np.ndarray) -> str:
    import hashlib

    h = hashlib.sha256()
    h.update(str(a.shape).encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()
