"""The promotion policy on paired per-image values (no MLflow needed)."""

from __future__ import annotations

import numpy as np
import pytest

from facesr.config import PromotionParams
from facesr.errors import UserError
from facesr.registry import Candidate, baseline_guard, decide, pick_best
from facesr.stats import bootstrap_ci, lower_is_better, paired_bootstrap


def rows(model, lpips, psnr, ssim=None):
    ssim = ssim if ssim is not None else [0.8] * len(lpips)
    return [{"model": model, "image": f"i{k}", "lpips": str(a), "psnr_y": str(b), "ssim_y": str(c)}
            for k, (a, b, c) in enumerate(zip(lpips, psnr, ssim))]


rng = np.random.default_rng(0)
BASE = 0.3 + rng.normal(0, 0.02, 20)
PSNR = 25 + rng.normal(0, 0.2, 20)


def test_clear_improvement_passes_and_reports_numbers():
    d = decide(PromotionParams(), rows("a", BASE - 0.05, PSNR), rows("b", BASE, PSNR), n_boot=300)
    assert d.promote, d.reason
    assert d.numbers["improvement"] == pytest.approx(0.05)
    lo, hi = d.numbers["improvement_ci95"]
    assert 0 < lo <= 0.05 <= hi


def test_worse_or_insignificant_or_guard_violation_is_refused():
    worse = decide(PromotionParams(), rows("a", BASE + 0.01, PSNR), rows("b", BASE, PSNR), n_boot=200)
    assert not worse.promote and "did not improve" in worse.reason
    noisy = BASE + rng.normal(0, 0.05, 20)
    tiny = decide(PromotionParams(), rows("a", noisy - 0.001, PSNR), rows("b", noisy + rng.normal(0, 0.05, 20), PSNR),
                  n_boot=200)
    assert not tiny.promote
    guard = decide(PromotionParams(), rows("a", BASE - 0.05, PSNR - 1.0), rows("b", BASE, PSNR), n_boot=200)
    assert not guard.promote and "guard psnr_y" in guard.reason
    relaxed = decide(PromotionParams(guards={"psnr_y": 2.0}), rows("a", BASE - 0.05, PSNR - 1.0),
                     rows("b", BASE, PSNR), n_boot=200)
    assert relaxed.promote
    not_sig = PromotionParams(require_significant=False, min_improvement=0.0)
    assert decide(not_sig, rows("a", BASE - 0.0001, PSNR), rows("b", BASE, PSNR), n_boot=50).promote


def test_different_images_and_missing_metric_raise():
    a = rows("a", BASE, PSNR)
    b = rows("b", BASE, PSNR)
    b[0]["image"] = "other"
    with pytest.raises(UserError, match="different test images"):
        decide(PromotionParams(), a, b)
    with pytest.raises(UserError, match="no metric 'pieapp'"):
        decide(PromotionParams(primary_metric="pieapp"), rows("a", BASE, PSNR), rows("b", BASE, PSNR))


def test_direction_and_bootstrap():
    assert lower_is_better("lpips") and lower_is_better("pieapp") and not lower_is_better("psnr_y")
    assert paired_bootstrap(np.zeros(10), np.full(10, 2.0), 100, 0)["ci95"] == [2.0, 2.0]
    mk = lambda n, psnr, lp: Candidate(n, None, None, {}, {"psnr_y": {"mean": psnr}, "lpips": {"mean": lp}})  # noqa
    cands = [mk("a", 30.0, 0.3), mk("b", 25.0, 0.2)]
    assert pick_best(cands, "lpips").name == "b" and pick_best(cands, "psnr_y").name == "a"
    with pytest.raises(UserError, match="primary_metric"):
        pick_best(cands, "dmos")


def test_data_hash_sources(tmp_path, monkeypatch):
    from facesr.fsutil import tree_hash
    from facesr.registry import data_hash

    monkeypatch.chdir(tmp_path)
    prep = tmp_path / "data" / "prepared"
    prep.mkdir(parents=True)
    (prep / "manifest.json").write_text("{}")
    assert data_hash(prep) == (tree_hash(prep), f"tree_hash:{prep}")
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  prepare:\n    cmd: facesr prepare\n    outs:\n    - path: data/prepared\n"
        "      hash: md5\n      md5: 0123abcd.dir\n      size: 10\n      nfiles: 1\n")
    assert data_hash(prep, dvc_lock=tmp_path / "dvc.lock") == ("0123abcd.dir", "dvc.lock:prepare:data/prepared")
    assert data_hash(None, dvc_lock=tmp_path / "dvc.lock")[0] == "0123abcd.dir"
    assert data_hash(None, dvc_lock=tmp_path / "none.lock")[0] == "unknown"
    with pytest.raises(UserError, match="not a folder"):
        data_hash(tmp_path / "missing", dvc_lock=tmp_path / "none.lock")


def test_baseline_guard_psnr_ssim_always_primary_only_with_real_weights():
    policy = PromotionParams()  # primary lpips; guards psnr_y 0.5, ssim_y 0.02
    bic = rows("bicubic", BASE, PSNR)
    # better than bicubic everywhere: no reason
    assert baseline_guard(policy, rows("a", BASE - 0.05, PSNR + 0.3), bic, primary_real=True) == (
        [], baseline_guard(policy, rows("a", BASE - 0.05, PSNR + 0.3), bic, primary_real=True)[1])
    # PSNR-Y below bicubic beyond the tolerance: refused whatever the weights
    reasons, numbers = baseline_guard(policy, rows("a", BASE - 0.05, PSNR - 0.8), bic, primary_real=False)
    assert len(reasons) == 1 and "psnr_y" in reasons[0] and numbers["psnr_y"]["worsening"] == pytest.approx(0.8)
    assert "lpips" not in numbers  # untrained primary: not compared with bicubic
    # within the tolerance: fine
    assert baseline_guard(policy, rows("a", BASE, PSNR - 0.4), bic, primary_real=False)[0] == []
    # SSIM-Y too
    assert "ssim_y" in baseline_guard(policy, rows("a", BASE, PSNR, [0.7] * 20), bic, primary_real=False)[0][0]
    # a real primary metric worse than bicubic at all: refused; the same with untrained weights: not
    assert "lpips" in baseline_guard(policy, rows("a", BASE + 0.001, PSNR), bic, primary_real=True)[0][0]
    assert baseline_guard(policy, rows("a", BASE + 0.001, PSNR), bic, primary_real=False)[0] == []
    # no bicubic rows: refused, saying so
    assert "no bicubic baseline" in baseline_guard(policy, rows("a", BASE, PSNR), [], primary_real=False)[0][0]


def test_the_gate_interval_is_the_reports_paired_bootstrap():
    """One statistics owner: the gate's interval of the per-image improvement is facesr.stats' paired bootstrap of
    (champion - challenger) for a lower-is-better primary, the same numbers evaluate's paired table gives."""
    chall, champ = BASE - 0.01 + rng.normal(0, 0.02, 20), BASE
    d = decide(PromotionParams(), rows("a", chall, PSNR), rows("b", champ, PSNR), n_boot=400, seed=7)
    order = sorted(range(20), key=lambda k: f"i{k}")  # the gate pairs the images in the order of their names
    want = paired_bootstrap(chall[order], champ[order], 400, 7)
    assert d.numbers["improvement_ci95"] == want["ci95"] == bootstrap_ci((champ - chall)[order], 400, 7)
    assert d.numbers["improvement"] == pytest.approx(want["mean_diff"], abs=1e-12)
    # higher-is-better primary: the improvement is challenger - champion
    hb = PromotionParams(primary_metric="psnr_y", guards={})
    d2 = decide(hb, rows("a", BASE, PSNR + 0.3), rows("b", BASE, PSNR), n_boot=400, seed=7)
    assert d2.numbers["improvement_ci95"] == paired_bootstrap(PSNR[order], PSNR[order] + 0.3, 400, 7)["ci95"]


def test_the_policy_needs_no_mlflow():
    """The gate's module imports neither MLflow nor the registry's MLflow-facing modules."""
    import subprocess
    import sys

    code = ("import sys; import facesr.registry.policy as p; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'); assert not bad, bad; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
