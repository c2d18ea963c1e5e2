"""The shared PSNR stage (`facesr pretrain`): L1 only with its own schedule, exact resume, and the GAN variants that
start from it (--init-from: no L1 phase, lineage, a changed init restarts a stale checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from facesr import train as train_mod
from facesr.cli.main import main as cli_main
from facesr.fsutil import sha256_file


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model" / "generator.safetensors"))


def _pre(params_ci, **sets):
    base = {"pretrain__steps": 6, "pretrain__batch_size": 4, "pretrain__hr_size": 32, "train__log_every": 1,
            "train__checkpoint_every": 2}
    base.update(sets)
    return params_ci(**base)


def test_pretrain_is_l1_only_with_its_schedule_and_patches(params_ci, prepared, tmp_path):
    params = _pre(params_ci)
    s = train_mod.train(params, prepared, "psnr", tmp_path / "psnr", progress=False)
    assert s["finished"] and s["steps"] == 6 and s["pretrain_steps"] == 6 and s["gan_steps"] == 0
    assert s["batch_size"] == 4 and s["untrained_weights"] is False and s["weights"] == {}
    meta = json.loads((tmp_path / "psnr" / "model" / "model.json").read_text())
    assert meta["variant"] == "psnr" and meta["residual"] == "bicubic" and meta["untrained_weights"] is False
    rows = [json.loads(line) for line in (tmp_path / "psnr" / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["pretrain"] * 6 and all(r["loss_d"] is None for r in rows)
    # the cosine schedule of pretrain.lr, step by step (0-based step i logs lr_at(i))
    assert [r["lr"] for r in rows] == pytest.approx([params.pretrain.lr_at(i) for i in range(6)])
    assert rows[0]["lr"] == pytest.approx(params.pretrain.lr)
    assert rows[-1]["lr"] == pytest.approx(params.pretrain.lr * params.pretrain.lr_final)
    # its patches are pretrain.hr_size, not data.hr_size
    ds = train_mod.make_dataset(params, prepared, "psnr")
    assert ds[0]["hr"].shape[-1] == 32 and train_mod.make_dataset(params, prepared, "l1_vgg")[0]["hr"].shape[-1] == 64


def test_pretrain_resumes_exactly(params_ci, prepared, tmp_path):
    params = _pre(params_ci)
    train_mod.train(params, prepared, "psnr", tmp_path / "whole", progress=False)
    part = train_mod.train(params, prepared, "psnr", tmp_path / "cut", progress=False, stop_at_step=3)
    assert part["finished"] is False and not (tmp_path / "cut" / "model").exists()
    train_mod.train(params, prepared, "psnr", tmp_path / "cut", resume=True, progress=False)
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_gan_variant_starts_from_the_psnr_model(params_ci, prepared, tmp_path, params_file, capsys):
    params = _pre(params_ci)
    train_mod.train(params, prepared, "psnr", tmp_path / "psnr", progress=False)
    init = tmp_path / "psnr" / "model"
    argv = ["--params", str(params_file), "--profile", "ci", "--set", "data.hr_size=64", "--set",
            "train.deterministic=true", "train", "--data", str(prepared), "--variant", "l1_vgg", "--out",
            str(tmp_path / "gan"), "--init-from", str(init), "--no-progress"]
    assert cli_main(argv) == 0
    s = json.loads((tmp_path / "gan" / "train_summary.json").read_text())
    assert s["pretrain_steps"] == 0 and s["steps"] == params.train.max_steps
    meta = json.loads((tmp_path / "gan" / "model" / "model.json").read_text())
    assert meta["init_sha256"] == sha256_file(init / "generator.safetensors")
    rows = [json.loads(line) for line in (tmp_path / "gan" / "metrics.jsonl").read_text().splitlines()]
    assert {r["phase"] for r in rows} == {"gan"}
    # a new psnr model (the pretrain stage re-ran) makes a --restart-if-changed run start over, not continue
    train_mod.train(_pre(params_ci, pretrain__steps=4), prepared, "psnr", tmp_path / "psnr2", progress=False)
    init.rename(tmp_path / "old-init")
    (tmp_path / "psnr2" / "model").rename(init)
    capsys.readouterr()
    assert cli_main([*argv, "--resume", "--restart-if-changed"]) == 0
    meta2 = json.loads((tmp_path / "gan" / "model" / "model.json").read_text())
    assert meta2["init_sha256"] == sha256_file(init / "generator.safetensors") != meta["init_sha256"]
    assert '"steps": 3' in capsys.readouterr().out  # trained again from the new start (not a no-op resume)


def test_ci_models_beat_bicubic_and_are_not_flat(params_ci, prepared, tmp_path):
    """Even the seconds-long ci profile: the psnr model is above bicubic, keeps colour and frame, and the variants
    differ from it and from each other (they are distinguishable, never constant)."""
    from facesr.quality import quality_report

    params = params_ci()
    train_mod.train(params, prepared, "psnr", tmp_path / "psnr", progress=False)
    ip = params.model_copy(update={"train": params.train.model_copy(update={"init_from": str(tmp_path / "psnr")})})
    for v in ("l1_vgg", "l1_vgg_pieapp"):
        train_mod.train(ip, prepared, v, tmp_path / v, progress=False)
    models = {m: tmp_path / m for m in ("psnr", "l1_vgg", "l1_vgg_pieapp")}
    report = quality_report(params, prepared, models)
    crops = report.figures["crops"]
    assert crops["psnr"]["gain_db"] > 0.0, crops
    failed = [t.line() for t in report.targets if not t.met]
    assert not failed, failed
    w = {m: _weights(p) for m, p in models.items()}
    for a, b in (("psnr", "l1_vgg"), ("psnr", "l1_vgg_pieapp"), ("l1_vgg", "l1_vgg_pieapp")):
        assert any(not torch.equal(w[a][k], w[b][k]) for k in w[a]), (a, b)
    assert all(f["output_std"] > 10 for f in crops.values())
    assert np.isfinite([f["psnr_y"] for f in crops.values()]).all()
