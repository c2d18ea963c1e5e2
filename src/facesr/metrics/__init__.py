"""Image-quality metrics for x4 face super-resolution.

- ``fidelity``: PSNR and SSIM on the Y channel (ITU-R BT.601, as MATLAB's rgb2ycbcr / BasicSR) and on RGB, with the
  SR border crop.
- ``perceptual``: LPIPS (``lpips`` package, AlexNet, v0.1) and PieAPP (piq's network with the published weights).
- ``noref``: NIQE (the published algorithm with the pristine-model params as a weights file) and BRISQUE (piq's, with
  its SVR weights as a weights file; our DMOS predictor).
- ``ma``: Ma et al.'s no-reference SR score (NRQM; features and forests as pyiqa 0.1.16 computes them, the published
  ``NRQM_model.mat`` as a weights file; missing without it) and PI = ((10 - Ma) + NIQE) / 2 (PIRM 2018).
- ``weights``: where each metric's pretrained file comes from, and whether it is real, untrained or missing.
"""

from facesr.metrics.fidelity import psnr, rgb_to_y, ssim
from facesr.stats import LOWER_IS_BETTER  # the one definition (facesr.stats)

METRICS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "lpips", "pieapp", "niqe", "ma", "pi", "dmos")

__all__ = ["METRICS", "LOWER_IS_BETTER", "psnr", "ssim", "rgb_to_y"]
