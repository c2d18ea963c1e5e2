"""The compiled facesr-training pipeline: GPU placement, retries, caching, DAG, and the committed YAML in sync."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from facesr.config import load_params
from facesr.kfp.pipeline import compile_pipeline

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "params.yaml"
COMMITTED = REPO / "pipelines" / "facesr-training.yaml"


def _compile(tmp_path: Path, profile: str = "paper", overrides=()) -> tuple[dict, dict]:
    out = compile_pipeline(load_params(PARAMS, profile, overrides), tmp_path / "p.yaml")
    docs = list(yaml.safe_load_all(out.read_text()))
    assert len(docs) == 2, "pipeline spec + kubernetes platform spec"
    return docs[0], docs[1]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return _compile(tmp_path_factory.mktemp("kfp"))


def _loop_tasks(spec: dict) -> dict:
    return spec["components"]["comp-for-loop-1"]["dag"]["tasks"]


def test_committed_yaml_is_in_sync(tmp_path):
    fresh = compile_pipeline(load_params(PARAMS, "paper"), tmp_path / "facesr-training.yaml").read_text()
    assert COMMITTED.read_text() == fresh, (
        "pipelines/facesr-training.yaml is stale: run `.venv/bin/python pipelines/facesr_training.py`"
    )


GPU_EXECUTORS = ("exec-pretrain", "exec-train")


def test_training_tasks_request_gpu_cpu_memory_from_params(compiled):
    spec, _ = compiled
    gpu = yaml.safe_load(PARAMS.read_text())["pipeline"]["gpu"]
    for name in GPU_EXECUTORS:
        res = spec["deploymentSpec"]["executors"][name]["container"]["resources"]
        assert res["accelerator"]["resourceType"] == gpu["accelerator"] == "nvidia.com/gpu"
        assert int(res["accelerator"]["resourceCount"]) == gpu["count"]
        assert res["resourceCpuRequest"] == res["resourceCpuLimit"] == str(gpu["cpu"])
        assert res["resourceMemoryRequest"] == res["resourceMemoryLimit"] == str(gpu["memory"])
    for name in ("exec-ingest", "exec-prepare", "exec-evaluate", "exec-register", "exec-promote"):
        assert "accelerator" not in spec["deploymentSpec"]["executors"][name]["container"].get("resources", {})


def test_training_tasks_have_gpu_pool_selector_toleration_and_checkpoint_pvc(compiled):
    _, platform = compiled
    raw = yaml.safe_load(PARAMS.read_text())["pipeline"]
    execs = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert {k for k, v in execs.items() if "tolerations" in v or "nodeSelector" in v} == set(GPU_EXECUTORS), \
        "only pre-training and training go to the GPU pool"
    for name in GPU_EXECUTORS:
        k8s = execs[name]
        assert k8s["nodeSelector"]["labels"] == raw["gpu"]["node_selector"] == {"facesr.io/pool": "gpu"}
        assert k8s["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present",
                                       "effect": "NoSchedule"}]
        (mount,) = k8s["pvcMount"]
        assert mount["mountPath"] == "/mnt/facesr-checkpoints"
        assert mount["pvcNameParameter"]["runtimeValue"]["constant"] == raw["checkpoint_pvc"]
    assert raw["gpu"]["toleration_key"] == "nvidia.com/gpu" and raw["gpu"]["toleration_value"] == "present"


def test_gpu_settings_follow_params_overrides(tmp_path):
    spec, platform = _compile(tmp_path, overrides=[
        "pipeline.gpu.count=4", "pipeline.gpu.node_selector={pool: a100}", "pipeline.gpu.toleration_value=spot",
        "pipeline.image=registry.local/facesr:9", "pipeline.checkpoint_pvc=null", "pipeline.retries=0"])
    for name in GPU_EXECUTORS:
        res = spec["deploymentSpec"]["executors"][name]["container"]
        assert res["resources"]["accelerator"]["resourceCount"] == "4"
        k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"][name]
        assert k8s["nodeSelector"]["labels"] == {"pool": "a100"}
        assert k8s["tolerations"][0]["value"] == "spot"
        assert "pvcMount" not in k8s
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {"registry.local/facesr:9"}
    assert spec["root"]["inputDefinitions"]["parameters"]["checkpoint_root"]["defaultValue"] == ""
    assert "retryPolicy" not in _loop_tasks(spec)["train"]
    assert "retryPolicy" not in spec["root"]["dag"]["tasks"]["pretrain"]


def _component_source(spec: dict, executor: str) -> str:
    """The Python source of a lightweight component as compiled into its executor's command."""
    return "\n".join(spec["deploymentSpec"]["executors"][executor]["container"]["command"])


@pytest.mark.parametrize("count", [1, 2])
def test_every_gpu_a_task_asks_for_gets_a_process(tmp_path, count):
    """pipeline.gpu.count GPUs per training pod -> the same count of processes: torchrun for 2, plain for 1."""
    from facesr.kfp import runtime

    spec, _ = _compile(tmp_path, overrides=[f"pipeline.gpu.count={count}"])
    tasks = {"pretrain": spec["root"]["dag"]["tasks"]["pretrain"], "train": _loop_tasks(spec)["train"]}
    for name, task in tasks.items():
        nproc = task["inputs"]["parameters"]["nproc_per_node"]["runtimeValue"]["constant"]
        gpus = spec["deploymentSpec"]["executors"][f"exec-{name}"]["container"]["resources"]["accelerator"]
        assert int(nproc) == int(gpus["resourceCount"]) == count, name
        assert "nproc_per_node=nproc_per_node" in _component_source(spec, f"exec-{name}"), name
        # the command that task builds with that count (runtime.command, the one place it is built)
        cmd = runtime.command([name, "--data", "D", "--out", "O"], int(nproc))
        launcher = runtime.launcher(int(nproc))
        assert cmd == launcher + runtime.cli_command() + [name, "--data", "D", "--out", "O"]
        if count == 1:
            assert launcher == []
        else:
            assert launcher[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                    "--no-python"]


def test_training_retries_and_caching(compiled):
    spec, _ = compiled
    train = _loop_tasks(spec)["train"]
    root = spec["root"]["dag"]["tasks"]
    retries = yaml.safe_load(PARAMS.read_text())["pipeline"]["retries"]
    assert train["retryPolicy"]["maxRetryCount"] == root["pretrain"]["retryPolicy"]["maxRetryCount"] == retries == 2
    assert not train.get("cachingOptions", {}).get("enableCache")
    assert root["ingest"]["cachingOptions"]["enableCache"] is True
    assert root["prepare"]["cachingOptions"]["enableCache"] is True
    # the shared PSNR model is cached: no run id among its inputs (so the cache key can repeat across runs)
    assert root["pretrain"]["cachingOptions"]["enableCache"] is True
    assert "run_id" not in root["pretrain"]["inputs"]["parameters"] and "run_id" in train["inputs"]["parameters"]
    for name in ("evaluate", "register", "promote"):
        assert not root[name].get("cachingOptions", {}).get("enableCache"), name


def test_the_variants_are_the_keys_of_loss_variants(tmp_path):
    """A variant added in the params (here by --set) is a default of the run's variants, with no code change."""
    spec, _ = _compile(tmp_path, overrides=["loss.variants.l1_gan.gan=0.005", "loss.variants.l1_gan.perceptual=0"])
    variants = spec["root"]["inputDefinitions"]["parameters"]["variants"]["defaultValue"]
    assert variants == ["l1_vgg", "l1_vgg_pieapp", "l1_gan"]
    assert "(l1_vgg, l1_vgg_pieapp, l1_gan)" in spec["pipelineInfo"]["description"]


def test_dag_order_parallel_variants_and_artifact_types(compiled):
    spec, _ = compiled
    root = spec["root"]["dag"]["tasks"]
    assert root["prepare"]["dependentTasks"] == ["ingest"]
    assert root["pretrain"]["dependentTasks"] == ["prepare"]
    assert "pretrain" not in {t for t in _loop_tasks(spec)}, "pretrain runs once, outside the loop over variants"
    loop = root["for-loop-1"]
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--variants"
    assert set(loop["dependentTasks"]) == {"prepare", "pretrain"}
    assert set(root["evaluate"]["dependentTasks"]) == {"for-loop-1", "prepare", "pretrain"}
    assert "evaluate" in root["register"]["dependentTasks"] and "pretrain" in root["register"]["dependentTasks"]
    # the PSNR model flows into both variants (--init-from), evaluate and register
    train_in = _loop_tasks(spec)["train"]["inputs"]["artifacts"]["psnr_model"]
    assert train_in["componentInputArtifact"] == "pipelinechannel--pretrain-model"
    for name in ("evaluate", "register"):
        src = root[name]["inputs"]["artifacts"]["psnr_model"]["taskOutputArtifact"]
        assert src == {"outputArtifactKey": "model", "producerTask": "pretrain"}, name
    assert root["promote"]["dependentTasks"] == ["register"]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["variants"]["defaultValue"] == load_params(PARAMS, "paper").variants == ["l1_vgg", "l1_vgg_pieapp"]
    assert {"source", "data_version", "profile", "variants", "mlflow_uri", "model_name"} <= set(params)

    def outputs(comp):
        return {k: v["artifactType"]["schemaTitle"]
                for k, v in spec["components"][comp]["outputDefinitions"]["artifacts"].items()}

    assert outputs("comp-ingest") == {"raw": "system.Dataset"}
    assert outputs("comp-prepare") == {"prepared": "system.Dataset"}
    assert outputs("comp-pretrain") == outputs("comp-train") == {"model": "system.Model"}
    assert outputs("comp-evaluate") == {"evaluation": "system.Artifact", "metrics": "system.Metrics",
                                        "table": "system.Markdown", "grids": "system.HTML"}
    ev_in = spec["components"]["comp-evaluate"]["inputDefinitions"]["artifacts"]["models"]
    assert ev_in["isArtifactList"] is True and ev_in["artifactType"]["schemaTitle"] == "system.Model"


def test_components_run_facesr_in_image_without_pip(compiled):
    spec, _ = compiled
    for name, ex in spec["deploymentSpec"]["executors"].items():
        cmd = " ".join(ex["container"]["command"])
        assert "pip install" not in cmd, name
        assert "from facesr.kfp import runtime" in cmd, name
        assert "kfp.dsl.executor_main" in cmd, name


def test_compile_cli_writes_yaml_and_rejects_bad_suffix(tmp_path, capsys):
    from facesr.cli.main import main

    out = tmp_path / "x" / "p.yaml"
    assert main(["--params", str(PARAMS), "--profile", "ci", "pipeline", "compile", "--out", str(out)]) == 0
    spec = next(yaml.safe_load_all(out.read_text()))
    assert spec["root"]["inputDefinitions"]["parameters"]["profile"]["defaultValue"] == "ci"
    assert main(["--params", str(PARAMS), "pipeline", "compile", "--out", str(tmp_path / "p.json")]) == 2
    assert "--out" in capsys.readouterr().err


def test_ingest_reads_the_optional_data_s3_secret_and_cluster_mlflow_is_the_default(compiled):
    spec, platform = compiled
    raw = yaml.safe_load(PARAMS.read_text())["pipeline"]
    (sec,) = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-ingest"]["secretAsEnv"]
    assert sec["secretName"] == "facesr-data-s3" and sec["optional"] is True
    assert {k["envVar"] for k in sec["keyToEnv"]} >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    default = spec["root"]["inputDefinitions"]["parameters"]["mlflow_uri"]["defaultValue"]
    assert default == raw["mlflow_uri"] and default.startswith("http://mlflow.")
