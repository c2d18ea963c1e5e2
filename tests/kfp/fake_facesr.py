"""A stand-in for the ``facesr`` CLI behind the KFP components (wired in through $FACESR_KFP_CLI).

It parses the same global options and verbs, writes small step folders shaped like the real ones
(docs/architecture.md), and appends one JSON line per call to $FAKE_FACESR_LOG, so a test can check what each pipeline
task ran without training anything. $FAKE_FACESR_FAIL_TRAIN_ONCE=1 makes the first `train` of each variant (and the
first `pretrain`) write a checkpoint and exit 1 (a preempted pod); the retry must then pass --resume.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    g = argparse.ArgumentParser()
    g.add_argument("--params")
    g.add_argument("--profile")
    g.add_argument("--set", action="append", default=[])
    g.add_argument("verb")
    g.add_argument("rest", nargs=argparse.REMAINDER)
    ns = g.parse_args(argv)
    v = argparse.ArgumentParser()
    for opt in ("--source", "--out", "--raw", "--data", "--variant", "--eval", "--version", "--init-from"):
        v.add_argument(opt)
    v.add_argument("--model", action="append", default=[])
    v.add_argument("--resume", action="store_true")
    v.add_argument("--restart-if-changed", action="store_true")
    a = v.parse_args(ns.rest)
    params_text = Path(ns.params).read_text() if ns.params else None
    record = {"verb": ns.verb, "profile": ns.profile, "set": ns.set, "params_text": params_text, "args": vars(a),
              "env": {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "FACESR_PIPELINE_RUN_ID")}}
    with open(os.environ["FAKE_FACESR_LOG"], "a") as f:
        f.write(json.dumps(record) + "\n")
    out = Path(a.out) if a.out else None
    if ns.verb == "ingest":
        (out / "images").mkdir(parents=True)
        (out / "images" / "a.jpg").write_bytes(b"x")
        (out / "manifest.json").write_text(json.dumps({"format": "facesr.raw/1", "source": a.source, "count": 1}))
    elif ns.verb == "prepare":
        assert (Path(a.raw) / "manifest.json").is_file(), "prepare got no raw folder"
        (out / "test" / "hr").mkdir(parents=True)
        (out / "manifest.json").write_text(json.dumps({"format": "facesr.prepared/1", "accepted": 1,
                                                        "split": {"train": 1, "test": 0}}))
    elif ns.verb in ("train", "pretrain"):
        assert (Path(a.data) / "manifest.json").is_file(), f"{ns.verb} got no prepared folder"
        if a.init_from:
            assert (Path(a.init_from) / "model.json").is_file(), f"--init-from {a.init_from}: no model folder"
        if ns.verb == "pretrain":
            a.variant = "psnr"
        ck = out / "checkpoints" / "last.pt"
        if os.environ.get("FAKE_FACESR_FAIL_TRAIN_ONCE") and not ck.exists():
            ck.parent.mkdir(parents=True)
            ck.write_text("step 1")
            print("simulated preemption", file=sys.stderr)
            return 1
        (out / "model").mkdir(parents=True, exist_ok=True)
        (out / "model" / "model.json").write_text(json.dumps({"format": "facesr.model/1", "variant": a.variant}))
        (out / "train_summary.json").write_text(json.dumps({"variant": a.variant, "resumed": a.resume}))
    elif ns.verb == "evaluate":
        names = [m.split("=", 1)[0] for m in a.model]
        for m in a.model:
            assert (Path(m.split("=", 1)[1]) / "model" / "model.json").is_file(), f"evaluate got no model: {m}"
        (out / "grids").mkdir(parents=True)
        (out / "grids" / "grid-0.png").write_bytes(b"\x89PNG fake")
        table = {n: {"psnr_y": {"mean": 20.0 + i, "ci95": [19, 21], "n": 3, "weights": "real"},
                     "lpips": {"mean": 0.3 - i / 10, "ci95": [0.2, 0.4], "n": 3, "weights": "untrained"}}
                 for i, n in enumerate(["bicubic", *names])}
        (out / "metrics.json").write_text(json.dumps(table))
        (out / "table.md").write_text("| model | psnr_y |\n|---|---|\n" + "".join(f"| {n} | x |\n" for n in table))
        (out / "manifest.json").write_text("{}")
    elif ns.verb == "register":
        assert (Path(a.eval) / "metrics.json").is_file(), "register got no eval folder"
        assert (Path(a.data) / "manifest.json").is_file(), "register got no prepared folder"
        print(f"registered {len(a.model)} models")
    elif ns.verb == "promote":
        print(f"promote version={a.version}")
    else:
        print(f"unknown verb {ns.verb}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
