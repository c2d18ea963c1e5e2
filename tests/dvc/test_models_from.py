"""`--models-from DIR` (evaluate, register, quality): the models of the params, as the DVC stages pass them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from facesr.cli.main import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def three_variants(tmp_path) -> Path:
    """params.yaml with a third variant, and a training folder per model under tmp/train."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["loss"]["variants"]["l1_gan"] = {"pixel": 0.01, "perceptual": 0.0, "gan": 0.005, "pieapp": 0.0}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    for m in ("psnr", "l1_vgg", "l1_vgg_pieapp", "l1_gan"):
        (tmp_path / "train" / m / "model").mkdir(parents=True)
    return params


def _capture(monkeypatch, module: str, attr: str) -> dict:
    import importlib

    seen: dict = {}

    def fake(params, *args, **kwargs):
        seen["models"] = next(a for a in args if isinstance(a, dict))
        raise SystemExit(0)

    monkeypatch.setattr(importlib.import_module(module), attr, fake)
    return seen


@pytest.mark.parametrize("verb, module, attr, sub", [
    (["evaluate", "--data", "D", "--out", "E"], "facesr.evaluate", "evaluate", "model"),
    (["quality", "--data", "D"], "facesr.quality", "quality_report", "model"),
    (["register", "--eval", "E"], "facesr.registry", "register", ""),
])
def test_every_model_of_the_params_in_order(three_variants, monkeypatch, verb, module, attr, sub):
    seen = _capture(monkeypatch, module, attr)
    train = three_variants.parent / "train"
    with pytest.raises(SystemExit):
        main(["--params", str(three_variants), *verb, "--models-from", str(train)])
    expected = {m: train / m / sub if sub else train / m for m in ("psnr", "l1_vgg", "l1_vgg_pieapp", "l1_gan")}
    assert seen["models"] == expected and list(seen["models"]) == list(expected)


def test_a_missing_model_is_exit_2_naming_it(three_variants, capsys):
    train = three_variants.parent / "train"
    (train / "l1_gan" / "model").rmdir()
    for verb in (["evaluate", "--data", "D", "--out", str(train.parent / "E")], ["register", "--eval", "E"],
                 ["quality", "--data", "D"]):
        assert main(["--params", str(three_variants), *verb, "--models-from", str(train)]) == 2
        err = capsys.readouterr().err
        assert "l1_gan" in err and str(train / "l1_gan" / "model") in err
    assert not (train.parent / "E").exists()


def test_models_from_with_model_and_the_errors(three_variants, monkeypatch, capsys):
    seen = _capture(monkeypatch, "facesr.evaluate", "evaluate")
    train = three_variants.parent / "train"
    with pytest.raises(SystemExit):
        main(["--params", str(three_variants), "evaluate", "--data", "D", "--out", "E", "--models-from", str(train),
              "--model", "mine=/x/mine"])
    assert list(seen["models"]) == ["psnr", "l1_vgg", "l1_vgg_pieapp", "l1_gan", "mine"]
    # a name given twice, and register without any model, are usage errors
    assert main(["--params", str(three_variants), "evaluate", "--data", "D", "--out", "E", "--models-from",
                 str(train), "--model", "psnr=/x/p"]) == 2
    assert "'psnr' is already one of --models-from" in capsys.readouterr().err
    assert main(["--params", str(three_variants), "register", "--eval", "E"]) == 2
    assert "--models-from DIR or --model NAME=DIR" in capsys.readouterr().err
