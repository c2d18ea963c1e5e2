"""The facesr-training Kubeflow pipeline (thin: the DAG lives in facesr.kfp.pipeline).

    python pipelines/facesr_training.py [--params params.yaml] [--profile paper] [--out pipelines/facesr-training.yaml]

is the same as `facesr --profile paper pipeline compile --out pipelines/facesr-training.yaml`. The committed
pipelines/facesr-training.yaml is compiled with the paper profile and kept in sync by tests/kfp/test_compile.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from facesr.config import load_params
from facesr.kfp.pipeline import build_pipeline, compile_pipeline

HERE = Path(__file__).resolve().parent
COMMITTED_PROFILE = "paper"
COMMITTED_YAML = HERE / "facesr-training.yaml"


def facesr_training(params_path: str | None = None, profile: str = COMMITTED_PROFILE):
    """The pipeline function built from params (for kfp.Client.create_run_from_pipeline_func and friends)."""
    return build_pipeline(load_params(params_path or HERE.parent / "params.yaml", profile))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(HERE.parent / "params.yaml"))
    ap.add_argument("--profile", default=COMMITTED_PROFILE)
    ap.add_argument("--out", default=str(COMMITTED_YAML))
    a = ap.parse_args(argv)
    print(compile_pipeline(load_params(a.params, a.profile), a.out))


if __name__ == "__main__":
    main()
