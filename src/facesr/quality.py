"""Quality report: do the models beat bicubic, keep colour, and keep their borders? Figures, and the profile's targets.

``quality_report(params, data, models)`` upscales the test split of a prepared folder with bicubic and each model
(loaded and run as evaluate does: ``facesr.evaluate.load_upscalers``, i.e. ``facesr.infer.load_model`` and the one
forward pass ``facesr.infer.upscale_images``, on ``evaluate.device``) and measures, per model, on two views of the
same test images:

- ``crops``: the prepared test pairs (a centred ``data.hr_size`` crop of each test photo, native resolution), the
  pairs `facesr evaluate` scores;
- ``faces``: each whole test photo, centre-cropped to a square and resized to ``data.hr_size`` with Lanczos, its LR
  made with the one LR operator: the whole face at the output size, as a user's face photos look (sharper per pixel
  than a native crop), so a figure that holds only on native crops shows here.

Figures: PSNR-Y and SSIM-Y (border = scale), PSNR-RGB (and the Y - RGB gap: a model that loses colour has a large
gap), the PSNR-Y of the outer ``quality.border_px`` frame (and its difference to bicubic's frame: a dark or ringing
frame shows there), and the standard deviation of the outputs (a constant model has 0). Targets
(``params.quality``) are checked on both views: the psnr model at least ``min_psnr_gain_db`` over bicubic, the GAN
variants at most ``max_variant_drop_db`` under it, every model's RGB gap at most ``max_rgb_gap_db``, every frame at
most ``max_border_drop_db`` under bicubic's, no flat output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from facesr.config import BASELINE, PSNR_MODEL, Params
from facesr.data.dataset import load_test_pairs
from facesr.data.degrade import bicubic_downscale
from facesr.data.prepare import center_crop
from facesr.device import resolve_device
from facesr.errors import InputError
from facesr.metrics.fidelity import psnr, psnr_band, ssim

VIEWS = ("crops", "faces")


@dataclass
class Target:
    view: str
    model: str
    what: str
    value: float
    op: str  # ">=" or "<="
    limit: float

    @property
    def met(self) -> bool:
        return self.value >= self.limit if self.op == ">=" else self.value <= self.limit

    def line(self) -> str:
        return (f"target {self.view:5s} {self.model:14s} {self.what} {self.value:+.3f} {self.op} {self.limit:+.3f}: "
                f"{'met' if self.met else 'NOT met'}")


@dataclass
class QualityReport:
    figures: dict[str, dict[str, dict[str, float]]]  # view -> model -> figure -> value
    n_images: dict[str, int]
    targets: list[Target] = field(default_factory=list)

    @property
    def all_met(self) -> bool:
        return all(t.met for t in self.targets)

    def as_dict(self) -> dict[str, Any]:
        return {"figures": self.figures, "n_images": self.n_images, "all_met": self.all_met,
                "targets": [{**t.__dict__, "met": t.met} for t in self.targets]}

    def render(self) -> str:
        out = []
        for view in VIEWS:
            rows = self.figures[view]
            out += [f"## {view} ({self.n_images[view]} test images)", "",
                    "| model | PSNR-Y | vs bicubic | SSIM-Y | PSNR-RGB | Y-RGB gap | frame PSNR-Y | frame vs bicubic | "
                    "output std |", "|---|---|---|---|---|---|---|---|---|"]
            for model, f in rows.items():
                out.append(f"| {model} | {f['psnr_y']:.3f} | {f['gain_db']:+.3f} | {f['ssim_y']:.4f} | "
                           f"{f['psnr_rgb']:.3f} | {f['rgb_gap_db']:.3f} | {f['frame_psnr_y']:.3f} | "
                           f"{f['frame_gain_db']:+.3f} | {f['output_std']:.1f} |")
            out.append("")
        out += [t.line() for t in self.targets]
        out.append(f"all targets met: {'yes' if self.all_met else 'NO'}")
        return "\n".join(out) + "\n"


def face_pairs(data: Path, size: int, scale: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(LR, HR) of each whole test photo: centre square, Lanczos to ``size``, LR by the one operator."""
    pairs = []
    for p in load_test_pairs(data, full=True):
        square = center_crop(p.hr, min(p.hr.shape[:2]))
        hr = np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.LANCZOS))
        pairs.append((bicubic_downscale(hr, scale), hr))
    return pairs


def _figures(srs: list[np.ndarray], hrs: list[np.ndarray], border: int, band: int) -> dict[str, float]:
    return {
        "psnr_y": float(np.mean([psnr(s, h, border, True) for s, h in zip(srs, hrs)])),
        "ssim_y": float(np.mean([ssim(s, h, border, True) for s, h in zip(srs, hrs)])),
        "psnr_rgb": float(np.mean([psnr(s, h, border, False) for s, h in zip(srs, hrs)])),
        "frame_psnr_y": float(np.mean([psnr_band(s, h, band) for s, h in zip(srs, hrs)])),
        "output_std": float(np.mean([s.astype(np.float64).std() for s in srs])),
    }


def quality_report(params: Params, data: Path, models: dict[str, Path]) -> QualityReport:
    """Figures of bicubic and each model on both views of the test split, and the profile's targets."""
    from facesr.evaluate import load_upscalers

    data = Path(data)
    scale, q = params.data.scale, params.quality
    crops = [(p.lr, p.hr) for p in load_test_pairs(data)]
    if not crops:
        raise InputError(f"{data}: the test split is empty")
    views = {"crops": crops, "faces": face_pairs(data, params.data.hr_size, scale)}
    device = resolve_device(params.evaluate.device, "evaluate.device")
    ordered = {k: Path(v) for k, v in sorted(models.items(), key=lambda kv: kv[0] != PSNR_MODEL)}
    upscalers, _ = load_upscalers(params, ordered, device)
    figures: dict[str, dict[str, dict[str, float]]] = {}
    for view, pairs in views.items():
        lrs, hrs = [lr for lr, _ in pairs], [hr for _, hr in pairs]
        figures[view] = {name: _figures(up(lrs), hrs, scale, q.border_px) for name, up in upscalers.items()}
        base = figures[view][BASELINE]
        for f in figures[view].values():
            f["gain_db"] = f["psnr_y"] - base["psnr_y"]
            f["rgb_gap_db"] = f["psnr_y"] - f["psnr_rgb"]
            f["frame_gain_db"] = f["frame_psnr_y"] - base["frame_psnr_y"]
    report = QualityReport(figures, {v: len(p) for v, p in views.items()})
    for view in VIEWS:
        for name, f in figures[view].items():
            if name == BASELINE:
                continue
            gain_limit = (">=", q.min_psnr_gain_db) if name == PSNR_MODEL else (">=", -q.max_variant_drop_db)
            report.targets += [
                Target(view, name, "PSNR-Y gain over bicubic (dB)", f["gain_db"], *gain_limit),
                Target(view, name, "PSNR-Y minus PSNR-RGB (dB)", f["rgb_gap_db"], "<=", q.max_rgb_gap_db),
                Target(view, name, f"{q.border_px}px frame PSNR-Y minus bicubic's (dB)", f["frame_gain_db"], ">=",
                       -q.max_border_drop_db),
                Target(view, name, "output std (grey levels; 0 = flat)", f["output_std"], ">=", 1.0),
            ]
    return report
