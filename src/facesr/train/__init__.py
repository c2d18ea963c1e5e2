"""Training: the shared L1 stage (``facesr pretrain``, variant ``psnr``) and ESRGAN-style GAN training of a variant.

``train(params, data, variant, out, resume)`` is the one entry point (the CLI, DVC and KFP call it). The package:

- ``trainer``: ``Trainer`` (nets, losses, optimisers, schedulers, how they run; ``step(batch)``, ``state_dict()`` /
  ``load_state_dict()``), ``Speed`` (the speed options and global switches of a run), ``EMA``, ``build_components``
- ``loop``: ``train()``, the loop around ``Trainer.step`` (resume, log, progress, checkpoints, the model folder)
- ``stream``: the data stream every step reads (``EpochStream``, ``make_dataset``, ``batch_size``) and DDP's ``Dist``
- ``log``: ``MetricsLog`` (``metrics.jsonl`` and ``plots/train_log.csv``)
- ``switches``: ``torch_switches``, the global torch switches set and restored in one place

The checkpoint format is ``facesr.checkpoint``'s.
"""

from __future__ import annotations

from facesr.config import Params
from facesr.train.log import CSV_COLUMNS, MetricsLog
from facesr.train.loop import SUMMARY_FORMAT, data_manifest_sha, init_sha256, train
from facesr.train.stream import Dist, EpochStream, batch_size, init_distributed, make_dataset
from facesr.train.switches import torch_switches
from facesr.train.trainer import (
    EMA,
    Components,
    NonFiniteLossError,
    Speed,
    Trainer,
    amp_dtype,
    build_components,
    seed_everything,
    total_steps,
)

__all__ = [
    "CSV_COLUMNS", "EMA", "SUMMARY_FORMAT", "Components", "Dist", "EpochStream", "MetricsLog", "NonFiniteLossError",
    "Params", "Speed", "Trainer", "amp_dtype", "batch_size", "build_components", "data_manifest_sha",
    "init_distributed", "init_sha256", "make_dataset", "seed_everything", "torch_switches", "total_steps", "train",
]
