"""Training data: datasets, per-resolution augmentation, and deterministic per-sample
randomness (so a resumed run sees exactly the augmentations the original would have)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode, v2

from ..data.datasets import DatasetLayoutError, image_folder
from ..data.images import ImageDecodeError, load_image
from ..errors import MissingDependencyError
from ..weights.entries import PreprocessConfig
from .config import IMAGENET_EVAL_CROP, AugmentConfig, DataConfig, TrainConfig


class DigitsDataset(Dataset):
    """scikit-learn's 1797 handwritten digits (8x8, 16 gray levels, real scans shipped in
    the package) as uint8 RGB images, split reproducibly into train / val."""

    def __init__(self, split: str, val_fraction: float = 0.2, seed: int = 0):
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise MissingDependencyError(
                "the digits dataset comes with scikit-learn: pip install scikit-learn"
            ) from None
        digits = load_digits()
        images = torch.from_numpy(digits.images).float().mul(255.0 / 16.0).round().to(torch.uint8)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
        n_val = int(round(len(images) * val_fraction))
        chosen = order[:n_val] if split == "val" else order[n_val:]
        self.images = images[chosen].unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
        self.targets = torch.from_numpy(digits.target)[chosen].tolist()
        self.classes = [str(i) for i in range(10)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return self.images[index], self.targets[index]


class _DecodedFolder(Dataset):
    """An ImageFolder split whose items are ``(uint8 image or None, target)``."""

    def __init__(self, root: Path):
        self.folder = image_folder(root)
        self.classes = self.folder.classes
        self.targets = self.folder.targets

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int):
        path, target = self.folder.samples[index]
        try:
            return load_image(path), target
        except ImageDecodeError:
            return None, target


def build_datasets(config: DataConfig, seed: int) -> tuple[Dataset, Dataset, list[str]]:
    if config.dataset == "digits":
        train, val = DigitsDataset("train", config.val_fraction, seed), DigitsDataset("val", config.val_fraction, seed)
        return train, val, train.classes
    root = Path(config.dataset)
    train_dir = Path(config.train_dir) if config.train_dir else root / "train"
    val_dir = Path(config.val_dir) if config.val_dir else root / "val"
    for folder in (train_dir, val_dir):
        if not folder.is_dir():
            raise DatasetLayoutError(
                f"{folder} does not exist: data.dataset must be 'digits' or an ImageFolder root with train/ and val/ "
                "(or set data.train_dir and data.val_dir)"
            )
    train, val = _DecodedFolder(train_dir), _DecodedFolder(val_dir)
    if len(set(train.targets)) < 2:
        raise DatasetLayoutError(f"{train_dir} has {len(set(train.targets))} class: a classifier needs at least 2")
    if train.folder.label_space != "folder" or val.folder.label_space != "folder":
        # wnid / index folders: keep ImageNet's label space on both splits
        return train, val, train.classes
    if train.classes != val.classes:
        raise DatasetLayoutError(
            "train and val folders differ in classes: only in train "
            f"{sorted(set(train.classes) - set(val.classes))[:5]}, "
            f"only in val {sorted(set(val.classes) - set(train.classes))[:5]}"
        )
    return train, val, train.classes


def train_transform(size: tuple[int, int], augment: AugmentConfig) -> Callable:
    interpolation = InterpolationMode(augment.interpolation)
    steps: list = [
        v2.RandomResizedCrop(
            size, scale=tuple(augment.random_resized_crop_scale), interpolation=interpolation, antialias=True
        )
    ]
    if augment.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if augment.rand_augment:
        steps.append(v2.RandAugment(interpolation=interpolation))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if augment.random_erasing > 0:
        steps.append(v2.RandomErasing(p=augment.random_erasing))
    return v2.Compose(steps)


def eval_transform(size: int, crop: float = IMAGENET_EVAL_CROP) -> Callable:
    # shorter side to size / crop (ml-cvnets' ImageNet evaluation: 293 for 256), center crop
    return v2.Compose(
        [v2.Resize(int(round(size / crop)), antialias=True), v2.CenterCrop(size), v2.ToDtype(torch.float32, scale=True)]
    )


class EvalDataset(Dataset):
    def __init__(self, dataset: Dataset, size: int, crop: float = IMAGENET_EVAL_CROP):
        self.dataset = dataset
        self.transform = eval_transform(size, crop)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        image, target = self.dataset[index]
        return (None if image is None else self.transform(image)), target


def collate_train(batch):
    """Stack decodable samples; returns ``(images, targets, failed_count)``."""
    good = [(image, target) for image, target in batch if image is not None]
    failed = len(batch) - len(good)
    if not good:
        return None, None, failed
    return torch.stack([g[0] for g in good]), torch.tensor([g[1] for g in good]), failed


def batch_mixer(augment: AugmentConfig, num_classes: int) -> Callable | None:
    """MixUp / CutMix on whole batches (torchvision v2), one of them per batch."""
    mixers = []
    if augment.mixup_alpha > 0:
        mixers.append(v2.MixUp(alpha=augment.mixup_alpha, num_classes=num_classes))
    if augment.cutmix_alpha > 0:
        mixers.append(v2.CutMix(alpha=augment.cutmix_alpha, num_classes=num_classes))
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


def preprocess_config_for_eval(config: TrainConfig):

    size = config.sampler.image_size
    return PreprocessConfig((size, size), int(round(size / config.data.eval_crop)), "bilinear")
