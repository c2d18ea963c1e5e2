"""facesr: face super-resolution (ESRGAN x4) with a reproducible MLOps pipeline."""

__version__ = "0.1.0"
