"""Full-reference perceptual metrics: LPIPS (AlexNet, v0.1) and PieAPP.

Both take batches of uint8 HWC RGB images (numpy) and return one score per image (lower is better).
Backbone weights come from ``facesr.metrics.weights``; with no file, a network with random weights is used only when
``allow_untrained`` is true, and its scores are marked ``untrained`` (they are not comparable with published numbers).
"""

from __future__ import annotations

import hashlib
import logging
import warnings

import numpy as np
import torch

from facesr.metrics.weights import WeightInfo, locate

log = logging.getLogger(__name__)


def to_tensor(images: list[np.ndarray] | np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 HWC images (same size) -> float [N, 3, H, W] in 0..1."""
    arr = np.stack([np.asarray(im) for im in images]) if isinstance(images, list) else np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float() / 255.0
    return t.to(device)


def _weights(name: str, allow_untrained: bool) -> WeightInfo:
    info = locate(name)
    if info.status == "missing" and allow_untrained:
        info.status = "untrained"
        info.reason = f"random weights (allow_untrained_weights: true): {info.reason}"
    return info


def _torch_load(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


_LPIPS_CACHE: dict[tuple, torch.nn.Module] = {}


class LPIPSMetric:
    """LPIPS v0.1 with the AlexNet trunk (the ``lpips`` package; its linear heads ship in the wheel)."""

    name = "lpips"

    def __init__(self, allow_untrained: bool, device: str | torch.device = "cpu") -> None:
        import lpips

        self.weights = _weights("alexnet", allow_untrained)
        self.heads = locate("lpips_alex_v0.1")  # the linear heads lpips loads from its own wheel
        self.weights.provenance["heads"] = self.heads.as_dict()
        self.status = self.weights.status
        if self.heads.status != "real":
            self.status = "missing"
            self.weights.reason = self.heads.reason
        self.device = torch.device(device)
        if self.status == "missing":
            self.model = None
            return
        key = (self.status, self.weights.provenance.get("sha256"), self.heads.provenance.get("sha256"), str(self.device))
        cached = _LPIPS_CACHE.get(key)
        if cached is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torchvision's 'pretrained' deprecation inside lpips
                with torch.random.fork_rng():
                    torch.manual_seed(0)  # untrained trunk: deterministic random weights
                    model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
            if self.status == "real":
                load_alexnet_trunk(model, _torch_load(self.weights.path))
            cached = model.eval().to(self.device)
            for p in cached.parameters():
                p.requires_grad_(False)
            _LPIPS_CACHE.clear()  # keep one (building AlexNet costs seconds on CPU; it is never modified)
            _LPIPS_CACHE[key] = cached
        self.model = cached

    @torch.no_grad()
    def __call__(self, sr: list[np.ndarray], hr: list[np.ndarray]) -> list[float]:
        if self.model is None:
            return [float("nan")] * len(sr)
        x = to_tensor(sr, self.device) * 2 - 1
        y = to_tensor(hr, self.device) * 2 - 1
        return [float(v) for v in self.model(x, y).flatten().cpu()]


def load_alexnet_trunk(model: torch.nn.Module, state: dict) -> None:
    """Copy a torchvision AlexNet state dict (``features.i.*``) into lpips' sliced trunk (``net.sliceK.i.*``)."""
    trunk = model.net
    target = {}
    for k in range(1, trunk.N_slices + 1):
        for idx, module in getattr(trunk, f"slice{k}").named_children():
            for pname in ("weight", "bias"):
                if getattr(module, pname, None) is not None:
                    target[f"features.{idx}.{pname}"] = getattr(module, pname)
    missing = [k for k in target if k not in state]
    if missing:
        from facesr.errors import InputError

        raise InputError(f"AlexNet weights lack {missing[:3]}...: not a torchvision AlexNet state dict")
    with torch.no_grad():
        for k, param in target.items():
            if tuple(state[k].shape) != tuple(param.shape):
                from facesr.errors import InputError

                raise InputError(f"AlexNet weights: {k} has shape {tuple(state[k].shape)}, expected {tuple(param.shape)}")
            param.copy_(state[k])


class PieAPPMetric:
    """PieAPP (Prashnani et al. 2018) with piq's network; scores as piq computes them (weighted mean over 64x64 patches).

    ``stride`` 32 makes the 64x64 patches tile a 128x128 image exactly (piq's default 27 never reaches the last
    10 pixels). Scores are signed; lower is better.
    """

    name = "pieapp"

    def __init__(self, allow_untrained: bool, device: str | torch.device = "cpu", stride: int = 32) -> None:
        from piq.pieapp import PieAPPModel

        self.weights = _weights("pieapp", allow_untrained)
        self.status = self.weights.status
        self.device = torch.device(device)
        self.stride = stride
        self._ref_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if self.status == "missing":
            self.model = None
            return
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = PieAPPModel()
        if self.status == "real":
            state = dict(_torch_load(self.weights.path))
            w = state.get("ref_score_subtract.weight")
            if w is not None and w.ndim == 1:  # piq's fix of the published file
                state["ref_score_subtract.weight"] = w.unsqueeze(1)
            model.load_state_dict(state)
        self.model = model.eval().to(self.device)
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def __call__(self, sr: list[np.ndarray], hr: list[np.ndarray]) -> list[float]:
        if self.model is None:
            return [float("nan")] * len(sr)
        x = to_tensor(sr, self.device) * 255
        n = x.shape[0]
        fx, wx = self._features(x)
        # the references are the same HR images for every model: compute their features once
        keys = [hashlib.sha1(np.ascontiguousarray(h).tobytes()).hexdigest() for h in hr]
        todo = [i for i, k in enumerate(keys) if k not in self._ref_cache]
        if todo:
            fy, wy = self._features(to_tensor([hr[i] for i in todo], self.device) * 255)
            per = fy.shape[0] // len(todo)
            for j, i in enumerate(todo):
                self._ref_cache[keys[i]] = (fy[j * per:(j + 1) * per], wy[j * per:(j + 1) * per])
        fy = torch.cat([self._ref_cache[k][0] for k in keys])
        wy = torch.cat([self._ref_cache[k][1] for k in keys])
        d, w = self.model.compute_difference(fy - fx, wy - wx)
        d, w = d.reshape(n, -1), w.reshape(n, -1)
        return [float((di * wi).sum() / wi.sum()) for di, wi in zip(d, w)]

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from piq.functional import crop_patches

        return self.model(crop_patches(x, size=64, stride=self.stride))
