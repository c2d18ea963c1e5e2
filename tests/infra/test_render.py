"""Every overlay renders with kubectl's kustomize and every object validates strictly for K8S_VERSION."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from .infra_util import K8S_VERSION, OVERLAYS, tool


def validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("kubernetes-validate"), "--strict", "-k", K8S_VERSION, "--no-warn", str(path)],
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_expected_objects(objects, overlay):
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects[overlay]}
    for want in [("Namespace", "facesr"), ("Deployment", "mlflow"), ("Service", "mlflow"), ("ConfigMap", "mlflow-config"),
                 ("ServiceAccount", "facesr-pipeline-runner"), ("Role", "facesr-pipeline-runner"),
                 ("RoleBinding", "facesr-pipeline-runner"), ("NetworkPolicy", "default-deny-all")]:
        assert want in kinds, f"{overlay}: {want} missing"
    in_cluster_db = ("StatefulSet", "postgres") in kinds
    in_cluster_s3 = ("StatefulSet", "minio") in kinds
    if overlay == "prod":   # external database and S3
        assert not in_cluster_db and not in_cluster_s3
    else:
        assert in_cluster_db and in_cluster_s3


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_strictly(rendered, overlay, tmp_path):
    f = tmp_path / f"{overlay}.yaml"
    f.write_text(rendered[overlay])
    proc = validate(f)
    assert proc.returncode == 0, f"{overlay} does not validate against Kubernetes {K8S_VERSION}:\n{proc.stdout}{proc.stderr}"
    assert "INFO" in proc.stdout or proc.stdout.count("\n") >= 1  # it reported on the objects


def test_strict_validation_rejects_an_unknown_field(objects, tmp_path):
    """The validator is really strict: a misspelt field in an otherwise valid Deployment fails."""
    dep = next(o for o in objects["dev"] if o["kind"] == "Deployment")
    dep = yaml.safe_load(yaml.safe_dump(dep))
    dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    f = tmp_path / "typo.yaml"
    f.write_text(yaml.safe_dump(dep))
    proc = validate(f)
    assert proc.returncode != 0
    assert "imagePullPolicyy" in proc.stdout + proc.stderr


def test_a_broken_patch_fails_to_render(tmp_path):
    """Rendering really runs kustomize: an overlay that patches a missing Deployment fails, naming it."""
    import shutil

    from .infra_util import K8S, render

    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree)
    bad = tree / "overlays" / "bad"
    bad.mkdir()
    (bad / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../base\n"
        "patches:\n  - patch: |-\n      apiVersion: apps/v1\n      kind: Deployment\n"
        "      metadata: {name: no-such-deployment, namespace: facesr}\n      spec: {replicas: 3}\n"
    )
    with pytest.raises(AssertionError, match="no-such-deployment"):
        render(bad)
    render(tree / "overlays" / "dev")  # the copied tree itself is fine
