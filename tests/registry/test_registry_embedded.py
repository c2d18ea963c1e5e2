"""register / promote / lineage / upscale against the embedded default store (SQLite in a temp folder)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_eval, scores
from PIL import Image

from facesr import registry
from facesr.cli.main import main
from facesr.config import load_params
from facesr.errors import FacesrError
from facesr.fsutil import tree_hash


def db(root):
    return f"sqlite:///{root}/mlflow.db"


def cli(repo_root, *args):
    return main(["--params", str(repo_root / "params.yaml"), "--profile", "ci", *args])


def _register(repo_root, ws, eval_dir):
    return cli(repo_root, "register", "--eval", str(eval_dir), "--model", f"l1_vgg={ws['l1_vgg']}",
               "--model", f"l1_vgg_pieapp={ws['l1_vgg_pieapp']}", "--data", str(ws["data"]))


@pytest.mark.slow
def test_register_promote_lineage_upscale_flow(workspace, repo_root, capsys):
    from mlflow import MlflowClient

    ws = workspace
    root = ws["root"]
    ev1 = make_eval(root / "eval1", {"bicubic": scores(0.5), "l1_vgg": scores(0.30, seed=1),
                                     "l1_vgg_pieapp": scores(0.25, seed=2)})
    assert _register(repo_root, ws, ev1) == 0
    assert any((root / d).is_dir() for d in ("mlruns", "mlartifacts"))  # local artifacts beside the db
    client = MlflowClient(tracking_uri=db(root), registry_uri=db(root))
    v1 = client.get_model_version_by_alias("facesr", "challenger")
    t = v1.tags
    assert t["facesr.variant"] == "l1_vgg_pieapp"  # lower lpips wins
    assert t["facesr.pipeline_run_id"] == "run-test-1"
    assert t["facesr.data_hash"] == tree_hash(ws["data"]) and t["facesr.data_hash_source"].startswith("tree_hash")
    assert t["facesr.params_hash"] == load_params(repo_root / "params.yaml", "ci").hash()
    assert t["facesr.weights"] == "untrained"
    assert abs(float(t["facesr.metric.lpips"]) - np.mean(scores(0.25, seed=2)["lpips"])) < 1e-9
    assert t["facesr.git_commit"] and t["facesr.git_dirty"] in ("true", "false", "unknown")

    # a retried register (KFP retry, DVC rerun) reuses the version and logs nothing new
    exp = client.get_experiment_by_name("facesr")
    n_runs = len(client.search_runs([exp.experiment_id]))
    capsys.readouterr()
    assert _register(repo_root, ws, ev1) == 0
    assert f"already registered (same weights, evaluation, data and params) facesr v{v1.version}" in \
        capsys.readouterr().out
    assert len(client.search_runs([exp.experiment_id])) == n_runs
    assert [str(v.version) for v in client.search_model_versions("name = 'facesr'")] == [str(v1.version)]

    # one parent run with nested children; per-step training metrics; artifacts
    runs = client.search_runs([exp.experiment_id], "tags.`facesr.pipeline_run_id` = 'run-test-1'")
    by_name = {r.info.run_name: r for r in runs}
    assert {"pipeline-run-test-1", "train/l1_vgg", "train/l1_vgg_pieapp", "evaluate"} <= set(by_name)
    parent_id = by_name["pipeline-run-test-1"].info.run_id
    for n in ("train/l1_vgg", "train/l1_vgg_pieapp", "evaluate"):
        assert by_name[n].data.tags["mlflow.parentRunId"] == parent_id
    hist = client.get_metric_history(by_name["train/l1_vgg"].info.run_id, "loss_g")
    assert [m.step for m in hist] == [1, 2, 3]
    assert by_name["pipeline-run-test-1"].data.params["train.max_steps"] == "3"
    train_arts = {a.path for a in client.list_artifacts(t["facesr.run_id"], "train")}
    assert {"train/model.json", "train/metrics.jsonl", "train/loss_curves.png"} <= train_arts
    eval_arts = {a.path for a in client.list_artifacts(by_name["evaluate"].info.run_id)}
    assert {"metrics.json", "per_image.csv", "table.md", "grids"} <= eval_arts

    # the pyfunc model: any batch/height/width, weights from safetensors
    import mlflow

    mlflow.set_tracking_uri(db(root))
    files = {p.name for p in Path(mlflow.artifacts.download_artifacts("models:/facesr@challenger",
                                                                    dst_path=str(root / "dl"))).rglob("*")}
    assert {"pyfunc.py", "generator.safetensors", "model.json", "MLmodel"} <= files  # the code, stored
    assert not any(f.endswith((".pkl", ".pt", ".pth")) for f in files)  # models from code: nothing pickled
    pyf = mlflow.pyfunc.load_model("models:/facesr@challenger")
    y = pyf.predict(np.random.default_rng(0).random((3, 3, 10, 12), dtype=np.float32))
    assert y.shape == (3, 3, 40, 48) and y.dtype == np.float32 and 0 <= y.min() and y.max() <= 1

    capsys.readouterr()
    # promote: no champion yet -> first champion
    assert cli(repo_root, "promote") == 0
    assert "first champion" in capsys.readouterr().out
    assert str(client.get_model_version_by_alias("facesr", "champion").version) == str(v1.version)

    # upscale from the registry
    src = root / "face.png"
    Image.fromarray((np.random.default_rng(1).random((20, 30, 3)) * 255).astype(np.uint8)).save(src)
    assert cli(repo_root, "upscale", str(src), "--model", "models:/facesr@champion", "--out", str(root / "up"),
               "--no-progress") == 0
    with Image.open(root / "up" / "face.png") as im:
        assert im.size == (120, 80)

    # a worse challenger is refused with the reason; champion stays
    ev2 = make_eval(root / "eval2", {"bicubic": scores(0.5), "l1_vgg": scores(0.45, seed=3), "l1_vgg_pieapp": scores(0.40, seed=4)})
    assert _register(repo_root, ws, ev2) == 0
    capsys.readouterr()
    assert cli(repo_root, "promote") == 0
    out = capsys.readouterr().out
    assert "REFUSED" in out and "did not improve" in out
    v2 = client.get_model_version_by_alias("facesr", "challenger")
    assert str(v2.version) != str(v1.version)
    assert str(client.get_model_version_by_alias("facesr", "champion").version) == str(v1.version)
    assert client.get_model_version("facesr", v2.version).tags["facesr.promotion.decision"] == "refused"

    # a clearly better one passes the policy (improvement, significance, guards)
    ev3 = make_eval(root / "eval3", {"bicubic": scores(0.5), "l1_vgg": scores(0.15, seed=5), "l1_vgg_pieapp": scores(0.10, seed=6)})
    assert _register(repo_root, ws, ev3) == 0
    assert cli(repo_root, "promote") == 0
    v3 = client.get_model_version_by_alias("facesr", "challenger")
    assert str(client.get_model_version_by_alias("facesr", "champion").version) == str(v3.version)
    tags3 = client.get_model_version("facesr", v3.version).tags
    assert tags3["facesr.promotion.decision"] == "promoted"
    assert json.loads(tags3["facesr.promotion.numbers"])["improvement_ci95"][0] > 0
    assert tags3["facesr.promotion.previous_champion"] == str(v1.version)

    # manual promotion back to v2, recorded
    capsys.readouterr()
    assert cli(repo_root, "promote", "--version", str(v2.version), "--force") == 2
    assert "--reason" in capsys.readouterr().err
    assert cli(repo_root, "promote", "--version", str(v2.version), "--force", "--reason", "rollback test") == 0
    tags2 = client.get_model_version("facesr", v2.version).tags
    assert tags2["facesr.promotion.forced"] == "true" and "rollback test" in tags2["facesr.promotion.reason"]
    assert str(client.get_model_version_by_alias("facesr", "champion").version) == str(v2.version)

    # lineage
    capsys.readouterr()
    assert cli(repo_root, "lineage", "models:/facesr@champion") == 0
    out = capsys.readouterr().out
    for needle in ("registry version", f"facesr v{v2.version}", "git commit", tree_hash(ws["data"]), "run-test-1",
                   tags2["facesr.params_hash"]):
        assert needle in out
    # unknown alias -> exit 2, clear message
    assert cli(repo_root, "lineage", "models:/facesr@nope") == 2
    assert "no alias 'nope'" in capsys.readouterr().err
    assert cli(repo_root, "upscale", str(src), "--model", "models:/facesr@nope", "--out", str(root / "x")) == 2


def test_promote_without_challenger_and_untrained_guard(workspace, repo_root, capsys):
    ws = workspace
    assert cli(repo_root, "promote") == 2
    assert "no version with alias 'challenger'" in capsys.readouterr().err
    ev = make_eval(ws["root"] / "eval", {"bicubic": scores(0.5), "l1_vgg": scores(0.3), "l1_vgg_pieapp": scores(0.2)})
    assert cli(repo_root, "register", "--eval", str(ev), "--model", f"l1_vgg={ws['l1_vgg']}") == 0
    capsys.readouterr()
    # a profile that forbids untrained weights never promotes it, even forced
    rc = main(["--params", str(repo_root / "params.yaml"), "--profile", "ci", "--set",
               "allow_untrained_weights=false", "promote", "--force", "--reason", "x"])
    assert rc == 2 and "untrained" in capsys.readouterr().err
    from mlflow import MlflowClient

    c = MlflowClient(db(ws["root"]), db(ws["root"]))
    assert not c.get_registered_model("facesr").aliases.get("champion")
    # register refuses a model name that evaluate did not score
    assert cli(repo_root, "register", "--eval", str(ev), "--model", f"esrgan={ws['l1_vgg']}") == 2
    assert "has no model 'esrgan'" in capsys.readouterr().err


def test_different_test_data_is_refused(workspace, repo_root, capsys, monkeypatch):
    ws = workspace
    ev = make_eval(ws["root"] / "eval", {"bicubic": scores(0.5), "l1_vgg": scores(0.3), "l1_vgg_pieapp": scores(0.2)})
    assert cli(repo_root, "register", "--eval", str(ev), "--model", f"l1_vgg={ws['l1_vgg']}",
               "--data", str(ws["data"])) == 0
    assert cli(repo_root, "promote", "--exit-code") == 0  # promoted (no champion yet)
    (ws["data"] / "test" / "hr" / "new.png").write_bytes(b"x")  # the prepared data changed
    ev2 = make_eval(ws["root"] / "eval2", {"bicubic": scores(0.5), "l1_vgg": scores(0.1), "l1_vgg_pieapp": scores(0.1)})
    assert cli(repo_root, "register", "--eval", str(ev2), "--model", f"l1_vgg={ws['l1_vgg']}",
               "--data", str(ws["data"])) == 0
    capsys.readouterr()
    assert cli(repo_root, "promote") == 0  # a refusal, recorded; the pipeline goes on
    out = capsys.readouterr().out
    assert "REFUSED: not comparable: the test data differ" in out
    from mlflow import MlflowClient

    c = MlflowClient(db(ws["root"]), db(ws["root"]))
    ch = c.get_model_version_by_alias("facesr", "challenger")
    assert str(c.get_model_version_by_alias("facesr", "champion").version) != str(ch.version)
    assert ch.tags["facesr.promotion.decision"] == "refused"
    capsys.readouterr()
    assert cli(repo_root, "promote", "--exit-code") == 3  # for scripts that gate on the decision
    assert capsys.readouterr().out.startswith("REFUSED: not comparable")


def test_promotion_lock_serialises(workspace):
    """Threads racing for the registry-side lock never overlap inside it; a held lock times out clearly."""
    from mlflow import MlflowClient

    ws = workspace
    c = MlflowClient(db(ws["root"]), db(ws["root"]))
    c.create_registered_model("facesr")
    inside: list[int] = []
    spans: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with registry.promotion_lock(MlflowClient(db(ws["root"]), db(ws["root"])), "facesr",
                                         timeout=60, poll=0.05):
                inside.append(i)
                t0 = time.monotonic()
                assert len(inside) == 1, "two holders at once"
                time.sleep(0.2)
                inside.remove(i)
                spans.append((t0, time.monotonic()))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    spans.sort()
    assert len(spans) == 3 and all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    with registry.promotion_lock(c, "facesr"):
        with pytest.raises(FacesrError, match="holds the lock"):
            with registry.promotion_lock(c, "facesr", timeout=0.3, poll=0.1):
                pass


def test_baseline_guard_refuses_a_model_worse_than_bicubic(workspace, repo_root, capsys):
    """Even the first champion: a challenger below bicubic (PSNR-Y beyond its guard) is refused, with the numbers;
    then one that is not worse is promoted."""
    from mlflow import MlflowClient

    ws = workspace
    c = MlflowClient(db(ws["root"]), db(ws["root"]))
    ev = make_eval(ws["root"] / "eval", {"bicubic": scores(0.5, psnr=26.0), "l1_vgg": scores(0.3, psnr=24.0)})
    assert cli(repo_root, "register", "--eval", str(ev), "--model", f"l1_vgg={ws['l1_vgg']}") == 0
    capsys.readouterr()
    assert cli(repo_root, "promote", "--exit-code") == 3
    out = capsys.readouterr().out
    assert "baseline guard" in out and "worse than bicubic on psnr_y" in out
    v = c.get_model_version_by_alias("facesr", "challenger")
    assert not c.get_registered_model("facesr").aliases.get("champion")
    tags = c.get_model_version("facesr", v.version).tags
    assert tags["facesr.promotion.decision"] == "refused"
    nums = json.loads(tags["facesr.promotion.numbers"])["baseline"]["psnr_y"]
    assert nums["bicubic"] == pytest.approx(np.mean(scores(0.5, psnr=26.0)["psnr_y"]))
    assert nums["worsening"] == pytest.approx(nums["bicubic"] - nums["challenger"]) and nums["worsening"] > 1.5
    # within the guard's tolerance of bicubic (0.3 dB < 0.5): promoted as the first champion
    ev2 = make_eval(ws["root"] / "eval2", {"bicubic": scores(0.5, psnr=26.0), "l1_vgg": scores(0.3, psnr=25.7)})
    assert cli(repo_root, "register", "--eval", str(ev2), "--model", f"l1_vgg={ws['l1_vgg_pieapp']}") == 0
    capsys.readouterr()
    assert cli(repo_root, "promote", "--exit-code") == 0
    assert "first champion" in capsys.readouterr().out
