"""Entry point for the DDP test: `torchrun --nproc_per_node=2 _ddp_runner.py PARAMS DATA OUT` (stand-ins if needed)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _standins  # noqa: E402

from facesr import train as train_mod  # noqa: E402
from facesr.config import load_params  # noqa: E402

if __name__ == "__main__":
    params_file, data, out, fake_data = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "1"
    _standins.install(data_needed=fake_data)
    params = load_params(params_file, profile="ci", overrides=["train.deterministic=true", "data.num_workers=0",
                                                                  "data.hr_size=64"])
    train_mod.train(params, data, "l1_vgg", out, False, progress=False)
