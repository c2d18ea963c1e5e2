"""The global torch switches training sets are back as they were after train(), after an exception inside it, and
after any Speed's ``switches()`` block (the CUDA one included, which turns TF32 and cudnn.benchmark on)."""

from __future__ import annotations

import os

import pytest
import torch

from facesr import train as train_mod
from facesr.train import switches
from facesr.train import trainer as trainer_mod
from facesr.train.trainer import NonFiniteLossError, Speed


@pytest.fixture
def odd_switches():
    """Switches set away from torch's defaults (so a reset to defaults is caught too); put back afterwards."""
    before = switches.snapshot()
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":16:8"
    torch.set_float32_matmul_precision("medium")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.deterministic = False
    torch.use_deterministic_algorithms(False)
    odd = switches.snapshot()
    assert odd != before
    yield odd
    switches._restore(before)
    assert switches.snapshot() == before


def test_torch_switches_sets_and_restores_every_switch_also_on_an_exception(odd_switches):
    with pytest.raises(RuntimeError, match="boom"), switches.torch_switches(cudnn_benchmark=False, tf32=True,
                                                                             deterministic=True):
        now = switches.snapshot()
        assert now["cudnn.benchmark"] is False and now["cuda.matmul.allow_tf32"] is True
        assert now["cudnn.allow_tf32"] is True and now["float32_matmul_precision"] == "high"
        assert now["deterministic_algorithms"] is True and now["cudnn.deterministic"] is True
        assert now["env.CUBLAS_WORKSPACE_CONFIG"] == ":16:8"  # an environment's own setting is kept
        raise RuntimeError("boom")
    assert switches.snapshot() == odd_switches
    with switches.torch_switches():  # nothing given: nothing changes
        assert switches.snapshot() == odd_switches
    assert switches.snapshot() == odd_switches


def test_every_speed_restores_the_switches_the_cuda_one_included(params_ci, odd_switches):
    p = params_ci(train__deterministic=False)
    cuda = Speed.training(p, torch.device("cuda"))  # built without a GPU: only its switches are used here
    assert (cuda.cudnn_benchmark, cuda.tf32, cuda.fused_adam, cuda.amp) == (True, True, True, torch.bfloat16)
    with cuda.switches():
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert torch.backends.cudnn.benchmark
    assert switches.snapshot() == odd_switches  # TF32 does not stay on after a CUDA run
    det = Speed.training(params_ci(train__deterministic=True), torch.device("cuda"))
    assert (det.cudnn_benchmark, det.tf32, det.deterministic) == (False, None, True)
    for speed in (det, Speed.reference(), Speed.training(p, torch.device("cpu"))):
        with speed.switches():
            pass
        assert switches.snapshot() == odd_switches


def test_train_restores_every_switch_after_a_run_and_after_an_exception(params_ci, prepared, tmp_path, monkeypatch,
                                                                        odd_switches):
    seen = []
    build = trainer_mod.build_components

    def spy(params, variant, device):
        seen.append(switches.snapshot())
        return build(params, variant, device)

    monkeypatch.setattr(trainer_mod, "build_components", spy)
    train_mod.train(params_ci(train__max_steps=1), prepared, "l1_vgg", tmp_path / "ok", False, progress=False)
    assert seen[-1]["deterministic_algorithms"] is True and seen[-1]["cudnn.benchmark"] is False  # set while training
    assert switches.snapshot() == odd_switches

    bad = params_ci(train__max_steps=2, train__lr_g=1e30, train__lr_d=1e30, train__checkpoint_every=100)
    with pytest.raises(NonFiniteLossError):
        train_mod.train(bad, prepared, "l1_vgg", tmp_path / "nan", False, progress=False)
    assert len(seen) == 2 and seen[-1]["deterministic_algorithms"] is True
    assert switches.snapshot() == odd_switches
