"""The training run: ``train(params, data, variant, out, resume)``, the loop around ``Trainer.step``.

Variant ``psnr`` is the shared PSNR-oriented stage (``facesr pretrain``, BasicSR's RRDB_PSNR): ``pretrain.steps`` L1
steps of G on ``pretrain.hr_size`` patches; the GAN variants start from its model (``train.init_from``). Steps are
counted globally: ``1..P`` are L1 steps (``P = train.pretrain_steps``, 0 with ``train.init_from``), ``P+1..P+T`` GAN
steps (``T = train.max_steps``, else ``train.epochs`` x the steps in one epoch). Under ``torchrun --nproc_per_node=N``
it trains with DistributedDataParallel; rank 0 writes every output.

Output folder (docs/architecture.md section 3)::

    OUT/model/generator.safetensors + model.json   G-EMA (written at the end, atomically)
    OUT/checkpoints/last.pt + inputs.json           full training state (facesr.checkpoint)
    OUT/metrics.jsonl, OUT/plots/train_log.csv      the log (facesr.train.log)
    OUT/train_summary.json
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from facesr import checkpoint, locks
from facesr.config import PSNR_MODEL, Params
from facesr.device import resolve_device
from facesr.errors import FacesrError, InputError, Interrupted, Terminated, UserError
from facesr.fsutil import atomic_dir, atomic_write_json, sha256_file
from facesr.train.log import MetricsLog
from facesr.train.stream import EpochStream, init_distributed, make_dataset
from facesr.train.trainer import NonFiniteLossError, Speed, Trainer, total_steps, unwrap

log = logging.getLogger(__name__)

SUMMARY_FORMAT = "facesr.train_summary/1"


def data_manifest_sha(data: Path) -> str:
    """sha256 of a prepared folder's manifest.json; InputError when ``data`` is not a prepared folder."""
    m = data / "manifest.json"
    if not data.is_dir():
        raise InputError(f"--data {data}: folder not found (expected the output of `facesr prepare`)")
    if not m.is_file():
        raise InputError(f"--data {data}: no manifest.json (expected the output of `facesr prepare`)")
    return sha256_file(m)


def init_sha256(params: Params) -> str | None:
    """sha256 of the ``train.init_from`` weights file (a model folder's generator.safetensors), None without one."""
    from facesr.models.io import init_weights_file

    src = params.train.init_from
    if not src:
        return None
    p = init_weights_file(src)
    if not p.is_file():
        raise InputError(f"train.init_from: {p}: file not found (a facesr model folder, a .safetensors file or a "
                         "BasicSR/ESRGAN .pth)")
    return sha256_file(p)


def train(
    params: Params,
    data: Path,
    variant: str,
    out: Path,
    resume: bool = False,
    *,
    stop_at_step: int | None = None,
    progress: bool = True,
    restart_if_changed: bool = False,
) -> dict[str, Any]:
    """Train one variant on a prepared folder; write the model folder; return the summary.

    ``stop_at_step`` (for tests and preemption drills) checkpoints and returns after that global step, as if killed.
    Without ``resume``, an ``out`` that already holds a run is refused (delete it or pass --resume); with ``resume``,
    training continues from ``out/checkpoints/last.pt`` and a finished run is left as it is. With
    ``restart_if_changed`` too, a checkpoint made with other params or other prepared data is discarded and training
    starts over (what a pipeline re-run after a params or data change needs; an interruption still resumes exactly).
    Every global torch switch it sets (facesr.train.switches) is back as it was when it returns or raises.
    """
    data, out = Path(data), Path(out)
    if variant == PSNR_MODEL:
        if params.train.init_from:
            params = params.model_copy(update={"train": params.train.model_copy(update={"init_from": None})})
    else:
        params.check_variant(variant)
    # one writer per --out (rank 0 of a DDP run holds it for all ranks): a second `facesr train` gets exit 2
    verb = "facesr pretrain" if variant == PSNR_MODEL else "facesr train"
    lock = (locks.exclusive(locks.lock_file_for(out), f"--out {out}", command=verb,
                            hint="wait for that training to finish, or choose another --out")
            if os.environ.get("RANK", "0") == "0" else contextlib.nullcontext())
    with lock:
        return _train_locked(params, data, variant, out, resume, stop_at_step, progress, restart_if_changed)


def _train_locked(params: Params, data: Path, variant: str, out: Path, resume: bool, stop_at_step: int | None,
                  progress: bool, restart_if_changed: bool) -> dict[str, Any]:
    from facesr.fsutil import check_output_folder  # what --out may be: docs/data.md

    data_sha = data_manifest_sha(data)
    check_output_folder(out, markers={"train_summary.json": {SUMMARY_FORMAT}, "model/model.json": {"facesr.model/1"}},
                        own_names=("metrics.jsonl", "plots", "checkpoints", "train_summary.json"),
                        inputs=[data, *filter(None, [params.train.init_from])], replaces=False,
                        kind="training folder made by `facesr train`")
    if not resume and (checkpoint.path_in(out).exists() or (out / "model").exists()):
        raise UserError(f"--out {out}: already holds a training run; pass --resume to continue it, or delete the "
                        "folder / choose another --out to start again")
    inputs = checkpoint.Inputs(variant, params.hash(), data_sha, init_sha256(params))
    stale = resume and restart_if_changed and checkpoint.is_stale(out, inputs)
    dist = init_distributed(params.train.device)
    if stale and dist.main:
        checkpoint.discard(out)
    try:
        device = resolve_device(params.train.device, "train.device")
        speed = Speed.training(params, device)
        with speed.switches():
            trainer = Trainer(params, variant, device, dist=dist, speed=speed)
            return _run(trainer, data, inputs, out, resume and not stale, stop_at_step, progress)
    finally:
        if dist.initialised_here:
            import torch.distributed as tdist

            with contextlib.suppress(Exception):
                tdist.destroy_process_group()


def _resume(trainer: Trainer, out: Path, inputs: checkpoint.Inputs) -> None:
    """Load ``out``'s checkpoint into ``trainer`` (every field validated first: exit 2 naming it, no file touched)."""
    ck = checkpoint.load(checkpoint.path_in(out), variant=inputs.variant)
    if ck.data_manifest_sha256 != inputs.data_manifest_sha256:
        log.warning("--resume: the prepared data changed since the checkpoint (manifest sha256 differs)")
    if ck.params_hash != inputs.params_hash:
        log.warning("--resume: params differ from the checkpoint's; continuing (only max_steps/epochs changes keep "
                    "the run identical to an uninterrupted one)")
    pre = trainer.pretrain_steps
    if ck.pretrain_steps != pre and ck.step > min(pre, ck.pretrain_steps):
        raise UserError(f"--resume: the checkpoint used train.pretrain_steps={ck.pretrain_steps}, params now say "
                        f"{pre}; keep it unchanged to resume")
    checkpoint.restore(ck, trainer.load_state_dict)


def _run(trainer: Trainer, data: Path, inputs: checkpoint.Inputs, out: Path, resume: bool, stop_at_step: int | None,
         progress: bool) -> dict[str, Any]:
    params, variant, dist = trainer.params, trainer.variant, trainer.dist
    stream = EpochStream(make_dataset(params, data, variant), params, dist, pin=trainer.device.type == "cuda",
                         variant=variant)
    spe = stream.steps_per_epoch
    total = sum(total_steps(params, spe, variant))
    if resume and checkpoint.path_in(out).exists():
        _resume(trainer, out, inputs)
        log.info("resumed %s from step %d of %d", out, trainer.steps_done, total)
        if trainer.steps_done >= total and (out / "model" / "model.json").exists() \
                and (out / "train_summary.json").exists():
            log.info("%s: training already finished (%d steps); nothing to do", out, trainer.steps_done)
            summary = json.loads((out / "train_summary.json").read_text(encoding="utf-8"))
            summary["resumed_noop"] = True
            return summary
    elif resume:
        log.info("--resume: no checkpoint in %s; starting from the beginning", out)

    limit = total if stop_at_step is None else min(total, stop_at_step)
    with MetricsLog(out, trainer.steps_done, enabled=dist.main) as mlog:
        t_start = time.perf_counter()
        imgs_done = _loop(trainer, stream, mlog, inputs, out, total, limit, progress)
        elapsed = time.perf_counter() - t_start
    step = trainer.steps_done
    if dist.world > 1:
        _check_replicas(trainer)
    if step < total:  # stopped on purpose (stop_at_step)
        return {"format": SUMMARY_FORMAT, "variant": variant, "step": step, "total_steps": total, "finished": False}
    summary = _summary(trainer, stream, inputs, total, elapsed, imgs_done, mlog.final_losses())
    if dist.main:
        _write_model(trainer, out, inputs)
        atomic_write_json(out / "train_summary.json", summary)
    return summary


def _loop(trainer: Trainer, stream: EpochStream, mlog: MetricsLog, inputs: checkpoint.Inputs, out: Path, total: int,
          limit: int, progress: bool) -> int:
    """Steps up to ``limit``: log, progress, checkpoints. Returns the images trained on (all processes)."""
    tp, dist, device = trainer.params.train, trainer.dist, trainer.device
    step = last_good = trainer.steps_done

    def save() -> None:
        if dist.main:
            checkpoint.write(out, trainer.state_dict(), inputs, stream.steps_per_epoch)
            mlog.write_csv()

    pbar = None
    if progress and dist.main:
        from facesr.progress import progress as make_progress

        pbar = make_progress(total, initial=step, desc=f"train {trainer.variant}", unit="step")
    imgs_done = 0
    batches = stream.forever(step)
    try:
        with _sigterm_stops() as stopped:
            while step < limit:
                if stopped():  # SIGTERM (a preempted pod, a cancelled task): keep this step's state, then stop
                    save()
                    raise Terminated(f"training stopped by SIGTERM at step {step} of {total}. The last checkpoint "
                                     f"(step {step}) is {checkpoint.path_in(out)}; run the same command with --resume "
                                     "to continue")
                batch = next(batches)
                t0 = time.perf_counter()
                try:
                    r = trainer.step(batch)
                except NonFiniteLossError as exc:
                    raise NonFiniteLossError(f"{exc}. {_checkpoint_note(out, last_good)}; lower {exc.hint}",
                                             exc.hint) from None
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                dt = max(time.perf_counter() - t0, 1e-9)
                step = trainer.steps_done
                n_imgs = batch["hr"].shape[0] * dist.world
                imgs_done += n_imgs
                if step % tp.log_every == 0 or step == total or step == trainer.pretrain_steps:
                    mlog.append({"phase": r["phase"], "step": step, "epoch": (step - 1) // stream.steps_per_epoch, **r,
                                 "imgs_per_s": n_imgs / dt})
                if pbar is not None:
                    post = {"phase": r["phase"], "loss_g": f"{r['loss_g']:.4g}", "img/s": f"{n_imgs / dt:.1f}"}
                    if r["loss_d"] is not None:
                        post["loss_d"] = f"{r['loss_d']:.4g}"
                    pbar.set_postfix(post, refresh=False)
                    pbar.update(1)
                if step % tp.checkpoint_every == 0:
                    save()
                    last_good = step
            if step > last_good or step == 0 or not checkpoint.path_in(out).exists():
                save()
    except KeyboardInterrupt:  # Ctrl-C / SIGINT: say where the run stands and how to continue it
        raise Interrupted(f"training stopped at step {step} of {total}. {_checkpoint_note(out, last_good)}; "
                          f"run the same command with --resume to continue") from None
    finally:
        if pbar is not None:
            pbar.close()
    return imgs_done


@contextlib.contextmanager
def _sigterm_stops() -> Any:
    """While training, SIGTERM (what Kubernetes sends a preempted or deleted pod, then SIGKILL after the grace period)
    asks the loop to checkpoint the step it is at and stop with exit 143, instead of dying between checkpoints. Yields
    ``stopped() -> bool``. Only the main thread can take a signal: elsewhere SIGTERM keeps its default."""
    import signal
    import threading

    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    try:
        yield lambda: bool(got)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_replicas(trainer: Trainer) -> None:
    """DDP keeps the replicas identical; check it before rank 0 saves (cheap: one number each)."""
    import torch.distributed as tdist

    with torch.no_grad():
        mine = torch.stack([p.double().sum() for p in unwrap(trainer.g).parameters()]).sum().reshape(1)
    mine = mine.to(trainer.device)
    every = [torch.zeros_like(mine) for _ in range(trainer.dist.world)]
    tdist.all_gather(every, mine)
    if any(not torch.equal(every[0], x) for x in every):
        raise FacesrError(f"DDP: the generator replicas diverged ({[float(x) for x in every]}); not saving")


def _checkpoint_note(out: Path, last_good: int) -> str:
    """What a stopped run left: the checkpoint that really exists (its step as on disk), or that there is none yet."""
    ckpt = checkpoint.path_in(out)
    if ckpt.is_file():
        step = checkpoint.peek_step(ckpt)  # a signal during a save may have left a newer file than last_good says
        return f"The last checkpoint (step {last_good if step is None else step}) is {ckpt}"
    return (f"No checkpoint was written yet (the first comes at step train.checkpoint_every), so nothing is kept; "
            f"--resume in {out} starts from step 0")


def _untrained(provenance: dict[str, Any]) -> bool:
    return any(isinstance(v, dict) and v.get("status") != "real" for v in provenance.values())


def _summary(trainer: Trainer, stream: EpochStream, inputs: checkpoint.Inputs, total: int, elapsed: float,
             imgs_done: int, final: dict[str, Any]) -> dict[str, Any]:
    params, step, dtype = trainer.params, trainer.steps_done, trainer.speed.amp
    return {
        "format": SUMMARY_FORMAT,
        "variant": trainer.variant,
        "finished": True,
        "steps": step,
        "total_steps": total,
        "pretrain_steps": trainer.pretrain_steps,
        "gan_steps": total - trainer.pretrain_steps,
        "steps_per_epoch": stream.steps_per_epoch,
        "epochs": math.ceil(step / stream.steps_per_epoch),
        "batch_size": stream.bs,
        "world_size": trainer.dist.world,
        "device": str(trainer.device),
        "amp": str(dtype).replace("torch.", "") if dtype else "off",
        "params_hash": inputs.params_hash,
        "data_manifest_sha256": inputs.data_manifest_sha256,
        "weights": trainer.provenance,
        "untrained_weights": _untrained(trainer.provenance),
        "init_from": params.train.init_from,
        "init_sha256": inputs.init_sha256,
        "seconds_this_session": round(elapsed, 3),
        "imgs_per_s_this_session": round(imgs_done / elapsed, 3) if elapsed > 0 else None,
        "final": final,
    }


def _write_model(trainer: Trainer, out: Path, inputs: checkpoint.Inputs) -> None:
    """G-EMA and model.json into ``out/model``, atomically."""
    from facesr import __version__
    from facesr.models import io as model_io

    params = trainer.params
    gp = params.model.generator
    meta = {
        "format": "facesr.model/1",
        "arch": "RRDBNet",
        "num_in_ch": 3,
        "num_out_ch": 3,
        "num_feat": gp.num_feat,
        "num_block": gp.num_block,
        "num_grow_ch": gp.num_grow_ch,
        "scale": params.data.scale,
        "variant": trainer.variant,
        "weights": trainer.provenance,
        "untrained_weights": _untrained(trainer.provenance),
        "params_hash": inputs.params_hash,
        "data_manifest_sha256": inputs.data_manifest_sha256,
        "steps": trainer.steps_done,
        "init_sha256": inputs.init_sha256,  # the generator it started from (the psnr stage's, in the pipeline); lineage
        "facesr_version": __version__,
    }
    with atomic_dir(out / "model") as tmp:
        model_io.save_generator(trainer.ema_model(), tmp, meta)
        if not (tmp / "model.json").exists():  # io.save_generator writes it; keep the contract if it does not
            atomic_write_json(tmp / "model.json", meta)


__all__ = ["SUMMARY_FORMAT", "data_manifest_sha", "init_sha256", "train"]
