"""Training and test data for the models (docs/architecture.md section 2, "Data API").

``TrainPatches`` cuts a random hr_size crop from a training image, flips it horizontally with probability
data.hflip, rotates it by 90 degrees with probability data.rot90, and makes the LR input from the augmented crop with
the one bicubic operator. The randomness of item i in epoch e comes from ``np.random.default_rng([seed, e, i])`` only,
so a resumed run or any DDP rank sees exactly the same patches (no global RNG, no worker seeding involved).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import load_file
from torch.utils.data import Dataset

from facesr.data.degrade import bicubic_downscale
from facesr.errors import InputError
from facesr.fsutil import read_json


def _manifest(prepared_dir: Path) -> dict[str, Any]:
    prepared_dir = Path(prepared_dir)
    m = read_json(prepared_dir / "manifest.json")
    if not isinstance(m, dict) or m.get("format") != "facesr.prepared/1":
        raise InputError(f"{prepared_dir / 'manifest.json'}: not a facesr prepared folder (run `facesr prepare`)")
    return m


def load_train_images(prepared_dir: Path) -> list[tuple[str, np.ndarray]]:
    """All training images of a prepared folder as (name, uint8 HWC), sorted by name."""
    prepared_dir = Path(prepared_dir)
    m = _manifest(prepared_dir)
    out: dict[str, np.ndarray] = {}
    for rel in m.get("shards", []):
        p = prepared_dir / rel
        if not p.is_file():
            raise InputError(f"{p}: training shard listed in the manifest is missing")
        try:
            out.update(load_file(str(p)))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise InputError(f"{p}: unreadable training shard ({exc})") from None
    return sorted(out.items())


def train_index(prepared_dir: Path) -> list[tuple[str, str, list[int]]]:
    """(name, shard path, shape) of every training image, sorted by name, read from the shard headers only."""
    prepared_dir = Path(prepared_dir)
    m = _manifest(prepared_dir)
    out = []
    for rel in m.get("shards", []):
        p = prepared_dir / rel
        if not p.is_file():
            raise InputError(f"{p}: training shard listed in the manifest is missing")
        try:
            with safe_open(str(p), framework="numpy") as f:
                out += [(k, str(p), list(f.get_slice(k).get_shape())) for k in f.keys()]
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise InputError(f"{p}: unreadable training shard ({exc})") from None
    return sorted(out)


class TrainPatches(Dataset):
    """Random (LR, HR) training patches: items {"lr": uint8 [3, h, w], "hr": uint8 [3, H, W]}."""

    def __init__(self, prepared_dir: Path, hr_size: int, scale: int, hflip: float = 0.5, rot90: float = 0.5,
                 seed: int = 0) -> None:
        if hr_size % scale:
            raise ValueError(f"hr_size {hr_size} is not a multiple of scale {scale}")
        self.prepared_dir = Path(prepared_dir)
        self.hr_size, self.scale = int(hr_size), int(scale)
        self.hflip, self.rot90, self.seed = float(hflip), float(rot90), int(seed)
        self.epoch = 0
        index = train_index(self.prepared_dir)
        if not index:
            raise InputError(f"{self.prepared_dir}: the training split is empty")
        small = [n for n, _, shape in index if min(shape[:2]) < self.hr_size]
        if small:
            raise InputError(f"{self.prepared_dir}: {len(small)} training image(s) are smaller than hr_size="
                             f"{self.hr_size} (e.g. {small[0]}); prepare again with the same data.hr_size")
        # images are read from the (memory-mapped) shards per item: memory stays small with any dataset size and
        # any number of DataLoader workers or DDP processes
        self.names = [n for n, _, _ in index]
        self._shards = [s for _, s, _ in index]
        self.shapes = [tuple(shape) for _, _, shape in index]

    def image(self, index: int) -> np.ndarray:
        """The stored training image ``index`` (uint8 HWC)."""
        with safe_open(self._shards[index], framework="numpy") as f:
            return f.get_tensor(self.names[index])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.names)

    def patch(self, index: int, epoch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(lr, hr) as uint8 HWC arrays for item ``index`` of ``epoch`` (default: the current epoch)."""
        e = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed, e, int(index)])
        img = self.image(index)
        h, w = img.shape[:2]
        s = self.hr_size
        y = int(rng.integers(0, h - s + 1))
        x = int(rng.integers(0, w - s + 1))
        do_flip = rng.random() < self.hflip
        do_rot = rng.random() < self.rot90
        hr = img[y:y + s, x:x + s]
        if do_flip:
            hr = hr[:, ::-1]
        if do_rot:
            hr = np.rot90(hr, k=1, axes=(0, 1))
        hr = np.array(hr, dtype=np.uint8, order="C", copy=True)
        return bicubic_downscale(hr, self.scale), hr

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        lr, hr = self.patch(index)
        return {"lr": torch.from_numpy(lr).permute(2, 0, 1).contiguous(),
                "hr": torch.from_numpy(hr).permute(2, 0, 1).contiguous()}


@dataclass(frozen=True)
class TestPair:
    name: str
    lr: np.ndarray  # uint8 HWC
    hr: np.ndarray  # uint8 HWC

    __test__ = False  # not a pytest class


def _read_png(p: Path) -> np.ndarray:
    try:
        with Image.open(p) as im:
            return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
    except (OSError, ValueError) as exc:  # truncated or foreign file in a prepared folder: name it
        raise InputError(f"{p}: cannot read the test image ({exc})") from None


def load_test_pairs(prepared_dir: Path, full: bool = False) -> list[TestPair]:
    """The fixed test pairs, sorted by name: HR crops and their LR (``full=True``: the whole test images)."""
    prepared_dir = Path(prepared_dir)
    m = _manifest(prepared_dir)
    hr_dir, lr_dir = ("full_hr", "full_lr") if full else ("hr", "lr")
    names = sorted(a["name"] for a in m.get("images", []) if a.get("split") == "test")
    pairs = []
    for n in names:
        hp, lp = prepared_dir / "test" / hr_dir / f"{n}.png", prepared_dir / "test" / lr_dir / f"{n}.png"
        if not hp.is_file() or not lp.is_file():
            raise InputError(f"{prepared_dir}: test pair {n} is missing ({hp} or {lp})")
        pairs.append(TestPair(n, _read_png(lp), _read_png(hp)))
    return pairs
