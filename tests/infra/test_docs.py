"""docs/deploy.md walks from an empty project to a scheduled run and names every command; the facesr commands and
options it shows exist in the CLI, and the files and overlays it names exist."""

from __future__ import annotations

import re
import shlex

import pytest

from .infra_util import OVERLAYS, REPO

DOC = REPO / "docs" / "deploy.md"


def code_lines() -> list[str]:
    text = DOC.read_text()
    lines = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        lines += [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return lines


def test_walkthrough_names_every_step():
    text = DOC.read_text()
    cmds = "\n".join(code_lines())
    for needle in [
        "gcloud projects create", "gcloud services enable container.googleapis.com",
        "terraform init", "terraform plan", "terraform apply", "get_credentials",
        "kubectl apply -k \"github.com/kubeflow/pipelines",               # KFP itself
        "docker build -f components/Dockerfile", "docker push", "docker build -t", "infra/images/mlflow",
        "kubectl -n facesr create secret generic mlflow-db", "kubectl -n facesr create secret generic mlflow-s3",
        "kubectl -n facesr create secret generic minio-root",
        "kubectl apply -k infra/k8s/overlays/prod", "kubectl -n facesr rollout status deploy/mlflow",
        "facesr --profile paper pipeline compile", "pipeline submit --host", "pipeline schedule --host",
        "terraform destroy",
    ]:
        assert needle in cmds, f"docs/deploy.md has no command with {needle!r}"
    for overlay in OVERLAYS:
        assert f"overlays/{overlay}" in text


def _facesr_invocations():
    for line in code_lines():
        line = line.split(" # ")[0].split("   #")[0]
        argv = shlex.split(line)
        if argv and argv[0] in ("facesr", ".venv/bin/facesr"):
            yield line, argv[1:]


def test_facesr_commands_in_the_walkthrough_exist():
    click = pytest.importorskip("click")
    from facesr.cli.main import cli

    seen = 0
    for line, argv in _facesr_invocations():
        cmd, words = cli, list(argv)
        opts = {o for p in cmd.params for o in p.opts}
        while words:
            w = words.pop(0)
            if w.startswith("-"):
                name = w.split("=")[0]
                assert name in opts, f"{line!r}: {name} is not an option of {cmd.name}"
                param = next(p for p in cmd.params if name in p.opts)
                if not getattr(param, "is_flag", False) and "=" not in w:
                    words.pop(0)
            elif isinstance(cmd, click.Group) and w in cmd.commands:
                cmd = cmd.commands[w]
                opts = {o for p in cmd.params for o in p.opts}
            else:
                assert not isinstance(cmd, click.Group), f"{line!r}: {w} is not a command of {cmd.name}"
        assert not isinstance(cmd, click.Group), f"{line!r} names no command"
        seen += 1
    assert seen >= 3


def test_paths_named_in_the_walkthrough_exist():
    text = DOC.read_text()
    for path in sorted(set(re.findall(r"`?(infra/[\w./-]+)", text))):
        path = path.rstrip(".")
        if re.match(r"infra/k8s/secrets($|/)", path):
            continue  # git-ignored, made by the user
        if "*" in path:
            continue
        assert (REPO / path).exists(), f"docs/deploy.md names {path}, which does not exist"
