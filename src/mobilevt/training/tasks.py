"""What the training loop needs to know about a task.

``mobilevt.training.train`` is one loop (multi-scale batches, AdamW + warmup/cosine, EMA,
mixed precision, DDP, checkpoints that resume exactly); a :class:`TrainingTask` supplies
the parts that differ between image classification, semantic segmentation and object
detection: the datasets, the model, the per-resolution augmentation of an (image, target)
pair, batching, the loss and the validation metrics. ``TrainConfig.task`` picks one by
name (:mod:`mobilevt.training.task_registry`; ``register_task`` adds one).

Dataset items are ``(image, target)``: ``image`` a uint8 ``[3, H, W]`` tensor (a
``tv_tensors.Image`` for dense tasks) or ``None`` when the file could not be decoded
(the loop counts and skips it), ``target`` whatever the task uses (a class index, a
``tv_tensors.Mask``, a dict with ``tv_tensors.BoundingBoxes`` and labels).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms import v2

from ..errors import InvalidInputError
from ..factory import create_model
from ..model_kind import ModelKind
from ..registry import get_model_entry, list_models
from ..weights.entries import PreprocessConfig
from .config import IMAGENET_EVAL_CROP, TrainConfig, TrainingError
from .data import EvalDataset, batch_mixer, build_datasets, collate_train, preprocess_config_for_eval, train_transform


class TrainingTask:
    """Base class of a trainable task; subclasses override every method that raises.

    Attributes:
        name: the ``TrainConfig.task`` value that selects the task.
        primary_metric: the key of :meth:`evaluate`'s metrics that picks
            ``best.safetensors`` (larger is better), e.g. ``"top1"``, ``"miou"``, ``"map50"``.
        metric_scale: how to print metrics: ``"%"`` for percentages, ``""`` for fractions.
    """

    name: str = ""
    primary_metric: str = ""
    metric_scale: str = ""

    def build_datasets(self, config: TrainConfig) -> tuple[Dataset, Dataset, list[str]]:
        """Train and validation datasets of ``(image, target)`` items, and the class names."""
        raise NotImplementedError

    def create_model(self, config: TrainConfig, class_names: list[str]) -> nn.Module:
        """The model to train, made with ``create_model`` (so it has
        ``model_name``), with whatever metadata ``save_weights`` should store
        (``class_names``, ``preprocess``)."""
        raise NotImplementedError

    def train_transform(self, size: tuple[int, int], config: TrainConfig) -> Callable[[Any, Any], tuple[Any, Any]]:
        """The augmentation of one training resolution ``(height, width)``: called as
        ``transform(image, target)``, returns the transformed ``(image, target)`` with
        the image a float ``[3, height, width]`` tensor in [0, 1]. torchvision
        transforms v2 do this with ``tv_tensors`` targets."""
        raise NotImplementedError

    def collate(self, batch: list[tuple[Any, Any]]) -> tuple[torch.Tensor | None, Any, int]:
        """``(images [B, 3, H, W] or None, targets, number of undecodable items)``,
        dropping the items whose image is ``None``."""
        raise NotImplementedError

    def targets_to(self, targets: Any, device: torch.device) -> Any:
        """Move a batch's targets to ``device`` (tensors by default)."""
        return targets.to(device, non_blocking=True) if isinstance(targets, torch.Tensor) else targets

    def prepare_batch(self, images: torch.Tensor, targets: Any) -> tuple[torch.Tensor, Any]:
        """A last per-batch step on the device (classification: MixUp / CutMix)."""
        return images, targets

    def training_loss(self, model: nn.Module, images: torch.Tensor, targets: Any, config: TrainConfig) -> torch.Tensor:
        """Run ``model`` (possibly DDP-wrapped: call it exactly once) and return the loss."""
        raise NotImplementedError

    def validation_loader(
        self, val_set: Dataset, config: TrainConfig, rank: int = 0, world_size: int = 1
    ) -> DataLoader:
        """The validation batches of one rank (every ``world_size``-th item from ``rank``;
        :meth:`evaluate` sums its counts over ranks)."""
        raise NotImplementedError

    def evaluate(
        self, model: nn.Module, loader: DataLoader, device: torch.device, config: TrainConfig, distributed: bool = False
    ) -> tuple[dict[str, float], int]:
        """Validation metrics (including ``primary_metric``) over the whole validation set
        and the number of undecodable images; with ``distributed`` every rank passes its
        shard and gets the whole set's figures."""
        raise NotImplementedError

    def format_metrics(self, metrics: dict[str, float]) -> str:
        """The metrics on the epoch line."""
        unit = self.metric_scale
        return ", ".join(f"val {k} {v:.2f}{unit}" if unit else f"val {k} {v:.4f}" for k, v in metrics.items())


def rank_shard(data: Dataset, rank: int, world_size: int) -> Dataset:
    """Every ``world_size``-th item from ``rank`` on: no padding, so no item counts twice."""
    return Subset(data, range(rank, len(data), world_size)) if world_size > 1 else data  # type: ignore[arg-type]


class ResizedValidation(Dataset):
    """A dense task's validation split: ``(image float [3, size, size] in [0, 1], target)``
    with the target from ``target_of(original image, target)``; an image that cannot be
    decoded gives ``(None, target_of(None, target))`` and is counted, not used."""

    def __init__(self, dataset: Dataset, size: int, target_of: Callable[[Any, Any], Any]):

        self.dataset, self.target_of = dataset, target_of
        self.resize = v2.Resize((size, size), antialias=True)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        image, target = self.dataset[index]
        if image is None:
            return None, self.target_of(None, target)
        return self.resize(image).as_subclass(torch.Tensor).float().div_(255.0), self.target_of(image, target)


class DenseTask(TrainingTask):
    """A task validated on its images resized to the training size (segmentation,
    detection); ``validation_target(original image or None, target)`` gives what its
    evaluation compares the prediction with."""

    validation_target: Callable[[Any, Any], Any]
    model_kind: ModelKind  # the kind of the models it trains
    model_prefix: str  # the head's name prefix, for the hint when a backbone is named
    with_background: bool  # class 0 is a background class the dataset does not name

    def create_model(self, config: TrainConfig, class_names: list[str]) -> nn.Module:

        entry = get_model_entry(config.model)
        if entry.kind != self.model_kind:
            choices = list_models(kind=self.model_kind)
            hint = self.model_prefix + config.model if self.model_prefix + config.model in choices else choices[0]
            raise InvalidInputError(
                f"task {self.name!r} trains {self.model_kind} models ({self.model_prefix}*), "
                f"not {config.model!r} ({entry.kind}); e.g. model: {hint}"
            )
        names = ["background", *class_names] if self.with_background else list(class_names)
        options = dict(config.model_options)
        if config.drop_path_rate:
            options["drop_path_rate"] = config.drop_path_rate
        model = create_model(config.model, weights=config.weights, num_classes=len(names), **options)
        model.class_names = names
        size = config.sampler.image_size
        # what validation and the training transforms feed: RGB in [0, 1], the whole image resized
        model.preprocess = PreprocessConfig((size, size), size, self.resize_interpolation(config), channel_order="RGB")
        return model

    def resize_interpolation(self, config: TrainConfig) -> str:
        return "bilinear"

    def validation_loader(
        self, val_set: Dataset, config: TrainConfig, rank: int = 0, world_size: int = 1
    ) -> DataLoader:
        """Batches ``(images or None, targets of the decoded images, undecodable count)`` of
        this rank's shard of :class:`ResizedValidation`."""
        data = rank_shard(
            ResizedValidation(val_set, config.sampler.image_size, type(self).validation_target), rank, world_size
        )
        return DataLoader(
            data, batch_size=config.batch_size, num_workers=config.data.workers, collate_fn=_collate_decoded
        )


def _collate_decoded(batch):
    kept = [b for b in batch if b[0] is not None]
    images = torch.stack([b[0] for b in kept]) if kept else None
    return images, [b[1] for b in kept], len(batch) - len(kept)


def sum_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """All-reduce (sum) a list of numbers over the process group (float64)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


class ClassificationTask(TrainingTask):
    """Image classification: ImageFolder or the built-in digits, RandomResizedCrop + flip
    (+ RandAugment, random erasing, MixUp / CutMix), label-smoothed cross-entropy,
    top-1 / top-5."""

    name = "classification"
    primary_metric = "top1"
    metric_scale = "%"

    def __init__(self) -> None:
        self._mixer: Callable | None = None

    def build_datasets(self, config: TrainConfig) -> tuple[Dataset, Dataset, list[str]]:

        return build_datasets(config.data, config.seed)

    def create_model(self, config: TrainConfig, class_names: list[str]) -> nn.Module:

        # with weights, everything but a head of another class count is loaded (fine-tuning)
        model = create_model(
            config.model, weights=config.weights, num_classes=len(class_names), drop_path_rate=config.drop_path_rate
        )
        model.class_names = list(class_names)
        model.preprocess = preprocess_config_for_eval(config)
        self._mixer = batch_mixer(config.augment, len(class_names))
        return model

    def train_transform(self, size: tuple[int, int], config: TrainConfig) -> Callable[[Any, Any], tuple[Any, Any]]:

        image_transform = train_transform(size, config.augment)

        def transform(image: Any, target: Any) -> tuple[Any, Any]:
            return image_transform(image), target

        return transform

    def collate(self, batch: list[tuple[Any, Any]]) -> tuple[torch.Tensor | None, Any, int]:

        return collate_train(batch)

    def prepare_batch(self, images: torch.Tensor, targets: Any) -> tuple[torch.Tensor, Any]:
        if self._mixer is not None:
            return self._mixer(images, targets)
        return images, targets

    def training_loss(self, model: nn.Module, images: torch.Tensor, targets: Any, config: TrainConfig) -> torch.Tensor:
        return F.cross_entropy(model(images).float(), targets, label_smoothing=config.label_smoothing)

    def validation_loader(
        self, val_set: Dataset, config: TrainConfig, rank: int = 0, world_size: int = 1
    ) -> DataLoader:
        return validation_loader(
            val_set,
            config.sampler.image_size,
            config.batch_size,
            config.data.workers,
            rank,
            world_size,
            config.data.eval_crop,
        )

    def evaluate(
        self, model: nn.Module, loader: DataLoader, device: torch.device, config: TrainConfig, distributed: bool = False
    ) -> tuple[dict[str, float], int]:
        top1, top5, failed = evaluate_classifier(model, loader, device, config.channels_last, distributed)
        return {"top1": top1, "top5": top5}, failed

    def format_metrics(self, metrics: dict[str, float]) -> str:
        return f"val top-1 {metrics['top1']:.2f}%"


def validation_loader(
    val_set: Dataset,
    image_size: int,
    batch_size: int,
    workers: int,
    rank: int = 0,
    world_size: int = 1,
    crop: float = IMAGENET_EVAL_CROP,
) -> DataLoader:
    """The validation batches of one rank: every ``world_size``-th image from ``rank`` on.
    No padding, so no image is counted twice; ``evaluate_classifier`` sums the counts."""
    data: Dataset = EvalDataset(val_set, image_size, crop)
    if world_size > 1:
        data = Subset(data, range(rank, len(data), world_size))
    return DataLoader(data, batch_size=batch_size, num_workers=workers, collate_fn=collate_train)


class ValidationBatches:
    """The batches of a validation loader that hold at least one decoded image, with the
    model in eval mode while they are iterated (its mode is restored at the end);
    ``failed`` counts the images that did not decode."""

    def __init__(self, model: nn.Module, loader: DataLoader) -> None:
        self.model, self.loader, self.failed = model, loader, 0

    def __iter__(self):
        was_training = self.model.training
        self.model.eval()
        try:
            for images, targets, failed_in_batch in self.loader:
                self.failed += failed_in_batch
                if images is not None:
                    yield images, targets
        finally:
            self.model.train(was_training)


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module, loader: DataLoader, device: torch.device, channels_last: bool = False, distributed: bool = False
) -> tuple[float, float, int]:
    """Top-1 and top-5 (%) over the decodable images of ``loader``, and how many images
    failed to decode. With ``distributed``, each rank passes its own shard and the counts
    are summed over ranks, so every rank returns the whole validation set's figures."""
    correct1 = correct5 = count = 0
    batches = ValidationBatches(model, loader)
    for images, targets in batches:
        images, targets = images.to(device), targets.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        logits = model(images)
        top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
        correct1 += int((top[:, 0] == targets).sum())
        correct5 += int((top == targets[:, None]).any(dim=1).sum())
        count += len(targets)
    failed = batches.failed
    if distributed:
        totals = sum_over_ranks([float(correct1), float(correct5), float(count), float(failed)], device)
        correct1, correct5, count, failed = (int(v) for v in totals)
    if count == 0:
        raise TrainingError(f"no validation image could be decoded ({failed} failed)")
    return 100.0 * correct1 / count, 100.0 * correct5 / count, failed
