"""Names the registry writes and reads: aliases, the tag prefix, where the per-image values are."""

from __future__ import annotations

CHALLENGER, CHAMPION = "challenger", "champion"
TAG = "facesr."  # prefix of every tag facesr sets on runs and model versions
PER_IMAGE_ARTIFACT = "eval/per_image.csv"  # a train run's per-image values (promote reads them)
