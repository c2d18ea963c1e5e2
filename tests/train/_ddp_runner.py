"""Entry point for the DDP test: `torchrun --standalone --nproc_per_node=2 _ddp_runner.py PARAMS DATA OUT`."""

from __future__ import annotations

import sys
from pathlib import Path

from facesr import train as train_mod
from facesr.config import load_params

if __name__ == "__main__":
    params_file, data, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    params = load_params(params_file, profile="ci",
                         overrides=["train.deterministic=true", "data.num_workers=0", "data.hr_size=64"])
    train_mod.train(params, data, "l1_vgg", out, False, progress=False)
