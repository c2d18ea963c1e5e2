"""Load a pretrained loss network, or refuse (``UntrainedWeightsError``) unless untrained weights are allowed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from facesr import weights
from facesr.errors import UntrainedWeightsError, WeightsMissingError

log = logging.getLogger("facesr.losses")


def load_or_untrained(name: str, what: str, allow_untrained: bool, seed: int,
                      build: Callable[[], torch.nn.Module],
                      load: Callable[[torch.nn.Module, dict[str, Any]], None]) -> tuple[torch.nn.Module, dict]:
    """``(network, provenance)``: pretrained from ``facesr.weights``, or seeded random init when allowed.

    Random init is built under ``torch.random.fork_rng`` with ``seed`` so it is reproducible and leaves the caller's
    RNG untouched.
    """
    try:
        state = weights.load_state_dict(name)
    except WeightsMissingError as exc:
        if not allow_untrained:
            raise UntrainedWeightsError(
                f"{what} needs pretrained weights and refuses random ones: {exc}. To run anyway on randomly "
                "initialised weights (results meaningless, marked 'untrained'), set allow_untrained_weights: true "
                "(the ci and demo profiles do)") from None
        log.warning("%s: pretrained %s is not usable in %s; running on RANDOM weights (seed %d) because "
                    "allow_untrained_weights is true: this loss term is meaningless and the model is marked "
                    "'untrained' (get the file: `facesr weights fetch %s` or `facesr weights import DIR`)",
                    what, weights.get(name).file, weights.cache_dir(), seed, name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = build()
        return net, weights.provenance(name, used_untrained=True)
    net = build()
    try:
        load(net, state)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise WeightsMissingError(f"weights: {weights.resolve(name)} does not fit {what} ({exc}); delete it and run "
                                  f"`facesr weights fetch {name}` or `facesr weights import DIR`") from None
    return net, weights.provenance(name)
