"""The evaluate step end to end on the prepared ci sample, its outputs, and the helpers the registry uses."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio

from facesr.cli.main import main
from facesr.config import Params
from facesr.errors import InputError, UserError
from facesr.evaluate import evaluate, load_per_image, paired_bootstrap, paired_scores

MODELS = ("l1_vgg", "l1_vgg_pieapp")
pytestmark = pytest.mark.slow  # the module fixture runs a full evaluation (~20-30 s on 2 busy cores)


def _save_tiny_models(params: Params, root: Path) -> dict[str, Path]:
    from facesr.models import build_generator
    from facesr.models.io import save_generator

    out = {}
    random_net = params.model_copy(deep=True)
    random_net.model.generator.residual = "none"  # untrained ESRGAN forward: far from bicubic (the tests rely on it)
    for i, v in enumerate(MODELS):
        torch.manual_seed(i)
        g = build_generator(random_net)
        save_generator(g, root / v / "model", {"variant": v, "scale": params.data.scale, "untrained_weights": True})
        out[v] = root / v  # a train output folder: evaluate finds model/ inside
    return out


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory: pytest.TempPathFactory, ci_params: Params, prepared_ci: Path):
    root = tmp_path_factory.mktemp("eval")
    models = _save_tiny_models(ci_params, root / "models")
    wdir = root / "weights"
    wdir.mkdir()
    # NIQE uses the published pristine model bundled with facesr; a fake BRISQUE SVR: real code path, fake numbers
    g = torch.Generator().manual_seed(0)
    torch.save((torch.randn(30, generator=g, dtype=torch.float64), torch.rand(30, 36, generator=g, dtype=torch.float64)),
               wdir / "brisque_svm_weights.pt")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACESR_WEIGHTS_DIR", str(wdir))
        mp.setenv("FACESR_WEIGHTS_TRUST", "1")
        out = root / "out"
        result = evaluate(ci_params, prepared_ci, models, out)
    return {"out": out, "result": result, "models": models, "params": ci_params, "data": prepared_ci}


def test_outputs_exist_and_metrics_json_is_the_returned_dict(eval_run):
    out = eval_run["out"]
    for f in ("metrics.json", "per_image.csv", "table.md", "manifest.json"):
        assert (out / f).is_file(), f
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(eval_run["result"]))
    assert list(metrics) == ["bicubic", *MODELS]
    for model, entries in metrics.items():
        assert set(entries) == set(eval_run["params"].evaluate.metrics)
        for m, e in entries.items():
            assert set(e) == {"mean", "ci95", "n", "weights"}
            if e["mean"] is not None:
                lo, hi = e["ci95"]
                assert lo <= e["mean"] <= hi, (model, m)


def test_weights_status_is_reported_never_a_fake_number(eval_run):
    metrics = eval_run["result"]
    for model in metrics:
        assert metrics[model]["psnr_y"]["weights"] == "none"
        # ci profile: no AlexNet/PieAPP files -> untrained (allowed), marked as such
        assert metrics[model]["lpips"]["weights"] == "untrained"
        assert metrics[model]["pieapp"]["weights"] == "untrained"
        for m in ("ma", "pi"):
            assert metrics[model][m]["weights"] == "missing"
            assert metrics[model][m]["mean"] is None and metrics[model][m]["n"] == 0
        assert metrics[model]["niqe"]["weights"] == "real"
        assert metrics[model]["dmos"]["weights"] == "real"
    manifest = json.loads((eval_run["out"] / "manifest.json").read_text())
    assert "forest" in manifest["metrics"]["ma"]["reason"] and "forest" in manifest["metrics"]["pi"]["reason"]
    table = (eval_run["out"] / "table.md").read_text()
    assert "(untrained)" in table and "missing" in table
    # the fake BRISQUE file has no pinned digest: its footnote says it is not verified; NIQE's bundled model is pinned
    assert table.count("NOT verified") == 1
    brisque = next(ln for ln in table.splitlines() if "brisque_svm_weights.pt" in ln)
    assert "NOT verified" in brisque
    niqe_note = next(ln for ln in table.splitlines() if ln.startswith("- niqe: "))
    assert "NOT verified" not in niqe_note and "2a7c182a68c9" in niqe_note


def test_bicubic_psnr_agrees_with_an_independent_computation(eval_run):
    from facesr.data.dataset import load_test_pairs

    scale = eval_run["params"].data.scale
    vals = []
    for p in load_test_pairs(eval_run["data"]):
        h, w = p.lr.shape[:2]
        sr = np.asarray(Image.fromarray(p.lr).resize((w * scale, h * scale), Image.BICUBIC))
        y_sr = rgb2ycbcr(sr)[scale:-scale, scale:-scale, 0]
        y_hr = rgb2ycbcr(p.hr)[scale:-scale, scale:-scale, 0]
        vals.append(peak_signal_noise_ratio(y_hr, y_sr, data_range=255))
    got = eval_run["result"]["bicubic"]["psnr_y"]
    assert got["n"] == len(vals)
    assert got["mean"] == pytest.approx(float(np.mean(vals)), abs=1e-9)
    assert 20 < got["mean"] < 40  # bicubic x4 on faces: a sane PSNR
    # the untrained tiny generators are far worse than bicubic
    assert eval_run["result"]["l1_vgg"]["psnr_y"]["mean"] < got["mean"] - 5


def test_niqe_is_computed_on_the_full_images(eval_run):
    niqe = eval_run["result"]["bicubic"]["niqe"]
    # sample faces are 200x250: full_lr 50x62 -> SR 200x248 -> >= 192 px after the border crop
    assert niqe["n"] > 0 and math.isfinite(niqe["mean"])
    manifest = json.loads((eval_run["out"] / "manifest.json").read_text())
    assert manifest["niqe"]["images"]


def test_per_image_csv_and_load_per_image(eval_run):
    out = eval_run["out"]
    with (out / "per_image.csv").open() as f:
        rows = list(csv.DictReader(f))
    n = eval_run["result"]["bicubic"]["psnr_y"]["n"]
    assert len(rows) == 3 * n
    per = load_per_image(out)
    assert set(per) == {"bicubic", *MODELS}
    for model in per:
        for m in ("psnr_y", "ssim_y", "lpips"):
            assert np.mean(list(per[model][m].values())) == pytest.approx(eval_run["result"][model][m]["mean"])
        assert per[model]["ma"] == {}  # missing stays missing
    names, a, b = paired_scores(per["l1_vgg"]["psnr_y"], per["bicubic"]["psnr_y"])
    assert len(names) == n and all(y > x for x, y in zip(a, b))


def test_table_has_paper_layout_and_paired_differences(eval_run):
    table = (eval_run["out"] / "table.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| Model |"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["Model", "PSNR", "SSIM", "LPIPS*", "DMOS*", "PI*", "PieAPP*"]
    for model in ("bicubic", *MODELS):
        assert f"| {model}" in table
    assert "l1_vgg_pieapp − l1_vgg" in table
    diffs = json.loads((eval_run["out"] / "paired_differences.json").read_text())
    per = load_per_image(eval_run["out"])
    _, a, b = paired_scores(per["l1_vgg"]["psnr_y"], per["l1_vgg_pieapp"]["psnr_y"])
    assert diffs["psnr_y"]["mean_diff"] == pytest.approx(float(np.mean(np.subtract(b, a))))
    assert "PIL" in table and "BRISQUE" in table


def test_grids(eval_run):
    grids = sorted((eval_run["out"] / "grids").glob("*.png"))
    assert len(grids) == eval_run["params"].data.grid_faces
    hr = eval_run["params"].data.hr_size
    with Image.open(grids[0]) as im:
        w, h = im.size
    assert w >= 5 * hr and h > hr  # LR | bicubic | l1_vgg | l1_vgg_pieapp | HR, plus labels
    # the tiles are the images themselves: column 2 = bicubic of the first test face, last column = its HR
    from facesr.data.dataset import load_test_pairs
    from facesr.evaluate import bicubic_upscale

    first = load_test_pairs(eval_run["data"])[0]
    assert first.name in grids[0].name
    grid = np.asarray(Image.open(grids[0]).convert("RGB"))
    pad, head = 4, 18
    tile = lambda i: grid[head:head + hr, pad + i * (hr + pad):pad + i * (hr + pad) + hr]  # noqa: E731
    np.testing.assert_array_equal(tile(1), bicubic_upscale(first.lr, eval_run["params"].data.scale))
    np.testing.assert_array_equal(tile(4), first.hr)


def test_manifest_records_inputs_params_and_weights(eval_run):
    m = json.loads((eval_run["out"] / "manifest.json").read_text())
    assert m["format"] == "facesr.eval/1"
    assert m["inputs"]["prepared_manifest_sha256"]
    assert len(m["inputs"]["test_images"]) == eval_run["result"]["bicubic"]["psnr_y"]["n"]
    for v in MODELS:
        assert len(m["inputs"]["models"][v]["sha256"]) == 64
    assert m["params_hash"] == eval_run["params"].hash()
    assert m["metrics"]["niqe"]["provenance"]["sha256"]
    assert m["metrics"]["lpips"]["weights"] == "untrained"


def test_paired_bootstrap():
    rng = np.random.default_rng(0)
    a = rng.normal(size=50)
    shifted = paired_bootstrap(a, a + 1.0, n=200, seed=1)
    assert shifted["mean_diff"] == pytest.approx(1.0)
    assert shifted["ci95"] == pytest.approx([1.0, 1.0]) and shifted["significant"]
    noise = paired_bootstrap(a, a + rng.normal(scale=0.1, size=50), n=500, seed=1)
    assert noise["ci95"][0] < noise["mean_diff"] < noise["ci95"][1]
    assert noise["ci95"][1] - noise["ci95"][0] < 0.1  # ~ 4 * 0.1 / sqrt(50)
    b = a + 0.5
    b[3] = np.nan
    r = paired_bootstrap(a, b, n=100, seed=0)
    assert r["n"] == 49
    assert paired_bootstrap(a, b, n=100, seed=0) == r  # deterministic for a seed
    with pytest.raises(ValueError):
        paired_bootstrap([1, 2], [1, 2, 3])


def test_bad_inputs_are_user_errors_and_keep_earlier_output(eval_run, tmp_path: Path):
    params = eval_run["params"]
    out = tmp_path / "out"
    shutil.copytree(eval_run["out"], out)
    before = (out / "metrics.json").read_bytes()
    with pytest.raises(InputError, match="not a folder"):
        evaluate(params, tmp_path / "nope", {}, out)
    with pytest.raises(UserError, match="reserved"):
        evaluate(params, eval_run["data"], {"bicubic": eval_run["models"]["l1_vgg"]}, out)
    with pytest.raises(InputError, match="not found"):
        evaluate(params, eval_run["data"], {"x": tmp_path / "missing"}, out)
    bad = params.model_copy(deep=True)
    bad.evaluate.metrics = ["psnr_y", "fid"]
    with pytest.raises(UserError, match="fid"):
        evaluate(bad, eval_run["data"], {}, out)
    # a damaged test image in the prepared folder: one message naming the file
    damaged = tmp_path / "prepared"
    shutil.copytree(eval_run["data"], damaged)
    victim = sorted((damaged / "test" / "lr").glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:40])
    with pytest.raises(InputError, match=victim.name):
        evaluate(params, damaged, {}, out)
    assert (out / "metrics.json").read_bytes() == before


def test_cli_prints_table_and_grids(eval_run, tmp_path: Path, capsys, params_file: Path):
    out = tmp_path / "cli-out"
    rc = main(["--params", str(params_file), "--profile", "ci", "--set", "evaluate.metrics=[psnr_y,ssim_y]",
               "evaluate", "--data", str(eval_run["data"]), "--model", f"l1_vgg={eval_run['models']['l1_vgg']}",
               "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "| Model | PSNR | SSIM |" in captured.out
    assert str(out / "grids") in captured.out
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"bicubic", "l1_vgg"} and set(metrics["bicubic"]) == {"psnr_y", "ssim_y"}
    rc = main(["--params", str(params_file), "--profile", "ci", "evaluate", "--data", str(tmp_path / "nothing"),
               "--out", str(tmp_path / "o2")])
    assert rc == 2
    assert "not a folder" in capsys.readouterr().err


def test_load_per_image_refuses_other_files(tmp_path: Path):
    with pytest.raises(InputError, match="not found"):
        load_per_image(tmp_path)
    (tmp_path / "per_image.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(InputError, match="model,image"):
        load_per_image(tmp_path)


def test_cuda_without_a_gpu_is_a_user_error(eval_run, tmp_path: Path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    params = eval_run["params"].model_copy(deep=True)
    params.evaluate.device = "cuda"
    with pytest.raises(UserError, match="evaluate.device 'cuda': CUDA is not available"):
        evaluate(params, eval_run["data"], {}, tmp_path / "out")
    from facesr.quality import quality_report

    with pytest.raises(UserError, match="evaluate.device 'cuda': CUDA is not available"):
        quality_report(params, eval_run["data"], {})


def test_missing_weights_without_untrained_are_reported_missing(eval_run, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FACESR_WEIGHTS_DIR", str(tmp_path / "empty"))
    params = eval_run["params"].model_copy(deep=True)
    params.allow_untrained_weights = False
    params.evaluate.metrics = ["psnr_y", "lpips", "pieapp", "dmos"]
    res = evaluate(params, eval_run["data"], {}, tmp_path / "out")
    for m in ("lpips", "pieapp", "dmos"):
        assert res["bicubic"][m] == {"mean": None, "ci95": None, "n": 0, "weights": "missing"}
    assert res["bicubic"]["psnr_y"]["mean"] == pytest.approx(eval_run["result"]["bicubic"]["psnr_y"]["mean"])
    table = (tmp_path / "out" / "table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| bicubic"))
    assert row.count("missing") == 3
    with (tmp_path / "out" / "per_image.csv").open() as f:
        assert all(r["lpips"] == "" for r in csv.DictReader(f))


def test_safetensors_file_models_and_scale_mismatch(eval_run, tmp_path: Path):
    from facesr.models.io import load_generator, save_generator

    params = eval_run["params"].model_copy(deep=True)
    params.evaluate.metrics = ["psnr_y"]
    gen_file = eval_run["models"]["l1_vgg"] / "model" / "generator.safetensors"
    res = evaluate(params, eval_run["data"], {"l1_vgg": gen_file}, tmp_path / "a")
    assert res["l1_vgg"]["psnr_y"]["mean"] == pytest.approx(eval_run["result"]["l1_vgg"]["psnr_y"]["mean"])
    assert "| l1_vgg † |" in (tmp_path / "a" / "table.md").read_text()  # model.json beside the file was read
    from facesr.models import build_generator

    p2 = params.model_copy(deep=True)
    p2.data.scale = 2
    save_generator(build_generator(p2), tmp_path / "x2", {"variant": "l1_vgg", "scale": 2})
    assert load_generator(tmp_path / "x2")[1]["scale"] == 2
    with pytest.raises(InputError, match="x2"):
        evaluate(params, eval_run["data"], {"x2": tmp_path / "x2"}, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_untrained_models_are_marked_in_the_table(eval_run):
    table = (eval_run["out"] / "table.md").read_text()
    assert "| l1_vgg † |" in table and "| bicubic |" in table
    assert "† model trained with untrained" in table


def test_flat_model_output_gets_the_right_reason(tmp_path: Path, ci_params: Params, prepared_ci: Path):
    """A model whose output is constant has no NIQE although the images are large enough: the note says why."""
    from facesr.models import build_generator
    from facesr.models.io import save_generator

    flat = ci_params.model_copy(deep=True)
    flat.model.generator.residual = "none"  # ESRGAN's forward: conv_last alone makes the output
    g = build_generator(flat)
    with torch.no_grad():
        g.conv_last.weight.zero_()
        g.conv_last.bias.fill_(0.5)  # every output pixel mid-grey
    save_generator(g, tmp_path / "flat" / "model", {"variant": "l1_vgg", "scale": ci_params.data.scale})
    p = ci_params.model_copy(deep=True)
    p.evaluate.metrics = ["psnr_y", "niqe"]
    result = evaluate(p, prepared_ci, {"flat": tmp_path / "flat"}, tmp_path / "eval")
    assert result["bicubic"]["niqe"]["n"] > 0  # the same images are large enough for NIQE
    assert result["flat"]["niqe"]["n"] == 0 and result["flat"]["niqe"]["weights"] == "real"
    notes = json.loads((tmp_path / "eval" / "manifest.json").read_text())["notes"]
    assert "flat or degenerate" in notes["flat"]["niqe"] and "large enough" in notes["flat"]["niqe"]
    assert "bicubic" not in notes


def _psnr_only(eval_run, **evaluate_settings) -> Params:
    params = eval_run["params"].model_copy(deep=True)
    params.evaluate.metrics = ["psnr_y", "ssim_y"]
    for k, v in evaluate_settings.items():
        setattr(params.evaluate, k, v)
    return params


def test_paired_difference_is_the_pair_of_the_params(eval_run, tmp_path: Path):
    models = eval_run["models"]
    reverse = _psnr_only(eval_run, paired=("l1_vgg_pieapp", "l1_vgg"))
    evaluate(reverse, eval_run["data"], dict(models), tmp_path / "rev")
    diffs = json.loads((tmp_path / "rev" / "paired_differences.json").read_text())
    assert diffs["difference"] == "l1_vgg - l1_vgg_pieapp" and set(diffs) == {"difference", "psnr_y", "ssim_y"}
    per = load_per_image(tmp_path / "rev")
    _, a, b = paired_scores(per["l1_vgg_pieapp"]["psnr_y"], per["l1_vgg"]["psnr_y"])
    assert diffs["psnr_y"]["mean_diff"] == pytest.approx(float(np.mean(np.subtract(b, a))))
    assert "l1_vgg − l1_vgg_pieapp" in (tmp_path / "rev" / "table.md").read_text()
    # no pair in the params, or a model of the pair not evaluated: no paired table, no file
    for name, params, given in (("none", _psnr_only(eval_run, paired=None), dict(models)),
                                ("one", _psnr_only(eval_run), {"l1_vgg": models["l1_vgg"]})):
        evaluate(params, eval_run["data"], given, tmp_path / name)
        assert not (tmp_path / name / "paired_differences.json").exists()
        table = (tmp_path / name / "table.md").read_text()
        assert "Paired difference" not in table and "| l1_vgg" in table


def test_models_run_through_the_forward_pass_of_infer(eval_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from facesr import infer

    calls = []
    real = infer.forward

    def spy(model, batch, bf16=False):
        calls.append(tuple(batch.shape))
        return real(model, batch, bf16)

    monkeypatch.setattr(infer, "forward", spy)
    params = _psnr_only(eval_run)
    res = evaluate(params, eval_run["data"], {"l1_vgg": eval_run["models"]["l1_vgg"]}, tmp_path / "out")
    n = res["l1_vgg"]["psnr_y"]["n"]
    assert sum(c[0] for c in calls) >= n  # every test crop went through infer.forward (plus full images for NIQE)
    assert res["l1_vgg"]["psnr_y"]["mean"] == pytest.approx(eval_run["result"]["l1_vgg"]["psnr_y"]["mean"])



def test_quality_scores_what_evaluate_scores(eval_run, monkeypatch: pytest.MonkeyPatch):
    """quality's crops view: the same upscalers as evaluate (bicubic, infer's forward pass), the same PSNR-Y."""
    from facesr import infer
    from facesr.quality import quality_report

    calls = []
    real = infer.forward
    monkeypatch.setattr(infer, "forward", lambda m, b, bf16=False: calls.append(b.shape[0]) or real(m, b, bf16))
    params = eval_run["params"]
    report = quality_report(params, eval_run["data"], {"l1_vgg": eval_run["models"]["l1_vgg"]})
    crops = report.figures["crops"]
    assert list(crops) == ["bicubic", "l1_vgg"]
    for model in crops:
        assert crops[model]["psnr_y"] == pytest.approx(eval_run["result"][model]["psnr_y"]["mean"])
    assert sum(calls) == report.n_images["crops"] + report.n_images["faces"]
