"""Full-reference perceptual metrics: LPIPS (AlexNet, v0.1) and PieAPP.

Both take batches of uint8 HWC RGB images (numpy) and return one score per image (lower is better).
Backbone weights come from ``facesr.metrics.weights``; with no file, a network with random weights is used only when
``allow_untrained`` is true, and its scores are marked ``untrained`` (they are not comparable with published numbers).
"""

from __future__ import annotations

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
    """PieAPP (Prashnani et al. 2018): our ``facesr.models.pieapp.PieAPPNet`` (piq's network and maths; tested equal to
    ``piq.PieAPP`` on the same state dict) with the published weights; weighted mean of patch scores per image.

    ``stride`` 32 with whole-image patch coverage (64x64 patches; a 128x128 image is tiled exactly). Scores are
    signed; lower is better.
    """

    name = "pieapp"

    def __init__(self, allow_untrained: bool, device: str | torch.device = "cpu", stride: int = 32) -> None:
        from facesr.models.pieapp import PieAPPNet, fix_state_dict

        self.weights = _weights("pieapp", allow_untrained)
        self.status = self.weights.status
        self.device = torch.device(device)
        self.stride = stride
        if self.status == "missing":
            self.model = None
            return
        with torch.random.fork_rng():
            torch.manual_seed(0)  # untrained: deterministic random weights
            model = PieAPPNet()
        if self.status == "real":
            model.load_state_dict(fix_state_dict(_torch_load(self.weights.path)))
        self.model = model.eval().to(self.device)
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def __call__(self, sr: list[np.ndarray], hr: list[np.ndarray]) -> list[float]:
        return self.score_models({"x": sr}, hr)["x"]

    @torch.no_grad()
    def score_models(self, srs: dict[str, list[np.ndarray]], hr: list[np.ndarray], batch_size: int = 8) -> dict[str, list[float]]:
        """Score several models' outputs against the same references; each reference's features are computed once."""
        if self.model is None:
            return {k: [float("nan")] * len(hr) for k in srs}
        from facesr.models.pieapp import PATCH, extract_patches

        out: dict[str, list[float]] = {k: [] for k in srs}
        for i in range(0, len(hr), batch_size):
            ref = to_tensor(hr[i:i + batch_size], self.device)
            ref_feats = self.model.features(extract_patches(ref * 255.0, PATCH, self.stride))
            for k, images in srs.items():
                x = to_tensor(images[i:i + batch_size], self.device)
                out[k].extend(float(v) for v in self.model.score(x, ref, self.stride, 1.0, ref_features=ref_feats))
        return out
