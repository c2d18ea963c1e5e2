"""Performance benchmark: training images/s (split into data, forward, backward + optimiser), inference megapixels/s,
peak memory and achieved TFLOP/s, for each loss variant, against a reference configuration measured in the same run;
and ``facesr upscale`` end to end on a synthetic large image against the generator's forward on the same tiles.

Each configuration is a ``facesr.train.Trainer`` built with a ``facesr.train.Speed``, fed by the training data stream
(``facesr.train.EpochStream``, the one ``facesr train`` reads), and timed in ``Trainer.step``; the bench sets nothing
up by hand.

* ``optimised``: ``Speed.training(params, device)``, what ``facesr train`` does with the active params: channels_last
  (``train.channels_last``), bf16 autocast on CUDA (``train.amp``), optional ``torch.compile`` (``train.compile``),
  fused Adam on CUDA, batches kept uint8 until they are on the device (pinned memory on CUDA), cudnn.benchmark and
  TF32 on CUDA (unless ``train.deterministic``).
* ``reference``: ``Speed.reference()``, the same models and losses in eager fp32, channels-first, PyTorch defaults
  (default Adam, no cudnn.benchmark), float32 batches made on the host and copied (BasicSR's ``img2tensor``).

The step is the GAN-phase step (the phase that dominates a run): a G step (G forward, D on real and fake, the
variant's loss, backward, Adam) and a D step (D on real and detached fake, relativistic loss, backward, Adam), the LR
schedulers and the EMA update. FLOPs are counted once per configuration with ``torch.utils.flop_counter``.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from facesr.config import Params
from facesr.device import resolve_device
from facesr.errors import UserError
from facesr.train import Dist, EpochStream, Speed, Trainer, data_manifest_sha, make_dataset

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

TABLE_FIELDS = ("variant", "config", "imgs_per_s", "data_ms", "forward_ms", "backward_opt_ms", "step_ms", "data_pct",
                "spread_pct", "infer_mpix_per_s", "tiles_mpix_per_s", "upscale_mpix_per_s", "upscale_ratio",
                "peak_mem_mb", "tflops", "peak_fraction", "speedup")

# targets: the GAN step of each variant vs the reference (on a GPU / on a CPU), data loading share of the step
TARGET_SPEEDUP = {"cuda": 2.0, "cpu": 1.0}
TARGET_DATA_PCT = 5.0
# `facesr upscale` end to end (read, tiles, uint8 rows, encode, write) vs the generator's forward on the same tiles
TARGET_UPSCALE_RATIO = 0.75


def settings_for(params: Params, device: torch.device, reference: bool) -> list[Speed]:
    """The configurations to measure: the reference (when asked for), then what ``facesr train`` runs."""
    opt = Speed.training(params, device)
    return [Speed.reference(), opt] if reference else [opt]


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


class _Runner:
    """One variant in one configuration: a Trainer and its data stream, ready to time steps.

    Both configurations of a variant are built first and then timed in alternating rounds (``repeat``), so a machine
    whose speed drifts (a shared VM, thermal throttling) slows both alike instead of biasing the ratio.
    """

    def __init__(self, params: Params, variant: str, device: torch.device, speed: Speed, dataset: Any) -> None:
        self.params, self.variant, self.device, self.speed = params, variant, device, speed
        cuda = device.type == "cuda"
        self._base = torch.cuda.memory_allocated(device) if cuda else 0
        with speed.switches():
            self.trainer = Trainer(params, variant, device, speed=speed, pretrain_steps=0)  # GAN steps only
        stream = EpochStream(dataset, params, Dist(), pin=cuda and speed.uint8_transfer, variant=variant,
                             uint8=speed.uint8_transfer)
        self.batches = stream.forever()
        self.flops = 0
        self.resident = 0  # bytes this runner keeps allocated between steps (CUDA)

    def step(self) -> tuple[float, float, float, int]:
        """One ``Trainer.step`` -> (data, forward, backward + optimiser + EMA) seconds and the images in the batch."""
        device = self.device
        t0 = time.perf_counter()
        b = next(self.batches)
        times: dict[str, float] = {}

        def mark(part: str) -> None:
            _sync(device)
            times[part] = time.perf_counter()

        self.trainer.step(b, mark=mark)
        fwd = (times["g_forward"] - times["data"]) + (times["d_forward"] - times["g_backward"])
        bwd = (times["g_backward"] - times["g_forward"]) + (times["ema"] - times["d_forward"])
        return times["data"] - t0, fwd, bwd, b["hr"].shape[0]

    def warm_up(self, steps: int) -> None:
        """``steps`` untimed steps; the first also counts the FLOPs of one step."""
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fc:
            self.step()
        for _ in range(steps - 1):
            self.step()
        self.flops = fc.get_total_flops()
        if self.device.type == "cuda":
            _sync(self.device)
            self.resident = torch.cuda.memory_allocated(self.device) - self._base

    def timed_round(self, steps: int) -> dict[str, float]:
        """``steps`` timed steps -> per-step means and this configuration's peak memory (MiB) in the round."""
        cuda = self.device.type == "cuda"
        if cuda:
            _sync(self.device)
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        data_t = fwd_t = bwd_t = 0.0
        imgs = 0
        for _ in range(steps):
            a, b, c, n = self.step()
            data_t, fwd_t, bwd_t, imgs = data_t + a, fwd_t + b, bwd_t + c, imgs + n
        if cuda:  # own resident state + the transient peak above what was allocated when the round began
            peak = (self.resident + torch.cuda.max_memory_allocated(self.device) - before) / 2**20
        else:
            peak = _peak_mem_mb(self.device)
        return {"data": data_t / steps, "fwd": fwd_t / steps, "bwd": bwd_t / steps,
                "step": (data_t + fwd_t + bwd_t) / steps, "imgs": imgs / steps, "peak_mb": peak}

    def inference(self, infer_size: int, warmup: int, steps: int) -> float:
        """Output megapixels per second of G in eval mode on LR inputs of ``infer_size`` px."""
        g = self.trainer.g.eval()
        scale = self.params.data.scale
        x = torch.rand(self.params.evaluate.batch_size, 3, infer_size, infer_size, device=self.device)
        x = x.contiguous(memory_format=self.trainer.fmt)
        with torch.inference_mode(), self.trainer.autocast():
            for _ in range(max(1, warmup)):
                self.trainer.g_run(x)
            _sync(self.device)
            n_inf = max(2, steps)
            t0 = time.perf_counter()
            for _ in range(n_inf):
                self.trainer.g_run(x)
            _sync(self.device)
            t_inf = time.perf_counter() - t0
        g.train()
        return n_inf * x.shape[0] * (infer_size * scale) ** 2 / 1e6 / t_inf

    def upscale_speed(self, lr_width: int, tile: int, overlap: int, batch_size: int, rounds: int,
                      workdir: Path) -> dict[str, float]:
        """Output megapixels per second of ``facesr upscale`` on a synthetic ``lr_width x 3/4 lr_width`` photo-like
        PNG (``facesr.infer.upscale``: read, tiles, uint8 bands, PNG encode, write) and of G's forward alone on the
        same tiles (``facesr.infer.iter_tiles``: the same windows and batches, nothing else), alternating, medians."""
        from PIL import Image

        from facesr import infer

        g_model = self.trainer.g.eval()
        scale = self.params.data.scale
        w, h = lr_width, max(1, lr_width * 3 // 4)
        yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
        g = torch.Generator().manual_seed(0)
        img = torch.stack([yy, xx, (yy + xx) / 2], -1) * 200 + torch.rand(h, w, 3, generator=g) * 55
        rgb = img.to(torch.uint8).numpy()
        src = workdir / "bench-upscale.png"
        Image.fromarray(rgb).save(src)
        bf16 = self.device.type == "cuda" and self.speed.amp == torch.bfloat16
        lm = infer.LoadedModel(model=g_model, meta={}, scale=scale, source="bench", device=self.device)
        lr = torch.from_numpy(rgb)

        def window(y0: int, x0: int, hh: int, ww: int) -> torch.Tensor:
            return lr[y0:y0 + hh, x0:x0 + ww].to(self.device).permute(2, 0, 1).float().div_(255.0)

        def forward_only() -> float:
            t0 = time.perf_counter()
            with torch.inference_mode():
                for _ in infer.iter_tiles(g_model, window, h, w, scale, tile, overlap, batch_size, bf16):
                    pass
            _sync(self.device)
            return time.perf_counter() - t0

        def end_to_end(i: int) -> float:
            t0 = time.perf_counter()
            rep = infer.upscale(self.params, [str(src)], lm, workdir / f"up-{self.variant}-{i}", tile=tile,
                                overlap=overlap, batch_size=batch_size, bf16=bf16, progress=False)
            _sync(self.device)
            if rep.failed:
                raise UserError(f"bench: upscale failed: {rep.failed[0]['error']}")
            return time.perf_counter() - t0

        with torch.inference_mode():  # warm-up on one window's worth
            infer.forward(g_model, window(0, 0, min(h, tile), min(w, tile))[None].contiguous(
                memory_format=infer.memory_format(g_model)), bf16)
        fwd, e2e = [], []
        for i in range(max(1, rounds)):
            fwd.append(forward_only())
            e2e.append(end_to_end(i))
        g_model.train()
        mpix = w * h * scale * scale / 1e6
        t_fwd, t_e2e = sorted(fwd)[(len(fwd) - 1) // 2], sorted(e2e)[(len(e2e) - 1) // 2]
        return {"tiles_mpix_per_s": mpix / t_fwd, "upscale_mpix_per_s": mpix / t_e2e, "upscale_ratio": t_fwd / t_e2e,
                "upscale_output_mpix": mpix}

    def row(self, rounds: list[dict[str, float]], infer_mpix: float) -> dict[str, Any]:
        """The table row: the round with the median step time (its split adds up), and the spread over rounds."""
        ordered = sorted(rounds, key=lambda r: r["step"])
        med = ordered[(len(ordered) - 1) // 2]
        step_s = med["step"]
        tflops = self.flops / step_s / 1e12 if step_s > 0 else 0.0
        peak_tf = _gpu_peak(self.device, self.speed.amp)
        return {
            "variant": self.variant,
            "config": self.speed.name,
            "imgs_per_s": med["imgs"] / step_s,
            "data_ms": 1e3 * med["data"],
            "forward_ms": 1e3 * med["fwd"],
            "backward_opt_ms": 1e3 * med["bwd"],
            "step_ms": 1e3 * step_s,
            "data_pct": 100.0 * med["data"] / step_s if step_s > 0 else 0.0,
            "spread_pct": 100.0 * (ordered[-1]["step"] - ordered[0]["step"]) / step_s if step_s > 0 else 0.0,
            "rounds_step_ms": [1e3 * r["step"] for r in rounds],
            "infer_mpix_per_s": infer_mpix,
            "peak_mem_mb": max(r["peak_mb"] for r in rounds),
            "gflop_per_step": self.flops / 1e9,
            "tflops": tflops,
            "peak_fraction": (tflops / peak_tf) if peak_tf else None,
            "setting": self.speed.describe(),
        }


def _run_all(params: Params, variants: list[str], device: torch.device, reference: bool, steps: int, warmup: int,
             repeat: int, dataset: Any, infer_size: int, upscale: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Every variant in every configuration; each runs under its own global torch switches (restored after)."""
    rows: list[dict[str, Any]] = []
    for v in variants:
        runners = [_Runner(params, v, device, s, dataset) for s in settings_for(params, device, reference)]
        for r in runners:
            with r.speed.switches():
                r.warm_up(warmup)
        rounds: list[list[dict[str, float]]] = [[] for _ in runners]
        for _ in range(repeat):  # alternate the configurations round by round
            for i, r in enumerate(runners):
                with r.speed.switches():
                    rounds[i].append(r.timed_round(steps))
        ref_ips = None
        for i, r in enumerate(runners):
            with r.speed.switches():
                row = r.row(rounds[i], r.inference(infer_size, warmup, steps))
                if upscale and r.speed.name == "optimised":  # what `facesr upscale` runs: the optimised model only
                    with tempfile.TemporaryDirectory(prefix="facesr-bench-") as td:
                        row.update(r.upscale_speed(rounds=repeat, workdir=Path(td), **upscale))
            if r.speed.name == "reference":
                ref_ips = row["imgs_per_s"]
            row["speedup"] = row["imgs_per_s"] / ref_ips if ref_ips else None
            rows.append(row)
        runners.clear()  # free this variant's models before the next one is built
        del r
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def bench(params: Params, variants: list[str] | None = None, *, steps: int = 3, warmup: int = 1, repeat: int = 3,
          data: Path | None = None, reference: bool = True, infer_size: int = 64, upscale_size: int = 512,
          upscale_tile: int = 128, upscale_overlap: int = 32, upscale_batch: int = 4) -> dict[str, Any]:
    """Measure each variant in each configuration; returns {"device", "profile", "rows": [...]}.

    ``upscale_size`` > 0: also `facesr upscale` end to end on a synthetic ``upscale_size`` x 3/4 image with the
    optimised model and the given tiles, against G's forward on the same tiles (0 = skip).
    """
    variants = [params.check_variant(v) for v in (variants or params.variants)]
    if steps < 1 or warmup < 1 or repeat < 1:
        raise UserError("--steps, --warmup and --repeat must be >= 1 (the first warm-up step counts the FLOPs)")
    if upscale_size < 0 or upscale_tile < 0 or upscale_overlap < 0 or upscale_batch < 1:
        raise UserError("--upscale-size, --upscale-tile and --upscale-overlap must be >= 0, --upscale-batch >= 1")
    upscale = ({"lr_width": upscale_size, "tile": upscale_tile, "overlap": upscale_overlap,
                "batch_size": upscale_batch} if upscale_size else None)
    device = resolve_device(params.train.device, "train.device")
    if data is not None:
        data_manifest_sha(Path(data))  # a prepared folder, or exit 2 naming it
        dataset = make_dataset(params, Path(data))  # the patches `facesr train` cuts for a GAN variant
    else:
        n = max(params.train.batch_size * 16, 32)
        dataset = _SyntheticPatches(n, params.data.hr_size, params.data.scale)
    rows = _run_all(params, variants, device, reference, steps, warmup, repeat, dataset, infer_size, upscale)
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
        "repeat": repeat,
        "infer_lr_size": infer_size,
        "upscale": ({**upscale, "lr_height": max(1, upscale_size * 3 // 4)} if upscale else None),
        "rows": rows,
    }
    return info


def format_table(result: dict[str, Any]) -> str:
    """The printed table: one line per variant and configuration."""
    head = (f"facesr bench: device={result['device']} threads={result['threads']} profile={result['profile']} "
            f"batch={result['batch_size']} hr={result['hr_size']} data={result['data']} steps={result['steps']} "
            f"repeat={result.get('repeat', 1)}")
    cols = TABLE_FIELDS
    fmt_rows = []
    for r in result["rows"]:
        cells = []
        for c in cols:
            v = r.get(c)
            if v is None:
                cells.append("-")
            elif isinstance(v, float):
                if c in ("peak_fraction", "upscale_ratio"):
                    cells.append(f"{v:.1%}")
                elif c == "speedup":
                    cells.append(f"{v:.2f}x")
                elif c.endswith("_pct"):
                    cells.append(f"{v:.1f}")
                else:
                    cells.append(f"{v:.4g}")
            else:
                cells.append(str(v))
        fmt_rows.append(cells)
    widths = [max(len(c), *(len(r[i]) for r in fmt_rows)) for i, c in enumerate(cols)]
    lines = [head, "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)) for r in fmt_rows]
    return "\n".join(lines + target_lines(result))


def target_lines(result: dict[str, Any]) -> list[str]:
    """One line per optimised row: its speedup and data share against the targets (met / NOT met / unchecked)."""
    kind = "cuda" if str(result["device"]).startswith("cuda") else "cpu"
    want = TARGET_SPEEDUP.get(kind)
    out = []
    for r in result["rows"]:
        if r["config"] != "optimised":
            continue
        parts = []
        if r.get("speedup") is None or want is None:
            parts.append("speedup unchecked (no reference in this run)")
        else:
            ok = r["speedup"] >= want
            ref = next((x for x in result["rows"] if x["variant"] == r["variant"] and x["config"] == "reference"), {})
            spread = (f" (spread of the rounds: reference {ref['spread_pct']:.0f}%, optimised {r['spread_pct']:.0f}%)"
                      if "spread_pct" in ref and "spread_pct" in r else "")
            parts.append(f"speedup {r['speedup']:.2f}x vs target >= {want:.1f}x on {kind}: {'met' if ok else 'NOT met'}"
                         + spread)
        ok = r["data_pct"] < TARGET_DATA_PCT
        parts.append(f"data {r['data_pct']:.1f}% of the step vs target < {TARGET_DATA_PCT:.0f}%: "
                     f"{'met' if ok else 'NOT met'}")
        if r.get("upscale_ratio") is not None:
            ok = r["upscale_ratio"] >= TARGET_UPSCALE_RATIO
            parts.append(f"upscale {r['upscale_mpix_per_s']:.3g} MP/s end to end = {r['upscale_ratio']:.0%} of the "
                         f"forward on the same tiles ({r['tiles_mpix_per_s']:.3g} MP/s) vs target >= "
                         f"{TARGET_UPSCALE_RATIO:.0%}: {'met' if ok else 'NOT met'}")
        out.append(f"target {r['variant']}: " + "; ".join(parts))
    return out
