"""MLflow pyfunc model of a facesr generator, logged as *models from code*.

``facesr.registry.register`` logs this very file with ``mlflow.pyfunc.log_model(python_model=<path of this file>,
artifacts={"model": <model folder>})``: MLflow stores a copy of the source file, not a pickle, and runs that copy on
load. So the copy must stand alone: it imports only ``mlflow``, ``numpy``, ``torch`` and the core of the ``facesr``
package (``facesr.device.resolve_device``, ``facesr.models.io.load_generator``, ``facesr.infer.upscale_tensor``), never ``facesr.registry`` or an
optional extra (dvc, kfp, kubernetes, kagglehub). Versions registered from ``src/facesr/mlflow_model.py`` hold the
same code under that name and need the same two functions. The weights are the model folder's
``generator.safetensors`` + ``model.json`` (never unpickled). Loading needs ``facesr`` installed (it is in the model's
pip requirements, with mlflow).

Input: a float32 numpy array ``[N, 3, H, W]`` with values in [0, 1] (RGB, any batch, height and width; signature
``(-1, 3, -1, -1)``). Output: float32 ``[N, 3, H*scale, W*scale]`` in [0, 1]. Large images are processed in tiles
(``facesr.infer.upscale_tensor``), so memory stays bounded. Params (optional, at predict time): ``tile`` (LR pixels,
0 = whole image) and ``overlap``.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np


class FacesrSuperResolution(mlflow.pyfunc.PythonModel):
    """x4 super-resolution with our RRDBNet generator."""

    def load_context(self, context: Any) -> None:
        from facesr.device import resolve_device
        from facesr.models.io import load_generator

        self.device = resolve_device("auto", "the pyfunc model's device")
        self.model, self.meta = load_generator(context.artifacts["model"], device=self.device)
        self.model.eval()
        self.scale = int(self.meta.get("scale", 4))

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would derive a schema from them
        import torch

        from facesr.infer import upscale_tensor

        x = np.asarray(model_input)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected float32 [N, 3, H, W] in [0, 1], got shape {x.shape}")
        if x.dtype == np.uint8:
            x = x.astype(np.float32) / 255.0
        params = params or {}
        tile, overlap = int(params.get("tile", 128)), int(params.get("overlap", 32))
        outs = []
        for img in x.astype(np.float32, copy=False):
            t = torch.from_numpy(np.ascontiguousarray(img)).to(self.device)
            outs.append(upscale_tensor(self.model, t, self.scale, tile=tile, overlap=overlap).cpu().numpy())
        return np.stack(outs).astype(np.float32)


mlflow.models.set_model(FacesrSuperResolution())
