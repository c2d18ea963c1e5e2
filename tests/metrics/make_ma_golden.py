"""Make tests/metrics/data/ma_golden.json: pyiqa 0.1.16's NRQM features and score on a few sample faces.

Not run by the test suite (pyiqa is not a dependency: it pulls transformers, opencv, ...). To regenerate::

    python3 -m pip install --no-deps --target /tmp/pyiqa-ref pyiqa==0.1.16
    .venv/bin/python tests/metrics/make_ma_golden.py --pyiqa /tmp/pyiqa-ref

Only ``pyiqa/archs/nrqm_arch.py`` and what it really uses (matlab_utils, ssim_arch, func_util, color_util) are
imported; pyiqa's package ``__init__`` files, its downloader, hub helpers and NIQE (unused by ``nrqm()``) are
replaced by stubs so that its heavy dependencies are not needed. torch/scipy/numpy are the project's.

The model is synthetic (``_ma_util.synthetic_model``: the published file's structure, small random forests whose
thresholds are centred on these images' pyiqa features, so that different images take different paths); pyiqa scores
the images with it through ``NRQM(crop_border=4, color_space='ycbcr')``, PIRM's PI convention and ours.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.metrics._ma_util import GOLDEN, SEED, write_synthetic_model  # noqa: E402
from tests.metrics._util import GOLDEN_FACES, sample_faces  # noqa: E402

BORDER = 4


def golden_images() -> dict[str, np.ndarray]:
    """The test images: two whole faces, one blurred, one odd-sized crop (odd FFT / pyramid sizes)."""
    faces = sample_faces(3, size=None, root=GOLDEN_FACES)
    blurred = np.asarray(Image.fromarray(faces[0]).filter(ImageFilter.GaussianBlur(2)))
    return {"face0": faces[0], "face1": faces[1], "face0_blur2": blurred,
            "face2_crop139x171": np.ascontiguousarray(faces[2][7:146, 5:176])}


def import_nrqm(pyiqa_dir: Path) -> types.ModuleType:
    pkg = Path(pyiqa_dir) / "pyiqa"
    if not (pkg / "archs" / "nrqm_arch.py").is_file():
        raise SystemExit(f"{pkg}/archs/nrqm_arch.py not found: pip install --no-deps --target DIR pyiqa==0.1.16")

    def package(name: str, path: Path) -> None:
        mod = types.ModuleType(name)
        mod.__path__ = [str(path)]
        sys.modules[name] = mod

    package("pyiqa", pkg)
    package("pyiqa.archs", pkg / "archs")
    package("pyiqa.utils", pkg / "utils")
    dl = types.ModuleType("pyiqa.utils.download_util")
    dl.load_file_from_url = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no downloads here"))
    sys.modules[dl.__name__] = dl
    au = types.ModuleType("pyiqa.archs.arch_util")
    au.get_url_from_name = lambda name, *a, **k: f"(stub)/{name}"
    sys.modules[au.__name__] = au
    na = types.ModuleType("pyiqa.archs.niqe_arch")
    na.NIQE = None
    sys.modules[na.__name__] = na
    import pyiqa.archs.nrqm_arch as nrqm_arch

    return nrqm_arch


def pyiqa_features(nrqm_arch: types.ModuleType, y: torch.Tensor) -> list[np.ndarray]:
    """f1, f2, f3 exactly as pyiqa's ``nrqm()`` computes them before its forests (y: [1, 1, H, W] in 0..255)."""
    from pyiqa.matlab_utils import im2col

    img = y.double()
    pyr = nrqm_arch.get_gauss_pyramid(img / 255.0)
    f1 = torch.cat([nrqm_arch.block_dct(im) for im in pyr], dim=1)
    f2 = nrqm_arch.global_gsm(img)
    f3 = torch.cat([torch.linalg.svd(im2col(im, 5, "distinct"), full_matrices=False)[1] for im in pyr], dim=1)
    return [f[0].numpy() for f in (f1, f2, f3)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pyiqa", required=True, type=Path, help="folder holding the pyiqa 0.1.16 package")
    ap.add_argument("--out", type=Path, default=GOLDEN)
    args = ap.parse_args()
    nrqm_arch = import_nrqm(args.pyiqa)
    from pyiqa.utils.color_util import to_y_channel

    images = golden_images()
    rows = {}
    for name, img in images.items():
        x = torch.from_numpy(img).permute(2, 0, 1)[None].double() / 255.0
        y = to_y_channel(x, 255, "ycbcr")[..., BORDER:-BORDER, BORDER:-BORDER]
        rows[name] = {"x": x, "y_sum": float(y.sum()), "shape": list(img.shape[:2]),
                      "features": pyiqa_features(nrqm_arch, y)}
    feats = [np.stack([r["features"][g] for r in rows.values()]) for g in range(3)]
    centres = [f.mean(axis=0) for f in feats]
    scales = [np.maximum(f.std(axis=0), 1e-3 * np.abs(f.mean(axis=0)) + 1e-6) for f in feats]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_synthetic_model(Path(tmp) / "NRQM_model.mat", [c.tolist() for c in centres],
                                     [s.tolist() for s in scales], SEED)
        metric = nrqm_arch.NRQM(crop_border=BORDER, color_space="ycbcr", pretrained_model_path=str(path))
        for name, r in rows.items():
            r["score"] = float(metric(r["x"]))
            r["forests"] = [float(nrqm_arch.random_forest_regression(torch.from_numpy(f)[None], *rf)[0, 0])
                            for f, rf in zip(r["features"], metric.rf_params_list)]

    def num(v: float) -> float:
        return float(f"{v:.10g}")

    out = {
        "about": "pyiqa 0.1.16 nrqm_arch on bundled sample faces, Y of YCbCr rounded, border 4; made by "
                 "tests/metrics/make_ma_golden.py; model = tests/metrics/_ma_util.synthetic_model(centres, scales, "
                 "seed)",
        "pyiqa": "0.1.16", "torch": torch.__version__, "border": BORDER,
        "model": {"seed": SEED, "centres": [[num(v) for v in c] for c in centres],
                  "scales": [[num(v) for v in s] for s in scales]},
        "images": {name: {"shape": r["shape"], "y_sum": r["y_sum"],
                          "f1": [num(v) for v in r["features"][0]], "f2": [num(v) for v in r["features"][1]],
                          "f3": [num(v) for v in r["features"][2]], "forests": [num(v) for v in r["forests"]],
                          "score": num(r["score"])} for name, r in rows.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}: " + ", ".join(f"{n} {r['score']:.4f}" for n, r in rows.items()))


if __name__ == "__main__":
    main()
