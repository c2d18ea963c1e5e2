"""The Trainer's own contract: ``step`` per phase, ``state_dict`` / ``load_state_dict`` continuing exactly, the
checkpoint round trip through ``facesr.checkpoint``, and the metrics log's truncation on resume."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from facesr import checkpoint
from facesr.errors import InputError
from facesr.train import EpochStream, MetricsLog, Trainer, make_dataset
from facesr.train.stream import Dist
from facesr.train.switches import torch_switches


def _batches(params, prepared, n, variant="l1_vgg"):
    stream = EpochStream(make_dataset(params, prepared, variant), params, Dist(), pin=False, variant=variant)
    it = stream.forever()
    return [next(it) for _ in range(n)]


def _g(t: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in t.g.state_dict().items()}


def test_step_runs_the_phase_and_state_dict_continues_exactly(params_ci, prepared):
    p = params_ci(train__pretrain_steps=1, train__lr_milestones=[2])
    cpu = torch.device("cpu")
    batches = _batches(p, prepared, 4)
    with torch_switches(deterministic=True):
        a = Trainer(p, "l1_vgg", cpu)
        rows = [a.step(b) for b in batches]
        assert [r["phase"] for r in rows] == ["pretrain", "gan", "gan", "gan"]
        assert rows[0]["loss_d"] is None and rows[0]["loss_g"] == rows[0]["loss_pixel"]
        assert all(r["loss_d"] is not None and {"loss_perceptual", "loss_gan"} <= r.keys() for r in rows[1:])
        assert rows[1]["lr"] == p.train.lr_g and rows[3]["lr"] == pytest.approx(p.train.lr_g * p.train.lr_gamma)

        b = Trainer(p, "l1_vgg", cpu)
        for batch in batches[:2]:
            b.step(batch)
        state = copy.deepcopy(b.state_dict())  # references to the live tensors, as nn.Module.state_dict
        assert state["step"] == 2 and state["pretrain_steps"] == 1
        for batch in batches[2:]:
            b.step(batch)
        c = Trainer(p, "l1_vgg", cpu)  # a fresh Trainer from the saved state = the one that went on
        c.load_state_dict(state)
        for batch in batches[2:]:
            c.step(batch)
    assert c.steps_done == a.steps_done == 4
    for t in (b, c):
        assert all(torch.equal(v, _g(a)[k]) for k, v in _g(t).items())
        assert all(torch.equal(v, a.ema.shadow[k]) for k, v in t.ema.shadow.items())


def test_checkpoint_write_load_restore_and_staleness(params_ci, prepared, tmp_path):
    p = params_ci(train__max_steps=3, train__pretrain_steps=1)
    cpu = torch.device("cpu")
    t = Trainer(p, "l1_vgg", cpu)
    for batch in _batches(p, prepared, 2):
        t.step(batch)
    inputs = checkpoint.Inputs("l1_vgg", p.hash(), "d" * 64, None)
    checkpoint.write(tmp_path, t.state_dict(), inputs, steps_per_epoch=5)
    ck = checkpoint.load(checkpoint.path_in(tmp_path), variant="l1_vgg")
    assert (ck.step, ck.pretrain_steps, ck.params_hash, ck.data_manifest_sha256) == (2, 1, p.hash(), "d" * 64)
    raw = torch.load(ck.path, map_location="cpu", weights_only=True)
    assert (raw["epoch"], raw["position"], raw["phase"], raw["steps_per_epoch"]) == (0, 2, "gan", 5)
    made_with = json.loads((tmp_path / "checkpoints" / "inputs.json").read_text())
    assert made_with == {"variant": "l1_vgg", "step": 2, "params_hash": p.hash(), "data_manifest_sha256": "d" * 64,
                         "init_sha256": None}

    fresh = Trainer(p, "l1_vgg", cpu)
    checkpoint.restore(ck, fresh.load_state_dict)
    assert fresh.steps_done == 2 and all(torch.equal(v, _g(t)[k]) for k, v in _g(fresh).items())
    other = Trainer(params_ci(model__generator__num_feat=4), "l1_vgg", cpu)
    with pytest.raises(InputError, match="'generator' does not fit"):
        checkpoint.restore(ck, other.load_state_dict)

    assert not checkpoint.is_stale(tmp_path, inputs)
    assert checkpoint.is_stale(tmp_path, checkpoint.Inputs("l1_vgg", p.hash(), "e" * 64, None))
    assert checkpoint.is_stale(tmp_path, checkpoint.Inputs("l1_vgg", "other", "d" * 64, None))
    checkpoint.discard(tmp_path)
    assert not any((tmp_path / "checkpoints" / name).exists() for name in ("last.pt", "inputs.json"))
    assert not checkpoint.is_stale(tmp_path, inputs)  # no checkpoint: nothing to be stale


def test_metrics_log_keeps_the_steps_up_to_the_checkpoint(tmp_path):
    with MetricsLog(tmp_path, 0) as log:
        for s in range(1, 6):
            log.append({"phase": "gan", "step": s, "epoch": 0, "loss_g": s / 10, "loss_pixel": 1.0})
    with MetricsLog(tmp_path, 3) as log:  # resumed from the checkpoint of step 3
        assert [r["step"] for r in log.rows] == [1, 2, 3]
        log.append({"phase": "gan", "step": 4, "epoch": 0, "loss_g": 0.9, "loss_pixel": 2.0})
        log.write_csv()
        assert log.final_losses() == {"loss_g": 0.9, "loss_pixel": 2.0}
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4] and lines[-1]["loss_g"] == 0.9
    csv = (tmp_path / "plots" / "train_log.csv").read_text().splitlines()
    assert csv[0] == "step,phase,epoch,loss_g,loss_d,lr,lr_d,imgs_per_s,loss_pixel" and len(csv) == 5
    quiet = tmp_path / "rank1"
    with MetricsLog(quiet, 0, enabled=False) as log:  # DDP ranks other than 0 write nothing
        log.append({"step": 1})
        log.write_csv()
    assert not quiet.exists()


def test_metrics_log_skips_lines_that_are_not_rows(tmp_path):
    (tmp_path / "metrics.jsonl").write_bytes(b'{"step": 1, "loss_g": 0.5}\n[1, 2]\n{"step": "x"}\nnot json\n\xff\xfe\n'
                                             b'{"step": 2, "loss_g": 0.4}\n{"step": 9}\n')
    with MetricsLog(tmp_path, 2) as log:
        assert [r["step"] for r in log.rows] == [1, 2]
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]
