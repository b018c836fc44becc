"""The MobileViT paper's multi-scale variable-batch sampler, for one process or many.

Each training step draws a resolution from a small set (by default {160, 192, 256, 288,
320} around a 256 base) and scales the batch so that batch x height x width stays about
constant: small images come in large batches, large images in small ones, and the GPU is
equally busy at every step. The paper reports +0.5% top-1 and fewer optimizer steps.

The plan of an epoch (sample order, and the resolution of each step) depends only on
``seed`` and the epoch, so every rank of a distributed run computes the same plan and uses
the same resolution at the same step while taking disjoint slices of each global batch.
``state_dict`` records the epoch and the step, so a run resumes mid-epoch exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

from ..errors import InvalidInputError
from ..layers.conv import make_divisible


@dataclass(frozen=True)
class Resolution:
    height: int
    width: int
    batch_size: int  # per process


def multiscale_resolutions(
    base_size: tuple[int, int] = (256, 256),
    base_batch_size: int = 128,
    min_size: tuple[int, int] = (160, 160),
    max_size: tuple[int, int] = (320, 320),
    num_scales: int = 5,
    divisor: int = 32,
) -> list[Resolution]:
    """The (height, width, batch size) set of ml-cvnets' variable-batch sampler.

    Sizes: ``num_scales`` values evenly spaced from ``min_size`` to ``max_size`` plus the
    base, each rounded to a multiple of ``divisor``. Batch sizes keep
    ``batch x height x width`` at the base's (128 at 256x256 gives 327 / 227 / 128 / 101 / 81
    at 160 / 192 / 256 / 288 / 320).
    """

    def sizes(base: int, low: int, high: int) -> list[int]:
        values = set(np.linspace(low, high, num_scales).tolist()) | {base}
        return sorted(make_divisible(v, divisor) for v in values)

    heights = sizes(base_size[0], min_size[0], max_size[0])
    widths = sizes(base_size[1], min_size[1], max_size[1])
    budget = base_size[0] * base_size[1] * base_batch_size
    pairs = {(h, w, max(1, int(round(budget / (h * w), 2)))) for h, w in zip(heights, widths)}
    return [Resolution(*p) for p in sorted(pairs)]


class MultiScaleBatchSampler(Sampler[list[tuple[int, int, int]]]):
    """Batches of ``(index, height, width)`` keys with a resolution drawn per step.

    Use with :class:`MultiScaleDataset` (or any dataset whose ``__getitem__`` takes such a
    key) as a DataLoader's ``batch_sampler``. A single resolution gives the ordinary
    fixed-size sampler (:meth:`fixed`).

    Distributed: ``rank``/``world_size`` default to the initialised process group. Each
    step's global batch is ``world_size x batch_size`` consecutive samples of the epoch's
    shuffled order; rank ``r`` takes the ``r``-th slice. The last global batch is filled by
    wrapping around to the start of the order (as ml-cvnets does), unless ``drop_last``.
    Call :meth:`set_epoch` at every epoch.
    """

    def __init__(
        self,
        num_samples: int,
        resolutions: Sequence[Resolution],
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
    ):
        if num_samples <= 0:
            raise InvalidInputError("the dataset is empty")
        if not resolutions:
            raise InvalidInputError("at least one resolution is needed")
        if world_size is None:
            world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if not 0 <= rank < world_size:
            raise InvalidInputError(f"rank {rank} is not in [0, {world_size})")
        self.num_samples = num_samples
        self.resolutions = list(resolutions)
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self._start_step = 0

    @classmethod
    def fixed(cls, num_samples: int, size: tuple[int, int], batch_size: int, **kwargs) -> MultiScaleBatchSampler:
        """One resolution: an ordinary (distributed, resumable) batch sampler."""
        return cls(num_samples, [Resolution(size[0], size[1], batch_size)], **kwargs)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's plan (call before iterating each epoch)."""
        if epoch != self.epoch:
            self._start_step = 0
        self.epoch = epoch

    def plan(self) -> list[tuple[Resolution, list[int]]]:
        """Every step of the epoch: its resolution and this rank's sample indices."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        steps = []
        position = 0
        while position < self.num_samples:
            choice = int(torch.randint(len(self.resolutions), (1,), generator=generator))
            resolution = self.resolutions[choice]
            global_batch = resolution.batch_size * self.world_size
            indices = order[position : position + global_batch]
            position += global_batch
            if len(indices) < global_batch:
                if self.drop_last:
                    break
                while len(indices) < global_batch:  # wrap around, as often as a tiny dataset needs
                    indices += order[: global_batch - len(indices)]
            mine = indices[self.rank * resolution.batch_size : (self.rank + 1) * resolution.batch_size]
            steps.append((resolution, mine))
        return steps

    @property
    def start_step(self) -> int:
        """The step the next pass starts from (non-zero after resuming mid-epoch)."""
        return self._start_step

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        start, self._start_step = self._start_step, 0  # a resume point applies once
        for step, (resolution, indices) in enumerate(self.plan()):
            if step < start:
                continue
            self._position = step + 1
            yield [(i, resolution.height, resolution.width) for i in indices]

    def __len__(self) -> int:
        return len(self.plan())

    def state_dict(self, steps_done: int | None = None) -> dict:
        """Where to resume: the epoch and the number of steps of it already done (default:
        the batches handed out so far; pass the optimizer steps taken when the DataLoader
        prefetches ahead)."""
        done = steps_done if steps_done is not None else getattr(self, "_position", 0)
        return {"epoch": self.epoch, "steps_done": int(done), "seed": self.seed, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        if state.get("world_size", self.world_size) != self.world_size:
            raise InvalidInputError(
                f"the checkpoint was taken with {state['world_size']} processes, this run has {self.world_size}: "
                "the mid-epoch position cannot be mapped; resume from an epoch boundary instead"
            )
        self.epoch = int(state["epoch"])
        self.seed = int(state.get("seed", self.seed))
        self._start_step = int(state["steps_done"])


class MultiScaleDataset(Dataset):
    """Wrap a map-style dataset of ``(image, target)`` so that the key
    ``(index, height, width)`` returns the image transformed for that resolution.

    ``transform_for_size((height, width))`` builds the training transform of one
    resolution (e.g. ``RandomResizedCrop((h, w))`` + flip + ...); one is built per
    resolution and reused. A plain integer key uses ``default_size``.

    With ``seed``, a sample's random augmentation is seeded by ``(seed, epoch, index)``
    (set ``epoch`` each epoch) instead of DataLoader worker state: a run resumed
    mid-epoch, with any number of workers, augments every sample exactly as the
    uninterrupted run does. An image of ``None`` (undecodable) is passed through.

    With ``joint``, the transform is called as ``transform(image, target)`` and returns
    both (dense tasks: a mask or boxes move with the image).
    """

    def __init__(
        self,
        dataset: Dataset,
        transform_for_size: Callable[[tuple[int, int]], Callable],
        default_size: tuple[int, int] = (256, 256),
        seed: int | None = None,
        joint: bool = False,
    ):
        self.dataset = dataset
        self.joint = joint
        self.transform_for_size = transform_for_size
        self.default_size = default_size
        self.seed = seed
        self.epoch = 0
        self._transforms: dict[tuple[int, int], Callable] = {}

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key):
        if isinstance(key, (tuple, list)):
            index, height, width = key
            size = (int(height), int(width))
        else:
            index, size = key, self.default_size
        image, target = self.dataset[index][:2]
        if image is None:
            return None, target
        if size not in self._transforms:
            self._transforms[size] = self.transform_for_size(size)
        if self.seed is None:
            return self._apply(self._transforms[size], image, target)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + int(index))
            return self._apply(self._transforms[size], image, target)

    def _apply(self, transform: Callable, image, target):
        if self.joint:
            image, target = transform(image, target)
            return image, target
        return transform(image), target
