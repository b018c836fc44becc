"""The multi-scale variable-batch sampler: the paper's resolution/batch table, identical
resolutions and disjoint samples across ranks, reshuffling, exact mid-epoch resume, and
batches of the step's resolution through a DataLoader."""

from __future__ import annotations

import pytest
import torch
from conftest import real_photos
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from mobilevt.data import load_image
from mobilevt.data.sampler import MultiScaleBatchSampler, MultiScaleDataset, Resolution, multiscale_resolutions


def test_resolutions_match_the_paper_table():
    # MobileViT paper / ml-cvnets config: base 256x256 with 128 images per GPU.
    table = [(r.height, r.width, r.batch_size) for r in multiscale_resolutions((256, 256), 128)]
    assert table == [(160, 160, 327), (192, 192, 227), (256, 256, 128), (288, 288, 101), (320, 320, 81)]


def _epoch(sampler):
    return [list(batch) for batch in sampler]


def test_ranks_share_resolutions_and_split_samples():
    resolutions = multiscale_resolutions((64, 64), 8, (32, 32), (96, 96), num_scales=3)
    samplers = [MultiScaleBatchSampler(101, resolutions, seed=3, rank=r, world_size=3) for r in range(3)]
    epochs = [_epoch(s) for s in samplers]
    assert len({len(e) for e in epochs}) == 1
    assert len({(b[0][1], b[0][2]) for e in epochs for b in e}) > 1, "a single resolution: the test is vacuous"
    seen = []
    for step in range(len(epochs[0])):
        sizes = {(h, w) for e in epochs for (_, h, w) in e[step]}
        assert len(sizes) == 1  # every rank, every sample of the step: one resolution
        ((h, w),) = sizes
        expected_batch = next(r.batch_size for r in resolutions if (r.height, r.width) == (h, w))
        indices = [[i for i, _, _ in e[step]] for e in epochs]
        assert all(len(ix) == expected_batch for ix in indices)
        flat = [i for ix in indices for i in ix]
        if step < len(epochs[0]) - 1:
            assert len(set(flat)) == len(flat)  # disjoint across ranks
        seen += flat
    assert set(seen) == set(range(101))  # the epoch covers the dataset (the last step wraps around)


def test_reshuffled_per_epoch_and_deterministic():
    resolutions = [Resolution(32, 32, 4), Resolution(64, 64, 2)]
    sampler = MultiScaleBatchSampler(50, resolutions, seed=1)
    first = _epoch(sampler)
    assert _epoch(sampler) == first
    sampler.set_epoch(1)
    assert _epoch(sampler) != first
    assert _epoch(MultiScaleBatchSampler(50, resolutions, seed=2)) != first


def test_resume_mid_epoch_gives_the_remaining_batches():
    resolutions = multiscale_resolutions((64, 64), 6, (32, 32), (96, 96), num_scales=3)
    sampler = MultiScaleBatchSampler(200, resolutions, seed=5, rank=1, world_size=2)
    sampler.set_epoch(4)
    full = _epoch(sampler)
    iterator = iter(sampler)
    for _ in range(7):
        next(iterator)
    state = sampler.state_dict()
    assert state["epoch"] == 4 and state["steps_done"] == 7
    resumed = MultiScaleBatchSampler(200, resolutions, seed=0, rank=1, world_size=2)
    resumed.load_state_dict(state)
    assert _epoch(resumed) == full[7:]
    assert _epoch(resumed) == full  # the resume point applies to one pass only
    with pytest.raises(ValueError, match="processes"):
        MultiScaleBatchSampler(200, resolutions, world_size=4, rank=0).load_state_dict(state)


def test_drop_last_and_fixed_size():
    sampler = MultiScaleBatchSampler.fixed(10, (32, 48), 4, drop_last=True, shuffle=False)
    assert [[i for i, _, _ in b] for b in sampler] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert all((h, w) == (32, 48) for b in sampler for _, h, w in b)
    wrapped = MultiScaleBatchSampler.fixed(10, (32, 48), 4, shuffle=False)
    assert [i for i, _, _ in list(wrapped)[-1]] == [8, 9, 0, 1]


def test_dataloader_batches_have_the_step_resolution():
    photos = real_photos(6)
    dataset = [(load_image(p), i) for i, p in enumerate(photos)]

    def train_transform(size):
        return v2.Compose(
            [
                v2.RandomResizedCrop(size, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ToDtype(torch.float32, scale=True),
            ]
        )

    resolutions = [Resolution(32, 32, 3), Resolution(48, 64, 2)]
    sampler = MultiScaleBatchSampler(len(dataset), resolutions, seed=0)
    loader = DataLoader(MultiScaleDataset(dataset, train_transform), batch_sampler=sampler)
    plan = sampler.plan()
    batches = list(loader)
    assert len(batches) == len(plan)
    for (images, targets), (resolution, indices) in zip(batches, plan):
        assert images.shape == (resolution.batch_size, 3, resolution.height, resolution.width)
        assert targets.tolist() == indices


def test_seeded_dataset_augments_by_sample_not_by_call_order():
    photos = real_photos(3)
    dataset = [(load_image(p), i) for i, p in enumerate(photos)]

    def transform(size):
        return v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.ToDtype(torch.float32, scale=True)])

    seeded = MultiScaleDataset(dataset, transform, seed=4)
    forward = [seeded[(i, 32, 32)][0] for i in range(3)]
    backward = [seeded[(i, 32, 32)][0] for i in reversed(range(3))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward))
    seeded.epoch = 1  # another epoch, other crops
    assert not all(torch.equal(a, seeded[(i, 32, 32)][0]) for i, a in enumerate(forward))
