"""Performance benchmark: training images/s (split into data, forward, backward + optimiser), inference megapixels/s,
peak memory and achieved TFLOP/s, for each loss variant, against a reference configuration measured in the same run.

Configurations
--------------
* ``optimised``: what ``facesr train`` does with the active params: channels_last (``train.channels_last``), bf16
  autocast on CUDA (``train.amp``), optional ``torch.compile`` (``train.compile``), fused Adam on CUDA, frozen loss
  networks, batches kept uint8 until they are on the device (pinned memory on CUDA), cudnn.benchmark on CUDA.
* ``reference``: the same models and losses in eager fp32, channels-first, PyTorch defaults (default Adam, no
  cudnn.benchmark), float32 batches made on the host and copied (BasicSR's ``img2tensor`` semantics).

The step is the GAN-phase step of ``facesr.train`` (the phase that dominates a run): a G step (G forward, D on real and
fake, the variant's loss, backward, Adam) and a D step (D on real and detached fake, relativistic loss, backward, Adam),
plus the EMA update. FLOPs are counted once per configuration with ``torch.utils.flop_counter.FlopCounterMode``.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facesr.config import VARIANTS, Params
from facesr.errors import UserError

# dense peak TFLOP/s by GPU name fragment: (bf16 tensor core, fp32 incl. TF32 tensor core)
GPU_PEAK_TFLOPS: dict[str, tuple[float, float]] = {
    "H200": (989.0, 494.0),
    "H100": (989.0, 494.0),
    "A100": (312.0, 156.0),
    "L40S": (362.0, 183.0),
    "L4": (121.0, 60.0),
    "A10": (125.0, 62.5),
    "T4": (65.0, 8.1),
}

TABLE_FIELDS = ("variant", "config", "imgs_per_s", "data_ms", "forward_ms", "backward_opt_ms", "step_ms",
                "infer_mpix_per_s", "peak_mem_mb", "tflops", "peak_fraction", "speedup")


@dataclass(frozen=True)
class Setting:
    name: str
    channels_last: bool
    amp: torch.dtype | None
    fused_adam: bool
    compile: bool
    uint8_transfer: bool
    cudnn_benchmark: bool


def settings_for(params: Params, device: torch.device, reference: bool) -> list[Setting]:
    from facesr.train import amp_dtype

    cuda = device.type == "cuda"
    opt = Setting("optimised", params.train.channels_last, amp_dtype(params, device), cuda, params.train.compile,
                  True, cuda)
    ref = Setting("reference", False, None, False, False, False, False)
    return [ref, opt] if reference else [opt]


class _SyntheticPatches(torch.utils.data.Dataset):
    """Random uint8 HR patches and their LR (area-downscaled): the data loader's cost without a prepared folder."""

    def __init__(self, n: int, hr: int, scale: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.hr = (torch.rand(n, 3, hr, hr, generator=g) * 255).to(torch.uint8)
        self.lr = torch.nn.functional.avg_pool2d(self.hr.float(), scale).round().to(torch.uint8)

    def __len__(self) -> int:
        return len(self.hr)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"lr": self.lr[i], "hr": self.hr[i]}


class _AsFloat(torch.utils.data.Dataset):
    """BasicSR semantics: the dataset returns float32 tensors in [0, 1] (made on the host)."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = self.ds[i]
        return {k: item[k].float().div(255.0) for k in ("lr", "hr")}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batches(ds: Any, bs: int, workers: int, pin: bool) -> Iterator[dict[str, torch.Tensor]]:
    while True:
        loader = torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, drop_last=True, num_workers=workers,
                                             pin_memory=pin)
        yield from loader


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def _gpu_peak(device: torch.device, amp: torch.dtype | None) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (bf16, fp32) in GPU_PEAK_TFLOPS.items():
        if key in name:
            return bf16 if amp is not None else fp32
    return None


def _measure(params: Params, variant: str, device: torch.device, s: Setting, steps: int, warmup: int,
             dataset: Any, infer_size: int) -> dict[str, Any]:
    from torch.utils.flop_counter import FlopCounterMode

    from facesr import train as tr

    torch.backends.cudnn.benchmark = s.cudnn_benchmark
    if device.type == "cuda":  # as facesr.train: TF32 matmuls when optimised; PyTorch's default (off) for the reference
        torch.backends.cuda.matmul.allow_tf32 = s.cudnn_benchmark
    tr.seed_everything(params.seed)
    comp = tr.build_components(params, variant, device)
    fmt = torch.channels_last if s.channels_last else torch.contiguous_format
    g = comp.generator.to(device, memory_format=fmt)
    d = comp.discriminator.to(device, memory_format=fmt)
    loss_fn = comp.gen_loss.to(device, memory_format=fmt)
    loss_fn.eval()
    for p in loss_fn.parameters():
        p.requires_grad_(False)
    kw: dict[str, Any] = {"betas": tuple(params.train.betas)}
    if s.fused_adam:
        kw["fused"] = True
    opt_g = torch.optim.Adam(g.parameters(), lr=params.train.lr_g, **kw)
    opt_d = torch.optim.Adam(d.parameters(), lr=params.train.lr_d, **kw)
    ema = tr.EMA(g, params.train.ema_decay)
    g_run: nn.Module = torch.compile(g) if s.compile else g
    d_run: nn.Module = torch.compile(d) if s.compile else d

    cuda = device.type == "cuda"
    ds = dataset if s.uint8_transfer else _AsFloat(dataset)
    it = _batches(ds, params.train.batch_size, params.data.num_workers, pin=cuda and s.uint8_transfer)

    def autocast() -> contextlib.AbstractContextManager[Any]:
        if s.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=s.amp)

    def to_dev(x: torch.Tensor) -> torch.Tensor:
        if s.uint8_transfer:
            x = x.to(device, non_blocking=True).float().div_(255.0)
        else:
            x = x.to(device)
        return x.contiguous(memory_format=fmt)

    def step() -> tuple[float, float, float, int]:
        t0 = time.perf_counter()
        b = next(it)
        lr, hr = to_dev(b["lr"]), to_dev(b["hr"])
        _sync(device)
        times = {"data": time.perf_counter()}

        def mark(phase: str) -> None:
            _sync(device)
            times[phase] = time.perf_counter()

        # the trainer's own GAN step (facesr.train.gan_step), timed phase by phase
        tr.gan_step(g_run, d, d, d_run, loss_fn, comp.disc_loss, opt_g, opt_d, lr, hr, autocast, mark=mark)
        ema.update(g)
        mark("ema")
        fwd = (times["g_forward"] - times["data"]) + (times["d_forward"] - times["g_backward"])
        bwd = (times["g_backward"] - times["g_forward"]) + (times["ema"] - times["d_forward"])
        return times["data"] - t0, fwd, bwd, hr.shape[0]

    g.train()
    d.train()
    with FlopCounterMode(display=False) as fc:  # the first warm-up step also counts the FLOPs of one step
        step()
    for _ in range(warmup - 1):
        step()
    flops = fc.get_total_flops()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    data_t = fwd_t = bwd_t = 0.0
    imgs = 0
    for _ in range(steps):
        a, b, c, n = step()
        data_t, fwd_t, bwd_t, imgs = data_t + a, fwd_t + b, bwd_t + c, imgs + n
    total = data_t + fwd_t + bwd_t
    peak = _peak_mem_mb(device)

    # inference: G (eval) on LR inputs of infer_size px, output megapixels per second
    g.eval()
    scale = params.data.scale
    x = torch.rand(params.evaluate.batch_size, 3, infer_size, infer_size, device=device).contiguous(memory_format=fmt)
    with torch.inference_mode(), autocast():
        for _ in range(max(1, warmup)):
            g_run(x)
        _sync(device)
        n_inf = max(2, steps)
        t0 = time.perf_counter()
        for _ in range(n_inf):
            g_run(x)
        _sync(device)
        t_inf = time.perf_counter() - t0
    mpix = n_inf * x.shape[0] * (infer_size * scale) ** 2 / 1e6

    step_s = total / steps
    tflops = flops / step_s / 1e12 if step_s > 0 else 0.0
    peak_tf = _gpu_peak(device, s.amp)
    return {
        "variant": variant,
        "config": s.name,
        "imgs_per_s": imgs / total,
        "data_ms": 1e3 * data_t / steps,
        "forward_ms": 1e3 * fwd_t / steps,
        "backward_opt_ms": 1e3 * bwd_t / steps,
        "step_ms": 1e3 * step_s,
        "infer_mpix_per_s": mpix / t_inf,
        "peak_mem_mb": peak,
        "gflop_per_step": flops / 1e9,
        "tflops": tflops,
        "peak_fraction": (tflops / peak_tf) if peak_tf else None,
        "setting": {k: (str(v).replace("torch.", "") if isinstance(v, torch.dtype) else v)
                    for k, v in s.__dict__.items()},
    }


def _run_all(params: Params, variants: list[str], device: torch.device, reference: bool, steps: int, warmup: int,
             dataset: Any, infer_size: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for v in variants:
        ref_ips = None
        for s in settings_for(params, device, reference):
            r = _measure(params, v, device, s, steps, warmup, dataset, infer_size)
            if s.name == "reference":
                ref_ips = r["imgs_per_s"]
            r["speedup"] = r["imgs_per_s"] / ref_ips if ref_ips else None
            rows.append(r)
    return rows


def bench(params: Params, variants: list[str] | None = None, *, steps: int = 3, warmup: int = 1,
          data: Path | None = None, reference: bool = True, infer_size: int = 64) -> dict[str, Any]:
    """Measure each variant in each configuration; returns {"device", "profile", "rows": [...]}."""
    from facesr import train as tr

    variants = list(variants or VARIANTS)
    for v in variants:
        if v not in VARIANTS:
            raise UserError(f"--variant {v!r}: unknown variant; allowed: {', '.join(VARIANTS)}")
    if steps < 1 or warmup < 1:
        raise UserError("--steps and --warmup must be >= 1 (the first warm-up step counts the FLOPs)")
    device = tr.resolve_device(params.train.device)
    if data is not None:
        tr._data_manifest_sha(Path(data))
        dataset = tr.make_dataset(params, Path(data))
    else:
        n = max(params.train.batch_size * 4, 16)
        dataset = _SyntheticPatches(n, params.data.hr_size, params.data.scale)
    rows: list[dict[str, Any]] = []
    saved_benchmark = torch.backends.cudnn.benchmark
    try:
        rows = _run_all(params, variants, device, reference, steps, warmup, dataset, infer_size)
    finally:
        torch.backends.cudnn.benchmark = saved_benchmark
    info = {
        "device": str(device) if device.type != "cuda" else f"cuda ({torch.cuda.get_device_name(device)})",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "profile": params.profile,
        "batch_size": params.train.batch_size,
        "hr_size": params.data.hr_size,
        "generator": params.model.generator.model_dump(),
        "data": str(data) if data else "synthetic",
        "steps": steps,
        "warmup": warmup,
        "infer_lr_size": infer_size,
        "rows": rows,
    }
    return info


def format_table(result: dict[str, Any]) -> str:
    """The printed table: one line per variant and configuration."""
    head = (f"facesr bench: device={result['device']} threads={result['threads']} profile={result['profile']} "
            f"batch={result['batch_size']} hr={result['hr_size']} data={result['data']} steps={result['steps']}")
    cols = TABLE_FIELDS
    fmt_rows = []
    for r in result["rows"]:
        cells = []
        for c in cols:
            v = r.get(c)
            if v is None:
                cells.append("-")
            elif isinstance(v, float):
                cells.append(f"{v:.1%}" if c == "peak_fraction" else (f"{v:.2f}x" if c == "speedup" else
                                                                       f"{v:.4g}"))
            else:
                cells.append(str(v))
        fmt_rows.append(cells)
    widths = [max(len(c), *(len(r[i]) for r in fmt_rows)) for i, c in enumerate(cols)]
    lines = [head, "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)) for r in fmt_rows]
    return "\n".join(lines)
