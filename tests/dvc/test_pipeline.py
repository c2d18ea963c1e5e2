"""The DVC pipeline end to end, in a temporary git repository made from this project's files.

One module-scoped project, with a third GAN variant added to params.yaml (a params edit, no code change), runs the
whole pipeline once (`dvc exp run -S profile=ci`: the stages track the resolved params of the profile -S chose); the
tests then check that the third variant was trained, evaluated and registered, and what a second repro, parameter
changes and a push/pull through an S3-compatible server (moto) do. facesr comes from this interpreter's venv; MLflow
writes to a SQLite file in the temporary folder.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
#: the variant the test adds to params.yaml (GAN + L1, no perceptual loss: the cheapest to train)
THIRD = "l1_gan"
VARIANTS = ("l1_vgg", "l1_vgg_pieapp", THIRD)
TRAINS = {f"train@{v}" for v in VARIANTS}
STAGES = {"params", "ingest", "prepare", "pretrain", *TRAINS, "evaluate", "register", "promote"}
DOWNSTREAM_OF_TRAIN = {*TRAINS, "evaluate", "register", "promote"}
RESOLVED = "outputs/params.yaml"

if shutil.which("dvc", path=str(BIN)) is None or shutil.which("facesr", path=str(BIN)) is None:
    pytest.skip(f"dvc and facesr must be installed next to {sys.executable}", allow_module_level=True)


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="1",
        DVC_NO_ANALYTICS="1",
        OMP_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",
        GIT_AUTHOR_NAME="facesr test",
        GIT_AUTHOR_EMAIL="test@facesr.invalid",
        GIT_COMMITTER_NAME="facesr test",
        GIT_COMMITTER_EMAIL="test@facesr.invalid",
    )
    for k in ("FACESR_PARAMS", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        env.pop(k, None)
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> str:
    p = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    out = p.stdout + p.stderr
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {p.returncode} in {cwd}:\n{out[-6000:]}")
    return out


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def _project_files() -> list[str]:
    """The project as a commit would hold it: tracked plus untracked-but-not-ignored files of the working tree."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, check=True).stdout.decode()
    return [f for f in out.split("\0") if f and (REPO / f).is_file()]


def _digest_tree(root: Path, rels: list[str]) -> dict[str, str]:
    out = {}
    for rel in rels:
        base = root / rel
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for f in files:
            if f.name == ".gitignore":
                continue
            out[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def _lock(root: Path) -> dict:
    return yaml.safe_load((root / "dvc.lock").read_text())


def _gen_sha(root: Path, variant: str) -> str:
    """Hash of the generator's tensors (names, dtypes, values); the file's header order may vary between runs."""
    from safetensors.numpy import load_file

    tensors = load_file(str(root / f"outputs/train/{variant}/model/generator.safetensors"))
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode() + str(tensors[name].dtype).encode() + tensors[name].tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A git repo made from the project, whole pipeline run once with `dvc exp run -S profile=ci`."""
    tmp = tmp_path_factory.mktemp("dvcproj")
    root = tmp / "repo"
    for rel in _project_files():
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dst)
    env = _env(tmp)
    raw = yaml.safe_load((root / "params.yaml").read_text())
    assert raw["profile"] != "ci", "the test switches to ci with -S; params.yaml must start on another profile"
    assert THIRD not in raw["loss"]["variants"]
    raw["loss"]["variants"][THIRD] = {"pixel": 0.01, "perceptual": 0.0, "gan": 0.005, "pieapp": 0.0}
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    _run(["git", "init", "-q", "-b", "main"], root, env)
    if not (root / ".dvc" / "config").exists():
        _run(["dvc", "init", "-q"], root, env)
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-q", "-m", "project"], root, env)
    first = _run(["dvc", "exp", "run", "-S", "profile=ci"], root, env, timeout=900)
    return {"root": root, "tmp": tmp, "env": env, "first": first}


def test_exp_run_switches_profile_and_runs_every_stage(project):
    root = project["root"]
    assert _ran(project["first"]) == STAGES
    assert yaml.safe_load((root / "params.yaml").read_text())["profile"] == "ci"
    # the stages track the params config.py resolved for the profile -S chose: ci's values, not demo's
    resolved = yaml.safe_load((root / RESOLVED).read_text())
    assert resolved["profile"] == "ci" and resolved["train"]["max_steps"] == 3
    lock = _lock(root)
    for variant in VARIANTS:
        tracked = lock["stages"][f"train@{variant}"]["params"][RESOLVED]
        assert tracked["train"]["max_steps"] == 3 and tracked["model"]["generator"]["num_feat"] == 8
        assert tracked[f"loss.variants.{variant}"] == resolved["loss"]["variants"][variant]
        meta = json.loads((root / f"outputs/train/{variant}/model/model.json").read_text())
        assert meta["variant"] == variant and meta["num_feat"] == 8  # the ci generator, not demo's 32
        assert (root / f"outputs/train/{variant}/checkpoints/last.pt").is_file()  # kept for --resume, not an out
    metrics = json.loads((root / "outputs/eval/metrics.json").read_text())
    assert list(metrics) == ["bicubic", "psnr", *VARIANTS]
    assert (root / "outputs/eval/table.md").read_text().strip()
    assert any((root / "outputs/eval/grids").glob("*.png"))
    receipt = (root / "outputs/registry/register.txt").read_text()
    assert re.search(r"registered facesr v\d+ \(([a-z0-9_]+)\) as 'challenger'", receipt), receipt
    assert (root / "outputs/registry/promote.txt").read_text().startswith(("PROMOTED", "REFUSED"))
    # DVC reads our metrics and plots
    shown = _run(["dvc", "metrics", "show", "--json"], root, project["env"])
    assert "outputs/eval/metrics.json" in shown


def test_a_variant_added_in_params_is_trained_evaluated_shown_and_registered(project):
    """The third variant came from a params.yaml edit alone: its train stage, a row of the table, a column of the
    grids and per-image scores, and a training run in MLflow (register logs every model it is given)."""
    root = project["root"]
    meta = json.loads((root / f"outputs/train/{THIRD}/model/model.json").read_text())
    assert meta["variant"] == THIRD and meta["init_sha256"]  # started from the psnr model
    table = (root / "outputs/eval/table.md").read_text()
    assert re.search(rf"^\| {THIRD} \|", table, re.M), table
    with open(root / "outputs/eval/per_image.csv") as f:
        rows_by_model = {}
        for row in csv.DictReader(f):
            rows_by_model.setdefault(row["model"], []).append(row)
    assert list(rows_by_model) == ["bicubic", "psnr", *VARIANTS]
    assert len(rows_by_model[THIRD]) == len(rows_by_model["bicubic"]) > 0
    manifest = json.loads((root / "outputs/eval/manifest.json").read_text())
    assert list(manifest["inputs"]["models"]) == ["bicubic", "psnr", *VARIANTS]  # the grid columns, in order
    assert manifest["inputs"]["models"][THIRD]["variant"] == THIRD and manifest["grids"]
    receipt = (root / "outputs/registry/register.txt").read_text()
    assert re.search(rf"run train/{THIRD} +[0-9a-f]{{32}}", receipt), receipt
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=project["env"]["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("facesr")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.runName` = 'train/{THIRD}'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"


def test_the_resolved_params_decide_what_reruns(project):
    """A profile override of a key the L1 stage reads re-runs pretrain and every training; removing a variant
    re-runs evaluate and register (which take every model of the params) and leaves the other trainings alone."""
    root, env = project["root"], project["env"]
    params_file = root / "params.yaml"
    text = params_file.read_text()
    raw = yaml.safe_load(text)

    def status_after(edit) -> set[str]:
        data = yaml.safe_load(text)
        edit(data)
        params_file.write_text(yaml.safe_dump(data, sort_keys=False))
        _run(["dvc", "repro", "params"], root, env)
        return set(json.loads(_run(["dvc", "status", "--json"], root, env)))

    try:
        assert raw["profiles"]["ci"]["train"]["log_every"] == 1
        changed = status_after(lambda d: d["profiles"]["ci"]["train"].update(log_every=2))
        assert changed == {"pretrain", *TRAINS}, changed
        changed = status_after(lambda d: d["loss"]["variants"].pop(THIRD))
        assert changed == {"evaluate", "register"}, changed
    finally:
        params_file.write_text(text)
        _run(["dvc", "repro", "params"], root, env)
    assert "up to date" in _run(["dvc", "status"], root, env)


def test_second_repro_runs_nothing(project):
    root, env = project["root"], project["env"]
    out = _run(["dvc", "repro"], root, env)
    assert _ran(out) == set()
    assert "up to date" in _run(["dvc", "status"], root, env)


def test_push_to_s3_and_pull_into_a_fresh_clone(project, tmp_path):
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    root, env = project["root"], dict(project["env"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket="facesr-dvc")
        # the remote (no credentials in it) is committed with the lock file; credentials come from the environment
        _run(["dvc", "remote", "add", "s3", "s3://facesr-dvc/store"], root, env)
        _run(["dvc", "remote", "modify", "s3", "endpointurl", endpoint], root, env)
        assert "testing" not in (root / ".dvc" / "config").read_text()
        _run(["git", "add", "-A"], root, env)
        _run(["git", "commit", "-q", "-m", "pipeline run and s3 remote"], root, env)
        pushed = _run(["dvc", "push", "-r", "s3"], root, env)
        assert re.search(r"\d+ files? pushed", pushed), pushed

        clone = tmp_path / "clone"
        _run(["git", "clone", "-q", str(root), str(clone)], tmp_path, env)
        assert not (clone / "data" / "prepared").exists()
        _run(["dvc", "pull", "-r", "s3"], clone, env)
        rels = ["data/raw", "data/prepared", RESOLVED, *(f"outputs/train/{v}/model" for v in VARIANTS),
                "outputs/eval/metrics.json", "outputs/eval/grids"]
        original, pulled = _digest_tree(root, rels), _digest_tree(clone, rels)
        assert original and pulled == original
        # the data and models are complete: nothing up to evaluation needs to run again in the clone
        status = _run(["dvc", "status", "evaluate", "--with-deps"], clone, env)
        assert "up to date" in status, status
    finally:
        server.stop()


def test_interrupted_training_resumes_from_its_checkpoint(project):
    """A run that died after its last checkpoint (no model written yet) continues under `dvc repro`."""
    root, env = project["root"], project["env"]
    before = _gen_sha(root, "l1_vgg")
    shutil.rmtree(root / "outputs/train/l1_vgg/model")
    (root / "outputs/train/l1_vgg/train_summary.json").unlink()
    out = _run(["dvc", "repro"], root, env)
    ran = _ran(out)
    assert "train@l1_vgg" in ran and not ran & {"params", "ingest", "prepare", "train@l1_vgg_pieapp", f"train@{THIRD}"}
    assert "resumed outputs/train/l1_vgg from step" in out
    assert _gen_sha(root, "l1_vgg") == before


def test_training_param_change_reruns_training_evaluation_registration_only(project):
    root, env = project["root"], project["env"]
    before = {v: _gen_sha(root, v) for v in VARIANTS}
    prepared_md5 = next(o["md5"] for o in _lock(root)["stages"]["prepare"]["outs"])
    ci_train = yaml.safe_load((root / "params.yaml").read_text())["profiles"]["ci"]["train"]
    # `+key=value` adds a key the profile does not set yet (Hydra override syntax), `key=value` changes one
    setting = ("" if "lr_g" in ci_train else "+") + "profiles.ci.train.lr_g=0.0005"
    out = _run(["dvc", "exp", "run", "-S", setting], root, env, timeout=900)
    assert _ran(out) == {"params", *DOWNSTREAM_OF_TRAIN}  # params: the resolved file is written again
    assert "resumed" not in out  # the previous run's checkpoint was made with other params: not continued
    assert "Stage 'ingest' didn't change" in out and "Stage 'prepare' didn't change" in out
    assert "Stage 'pretrain' didn't change" in out  # a GAN-only change keeps the shared psnr model
    assert next(o["md5"] for o in _lock(root)["stages"]["prepare"]["outs"]) == prepared_md5
    # a real re-training with the new learning rate, not a resume of the previous run's finished checkpoint
    after = {v: _gen_sha(root, v) for v in VARIANTS}
    assert all(after[v] != before[v] for v in before)


def test_main_script_on_a_finished_pipeline_runs_nothing_and_prints_the_results(project):
    """scripts/main.sh a second time: setup is a no-op, dvc repro runs no stage, the results are printed."""
    root, env = project["root"], project["env"]
    stamp = REPO / ".venv" / ".facesr-installed"
    want = hashlib.sha256((REPO / "requirements.lock").read_bytes() + (REPO / "pyproject.toml").read_bytes()).hexdigest()
    if BIN != REPO / ".venv" / "bin" or not stamp.is_file() or stamp.read_text().strip() != want:
        pytest.skip("needs the project's .venv, installed from the current lock (setup.sh must be a no-op)")
    (root / ".venv").symlink_to(REPO / ".venv")
    with open(root / ".git" / "info" / "exclude", "a") as f:
        f.write("/.venv\n")
    out = _run(["bash", "scripts/main.sh"], root, env, timeout=600)
    assert _ran(out) == set()
    assert (root / "outputs/eval/table.md").read_text().strip() in out
    assert "outputs/eval/grids/" in out
    assert re.search(r"registered facesr v\d+ \([a-z0-9_]+\) as 'challenger'", out)
    assert re.search(r"PROMOTED|REFUSED", out)
    assert re.search(r"registry version +facesr v\d+ \(aliases: [a-z, ]*(champion|challenger)", out)  # lineage
    assert (root / ".dvc-remote").is_dir() and any((root / ".dvc-remote").rglob("*"))  # pushed to the local remote


def test_a_change_to_the_lr_operator_reruns_preparation_and_training(project):
    """The LR operator (data/degrade.py) makes every test pair and training patch: DVC must see it in every stage."""
    root, env = project["root"], project["env"]
    op = root / "src/facesr/data/degrade.py"
    text = op.read_text()
    try:
        op.write_text(text + "\n# changed\n")
        status = _run(["dvc", "status", "--json"], root, env)
        changed = set(json.loads(status))
        assert {"prepare", "pretrain", *TRAINS} <= changed, status
    finally:
        op.write_text(text)
    assert "up to date" in _run(["dvc", "status"], root, env)
