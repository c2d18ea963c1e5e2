"""Smoke test of `facesr bench` on the tiniest setting: the printed table has its fields and sane values."""

from __future__ import annotations

import json

from facesr.bench import TABLE_FIELDS
from facesr.cli.main import main as cli_main


def test_bench_smoke(params_file, tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = cli_main(["--params", str(params_file), "--profile", "ci", "--set", "data.hr_size=32", "--set",
                   "train.batch_size=2", "bench", "--variant", "l1_vgg", "--steps", "1", "--warmup", "1",
                   "--infer-size", "8", "--json", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    lines = [ln for ln in printed.splitlines() if ln.strip()]
    header = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["variant", "config"])
    assert lines[header].split() == list(TABLE_FIELDS)
    rows = [ln.split() for ln in lines[header + 1 :]]
    assert [r[:2] for r in rows] == [["l1_vgg", "reference"], ["l1_vgg", "optimised"]]
    assert rows[0][-1] == "1.00x" and rows[1][-1].endswith("x")
    result = json.loads(out.read_text())
    for r in result["rows"]:
        assert r["imgs_per_s"] > 0 and r["infer_mpix_per_s"] > 0 and r["gflop_per_step"] > 0
        parts = r["data_ms"] + r["forward_ms"] + r["backward_opt_ms"]
        assert abs(parts - r["step_ms"]) < 1e-6 * max(1.0, r["step_ms"])
    assert result["rows"][0]["setting"]["channels_last"] is False
    assert cli_main(["--params", str(params_file), "--profile", "ci", "bench", "--variant", "nope"]) == 2
