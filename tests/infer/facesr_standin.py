"""Test helper: the real facesr.models (RRDBNet, io.save_generator/load_generator) when it exists, else a minimal
stand-in with the same contract (docs/architecture.md §3), so the infer/registry tests run before the nets land."""

from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F


class _RDB(nn.Module):
    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, True)

    def forward(self, x):
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class _RRDB(nn.Module):
    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = _RDB(nf, gc), _RDB(nf, gc), _RDB(nf, gc)

    def forward(self, x):
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class StandinRRDBNet(nn.Module):
    def __init__(self, num_in_ch=3, num_out_ch=3, scale=4, num_feat=64, num_block=23, num_grow_ch=32):
        super().__init__()
        self.scale = scale
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[_RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, True)

    def forward(self, x):
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


def _standin_io() -> types.ModuleType:
    from safetensors.torch import load_file, save_file

    mod = types.ModuleType("facesr.models.io")

    def save_generator(model, folder, meta):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
                  str(folder / "generator.safetensors"))
        (folder / "model.json").write_text(json.dumps(meta))

    def load_generator(path, device="cpu"):
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        meta = json.loads((folder / "model.json").read_text()) if (folder / "model.json").exists() else {}
        sd = load_file(str(path / "generator.safetensors" if path.is_dir() else path))
        nf = sd["conv_first.weight"].shape[0]
        nb = len({k.split(".")[1] for k in sd if k.startswith("body.")})
        gc = sd["body.0.rdb1.conv1.weight"].shape[0]
        m = StandinRRDBNet(3, 3, meta.get("scale", 4), nf, nb, gc)
        m.load_state_dict(sd)
        return m.to(device).eval(), meta

    mod.save_generator = save_generator
    mod.load_generator = load_generator
    return mod


def models_api():
    """(RRDBNet class, save_generator, load_generator): the real ones when facesr.models.io exists."""
    try:
        io = importlib.import_module("facesr.models.io")
        models = importlib.import_module("facesr.models")
        return models.RRDBNet, io.save_generator, io.load_generator
    except (ImportError, AttributeError):
        pass
    io = _standin_io()
    import facesr.models as models_pkg  # namespace package until the nets land

    sys.modules["facesr.models.io"] = io
    models_pkg.io = io  # type: ignore[attr-defined]
    return StandinRRDBNet, io.save_generator, io.load_generator


def make_model_dir(folder: Path, variant: str = "l1_vgg", seed: int = 0, num_feat: int = 4, num_block: int = 1,
                   num_grow_ch: int = 4, untrained: bool = True, as_train_output: bool = True) -> Path:
    """A tiny generator saved the way train does: ``folder/model/{generator.safetensors,model.json}``."""
    rrdb, save, _ = models_api()
    torch.manual_seed(seed)
    net = rrdb(num_in_ch=3, num_out_ch=3, scale=4, num_feat=num_feat, num_block=num_block, num_grow_ch=num_grow_ch)
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
