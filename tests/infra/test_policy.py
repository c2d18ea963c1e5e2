"""Policy tests on the rendered overlays: Pod Security "restricted", limits, pinned images, secrets, RBAC, network."""

from __future__ import annotations

import re

import pytest

from .infra_util import K8S, OVERLAYS, containers, pod_specs

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
                  "CustomResourceDefinition", "PriorityClass"}


def _all(objects):
    for overlay in OVERLAYS:
        for o in objects[overlay]:
            yield overlay, o


# ---------------------------------------------------------------- Pod Security "restricted"

def restricted_violations(spec: dict) -> list[str]:
    """What Pod Security Standard "restricted" (plus our read-only-root rule) finds wrong in a pod spec."""
    bad = []
    psc = spec.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            bad.append(f"{key} is set")
    for v in spec.get("volumes") or []:
        if "hostPath" in v:
            bad.append(f"hostPath volume {v['name']}")
    if psc.get("runAsUser") == 0:
        bad.append("pod runAsUser 0")
    for where, c in containers(spec):
        name = f"{where}/{c['name']}"
        sc = c.get("securityContext") or {}
        if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
            bad.append(f"{name}: runAsNonRoot not true")
        if sc.get("runAsUser", psc.get("runAsUser")) in (0, None):
            bad.append(f"{name}: no non-zero runAsUser")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation not false")
        if sc.get("privileged"):
            bad.append(f"{name}: privileged")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            bad.append(f"{name}: capabilities not dropped (ALL)")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name}: adds capabilities {caps['add']}")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: seccompProfile {seccomp!r}")
        if sc.get("readOnlyRootFilesystem") is not True:
            bad.append(f"{name}: root filesystem writable")
    return bad


def test_restricted_checker_catches_violations():
    """The checker itself: a compliant container passes, each single change is caught."""
    good_sc = {"runAsNonRoot": True, "runAsUser": 10001, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
               "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    spec = {"containers": [{"name": "c", "securityContext": dict(good_sc)}]}
    assert restricted_violations(spec) == []
    for key, value in [("allowPrivilegeEscalation", True), ("readOnlyRootFilesystem", False), ("runAsUser", 0),
                       ("capabilities", {"drop": ["NET_RAW"]}), ("seccompProfile", {"type": "Unconfined"}),
                       ("privileged", True)]:
        broken = {"containers": [{"name": "c", "securityContext": {**good_sc, key: value}}]}
        assert restricted_violations(broken), key
    assert restricted_violations({**spec, "hostNetwork": True})


def test_every_pod_is_restricted(objects):
    found = 0
    for overlay in OVERLAYS:
        for label, spec, _ in pod_specs(objects[overlay]):
            found += 1
            assert restricted_violations(spec) == [], f"{overlay} {label}"
    assert found >= 3 * 1 + 2 * 2  # mlflow everywhere, postgres and minio in dev and onprem


def test_facesr_namespace_enforces_restricted(objects):
    for overlay in OVERLAYS:
        ns = next(o for o in objects[overlay] if o["kind"] == "Namespace" and o["metadata"]["name"] == "facesr")
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_no_service_account_token_where_the_api_is_not_used(objects):
    for overlay in OVERLAYS:
        for label, spec, _ in pod_specs(objects[overlay]):
            assert spec.get("automountServiceAccountToken") is False, f"{overlay} {label} mounts an API token"


# ---------------------------------------------------------------- resources, probes, images

def test_every_container_has_requests_and_limits(objects):
    for overlay in OVERLAYS:
        for label, spec, _ in pod_specs(objects[overlay]):
            for where, c in containers(spec):
                res = c.get("resources") or {}
                for kind in ("requests", "limits"):
                    for r in ("cpu", "memory"):
                        assert r in (res.get(kind) or {}), f"{overlay} {label} {c['name']}: no {kind}.{r}"


def test_containers_fit_the_namespace_limit_range(objects):
    """The LimitRange gives defaults to stray pods and caps every container; ours stay under its max."""
    from .test_terraform import gib

    def cpu(q):
        return float(q[:-1]) / 1000 if str(q).endswith("m") else float(q)

    for overlay in OVERLAYS:
        lr = next(o for o in objects[overlay] if o["kind"] == "LimitRange" and o["metadata"]["namespace"] == "facesr")
        lim = next(x for x in lr["spec"]["limits"] if x["type"] == "Container")
        assert lim["default"] and lim["defaultRequest"]
        for label, spec, _ in pod_specs(objects[overlay]):
            for _, c in containers(spec):
                limits = c["resources"]["limits"]
                assert cpu(limits["cpu"]) <= cpu(lim["max"]["cpu"]), f"{overlay} {label} {c['name']}"
                assert gib(limits["memory"]) <= gib(lim["max"]["memory"]), f"{overlay} {label} {c['name']}"


def test_long_running_containers_have_probes(objects):
    for overlay in OVERLAYS:
        for label, spec, _ in pod_specs(objects[overlay]):
            for c in spec["containers"]:
                assert "readinessProbe" in c and "livenessProbe" in c, f"{overlay} {label} {c['name']}"


IMAGE_RE = re.compile(r"^(?P<repo>[a-z0-9.\-/:]+?)(?::(?P<tag>[\w][\w.\-]{0,127}))?(?:@sha256:[0-9a-f]{64})?$")


def image_is_pinned(image: str) -> bool:
    m = IMAGE_RE.match(image)
    if not m:
        return False
    if "@sha256:" in image:
        return True
    tag = m.group("tag")
    return bool(tag) and tag not in {"latest", "stable", "main", "master", "edge", "nightly"}


def test_pinned_image_rule():
    assert image_is_pinned("ghcr.io/facesr/mlflow-server:3.17.2-1")
    assert image_is_pinned("quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z")
    assert image_is_pinned("busybox@sha256:" + "a" * 64)
    for bad in ("postgres", "postgres:latest", "ghcr.io/x/y:latest", "localhost:5000/x"):
        assert not image_is_pinned(bad), bad


def test_images_are_pinned(objects, params):
    images = set()
    for overlay in OVERLAYS:
        for label, spec, _ in pod_specs(objects[overlay]):
            for _, c in containers(spec):
                images.add(c["image"])
                assert image_is_pinned(c["image"]), f"{overlay} {label}: {c['image']}"
                assert c.get("imagePullPolicy") in ("Always", "IfNotPresent"), f"{overlay} {label}"
    assert image_is_pinned(params["pipeline"]["image"]), "params.yaml pipeline.image"
    assert len(images) >= 4


def test_mlflow_server_serves_artifacts_from_s3_with_postgres(objects):
    for overlay in OVERLAYS:
        dep = next(o for o in objects[overlay] if o["kind"] == "Deployment" and o["metadata"]["name"] == "mlflow")
        cm = next(o for o in objects[overlay] if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "mlflow-config")
        c = dep["spec"]["template"]["spec"]["containers"][0]
        args = " ".join(c["args"])
        assert "--serve-artifacts" in c["args"]
        assert "--backend-store-uri=postgresql://" in args
        assert "--artifacts-destination=$(ARTIFACTS_DESTINATION)" in args
        assert cm["data"]["artifacts-destination"] == f"s3://{cm['data']['artifacts-bucket']}"
        # every $(VAR) in args is defined in env (the kubelet leaves unknown ones verbatim)
        env_names = {e["name"] for e in c["env"]}
        for var in re.findall(r"\$\((\w+)\)", args):
            assert var in env_names, f"{overlay}: $({var}) not in env"
        has_minio = any(o["kind"] == "StatefulSet" and o["metadata"]["name"] == "minio" for o in objects[overlay])
        assert ("s3-endpoint-url" in cm["data"]) == has_minio, overlay
        if has_minio:
            assert cm["data"]["s3-endpoint-url"].startswith("http://minio.facesr.svc")


def test_config_and_secret_references_resolve(objects):
    """Every non-optional ConfigMap key a pod reads exists; every Secret key is described in secrets.example."""
    examples = {}
    for f in (K8S / "secrets.example").glob("*.env.example"):
        name = f.name.removesuffix(".env.example")
        examples[name] = {line.split("=", 1)[0] for line in f.read_text().splitlines()
                          if line.strip() and not line.startswith("#")}
    for overlay in OVERLAYS:
        cms = {o["metadata"]["name"]: o.get("data", {}) for o in objects[overlay] if o["kind"] == "ConfigMap"}
        for label, spec, _ in pod_specs(objects[overlay]):
            for _, c in containers(spec):
                for e in c.get("env") or []:
                    ref = e.get("valueFrom") or {}
                    if "configMapKeyRef" in ref:
                        r = ref["configMapKeyRef"]
                        if not r.get("optional"):
                            assert r["key"] in cms.get(r["name"], {}), f"{overlay} {label}: {r}"
                    if "secretKeyRef" in ref:
                        r = ref["secretKeyRef"]
                        assert r["key"] in examples.get(r["name"], set()), (
                            f"{overlay} {label}: Secret {r['name']}/{r['key']} has no template in infra/k8s/secrets.example")


def test_no_secret_values_in_the_repository(objects):
    for overlay in OVERLAYS:
        assert not [o for o in objects[overlay] if o["kind"] == "Secret"], f"{overlay} renders a Secret"
    for f in K8S.rglob("kustomization.yaml"):
        assert "secretGenerator" not in f.read_text(), f
    for f in (K8S / "secrets.example").glob("*.env.example"):
        for line in f.read_text().splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            key, value = line.split("=", 1)
            if key in ("username", "AWS_ENDPOINT_URL"):
                continue
            assert value == "" or value.startswith("CHANGE_ME"), f"{f.name}: {key} holds a value, not a placeholder"
    gitignore = (K8S.parent / ".gitignore").read_text()
    assert "k8s/secrets/" in gitignore and "*.tfstate" in gitignore and "terraform.tfvars" in gitignore


def test_every_namespaced_object_names_its_namespace(objects):
    for overlay, o in _all(objects):
        if o["kind"] not in CLUSTER_SCOPED:
            assert o["metadata"].get("namespace"), f"{overlay} {o['kind']}/{o['metadata']['name']}"


def test_services_select_pods(objects):
    for overlay in OVERLAYS:
        pods = [meta.get("labels", {}) for _, _, meta in pod_specs(objects[overlay])]
        for svc in (o for o in objects[overlay] if o["kind"] == "Service"):
            sel = svc["spec"]["selector"]
            assert any(sel.items() <= labels.items() for labels in pods), f"{overlay} Service {svc['metadata']['name']}"


# ---------------------------------------------------------------- RBAC

def test_rbac_is_namespaced_and_least_privilege(objects):
    for overlay in OVERLAYS:
        objs = objects[overlay]
        assert not [o for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding")], overlay
        roles = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objs if o["kind"] == "Role"}
        assert roles
        for (ns, name), role in roles.items():
            for rule in role["rules"]:
                for field in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule.get(field, []), f"{overlay} Role {name}: wildcard in {field}"
                res, verbs = set(rule["resources"]), set(rule["verbs"])
                assert not verbs & {"escalate", "bind", "impersonate", "deletecollection"}, f"{name}: {verbs}"
                if res & {"secrets", "configmaps"}:
                    assert rule.get("resourceNames"), f"{name}: {res} without resourceNames"
                    assert verbs == {"get"}, f"{name}: {res} verbs {verbs}"
                if "pods" in res:
                    assert not verbs & {"create", "delete", "update"}, f"{name}: pods {verbs}"
                assert not res & {"pods/exec", "pods/attach", "roles", "rolebindings", "serviceaccounts/token"}
        sas = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objs if o["kind"] == "ServiceAccount"}
        for rb in (o for o in objs if o["kind"] == "RoleBinding"):
            assert rb["roleRef"]["kind"] == "Role"
            assert (rb["metadata"]["namespace"], rb["roleRef"]["name"]) in roles
            for s in rb["subjects"]:
                assert s["kind"] == "ServiceAccount" and (s["namespace"], s["name"]) in sas, f"{overlay} {s}"


# ---------------------------------------------------------------- NetworkPolicies

def _selects(policy: dict, labels: dict) -> bool:
    sel = policy["spec"]["podSelector"].get("matchLabels", {})
    return sel.items() <= labels.items()


def test_network_policies_deny_by_default_and_cover_every_pod(objects):
    for overlay in OVERLAYS:
        pols = [o for o in objects[overlay] if o["kind"] == "NetworkPolicy" and o["metadata"]["namespace"] == "facesr"]
        deny = [p for p in pols if p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
                and not p["spec"].get("ingress") and not p["spec"].get("egress")]
        assert deny, f"{overlay}: no default-deny policy"
        for label, _, meta in pod_specs(objects[overlay]):
            labels = meta.get("labels", {})
            allowing = [p for p in pols if p["spec"].get("ingress") and _selects(p, labels)]
            assert allowing, f"{overlay} {label}: no ingress allowed at all"
            for p in allowing:
                for rule in p["spec"]["ingress"]:
                    assert rule.get("from") and rule.get("ports"), f"{overlay} {p['metadata']['name']}: open ingress rule"


def test_only_mlflow_reaches_postgres(objects):
    for overlay in ("dev", "onprem"):
        pol = next(o for o in objects[overlay] if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "postgres-ingress")
        peers = [peer for rule in pol["spec"]["ingress"] for peer in rule["from"]]
        assert peers == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}}}]


def test_pipeline_runs_can_reach_mlflow(objects):
    """The KFP run namespace (where the RoleBinding lives) is allowed into MLflow's port."""
    for overlay in OVERLAYS:
        rb = next(o for o in objects[overlay] if o["kind"] == "RoleBinding")
        run_ns = rb["metadata"]["namespace"]
        pol = next(o for o in objects[overlay] if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "mlflow-ingress")
        peers = [peer for rule in pol["spec"]["ingress"] for peer in rule["from"]]
        assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": run_ns}}} in peers
        ports = {p["port"] for rule in pol["spec"]["ingress"] for p in rule["ports"]}
        svc = next(o for o in objects[overlay] if o["kind"] == "Service" and o["metadata"]["name"] == "mlflow")
        assert {p["port"] for p in svc["spec"]["ports"]} <= ports


# ---------------------------------------------------------------- what the pipeline expects in its run namespace

def test_checkpoint_pvc_the_pipeline_mounts_exists_and_is_shared(objects, params):
    """params.yaml pipeline.checkpoint_pvc: both variants train at once on different nodes -> ReadWriteMany."""
    want = params["pipeline"].get("checkpoint_pvc")
    if not want:
        pytest.skip("params.yaml pipeline.checkpoint_pvc is null: the pipeline mounts no PVC")
    for overlay in OVERLAYS:
        rb = next(o for o in objects[overlay] if o["kind"] == "RoleBinding")
        pvc = [o for o in objects[overlay] if o["kind"] == "PersistentVolumeClaim" and o["metadata"]["name"] == want]
        assert pvc, f"{overlay}: no PVC {want}"
        assert pvc[0]["metadata"]["namespace"] == rb["metadata"]["namespace"], "PVC not in the run namespace"
        assert "ReadWriteMany" in pvc[0]["spec"]["accessModes"]


def test_compiled_pipeline_places_training_on_the_gpu_pool(params):
    """If the compiled pipeline is in the repo, its training executor carries our node selector and toleration."""
    import yaml

    from .infra_util import REPO

    compiled = REPO / "pipelines" / f"{params['pipeline']['name']}.yaml"
    if not compiled.exists():
        pytest.skip(f"{compiled} not compiled")
    docs = [d for d in yaml.safe_load_all(compiled.read_text()) if d]
    platform = next((d for d in docs if "platforms" in d), None)
    assert platform, "compiled pipeline has no kubernetes platform spec"
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    gpu = params["pipeline"]["gpu"]
    placed = [e for e in executors.values() if e.get("nodeSelector")]
    assert placed, "no executor has a node selector"
    for e in placed:
        assert e["nodeSelector"]["labels"] == gpu["node_selector"]
        assert {"key": gpu["toleration_key"], "operator": "Equal", "value": gpu["toleration_value"],
                "effect": "NoSchedule"} in e["tolerations"]
