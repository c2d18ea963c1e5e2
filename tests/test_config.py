"""Typed params: profiles, overrides and the errors a user sees."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from facesr.config import Params, deep_merge, flatten, load_params, load_raw, resolve
from facesr.errors import ParamsError


def test_paper_profile_has_the_papers_settings(params_file: Path) -> None:
    p = load_params(params_file, profile="paper")
    assert p.profile == "paper"
    assert (p.data.hr_size, p.data.scale, p.data.lr_size) == (128, 4, 32)
    assert p.data.test_fraction == pytest.approx(0.3)
    assert (p.data.hflip, p.data.rot90) == (0.5, 0.5)
    assert (p.train.lr_g, p.train.batch_size, p.train.epochs) == (1e-4, 8, 100)
    assert tuple(p.train.betas) == (0.9, 0.99)
    assert (p.model.generator.num_block, p.model.generator.num_feat, p.model.generator.num_grow_ch) == (23, 64, 32)
    assert p.loss.variants["l1_vgg"].pixel == pytest.approx(1e-2)
    assert p.loss.variants["l1_vgg"].gan == pytest.approx(5e-3)
    assert p.loss.variants["l1_vgg"].pieapp == 0.0
    assert p.loss.variants["l1_vgg_pieapp"].pieapp > 0.0
    assert p.train.max_steps is None
    assert p.allow_untrained_weights is False


def test_every_profile_in_the_file_validates(params_file: Path) -> None:
    raw = load_raw(params_file)
    for name in ["paper", *raw["profiles"]]:
        p = resolve(raw, profile=name)
        assert p.profile == name


def test_profile_overrides_only_what_it_names(params_file: Path) -> None:
    paper = load_params(params_file, profile="paper")
    ci = load_params(params_file, profile="ci")
    assert ci.model.generator.num_block < paper.model.generator.num_block
    assert ci.train.max_steps is not None
    assert ci.allow_untrained_weights is True
    # untouched keys keep the base value
    assert ci.data.hr_size == paper.data.hr_size
    assert ci.loss.variants == paper.loss.variants


def test_default_profile_comes_from_the_file(tmp_path: Path, params_file: Path) -> None:
    raw = load_raw(params_file)
    raw["profile"] = "ci"
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(raw))
    assert load_params(f).profile == "ci"
    assert load_params(f, profile="paper").profile == "paper"


def test_set_overrides_are_yaml_typed(params_file: Path) -> None:
    p = load_params(params_file, profile="ci", overrides=["train.max_steps=7", "train.lr_g=3e-4",
                                                         "train.betas=[0.5, 0.9]", "data.max_images=null"])
    assert p.train.max_steps == 7
    assert p.train.lr_g == pytest.approx(3e-4)
    assert tuple(p.train.betas) == (0.5, 0.9)
    assert p.data.max_images is None


def test_set_profile_selects_the_profile(params_file: Path) -> None:
    assert load_params(params_file, overrides=["profile=ci"]).train.max_steps == 3


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("train.batch_size=0", "train.batch_size"),
        ("train.batch_size=many", "train.batch_size"),
        ("data.scale=3", "data.scale"),
        ("data.hflip=1.5", "data.hflip"),
        ("model.discriminator.type=unet", "model.discriminator.type"),
        ("train.bogus=1", "allowed here"),
        ("loss.variants.psnr={pixel: 1}", "variant name 'psnr'"),
        ("loss.variants.L2={pixel: 1}", "variant name 'L2'"),
        ("evaluate.paired=[l1_vgg, nope]", "evaluate.paired"),
        ("evaluate.paired=[l1_vgg, l1_vgg]", "evaluate.paired"),
        ("data.hr_size=130", "divisible"),
    ],
)
def test_bad_values_name_the_key(params_file: Path, override: str, fragment: str) -> None:
    with pytest.raises(ParamsError) as exc:
        load_params(params_file, profile="ci", overrides=[override])
    assert fragment in str(exc.value)


def test_unknown_key_lists_the_allowed_ones(params_file: Path) -> None:
    with pytest.raises(ParamsError) as exc:
        load_params(params_file, overrides=["train.bacth_size=4"])
    msg = str(exc.value)
    assert "train.bacth_size" in msg and "batch_size" in msg


def test_malformed_override_and_unknown_profile(params_file: Path) -> None:
    with pytest.raises(ParamsError, match="KEY=VALUE"):
        load_params(params_file, overrides=["train.max_steps"])
    with pytest.raises(ParamsError, match="unknown profile 'nope'"):
        load_params(params_file, profile="nope")


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- 1\n- 2\n")
    with pytest.raises(ParamsError, match="mapping"):
        load_params(notmap)


def test_hash_is_stable_and_sensitive(params_file: Path) -> None:
    a = load_params(params_file, profile="ci")
    b = load_params(params_file, profile="ci")
    c = load_params(params_file, profile="ci", overrides=["seed=1"])
    assert a.hash() == b.hash()
    assert a.hash() != c.hash()
    assert len(a.hash()) == 64


def test_flat_and_merge_helpers() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": []}) == {"a.b": 1, "a.c.d": 2, "e": []}
    base = {"a": {"b": 1, "c": 2}, "x": [1]}
    merged = deep_merge(base, {"a": {"c": 3}, "x": [2]})
    assert merged == {"a": {"b": 1, "c": 3}, "x": [2]}
    assert base == {"a": {"b": 1, "c": 2}, "x": [1]}  # not mutated
    flat = Params().flat()
    assert flat["train.lr_g"] == pytest.approx(1e-4)
    assert "loss.variants.l1_vgg_pieapp.pieapp" in flat


# --- hostile params files (the issue "survive hostile input", items 3 and 9) -----------------------------------------


def _bomb_yaml(levels: int, key: str) -> str:
    """A YAML alias bomb: level i is a list of nine aliases to level i-1; the last one is the value of ``key``."""
    lines = ["x0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    section, name = key.split(".")
    return "\n".join(lines) + f"\n{section}:\n  {name}: *a{levels - 1}\n"


@pytest.mark.parametrize("key", ["train.betas", "train.lr_milestones", "evaluate.metrics"])
def test_a_yaml_alias_bomb_is_refused_at_once_by_the_cli(tmp_path: Path, key: str) -> None:
    import subprocess
    import sys
    import time

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_bomb_yaml(9, key))  # 9^9 = 387 million values once expanded
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "facesr", "--params", str(bomb), "params"], capture_output=True,
                       text=True, timeout=60)
    assert time.monotonic() - t0 < 30
    assert r.returncode == 2, r.stderr
    assert str(bomb) in r.stderr and "expands to more than" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr) < 1000


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "loop.yaml"
    f.write_text("train:\n  lr_milestones: &a [1, *a]\n")
    with pytest.raises(ParamsError, match="recursive"):
        load_raw(f)


def test_anchors_and_merge_keys_of_normal_size_still_work(tmp_path: Path, params_file: Path) -> None:
    raw = yaml.safe_load(params_file.read_text())
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(raw) + "x_shared: &b [0.5, 0.9]\n")
    text = f.read_text().replace("x_shared: &b [0.5, 0.9]\n", "")
    f.write_text("x_shared: &b [0.5, 0.9]\n" + text.replace("betas:\n  - 0.9\n  - 0.99", "betas: *b"))
    raw2 = load_raw(f)
    raw2.pop("x_shared")
    assert resolve(raw2, profile="ci").train.betas == (0.5, 0.9)


def test_an_expanded_value_in_an_error_message_is_truncated(params_file: Path) -> None:
    # a value that is huge once printed (531441 numbers) but cheap to hold (shared lists): the message stays short
    v: list = [1] * 9
    for _ in range(5):
        v = [v] * 9
    raw = load_raw(params_file)
    for key in ("betas", "lr_milestones"):
        with pytest.raises(ParamsError) as exc:
            resolve({**raw, "train": {**raw["train"], key: v}}, profile="ci")
        assert f"train.{key}" in str(exc.value) and len(str(exc.value)) < 3000


def test_oversized_non_utf8_and_folder_params_are_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("seed: 0\n" + "# padding\n" * 200_000)
    with pytest.raises(ParamsError, match=r"big.yaml: larger than"):
        load_raw(big)
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("data:\n  source: dir:caf\xe9\n".encode("latin-1"))
    with pytest.raises(ParamsError, match=r"latin1.yaml: not UTF-8"):
        load_raw(latin)
    monkeypatch.setenv("FACESR_PARAMS", str(tmp_path))
    with pytest.raises(ParamsError, match=r"is a folder.*FACESR_PARAMS"):
        load_params()


def test_non_utf8_and_folder_params_exit_2_from_the_cli(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("seed: 0 # caf\xe9\n".encode("latin-1"))
    r = subprocess.run([sys.executable, "-m", "facesr", "--params", str(latin), "params"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "latin1.yaml: not UTF-8" in r.stderr and "Traceback" not in r.stderr
    env = {**os.environ, "FACESR_PARAMS": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "facesr", "params"], capture_output=True, text=True, timeout=60,
                       env=env, cwd=tmp_path)
    assert r.returncode == 2 and f"{tmp_path}: is a folder" in r.stderr and "Error" not in r.stderr


@pytest.mark.parametrize("override", ["train.batch_size=true", "seed=false", "train.lr_g=true",
                                      "train.betas=[true, 0.9]", "train.max_steps=2.5"])
def test_bools_are_not_numbers(params_file: Path, override: str) -> None:
    with pytest.raises(ParamsError, match=override.split("=")[0].replace(".", r"\.")):
        load_params(params_file, profile="ci", overrides=[override])


def test_exponent_floats_without_a_dot_are_numbers(params_file: Path) -> None:
    p = load_params(params_file, profile="ci", overrides=["train.lr_g=1e-3", "train.lr_d=2E-4"])
    assert (p.train.lr_g, p.train.lr_d) == (1e-3, 2e-4)


def test_generator_size_is_bounded(params_file: Path) -> None:
    for override in ("model.generator.num_block=20000", "model.generator.num_feat=-1", "model.generator.num_feat=512"):
        with pytest.raises(ParamsError, match=override.split("=")[0].replace(".", r"\.")):
            load_params(params_file, profile="ci", overrides=[override])


def test_variants_are_the_keys_of_loss_variants(params_file: Path) -> None:
    p = load_params(params_file, overrides=["loss.variants.l1_only={pixel: 1.0, perceptual: 0.0, gan: 0.0}",
                                            "evaluate.paired=[psnr, l1_only]"])
    assert p.variants[-1] == "l1_only" and p.models == ["psnr", *p.variants]
    assert p.check_variant("l1_only") == "l1_only"
    with pytest.raises(ParamsError, match="not a key of loss.variants; defined: .*l1_only"):
        p.check_variant("nope")
    assert load_params(params_file, overrides=["evaluate.paired=null"]).evaluate.paired is None


def test_params_resolve_writes_the_merged_params_dvc_tracks(params_file: Path, tmp_path: Path, capsys) -> None:
    """`facesr params resolve --out F` (the DVC stage `params`): F holds exactly config.py's merge of the profile,
    and reads back as the same params."""
    from facesr.cli.main import main

    out = tmp_path / "outputs" / "params.yaml"
    assert main(["--params", str(params_file), "--profile", "ci", "params", "resolve", "--out", str(out)]) == 0
    written = yaml.safe_load(out.read_text())
    expected = load_params(params_file, profile="ci")
    assert written == expected.model_dump(mode="json")
    assert written["profile"] == "ci" and written["train"]["max_steps"] == expected.train.max_steps
    assert Params.model_validate(written).hash() == expected.hash()
    assert "profile ci" in capsys.readouterr().out
    # `facesr params` without a sub-command still prints them
    assert main(["--params", str(params_file), "--profile", "ci", "params"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == written


def test_params_resolve_refuses_variants_the_train_stages_would_not_have(params_file: Path, tmp_path: Path,
                                                                          capsys) -> None:
    """DVC's train stages are the top-level keys of loss.variants: a profile (or --set) adding one is exit 2."""
    from facesr.cli.main import main

    raw = load_raw(params_file)
    raw["profiles"]["ci"]["loss"] = {"variants": {"l1_gan": {"gan": 0.005}}}
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(raw))
    out = tmp_path / "resolved.yaml"
    assert main(["--params", str(bad), "--profile", "ci", "params", "resolve", "--out", str(out)]) == 2
    assert "l1_gan" in capsys.readouterr().err and not out.exists()
    assert main(["--params", str(params_file), "--set", "loss.variants.x.gan=0.1", "params", "resolve", "--out",
                 str(out)]) == 2
    assert not out.exists()
    # a profile may change a variant's weights
    raw["profiles"]["ci"]["loss"] = {"variants": {"l1_vgg": {"gan": 0.01}}}
    bad.write_text(yaml.safe_dump(raw))
    assert main(["--params", str(bad), "--profile", "ci", "params", "resolve", "--out", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["loss"]["variants"]["l1_vgg"]["gan"] == 0.01


def test_the_default_pair_adapts_an_explicit_one_is_checked(params_file: Path) -> None:
    one = {"variants": {"mine": {"pixel": 1.0}}}
    assert resolve({"loss": one}, profile="paper").evaluate.paired is None  # default pair not defined: no table
    p = resolve({"loss": one, "evaluate": {"paired": ["psnr", "mine"]}}, profile="paper")
    assert p.evaluate.paired == ("psnr", "mine")
    with pytest.raises(ParamsError, match="evaluate.paired"):
        resolve({"loss": one, "evaluate": {"paired": ["l1_vgg", "l1_vgg_pieapp"]}}, profile="paper")
    assert resolve({}, profile="paper").evaluate.paired == ("l1_vgg", "l1_vgg_pieapp")


def test_params_resolve_never_overwrites_a_file_it_did_not_write(params_file: Path, tmp_path: Path, capsys) -> None:
    """--out may be absent or an earlier resolved file; the params file itself, a user's file, or a link to the params
    file are exit 2 and stay as they were; a link elsewhere is replaced, its target untouched."""
    from facesr.cli.main import main

    def run(out: Path) -> int:
        return main(["--params", str(params_file), "params", "resolve", "--out", str(out)])

    original = params_file.read_bytes()
    out = tmp_path / "resolved.yaml"
    assert run(out) == 0 and run(out) == 0  # an earlier resolved file is rewritten
    assert yaml.safe_load(out.read_text())["profile"] == load_params(params_file).profile
    mine = tmp_path / "mine.yaml"
    mine.write_text("my notes\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(params_file)
    capsys.readouterr()
    for target, says in ((params_file, "the params file being read"), (link, "the params file being read"),
                         (mine, "not a file `facesr params resolve` wrote")):
        assert run(target) == 2
        assert says in capsys.readouterr().err
    assert params_file.read_bytes() == original and mine.read_text() == "my notes\n" and link.is_symlink()
    other = tmp_path / "other.yaml"
    other.symlink_to(mine)
    assert run(other) == 0 and not other.is_symlink() and mine.read_text() == "my notes\n"
