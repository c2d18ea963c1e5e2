"""The GKE Terraform parses, documents its variables, and declares the GPU pool the pipeline expects (params.yaml)."""

from __future__ import annotations

import re
import shutil
import subprocess

import hcl2
import pytest

from .infra_util import TF_DIR

# vCPU, memory (GiB) of the GPU machine types the variable allows (Google Cloud docs, accelerator-optimized machines).
MACHINES = {
    "g2-standard-4": (4, 16), "g2-standard-8": (8, 32), "g2-standard-12": (12, 48), "g2-standard-16": (16, 64),
    "g2-standard-24": (24, 96), "g2-standard-32": (32, 128), "g2-standard-48": (48, 192), "g2-standard-96": (96, 384),
    "a2-highgpu-1g": (12, 85), "a2-highgpu-2g": (24, 170), "a2-ultragpu-1g": (12, 170), "a3-highgpu-8g": (208, 1872),
    "n1-standard-8": (8, 30), "n1-standard-16": (16, 60), "n1-highmem-8": (8, 52),
}
# Accelerator type each machine family carries (g2 = L4, a2 = A100, a3 = H100); n1 takes attachable GPUs.
FAMILY_GPU = {"g2": {"nvidia-l4"}, "a2": {"nvidia-tesla-a100", "nvidia-a100-80gb"}, "a3": {"nvidia-h100-80gb"},
              "n1": {"nvidia-tesla-t4", "nvidia-tesla-v100"}}


def unquote(v):
    if isinstance(v, str) and len(v) >= 2 and v[0] == v[-1] == '"':
        return v[1:-1]
    return v


def clean(obj):
    """python-hcl2 keeps quotes on keys/strings and adds __is_block__/__comments__: strip them."""
    if isinstance(obj, dict):
        return {unquote(k): clean(v) for k, v in obj.items() if k not in ("__is_block__", "__comments__")}
    if isinstance(obj, list):
        return [clean(x) for x in obj]
    return unquote(obj)


@pytest.fixture(scope="module")
def tf() -> dict:
    files = sorted(TF_DIR.glob("*.tf"))
    assert {f.name for f in files} >= {"main.tf", "variables.tf", "outputs.tf", "versions.tf"}
    out: dict = {"variable": {}, "resource": {}, "locals": {}, "output": {}, "terraform": []}
    for f in files:
        with f.open() as fh:
            d = clean(hcl2.load(fh))
        for v in d.get("variable", []):
            out["variable"].update(v)
        for r in d.get("resource", []):
            for rtype, named in r.items():
                for name, body in named.items():
                    out["resource"][f"{rtype}.{name}"] = body
        for loc in d.get("locals", []):
            out["locals"].update(loc)
        for o in d.get("output", []):
            out["output"].update(o)
        out["terraform"] += d.get("terraform", [])
    return out


def resolve(tf: dict, value):
    """Resolve a plain ${var.x} / ${local.a.b} reference to the variable default / local value."""
    if not isinstance(value, str):
        return value
    m = re.fullmatch(r"\$\{var\.(\w+)\}", value)
    if m:
        var = tf["variable"][m.group(1)]
        assert "default" in var, f"variable {m.group(1)} has no default"
        return var["default"]
    m = re.fullmatch(r"\$\{local\.([\w.]+)\}", value)
    if m:
        cur = tf["locals"]
        for part in m.group(1).split("."):
            cur = cur[part]
        return resolve(tf, cur)
    return value


def gib(quantity: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i?)?", str(quantity))
    assert m, quantity
    n, unit = float(m.group(1)), m.group(2) or ""
    factor = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}[unit]
    return n * factor / 2**30


def test_every_variable_is_documented_typed_and_the_risky_ones_validated(tf):
    assert len(tf["variable"]) >= 10
    for name, var in tf["variable"].items():
        assert len(var.get("description", "")) > 15, f"variable {name} needs a description"
        assert "type" in var, f"variable {name} needs a type"
    for name in ("project_id", "region", "gpu_type", "gpu_count", "gpu_min_nodes", "gpu_max_nodes",
                 "gpu_driver_version", "gpu_machine_type", "gpu_pool_labels", "master_authorized_cidrs"):
        checks = tf["variable"][name].get("validation", [])
        assert checks and all(c.get("condition") and c.get("error_message") for c in checks), name


def test_variables_are_documented_in_deploy_md(tf):
    from .infra_util import REPO

    doc = (REPO / "docs" / "deploy.md").read_text()
    for name in tf["variable"]:
        assert f"`{name}`" in doc, f"docs/deploy.md does not document Terraform variable {name}"


def test_providers_are_pinned(tf):
    req = tf["terraform"][0]["required_providers"][0]["google"]
    assert req["source"] == "hashicorp/google" and re.match(r"~>\s*\d+\.\d+", req["version"])


def test_gpu_pool_matches_the_pipeline_placement(tf, params):
    gpu = params["pipeline"]["gpu"]
    pool = tf["resource"]["google_container_node_pool.gpu"]
    node = pool["node_config"][0]

    taints = [{k: resolve(tf, t[k]) for k in ("key", "value", "effect")} for t in node["taint"]]
    want_effect = "NO_SCHEDULE"  # Terraform spelling of the pipeline toleration's effect NoSchedule
    assert {"key": gpu["toleration_key"], "value": gpu["toleration_value"], "effect": want_effect} in taints
    assert gpu["toleration_key"] == "nvidia.com/gpu" and gpu["toleration_value"] == "present"

    labels = resolve(tf, node["labels"])
    assert gpu["node_selector"].items() <= labels.items(), f"node selector {gpu['node_selector']} not on nodes {labels}"

    acc = node["guest_accelerator"][0]
    assert resolve(tf, acc["type"]) == gpu["accelerator_type"]
    assert resolve(tf, acc["count"]) >= gpu["count"]
    assert gpu["accelerator"] == "nvidia.com/gpu"
    assert resolve(tf, acc["gpu_driver_installation_config"][0]["gpu_driver_version"]) in ("DEFAULT", "LATEST")

    # a training task fits on one node of the pool (GKE reserves part of each node; keep 10% headroom)
    machine = resolve(tf, node["machine_type"])
    assert machine in MACHINES, f"add {machine} to MACHINES"
    vcpu, mem_gib = MACHINES[machine]
    assert float(gpu["cpu"]) <= 0.9 * vcpu, f"{machine} ({vcpu} vCPU) cannot fit a {gpu['cpu']} CPU request"
    assert gib(gpu["memory"]) <= 0.9 * mem_gib, f"{machine} ({mem_gib} GiB) cannot fit {gpu['memory']}"
    assert resolve(tf, acc["type"]) in FAMILY_GPU[machine.split("-")[0]]


def test_gpu_pool_scales_from_zero_with_a_spot_option(tf):
    pool = tf["resource"]["google_container_node_pool.gpu"]
    scaling = pool["autoscaling"][0]
    assert resolve(tf, scaling["total_min_node_count"]) == 0
    assert resolve(tf, scaling["total_max_node_count"]) >= 2     # both variants train in parallel
    node = pool["node_config"][0]
    assert node["spot"] == "${var.gpu_spot}" and tf["variable"]["gpu_spot"]["type"] == "bool"
    assert node["image_type"] == "COS_CONTAINERD"
    assert node["shielded_instance_config"][0]["enable_secure_boot"] is True
    assert node["workload_metadata_config"][0]["mode"] == "GKE_METADATA"


def test_cluster_is_private_and_enforces_network_policies(tf):
    c = tf["resource"]["google_container_cluster.main"]
    assert c["private_cluster_config"][0]["enable_private_nodes"] is True
    assert c["datapath_provider"] == "ADVANCED_DATAPATH"          # Dataplane V2 enforces NetworkPolicy
    assert c["remove_default_node_pool"] is True
    assert c["workload_identity_config"][0]["workload_pool"].endswith(".svc.id.goog")
    assert c["master_authorized_networks_config"]


def test_tfvars_example_sets_only_declared_variables_and_all_required_ones(tf):
    text = (TF_DIR / "terraform.tfvars.example").read_text()
    keys = set(re.findall(r"^(\w+)\s*=", text, flags=re.M))
    assert keys <= set(tf["variable"]), keys - set(tf["variable"])
    required = {n for n, v in tf["variable"].items() if "default" not in v}
    assert required <= keys, f"terraform.tfvars.example misses required {required - keys}"


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform CLI not installed (python-hcl2 parse still runs)")
def test_terraform_fmt_is_clean():
    proc = subprocess.run(["terraform", "fmt", "-check", "-recursive", "-no-color", str(TF_DIR)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"terraform fmt would change: {proc.stdout}{proc.stderr}"
