"""The CLI contract (DESIGN §9): global options, params validation before work, exit statuses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from facesr.cli.main import main

REPO = Path(__file__).resolve().parents[1]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_params_verb_shows_the_resolved_profile(capsys, params_file: Path) -> None:
    code, out, _ = run(["--params", str(params_file), "--profile", "ci", "--set", "train.max_steps=5", "params"], capsys)
    assert code == 0
    shown = yaml.safe_load(out)
    assert shown["profile"] == "ci"
    assert shown["train"]["max_steps"] == 5


def test_flat_and_hash(capsys, params_file: Path) -> None:
    code, out, _ = run(["--params", str(params_file), "--profile", "paper", "params", "--flat"], capsys)
    assert code == 0 and "model.generator.num_block=23" in out.splitlines()
    code, out, _ = run(["--params", str(params_file), "--profile", "paper", "params", "--hash"], capsys)
    assert code == 0 and len(out.strip()) == 64


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--set", "train.batch_size=-1"], "train.batch_size"),
        (["--set", "nonsense"], "KEY=VALUE"),
        (["--profile", "nope"], "unknown profile"),
        (["--set", "model.discriminator.type=unet"], "model.discriminator.type"),
    ],
)
def test_bad_params_exit_2_with_one_message(capsys, params_file: Path, args: list[str], fragment: str) -> None:
    code, out, err = run(["--params", str(params_file), *args, "params"], capsys)
    assert code == 2
    assert fragment in err
    assert "Traceback" not in err and out == ""


def test_missing_params_file_exit_2(capsys, tmp_path: Path) -> None:
    code, _, err = run(["--params", str(tmp_path / "none.yaml"), "params"], capsys)
    assert code == 2 and "none.yaml" in err and "not found" in err


def test_unknown_verb_is_usage_error(capsys) -> None:
    code, _, err = run(["no-such-verb"], capsys)
    assert code == 2 and "no-such-verb" in err


def test_console_script_runs_in_a_subprocess(params_file: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("facesr")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "facesr"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    ok = subprocess.run([*cmd, "--params", str(params_file), "--profile", "ci", "params", "--hash"],
                        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([*cmd, "--params", str(params_file), "--set", "seed=-3", "params"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2
    assert "seed" in bad.stderr and "Traceback" not in bad.stderr


def test_every_verb_module_imports_and_registers_its_verbs() -> None:
    """A verb module that fails to import is only warned about at run time; here it is a failure."""
    from facesr.cli.main import BROKEN_VERBS, cli

    assert BROKEN_VERBS == {}
    expected = {"params", "ingest", "prepare", "train", "evaluate", "register", "promote", "lineage", "upscale",
                "weights", "pipeline", "bench"}
    assert expected <= set(cli.commands)
