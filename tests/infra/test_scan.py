"""Static security scan: checkov (its own venv, .venv-checkov, from infra/requirements-scan.txt), run once over a copy
of the infra tree in which infra/k8s is replaced by the three rendered overlays: Terraform, every Kubernetes object
as applied, the Dockerfile, and secrets. (checkov's own kustomize framework skips overlays built from components,
so the overlays are rendered here with kubectl's kustomize, as `kubectl apply -k` would.)
Skipped checks are justified in place (`# checkov:skip=ID: why` in Terraform, `checkov.io/skipN` annotations)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from .infra_util import BIN, INFRA, OVERLAYS, REPO

CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
FRAMEWORKS = ["terraform", "kubernetes", "dockerfile", "secrets"]


@pytest.fixture(scope="module")
def scan(rendered, tmp_path_factory):
    if not CHECKOV.exists():
        if os.environ.get("CI"):
            pytest.fail("checkov missing: scripts/test.sh should have run infra/scripts/setup-scan.sh")
        pytest.skip("checkov not installed: run infra/scripts/setup-scan.sh")
    tree = tmp_path_factory.mktemp("scan") / "infra"
    shutil.copytree(INFRA, tree, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*"))
    shutil.rmtree(tree / "k8s")
    (tree / "k8s" / "rendered").mkdir(parents=True)
    shutil.copytree(INFRA / "k8s" / "secrets.example", tree / "k8s" / "secrets.example")
    for name in OVERLAYS:
        (tree / "k8s" / "rendered" / f"{name}.yaml").write_text(rendered[name])
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # kubectl for kustomize
           "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false", "LOG_LEVEL": "ERROR"}
    proc = subprocess.run(
        [str(CHECKOV), "-d", str(tree), "--framework", *FRAMEWORKS, "--skip-download",
         "--compact", "-o", "json"],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO,
    )
    start = proc.stdout.find("[") if proc.stdout.lstrip().startswith("[") else proc.stdout.find("{")
    assert start >= 0, f"checkov printed no JSON (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    data = json.loads(proc.stdout[start:])
    reports = data if isinstance(data, list) else [data]
    return {r["check_type"]: r for r in reports}, proc


def test_checkov_scanned_every_framework(scan):
    reports, _ = scan
    for fw in ("terraform", "kubernetes", "dockerfile"):
        assert fw in reports, f"checkov produced no {fw} report: {sorted(reports)}"
        assert reports[fw]["summary"]["passed"] > 10, fw
    k8s = reports["kubernetes"]["results"]
    files = {c["file_path"] for key in ("passed_checks", "skipped_checks") for c in k8s.get(key, [])}
    for name in OVERLAYS:
        assert any(f.endswith(f"rendered/{name}.yaml") for f in files), f"overlay {name} was not scanned: {files}"
    tf_files = {c["file_path"] for c in reports["terraform"]["results"]["passed_checks"]}
    assert any(f.endswith("gke/main.tf") for f in tf_files)


def test_checkov_finds_nothing(scan):
    reports, proc = scan
    failed = [f"{fw}: {c['check_id']} {c['resource']} ({c.get('file_path')})"
              for fw, r in reports.items() for c in r["results"].get("failed_checks", [])]
    assert not failed, "checkov findings:\n" + "\n".join(failed)
    assert proc.returncode == 0


def test_every_skip_is_justified(scan):
    reports, _ = scan
    skipped = [c for r in reports.values() for c in r["results"].get("skipped_checks", [])]
    assert skipped, "expected the documented skips (image digests, env secrets, ...)"
    for c in skipped:
        reason = (c.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason.strip()) > 20, f"{c['check_id']} on {c['resource']} skipped without a reason"
    # and every in-place skip in Terraform carries a reason after the colon
    for f in INFRA.rglob("*.tf"):
        for m in re.finditer(r"checkov:skip=(\w+)(.*)", f.read_text()):
            assert len(m.group(2).lstrip(":").strip()) > 20, f"{f.name}: {m.group(1)}"


def test_setup_scan_is_idempotent_and_wired_into_the_test_command():
    """scripts/test.sh (the README's test command) calls setup-scan.sh before pytest; a second run is a no-op."""
    test_cmd = (REPO / "scripts" / "test.sh").read_text()
    call = test_cmd.index("infra/scripts/setup-scan.sh")
    assert call < test_cmd.index("pytest"), "setup-scan.sh must run before the tests"
    stamp = REPO / ".venv-checkov" / ".facesr-scan-installed"
    if not stamp.exists():
        pytest.skip("scan venv not installed here")
    import hashlib
    assert stamp.read_text().strip() == hashlib.sha256((INFRA / "requirements-scan.txt").read_bytes()).hexdigest()
    proc = subprocess.run(["bash", str(INFRA / "scripts" / "setup-scan.sh")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "installing" not in proc.stderr          # nothing reinstalled
    pins = [ln for ln in (INFRA / "requirements-scan.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.+\-]+", p) for p in pins), "unpinned line"
    assert any(p.startswith("checkov==") for p in pins)
