"""The Kubeflow Pipelines front-end of facesr.

- ``components``: lightweight KFP components, one per step, each a thin wrapper that runs a ``facesr`` CLI verb
  (through ``facesr.kfp.runtime``) in the one facesr image, exchanging KFP artifacts that are exactly the step folders.
- ``pipeline``: the ``facesr-training`` DAG (ingest -> prepare -> train per variant in parallel -> evaluate ->
  register -> promote), GPU placement for training, retries with checkpoint resume, caching, compile.
- ``local``: the same DAG on this machine through ``kfp.local.SubprocessRunner(use_venv=False)``.
- ``remote``: submit a run and create a recurring run on a KFP server (``kfp.Client``).
"""

from __future__ import annotations
