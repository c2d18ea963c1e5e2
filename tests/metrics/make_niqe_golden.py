"""Make tests/metrics/data/niqe_golden.json: NIQE of bundled sample faces by BasicSR's implementation.

BasicSR's ``calculate_niqe`` reproduces the MATLAB ``niqe_release`` (5.7296 on its baboon test image, both), with the
published pristine model, which is the file facesr bundles (src/facesr/metrics/data/niqe_pris_params.npz). This script
is how the golden values were made; the test (test_noref.py) only reads the JSON. To rerun it:

    pip download --no-deps --no-binary :all: --no-build-isolation basicsr==1.4.2 -d /tmp/bsr
    tar xzf /tmp/bsr/basicsr-1.4.2.tar.gz -C /tmp/bsr
    pip install --no-deps --target /tmp/cv opencv-python-headless
    PYTHONPATH=/tmp/bsr/basicsr-1.4.2:/tmp/cv python tests/metrics/make_niqe_golden.py

BasicSR's package ``__init__`` imports its whole training stack (and a torchvision module removed since), so the four
modules NIQE needs are loaded from their files under a bare ``basicsr`` namespace.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))


def _load_basicsr_niqe() -> types.ModuleType:
    spec = importlib.util.find_spec("basicsr")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("basicsr (the 1.4.2 sdist's source folder) is not on PYTHONPATH; see this file's docstring")
    root = Path(list(spec.submodule_search_locations)[0])
    for name in ("basicsr", "basicsr.utils", "basicsr.metrics"):
        mod = types.ModuleType(name)
        mod.__path__ = [str(root / Path(*name.split(".")[1:]))]
        sys.modules[name] = mod

    def load(name: str) -> types.ModuleType:
        path = root / Path(*name.split(".")[1:]).with_suffix(".py")
        s = importlib.util.spec_from_file_location(name, path)
        assert s is not None and s.loader is not None
        m = importlib.util.module_from_spec(s)
        sys.modules[name] = m
        s.loader.exec_module(m)
        return m

    color = load("basicsr.utils.color_util")
    sys.modules["basicsr.utils"].bgr2ycbcr = color.bgr2ycbcr  # what metric_util imports from basicsr.utils
    load("basicsr.utils.registry")
    load("basicsr.utils.matlab_functions")
    load("basicsr.metrics.metric_util")
    return load("basicsr.metrics.niqe")


def main() -> None:
    from tests.metrics._util import GOLDEN_FACES

    niqe = _load_basicsr_niqe()
    metric_util = sys.modules["basicsr.metrics.metric_util"]
    files = sorted(GOLDEN_FACES.glob("*.jpg"))[:3]
    from PIL import Image

    params = np.load(HERE.parents[1] / "src/facesr/metrics/data/niqe_pris_params.npz")
    rows = []
    for f in files:
        with Image.open(f) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
        bgr = rgb[..., ::-1]
        for border in (0, 4):
            # as calculate_niqe, but in float64 as the MATLAB code (calculate_niqe itself works in float32, which
            # moves the score by up to ~0.02 on these faces: the AGGD shape is a grid search, sensitive to rounding)
            y = np.squeeze(metric_util.to_y_channel(bgr.astype(np.float32))).round().astype(np.float64)
            if border:
                y = y[border:-border, border:-border]
            rows.append({"file": f.name, "border": border,
                         "niqe": niqe.niqe(y, params["mu_pris_param"], params["cov_pris_param"],
                                           params["gaussian_window"]),
                         "niqe_basicsr_float32": niqe.calculate_niqe(bgr.astype(np.float64), crop_border=border)})
    out = {"reference": "basicsr 1.4.2 basicsr/metrics/niqe.py: its Y conversion and rounding (calculate_niqe), then "
                        "niqe() on the float64 luma (MATLAB's precision); niqe_basicsr_float32 = calculate_niqe as "
                        "shipped, for information",
           "params_sha256": __import__("hashlib").sha256(
               (HERE.parents[1] / "src/facesr/metrics/data/niqe_pris_params.npz").read_bytes()).hexdigest(),
           "rows": rows}
    (HERE / "data").mkdir(exist_ok=True)
    (HERE / "data" / "niqe_golden.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
