"""Training: end-to-end runs of both variants, determinism, exact resume, NaN guard, refusals, CLI errors, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from facesr import train as train_mod
from facesr.train import trainer as trainer_mod
from facesr.cli.main import main as cli_main
from facesr.errors import InputError, UserError

MODEL_KEYS = {"format", "arch", "num_in_ch", "num_out_ch", "num_feat", "num_block", "num_grow_ch", "scale", "variant",
              "weights", "untrained_weights", "params_hash", "data_manifest_sha256", "steps", "facesr_version"}


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model" / "generator.safetensors"))


def _ckpt(out: Path) -> dict:
    return torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_both_variants_train_and_differ(params_ci, prepared, tmp_path):
    params = params_ci()
    outs = {}
    for variant in ("l1_vgg", "l1_vgg_pieapp"):
        out = tmp_path / variant
        summary = train_mod.train(params, prepared, variant, out, False, progress=False)
        pre, gan = params.train.pretrain_steps, params.train.max_steps
        assert summary["finished"] and summary["steps"] == pre + gan
        meta = json.loads((out / "model" / "model.json").read_text())
        assert MODEL_KEYS <= set(meta)
        assert meta["variant"] == variant and meta["steps"] == pre + gan
        assert meta["params_hash"] == params.hash()
        assert meta["num_feat"] == params.model.generator.num_feat
        from facesr.fsutil import sha256_file

        assert meta["data_manifest_sha256"] == sha256_file(prepared / "manifest.json")
        assert meta["untrained_weights"] is any(v.get("status") != "real" for v in meta["weights"].values())
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == list(range(1, pre + gan + 1))  # ci logs every step
        assert {r["phase"] for r in rows} == {"pretrain", "gan"}
        gan_rows = [r for r in rows if r["phase"] == "gan"]
        assert all(r["loss_d"] is not None and r["imgs_per_s"] > 0 and r["lr"] > 0 for r in gan_rows)
        assert ("loss_pieapp" in gan_rows[-1]) == (variant == "l1_vgg_pieapp")
        csv_lines = (out / "plots" / "train_log.csv").read_text().splitlines()
        assert csv_lines[0].startswith("step,phase,epoch,loss_g,loss_d") and len(csv_lines) == 1 + pre + gan
        s = json.loads((out / "train_summary.json").read_text())
        assert s["variant"] == variant and s["world_size"] == 1
        from facesr.models import io as model_io

        model, _ = model_io.load_generator(out / "model")
        y = model(torch.rand(1, 3, 8, 8))
        assert y.shape == (1, 3, 32, 32) and torch.isfinite(y).all()
        outs[variant] = _weights(out)
    a, b = outs["l1_vgg"], outs["l1_vgg_pieapp"]
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a), "the PieAPP term must change the generator"


def test_same_seed_same_weights_other_seed_differs(params_ci, prepared, tmp_path):
    p = params_ci()
    train_mod.train(p, prepared, "l1_vgg", tmp_path / "a", False, progress=False)
    train_mod.train(p, prepared, "l1_vgg", tmp_path / "b", False, progress=False)
    train_mod.train(params_ci(seed=1), prepared, "l1_vgg", tmp_path / "c", False, progress=False)
    assert _same_state(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    assert not _same_state(_weights(tmp_path / "a"), _weights(tmp_path / "c"))


@pytest.mark.parametrize(("stop", "variant"), [(1, "l1_vgg"), (3, "l1_vgg_pieapp")])  # in pre-training; in GAN phase
def test_resume_is_exact(params_ci, prepared, tmp_path, stop, variant):
    # a milestone inside the run: the LR schedule must continue too
    p = params_ci(train__max_steps=4, train__lr_milestones=[2], train__checkpoint_every=100)
    train_mod.train(p, prepared, variant, tmp_path / "full", False, progress=False)
    part = train_mod.train(p, prepared, variant, tmp_path / "cut", False, progress=False, stop_at_step=stop)
    assert not part["finished"] and _ckpt(tmp_path / "cut")["step"] == stop
    assert not (tmp_path / "cut" / "model").exists()
    train_mod.train(p, prepared, variant, tmp_path / "cut", True, progress=False)
    full, cut = _ckpt(tmp_path / "full"), _ckpt(tmp_path / "cut")
    for key in ("generator", "discriminator"):
        assert _same_state(full[key], cut[key]), key
    assert _same_state(full["ema"]["shadow"], cut["ema"]["shadow"])
    assert torch.equal(full["rng"]["torch"], cut["rng"]["torch"])  # the global RNG continues as if never stopped
    assert full["opt_g"]["param_groups"][0]["lr"] == cut["opt_g"]["param_groups"][0]["lr"] < p.train.lr_g
    assert _same_state(_weights(tmp_path / "full"), _weights(tmp_path / "cut"))
    steps = [json.loads(x)["step"] for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) == list(range(1, 2 + 4 + 1))


def test_longer_max_steps_continues_a_finished_run(params_ci, prepared, tmp_path):
    p4 = params_ci(train__max_steps=4)
    train_mod.train(p4, prepared, "l1_vgg", tmp_path / "full", False, progress=False)
    train_mod.train(params_ci(train__max_steps=2), prepared, "l1_vgg", tmp_path / "x", False, progress=False)
    train_mod.train(p4, prepared, "l1_vgg", tmp_path / "x", True, progress=False)
    assert _same_state(_weights(tmp_path / "full"), _weights(tmp_path / "x"))


def test_restart_if_changed_resumes_same_inputs_and_restarts_on_a_params_change(params_ci, prepared, tmp_path):
    """What a pipeline re-run needs: an interruption resumes exactly; a changed param starts over (not continues)."""
    p = params_ci(train__max_steps=4, train__checkpoint_every=100)
    train_mod.train(p, prepared, "l1_vgg", tmp_path / "full", False, progress=False)
    # interrupted, then re-run with the same inputs: resumed exactly, as with plain --resume
    train_mod.train(p, prepared, "l1_vgg", tmp_path / "cut", False, progress=False, stop_at_step=3)
    train_mod.train(p, prepared, "l1_vgg", tmp_path / "cut", True, progress=False, restart_if_changed=True)
    assert _same_state(_weights(tmp_path / "full"), _weights(tmp_path / "cut"))
    # a params change: the finished run is not continued (plain --resume would say "nothing to do") but redone,
    # ending exactly where a fresh run with the new params ends
    p2 = params_ci(train__max_steps=4, train__checkpoint_every=100, train__lr_g=3e-4)
    train_mod.train(p2, prepared, "l1_vgg", tmp_path / "fresh2", False, progress=False)
    s = train_mod.train(p2, prepared, "l1_vgg", tmp_path / "cut", True, progress=False, restart_if_changed=True)
    assert not s.get("resumed_noop")
    assert _same_state(_weights(tmp_path / "fresh2"), _weights(tmp_path / "cut"))
    assert not _same_state(_weights(tmp_path / "full"), _weights(tmp_path / "cut"))
    made_with = json.loads((tmp_path / "cut" / "checkpoints" / "inputs.json").read_text())
    assert made_with["params_hash"] == p2.hash() and made_with["step"] == _ckpt(tmp_path / "cut")["step"]
    steps = [json.loads(x)["step"] for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # the old run's log was not kept


def test_existing_run_refused_and_resume_of_finished_is_noop(params_ci, prepared, tmp_path):
    p = params_ci()
    out = tmp_path / "out"
    train_mod.train(p, prepared, "l1_vgg", out, False, progress=False)
    before = {f: f.stat().st_mtime_ns for f in out.rglob("*") if f.is_file()}
    with pytest.raises(UserError, match="--resume"):
        train_mod.train(p, prepared, "l1_vgg", out, False, progress=False)
    s = train_mod.train(p, prepared, "l1_vgg", out, True, progress=False)
    assert s.get("resumed_noop") is True
    assert before == {f: f.stat().st_mtime_ns for f in out.rglob("*") if f.is_file()}
    with pytest.raises(UserError, match="variant"):
        train_mod.train(params_ci(train__max_steps=5), prepared, "l1_vgg_pieapp", out, True, progress=False)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(params_ci, prepared, tmp_path, monkeypatch):
    build = train_mod.build_components
    calls = {"n": 0}

    def poisoned(params, variant, device):
        comp = build(params, variant, device)
        real_loss = comp.gen_loss

        class Poison(torch.nn.Module):
            provenance = getattr(real_loss, "provenance", {})

            def __init__(self):
                super().__init__()
                self.inner = real_loss

            def forward(self, *a):
                total, terms = self.inner(*a)
                calls["n"] += 1
                if calls["n"] == 2:  # the second GAN step = global step 4
                    total = total * float("nan")
                return total, terms

        comp.gen_loss = Poison()
        return comp

    monkeypatch.setattr(trainer_mod, "build_components", poisoned)  # where the Trainer looks it up
    out = tmp_path / "out"
    p = params_ci(train__max_steps=4, train__checkpoint_every=2)
    with pytest.raises(train_mod.NonFiniteLossError, match="step 4.*step 2") as exc:
        train_mod.train(p, prepared, "l1_vgg", out, False, progress=False)
    assert exc.value.exit_code == 1
    assert _ckpt(out)["step"] == 2
    assert not (out / "model").exists()
    assert all(json.loads(x)["step"] <= 3 for x in (out / "metrics.jsonl").read_text().splitlines())


def test_cli_errors_exit_2(params_file, prepared, tmp_path, capsys):
    base = ["--params", str(params_file), "--profile", "ci", "train"]
    assert cli_main([*base, "--data", str(prepared), "--variant", "l1_vgg_lpips", "--out", str(tmp_path / "o")]) == 2
    assert "l1_vgg, l1_vgg_pieapp" in capsys.readouterr().err
    assert cli_main([*base, "--data", str(tmp_path / "nope"), "--variant", "l1_vgg", "--out", str(tmp_path / "o")]) == 2
    assert "nope" in capsys.readouterr().err
    with pytest.raises(InputError, match="manifest.json"):
        train_mod.train(train_mod.Params(), tmp_path, "l1_vgg", tmp_path / "o", False)
    assert not (tmp_path / "o").exists()


def test_cli_trains(params_file, prepared, tmp_path, capsys):
    out = tmp_path / "o"
    args = ["--params", str(params_file), "--profile", "ci", "--set", "train.max_steps=1", "--set", "data.hr_size=64", "train", "--data",
            str(prepared), "--variant", "l1_vgg", "--out", str(out), "--no-progress"]
    assert cli_main(args) == 0
    assert (out / "model" / "generator.safetensors").is_file()
    assert cli_main(args) == 2  # a second run into the same folder is refused
    assert cli_main([*args, "--resume"]) == 0


@pytest.mark.slow
def test_ddp_two_gloo_processes(params_file, prepared, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(Path(__file__).parent / "_ddp_runner.py"), str(params_file), str(prepared), str(out)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = json.loads((out / "train_summary.json").read_text())
    assert s["world_size"] == 2 and s["finished"]
    ck = _ckpt(out)
    assert ck["step"] == s["total_steps"]
    # each step consumed batch_size images on each of the two processes
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, s["total_steps"] + 1))
    assert _weights(out)


def test_init_from_skips_pretraining_and_bf16_on_cpu(params_ci, prepared, tmp_path):
    first = tmp_path / "first"
    train_mod.train(params_ci(train__max_steps=1, seed=1), prepared, "l1_vgg", first, False, progress=False)
    init = first / "model" / "generator.safetensors"
    p = params_ci(train__max_steps=2, train__init_from=str(init), train__amp="bf16")
    s = train_mod.train(p, prepared, "l1_vgg", tmp_path / "second", False, progress=False)
    assert s["pretrain_steps"] == 0 and s["steps"] == 2 and s["amp"] == "bfloat16"
    rows = [json.loads(x) for x in (tmp_path / "second" / "metrics.jsonl").read_text().splitlines()]
    assert {r["phase"] for r in rows} == {"gan"}
    w = _weights(tmp_path / "second")
    assert all(torch.isfinite(v).all() for v in w.values())
    # G (and its EMA) started from the loaded (seed 1) weights: closer to them than the same run from scratch (seed 0)
    p_scratch = params_ci(train__max_steps=2, train__pretrain_steps=0, train__amp="bf16")
    train_mod.train(p_scratch, prepared, "l1_vgg", tmp_path / "scratch", False, progress=False)
    w0, ws = load_file(str(init)), _weights(tmp_path / "scratch")

    def dist(a):
        return sum(float((a[k].float() - w0[k].float()).abs().sum()) for k in w0)

    assert 0 < dist(w) < dist(ws)


def test_batch_of_one_is_refused(params_ci, prepared, tmp_path):
    from facesr.errors import ParamsError

    with pytest.raises(ParamsError, match="train.batch_size"):
        train_mod.train(params_ci(train__batch_size=1), prepared, "l1_vgg", tmp_path / "o", False, progress=False)


def test_unreadable_checkpoint_is_an_input_error(params_ci, prepared, tmp_path):
    out = tmp_path / "o"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="last.pt"):
        train_mod.train(params_ci(), prepared, "l1_vgg", out, True, progress=False)
