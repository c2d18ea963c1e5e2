"""Test helper: tiny generators saved the way `facesr train` saves them (docs/architecture.md section 3)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from facesr.models import RRDBNet
from facesr.models.io import load_generator, save_generator


def models_api():
    """(RRDBNet class, save_generator, load_generator)."""
    return RRDBNet, save_generator, load_generator


def make_model_dir(folder: Path, variant: str = "l1_vgg", seed: int = 0, num_feat: int = 4, num_block: int = 1,
                   num_grow_ch: int = 4, untrained: bool = True, as_train_output: bool = True,
                   residual: str = "none") -> Path:
    """A tiny generator saved the way train does: ``folder/model/{generator.safetensors,model.json}``.

    ``residual="none"`` (default): a random network whose outputs are far from bicubic's (tests rely on that).
    """
    rrdb, save, _ = models_api()
    torch.manual_seed(seed)
    net = rrdb(num_in_ch=3, num_out_ch=3, scale=4, num_feat=num_feat, num_block=num_block, num_grow_ch=num_grow_ch,
               residual=residual)
    # a mild identity-like bias so outputs are not flat: keep random weights but small
    meta = {
        "format": "facesr.model/1", "arch": "RRDBNet", "num_in_ch": 3, "num_out_ch": 3, "num_feat": num_feat,
        "num_block": num_block, "num_grow_ch": num_grow_ch, "scale": 4, "variant": variant,
        "weights": {"vgg19": {"status": "untrained" if untrained else "real", "sha256": None}},
        "untrained_weights": untrained, "params_hash": "p" * 64, "data_manifest_sha256": "d" * 64, "steps": 3,
        "facesr_version": "0.1.0",
    }
    target = folder / "model" if as_train_output else folder
    save(net, target, meta)
    if as_train_output:
        lines = [{"step": i, "phase": "gan", "loss_g": 1.0 / (i + 1), "loss_d": 0.5 + 0.01 * i} for i in range(1, 4)]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        (folder / "train_summary.json").write_text(json.dumps({"variant": variant, "steps": 3}))
    return folder
