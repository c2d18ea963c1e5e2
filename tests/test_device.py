"""facesr.device: the one device choice (every verb uses it)."""

import pytest
import torch

from facesr.device import resolve_device
from facesr.errors import UserError


def test_auto_and_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == want


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cuda:-1", "", "mps"])
def test_unknown_names_the_setting(bad):
    with pytest.raises(UserError, match=r"train\.device .*allowed: auto, cpu, cuda, cuda:N"):
        resolve_device(bad, "train.device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
@pytest.mark.parametrize("want", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_a_user_error(want):
    with pytest.raises(UserError, match="evaluate.device .*CUDA is not available"):
        resolve_device(want, "evaluate.device")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_local_rank_picks_the_gpu(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert resolve_device("cuda") == torch.device("cuda", 0)
