"""Data: ingest (sources -> raw folder), prepare (validate, deduplicate, split, shards, test pairs), datasets.

See docs/architecture.md sections 1-2 for the folder layouts and docs/data.md for the user guide.
"""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
