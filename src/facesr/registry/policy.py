"""The promotion gate as pure functions of per-image rows and the policy (``params.registry.promotion``).

Rows are dicts as read from ``per_image.csv`` (``model``, ``image``, one column per metric, values as text). Nothing
here touches MLflow: ``facesr.registry.promote`` reads the rows and records what these functions decide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facesr.errors import UserError
from facesr.stats import bootstrap_ci, lower_is_better


@dataclass
class Decision:
    promote: bool
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)


def column(rows: list[dict[str, str]], metric: str, who: str) -> dict[str, float]:
    """image -> finite value of ``metric``; UserError when no row has one."""
    out = {}
    for r in rows:
        v = r.get(metric)
        try:
            f = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out[r["image"]] = f
    if not out:
        raise UserError(f"{who}: per-image values have no metric {metric!r} "
                        f"(columns: {', '.join(k for k in (rows[0] if rows else {}) if k not in ('model', 'image'))})")
    return out


def _same_images(a: dict[str, float], b: dict[str, float]) -> list[str]:
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise UserError(f"challenger and champion were evaluated on different test images (only challenger: "
                        f"{only_a[:3]}{'...' if len(only_a) > 3 else ''}, only champion: {only_b[:3]}"
                        f"{'...' if len(only_b) > 3 else ''}): re-evaluate both on the same prepared data")
    return sorted(a)


def _worsening(metric: str, new: float, old: float) -> float:
    """How much worse ``new`` is than ``old`` (positive: worse), whatever the metric's direction."""
    return (1.0 if lower_is_better(metric) else -1.0) * (new - old)


def decide(policy: Any, chall: list[dict[str, str]], champ: list[dict[str, str]], n_boot: int = 1000,
           seed: int = 0) -> Decision:
    """The promotion policy on paired per-image values of the same test set.

    Pass when: the primary metric's mean improves by more than 0 and at least ``min_improvement``; no guard metric
    worsens by more than its tolerance; and, with ``require_significant``, the paired bootstrap 95% interval of the
    primary improvement (``facesr.stats.bootstrap_ci`` of the per-image improvements) lies above zero.
    """
    primary = policy.primary_metric
    a = column(chall, primary, "challenger")
    b = column(champ, primary, "champion")
    names = _same_images(a, b)
    improvement = -_worsening(primary, np.array([a[n] for n in names]), np.array([b[n] for n in names]))
    mean_imp = float(improvement.mean())
    lo, hi = bootstrap_ci(improvement, n_boot, seed) or (float("nan"), float("nan"))
    numbers: dict[str, Any] = {"primary_metric": primary, "n_images": len(names),
                               "challenger_mean": float(np.mean([a[n] for n in names])),
                               "champion_mean": float(np.mean([b[n] for n in names])),
                               "improvement": mean_imp, "improvement_ci95": [lo, hi],
                               "min_improvement": policy.min_improvement,
                               "require_significant": policy.require_significant, "guards": {}}
    reasons = []
    if not (mean_imp > 0 and mean_imp >= policy.min_improvement):
        reasons.append(f"{primary} did not improve enough: improvement {mean_imp:.6g} "
                       f"(needs > 0 and >= {policy.min_improvement})")
    if policy.require_significant and not lo > 0:
        reasons.append(f"{primary} improvement is not significant: paired bootstrap 95% interval "
                       f"[{lo:.6g}, {hi:.6g}] does not exclude 0")
    for g, tol in policy.guards.items():
        ga, gb = column(chall, g, "challenger"), column(champ, g, "champion")
        common = sorted(set(ga) & set(gb))
        worse = _worsening(g, float(np.mean([ga[n] for n in common])), float(np.mean([gb[n] for n in common])))
        numbers["guards"][g] = {"worsening": worse, "tolerance": tol}
        if worse > tol:
            reasons.append(f"guard {g} got worse by {worse:.6g} (tolerance {tol})")
    if reasons:
        return Decision(False, "; ".join(reasons), numbers)
    return Decision(True, f"{primary} improved by {mean_imp:.6g} (95% CI [{lo:.6g}, {hi:.6g}]); guards held", numbers)


def baseline_guard(policy: Any, chall: list[dict[str, str]], baseline: list[dict[str, str]],
                   primary_real: bool) -> tuple[list[str], dict[str, Any]]:
    """Reasons to refuse a challenger that is worse than bicubic on the same test images (empty: it is not).

    Always checked: PSNR-Y and SSIM-Y, each beyond its ``guards`` tolerance (0 when it has none); the primary metric
    too, with no tolerance, when its weights are real (a score of random networks says nothing about bicubic).
    Returns ``(reasons, numbers)``; the numbers are recorded on the version with the decision.
    """
    checks: dict[str, float] = {m: float(policy.guards.get(m, 0.0)) for m in ("psnr_y", "ssim_y")}
    if primary_real:
        checks[policy.primary_metric] = 0.0
    reasons: list[str] = []
    numbers: dict[str, Any] = {}
    if not baseline:
        return ["no bicubic baseline in the challenger's evaluation (per_image.csv has no 'bicubic' rows): "
                "evaluate and register it again"], numbers
    for m, tol in checks.items():
        try:
            ca, cb = column(chall, m, "challenger"), column(baseline, m, "bicubic")
        except UserError as exc:
            reasons.append(f"cannot compare with bicubic: {exc}")
            continue
        common = sorted(set(ca) & set(cb))
        if not common:
            reasons.append(f"cannot compare with bicubic on {m}: no test image in common")
            continue
        mc, mb = float(np.mean([ca[n] for n in common])), float(np.mean([cb[n] for n in common]))
        worse = _worsening(m, mc, mb)
        numbers[m] = {"challenger": mc, "bicubic": mb, "worsening": worse, "tolerance": tol, "n_images": len(common)}
        if worse > tol:
            reasons.append(f"worse than bicubic on {m}: {mc:.6g} vs bicubic {mb:.6g} on the same {len(common)} "
                           f"images (tolerance {tol:g})")
    return reasons, numbers
