"""Static checks of components/Dockerfile (no Docker engine and no hadolint on this machine): parse it and check the
properties the pipeline relies on."""

from __future__ import annotations

import fnmatch
import re
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "components" / "Dockerfile"
IGNORE = REPO / "components" / "Dockerfile.dockerignore"


def parse(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        instr, _, args = buf.partition(" ")
        out.append((instr.upper(), args.strip()))
        buf = ""
    assert not buf, "dangling line continuation"
    return out


@pytest.fixture(scope="module")
def instrs():
    return parse(DOCKERFILE.read_text())


def _args(instrs, name):
    return [a for i, a in instrs if i == name]


def _arg_defaults(instrs) -> dict[str, str]:
    out = {}
    for a in _args(instrs, "ARG"):
        k, _, v = a.partition("=")
        out[k] = v
    return out


def test_parser_reads_continuations():
    assert parse("FROM a AS b\n# c\nRUN x \\\n  && y\n") == [("FROM", "a AS b"), ("RUN", "x  && y")]


def test_base_image_is_python_3_11_bookworm_and_swappable(instrs):
    defaults = _arg_defaults(instrs)
    froms = _args(instrs, "FROM")
    assert len(froms) == 2 and all(f.startswith("${PYTHON_IMAGE}") for f in froms)
    base = defaults["PYTHON_IMAGE"]
    m = re.fullmatch(r"python:(\d+)\.(\d+)(?:\.\d+)?-slim-bookworm", base)
    assert m, f"base image {base!r}: the official Python 3.11 slim bookworm image"
    assert (int(m[1]), int(m[2])) == sys.version_info[:2] == (3, 11)
    # a debootstrap'ed bookworm (Debian's python3, no `python`) works as well: only python3 is called, and the
    # build fails early when the base's Python is not the one the lock was resolved for
    runs = " ".join(_args(instrs, "RUN"))
    assert "python3 -m venv /opt/venv" in runs and "sys.version_info[:2] == (3, 11)" in runs
    assert not re.search(r"(^|[\s;&|])python\s", runs), "Debian's python3 has no `python` command"


def test_pip_trusts_a_ca_bundle_given_as_a_secret_that_stays_out_of_the_layers(instrs):
    lock_run = next(a for a in _args(instrs, "RUN") if "pip install -r requirements.lock" in a)
    assert lock_run.startswith("--mount=type=secret,id=pip_cert ")
    assert "PIP_CERT=/run/secrets/pip_cert" in lock_run and "[ -s /run/secrets/pip_cert ]" in lock_run
    assert "PIP_CERT" not in " ".join(_args(instrs, "ENV")) + " ".join(_args(instrs, "ARG"))
    # the index URL travels as a build arg named so that an empty value does not reach pip as PIP_INDEX_URL=""
    assert "PIP_INDEX" in _arg_defaults(instrs) and "PIP_INDEX_URL" not in _arg_defaults(instrs)
    script = (REPO / "scripts" / "build-image.sh").read_text()
    assert '--secret "id=pip_cert,src=$cert"' in script and '"PIP_INDEX=$index"' in script


def test_installs_the_locked_cuda_torch_and_facesr(instrs):
    runs = " ".join(_args(instrs, "RUN"))
    copies = _args(instrs, "COPY")
    assert any(c.split()[0] == "requirements.lock" for c in copies)
    assert "pip install -r requirements.lock" in runs
    assert "pip install --no-deps ." in runs and "pip check" in runs
    lock = dict(line.split("==", 1) for line in (REPO / "requirements.lock").read_text().split()
                if "==" in line and not line.startswith("#"))
    assert lock["torch"] == "2.14.1"
    # the CUDA runtime and cuDNN torch uses come pinned in the lock
    assert "nvidia-cuda-runtime" in lock and any(k.startswith("nvidia-cudnn") for k in lock)
    env = " ".join(_args(instrs, "ENV"))
    assert "NVIDIA_VISIBLE_DEVICES=all" in env and "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in env


def test_runs_as_non_root(instrs):
    users = _args(instrs, "USER")
    assert users, "no USER: the image would run as root"
    final = users[-1].split(":")[0]
    assert final not in ("root", "0")
    # nothing after the last USER needs root
    last_user = max(i for i, (k, _) in enumerate(instrs) if k == "USER")
    assert not [a for k, a in instrs[last_user:] if k == "RUN"]
    assert re.search(r"useradd .*--uid " + re.escape(final), " ".join(_args(instrs, "RUN")))
    # KFP's local artifact roots are writable by that user
    assert re.search(r"chown 1000:1000 /gcs /minio /s3 /oci", " ".join(_args(instrs, "RUN")))


def test_params_and_optional_weights_are_baked_in(instrs):
    defaults = _arg_defaults(instrs)
    assert "WEIGHTS_DIR" in defaults and defaults["WEIGHTS_DIR"] == "", "weights are optional (empty default)"
    env = " ".join(_args(instrs, "ENV"))
    assert "FACESR_PARAMS=/opt/facesr/params.yaml" in env
    assert "FACESR_WEIGHTS_DIR=/opt/facesr/weights" in env
    assert any(c.startswith("--chown=1000:1000 params.yaml /opt/facesr/params.yaml") for c in _args(instrs, "COPY"))
    runs = " ".join(_args(instrs, "RUN"))
    assert "facesr weights import /tmp/weights" in runs
    weights_copy = [c for c in _args(instrs, "COPY") if "WEIGHTS_DIR" in c]
    assert weights_copy and "components/weights-none" in weights_copy[0]
    assert (REPO / "components" / "weights-none").is_dir()


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for p in patterns:
        neg = p.startswith("!")
        pat = p[1:] if neg else p
        pat = pat.rstrip("/")
        hit = fnmatch.fnmatch(path, pat) or path.startswith(pat + "/") or fnmatch.fnmatch(path.split("/")[0], pat)
        if hit:
            ignored = not neg
    return ignored


def test_dockerignore_keeps_every_copied_source_and_drops_the_rest(instrs):
    patterns = [ln.strip() for ln in IGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    sources = []
    for c in _args(instrs, "COPY"):
        if "--from=" in c:  # from another stage, not the build context
            continue
        parts = [p for p in c.split() if not p.startswith("--")]
        sources += parts[:-1]
    sources = [s.replace("${WEIGHTS_DIR:-components/weights-none}", "components/weights-none").rstrip("/")
               for s in sources]
    assert "src" in sources and "params.yaml" in sources
    for s in sources:
        assert (REPO / s).exists(), s
        assert not _ignored(s, patterns), f"{s} is copied but excluded by the ignore file"
    for junk in (".venv", "tests", "data/raw", ".git", "mlflow.db", "src/facesr/__pycache__"):
        assert _ignored(junk, patterns), junk


def test_pipeline_components_use_the_image_of_params():
    spec = next(yaml.safe_load_all((REPO / "pipelines" / "facesr-training.yaml").read_text()))
    image = yaml.safe_load((REPO / "params.yaml").read_text())["pipeline"]["image"]
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {image}
