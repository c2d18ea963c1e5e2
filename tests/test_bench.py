"""`facesr bench` on the tiniest setting (the printed table has its fields and sane values) and the target check."""

from __future__ import annotations

import json

import torch

from facesr.bench import TABLE_FIELDS, target_lines
from facesr.cli.main import main as cli_main
from facesr.config import load_params
from facesr.train import Speed
from facesr.train.switches import snapshot


def test_bench_smoke(params_file, tmp_path, capsys):
    out = tmp_path / "bench.json"
    switches_before = snapshot()
    rc = cli_main(["--params", str(params_file), "--profile", "ci", "--set", "data.hr_size=32", "--set",
                   "train.batch_size=2", "bench", "--variant", "l1_vgg", "--steps", "1", "--warmup", "1",
                   "--repeat", "3", "--infer-size", "8", "--upscale-size", "40", "--upscale-tile", "16",
                   "--json", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    lines = [ln for ln in printed.splitlines() if ln.strip()]
    header = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["variant", "config"])
    assert lines[header].split() == list(TABLE_FIELDS)
    rows = [ln.split() for ln in lines[header + 1 :] if not ln.startswith("target ")]
    assert [r[:2] for r in rows] == [["l1_vgg", "reference"], ["l1_vgg", "optimised"]]
    assert rows[0][-1] == "1.00x" and rows[1][-1].endswith("x")
    targets = [ln for ln in lines if ln.startswith("target ")]
    assert len(targets) == 1 and targets[0].startswith("target l1_vgg: speedup ") and "on cpu" in targets[0]
    assert "of the forward on the same tiles" in targets[0] and "vs target >= 75%" in targets[0]
    result = json.loads(out.read_text())
    assert result["repeat"] == 3
    assert result["upscale"] == {"lr_width": 40, "lr_height": 30, "tile": 16, "overlap": 32, "batch_size": 4}
    ref, opt = result["rows"]
    # `facesr upscale` end to end on the optimised model only: 40x30 -> 160x120 = 0.0192 MP, 3x2 tiles
    assert ref.get("upscale_mpix_per_s") is None and rows[0][TABLE_FIELDS.index("upscale_mpix_per_s")] == "-"
    assert opt["upscale_output_mpix"] == 160 * 120 / 1e6
    assert opt["upscale_mpix_per_s"] > 0 and opt["tiles_mpix_per_s"] > 0
    assert abs(opt["upscale_ratio"] - opt["upscale_mpix_per_s"] / opt["tiles_mpix_per_s"]) < 1e-9
    assert rows[1][TABLE_FIELDS.index("upscale_ratio")] == f"{opt['upscale_ratio']:.1%}"
    for r in result["rows"]:
        assert r["imgs_per_s"] > 0 and r["infer_mpix_per_s"] > 0 and r["gflop_per_step"] > 0
        parts = r["data_ms"] + r["forward_ms"] + r["backward_opt_ms"]
        assert abs(parts - r["step_ms"]) < 1e-6 * max(1.0, r["step_ms"])
        rounds = sorted(r["rounds_step_ms"])
        assert len(rounds) == 3 and abs(r["step_ms"] - rounds[1]) < 1e-9  # the median round is reported
        assert abs(r["data_pct"] - 100 * r["data_ms"] / r["step_ms"]) < 1e-6
        assert abs(r["spread_pct"] - 100 * (rounds[-1] - rounds[0]) / rounds[1]) < 1e-6
    assert result["rows"][0]["setting"]["channels_last"] is False
    # the two configurations are the Trainer's: the reference and what `facesr train` runs with these params
    params = load_params(params_file, profile="ci", overrides=["data.hr_size=32", "train.batch_size=2"])
    assert ref["setting"] == Speed.reference().describe()
    assert opt["setting"] == Speed.training(params, torch.device("cpu")).describe()
    assert snapshot() == switches_before  # every global torch switch is back
    assert cli_main(["--params", str(params_file), "--profile", "ci", "bench", "--variant", "nope"]) == 2
    assert cli_main(["--params", str(params_file), "--profile", "ci", "bench", "--repeat", "0"]) == 2
    assert cli_main(["--params", str(params_file), "--profile", "ci", "bench", "--upscale-size", "-1"]) == 2


def test_bench_reads_the_training_data_stream_of_a_prepared_folder(params_file, prepared_ci, tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = cli_main(["--params", str(params_file), "--profile", "ci", "--set", "data.hr_size=32", "--set",
                   "train.batch_size=2", "bench", "--variant", "l1_vgg", "--steps", "2", "--warmup", "1",
                   "--repeat", "1", "--infer-size", "8", "--upscale-size", "0", "--no-reference", "--data",
                   str(prepared_ci), "--json", str(out)])
    assert rc == 0, capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["data"] == str(prepared_ci) and result["upscale"] is None
    (row,) = result["rows"]
    assert (row["variant"], row["config"], row["speedup"]) == ("l1_vgg", "optimised", None)
    assert row["imgs_per_s"] > 0 and row["data_ms"] > 0 and row.get("upscale_mpix_per_s") is None
    assert cli_main(["--params", str(params_file), "--profile", "ci", "bench", "--data", str(tmp_path / "none")]) == 2


def _row(variant: str, config: str, speedup: float | None, data_pct: float) -> dict:
    return {"variant": variant, "config": config, "speedup": speedup, "data_pct": data_pct, "spread_pct": 12.0}


def test_target_lines_judge_each_optimised_row():
    cpu = {"device": "cpu", "rows": [_row("a", "reference", 1.0, 1.0), _row("a", "optimised", 0.9, 1.0),
                                     _row("b", "reference", 1.0, 1.0), _row("b", "optimised", 1.05, 6.0)]}
    a, b = target_lines(cpu)
    assert a.startswith("target a: ") and "0.90x vs target >= 1.0x on cpu: NOT met" in a and "< 5%: met" in a
    assert "(spread of the rounds: reference 12%, optimised 12%)" in a
    assert "1.05x vs target >= 1.0x on cpu: met" in b and "6.0% of the step vs target < 5%: NOT met" in b
    gpu = {"device": "cuda (NVIDIA H200)", "rows": [_row("a", "optimised", 1.9, 2.0), _row("b", "optimised", 2.4, 2.0)]}
    a, b = target_lines(gpu)
    assert ">= 2.0x on cuda: NOT met" in a and ">= 2.0x on cuda: met" in b
    none = {"device": "cpu", "rows": [_row("a", "optimised", None, 2.0)]}
    assert "unchecked" in target_lines(none)[0] and "upscale" not in target_lines(none)[0]
    up = {"device": "cpu", "rows": [{**_row("a", "optimised", 1.0, 1.0), "upscale_ratio": 0.74,
                                     "upscale_mpix_per_s": 0.74, "tiles_mpix_per_s": 1.0},
                                    {**_row("b", "optimised", 1.0, 1.0), "upscale_ratio": 0.9,
                                     "upscale_mpix_per_s": 0.9, "tiles_mpix_per_s": 1.0}]}
    a, b = target_lines(up)
    assert "upscale 0.74 MP/s end to end = 74% of the forward on the same tiles (1 MP/s) vs target >= 75%: NOT met" in a
    assert "= 90% of the forward" in b and b.endswith(": met")
