"""TrainPatches, the training stream over them, and load_test_pairs on the shared prepared_ci fixture."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facesr.data.dataset import TrainPatches, load_test_pairs, load_train_images
from facesr.train import Dist, EpochStream, make_dataset
from facesr.data.degrade import bicubic_downscale
from facesr.errors import InputError


def _find(hr: np.ndarray, img: np.ndarray) -> bool:
    s = hr.shape[0]
    h, w = img.shape[:2]
    return any(np.array_equal(img[y:y + s, x:x + s], hr) for y in range(h - s + 1) for x in range(w - s + 1)
               if img[y, x, 0] == hr[0, 0, 0])


def test_items_shapes_and_lr_from_augmented_hr(prepared_ci):
    ds = TrainPatches(prepared_ci, 128, 4, hflip=0.5, rot90=0.5, seed=0)
    m = json.loads((prepared_ci / "manifest.json").read_text())
    assert len(ds) == m["split"]["train"]
    item = ds[0]
    assert item["hr"].dtype == torch.uint8 and item["hr"].shape == (3, 128, 128)
    assert item["lr"].dtype == torch.uint8 and item["lr"].shape == (3, 32, 32)
    hr = item["hr"].permute(1, 2, 0).numpy()
    assert np.array_equal(item["lr"].permute(1, 2, 0).numpy(), bicubic_downscale(np.ascontiguousarray(hr), 4))


def test_randomness_depends_only_on_seed_epoch_index(prepared_ci):
    a = TrainPatches(prepared_ci, 128, 4, seed=3)
    b = TrainPatches(prepared_ci, 128, 4, seed=3)
    _ = [b[i] for i in range(len(b))]  # consuming other items must not change item 1
    b.set_epoch(5)
    _ = b[0]
    b.set_epoch(0)
    assert torch.equal(a[1]["hr"], b[1]["hr"])
    lr2, hr2 = a.patch(1, epoch=2)
    b.set_epoch(2)
    assert np.array_equal(b[1]["hr"].permute(1, 2, 0).numpy(), hr2)
    # different epochs / seeds give different patches (for at least some items)
    e0 = [a.patch(i, 0)[1] for i in range(len(a))]
    e1 = [a.patch(i, 1)[1] for i in range(len(a))]
    assert sum(not np.array_equal(x, y) for x, y in zip(e0, e1)) >= len(a) // 2
    c = TrainPatches(prepared_ci, 128, 4, seed=4)
    assert any(not np.array_equal(c.patch(i, 0)[1], e0[i]) for i in range(len(a)))


def test_no_augmentation_gives_plain_crops_and_full_augmentation_transforms(prepared_ci):
    images = dict(load_train_images(prepared_ci))
    plain = TrainPatches(prepared_ci, 128, 4, hflip=0.0, rot90=0.0, seed=0)
    for i in range(min(2, len(plain))):
        _, hr = plain.patch(i)
        assert _find(hr, images[plain.names[i]])
    flip = TrainPatches(prepared_ci, 128, 4, hflip=1.0, rot90=0.0, seed=0)
    rot = TrainPatches(prepared_ci, 128, 4, hflip=0.0, rot90=1.0, seed=0)
    _, p0 = plain.patch(0)
    assert np.array_equal(flip.patch(0)[1], p0[:, ::-1])  # same crop position, flipped
    assert np.array_equal(rot.patch(0)[1], np.rot90(p0))


def _stream(p, prepared, rank=0, world=1):
    return EpochStream(make_dataset(p, prepared), p, Dist(rank=rank, world=world), pin=False)


def test_stream_shards_by_rank_and_epoch(prepared_ci, ci_params):
    """The one training data stream (facesr.train.EpochStream): disjoint ranks, an order fixed by (seed, epoch)."""
    p = ci_params
    n = len(TrainPatches(prepared_ci, 128, 4))
    bs = p.train.batch_size
    seen = []
    for rank in range(2):
        s = _stream(p, prepared_ci, rank, 2)
        batches = list(s.batches(0, 0))
        assert len(batches) == s.steps_per_epoch == (n // 2) // bs
        for b in batches:
            assert b["hr"].shape == (bs, 3, 128, 128) and b["lr"].shape == (bs, 3, 32, 32)
        seen.append(s.order(0))
    assert not set(seen[0]) & set(seen[1])  # ranks see disjoint images
    s1, s2 = _stream(p, prepared_ci), _stream(p, prepared_ci)
    assert all(torch.equal(x["hr"], y["hr"]) for x, y in zip(s1.batches(0, 0), s2.batches(0, 0)))
    assert s1.order(1) == s2.order(1) != s1.order(0)
    e1 = [b["hr"] for b in s1.batches(1, 0)]
    assert all(torch.equal(x, y["hr"]) for x, y in zip(e1, s2.batches(1, 0)))
    assert not torch.equal(e1[0], next(iter(s1.batches(0, 0)))["hr"])
    # starting mid-epoch reads exactly the rest of that epoch
    assert all(torch.equal(x, y["hr"]) for x, y in zip(e1[1:], s2.batches(1, 1)))


def test_stream_refuses_too_few_images(prepared_ci, ci_params):
    p = ci_params.model_copy(deep=True)
    p.train.batch_size = 64
    with pytest.raises(InputError, match="train.batch_size"):
        _stream(p, prepared_ci)


def test_load_test_pairs(prepared_ci):
    m = json.loads((prepared_ci / "manifest.json").read_text())
    pairs = load_test_pairs(prepared_ci)
    assert [t.name for t in pairs] == sorted(a["name"] for a in m["images"] if a["split"] == "test")
    for t in pairs:
        assert t.hr.shape == (128, 128, 3) and t.lr.shape == (32, 32, 3) and t.hr.dtype == np.uint8
        assert np.array_equal(t.lr, bicubic_downscale(t.hr, 4))
    full = load_test_pairs(prepared_ci, full=True)
    assert [t.name for t in full] == [t.name for t in pairs]
    assert all(f.hr.shape[0] == 4 * f.lr.shape[0] and f.hr.shape[0] >= 128 for f in full)


def test_not_a_prepared_folder(tmp_path):
    with pytest.raises(InputError, match="manifest.json"):
        load_test_pairs(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(InputError, match="not a facesr prepared folder"):
        TrainPatches(tmp_path, 128, 4)


def test_worker_processes_give_the_same_batches(prepared_ci, ci_params):
    p2 = ci_params.model_copy(deep=True)
    p2.data.num_workers = 2
    a = [b["hr"] for b in _stream(ci_params, prepared_ci).batches(3, 0)]
    b = [b["hr"] for b in _stream(p2, prepared_ci).batches(3, 0)]
    assert len(a) == len(b) > 0 and all(torch.equal(x, y) for x, y in zip(a, b))


def test_broken_or_missing_shard_is_an_input_error(prepared_ci, tmp_path):
    import shutil

    copy = tmp_path / "prep"
    shutil.copytree(prepared_ci, copy)
    shard = sorted((copy / "train").iterdir())[0]
    shard.write_bytes(b"\x00" * 16)
    with pytest.raises(InputError, match="unreadable training shard"):
        TrainPatches(copy, 128, 4)
    shard.unlink()
    with pytest.raises(InputError, match="missing"):
        TrainPatches(copy, 128, 4)
