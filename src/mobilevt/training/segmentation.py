"""Semantic segmentation training (``TrainConfig.task: segmentation``).

- data: ``data.dataset`` is ``shapes`` (the synthetic shapes data set, 2000 train / 200 val
  images of 128x128, generated once into a cache folder: :func:`shapes_cache_dir`) or a
  PASCAL VOC- or ADE20K-layout folder (splits ``train`` and ``val``);
- model: a ``deeplabv3_*`` model with one output per class; ``model_options`` passes
  ``output_stride``, ``aux_head``, ``backbone_weights`` ... to ``create_model``;
- augmentation per resolution (torchvision transforms v2 on ``tv_tensors.Image`` /
  ``tv_tensors.Mask``, so the mask follows every geometric step with nearest
  interpolation): random resized crop (``augment.random_resized_crop_scale``), horizontal
  flip, photometric distortion (``augment.photometric_distort``);
- loss: cross-entropy on logits upsampled (bilinear) to the mask, 255 ignored, plus
  0.4 x the auxiliary head's (ml-cvnets' ``aux_weight``) when the model has one;
  ``class_weights: true`` weights classes per batch as ENet / ml-cvnets do;
- validation: each image resized to ``sampler.image_size`` square, logits upsampled to
  its mask's own size, mIoU from a confusion matrix summed over ranks (primary metric
  ``miou``, a fraction), pixel accuracy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2

from ..data.segmentation import open_segmentation_dataset
from ..data.segmentation_palette import IGNORE_INDEX
from ..errors import InvalidInputError
from ..model_kind import ModelKind
from ..tasks.segmentation import ConfusionMatrix
from .config import TrainConfig, TrainingError
from .tasks import DenseTask, ValidationBatches, sum_over_ranks

AUX_LOSS_WEIGHT = 0.4  # ml-cvnets' segmentation cross_entropy aux_weight
SHAPES = "shapes"
# the draw of the shapes data set that ``data.dataset: shapes`` trains on: small enough
# for minutes on a CPU, large enough to learn the three shapes from scratch
SHAPES_DRAW = dict(num_train=2000, num_val=200, image_size=128, max_shapes=3, seed=0)


def shapes_cache_dir() -> Path:
    """Where ``data.dataset: shapes`` is generated: ``$MOBILEVT_CACHE/shapes-...``
    (default ``~/.cache/mobilevt/``), one folder per draw."""
    base = os.environ.get("MOBILEVT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mobilevt")
    d = SHAPES_DRAW
    return Path(base) / f"shapes-{d['num_train']}-{d['num_val']}-{d['image_size']}px-seed{d['seed']}"


def _prepare_shapes() -> Path:
    from ..data.synthetic_shapes import write_shapes_dataset

    root = shapes_cache_dir()
    distributed = dist.is_available() and dist.is_initialized()
    if not distributed or dist.get_rank() == 0:
        write_shapes_dataset(root, **SHAPES_DRAW, reuse_existing=True)  # once; later runs find its manifest
    if distributed:
        dist.barrier()
    return root


def _mask_target(image: Any, mask: Any) -> torch.Tensor | None:
    """The validation target: the int64 mask at its own size."""
    return None if image is None else mask.as_subclass(torch.Tensor).long()


def enet_class_weights(masks: torch.Tensor, num_classes: int, norm: float = 1.1) -> torch.Tensor:
    """ENet's class weights (Paszke et al. 2016, Sec. 5.2) of one batch of masks:
    ``1 / ln(norm + frequency)`` per class, 0 for a class absent from the batch; 255 is
    not counted. ml-cvnets' ``class_weights`` option."""
    valid = masks[(masks != IGNORE_INDEX) & (masks >= 0) & (masks < num_classes)]
    counts = torch.bincount(valid.flatten(), minlength=num_classes).float()
    weights = 1.0 / torch.log(norm + counts / counts.sum().clamp(min=1.0))
    return torch.where(counts > 0, weights, torch.zeros_like(weights))


def segmentation_loss(output: Any, masks: torch.Tensor, class_weights: bool = False) -> torch.Tensor:
    """Cross-entropy (255 ignored) of logits upsampled to the masks' size; with
    ``(logits, aux_logits)``, plus ``AUX_LOSS_WEIGHT`` x the auxiliary loss; with
    ``class_weights``, each class weighted by :func:`enet_class_weights` of the batch."""
    main, aux = output if isinstance(output, tuple) else (output, None)
    size = list(masks.shape[-2:])
    weight = enet_class_weights(masks, main.shape[1]) if class_weights else None

    def loss_of(logits: torch.Tensor) -> torch.Tensor:
        logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
        return F.cross_entropy(logits, masks, weight=weight, ignore_index=IGNORE_INDEX)

    loss = loss_of(main)
    if aux is not None:
        loss = loss + AUX_LOSS_WEIGHT * loss_of(aux)
    return loss


class SegmentationTask(DenseTask):
    """Semantic segmentation with a ``deeplabv3_*`` model (see the module docstring)."""

    validation_target = staticmethod(_mask_target)

    name = "segmentation"
    primary_metric = "miou"
    model_kind = ModelKind.SEGMENTATION
    model_prefix = "deeplabv3_"
    with_background = False

    def build_datasets(self, config: TrainConfig) -> tuple[Dataset, Dataset, list[str]]:
        root = _prepare_shapes() if config.data.dataset == SHAPES else Path(config.data.dataset)
        train = open_segmentation_dataset(root, "train")
        val = open_segmentation_dataset(root, "val", layout=train.layout)
        if train.class_names != val.class_names:
            raise InvalidInputError(f"{root}: the train and val splits name different classes")
        return train, val, train.class_names

    def resize_interpolation(self, config: TrainConfig) -> str:
        return config.augment.interpolation  # the training crops' resize

    def train_transform(self, size: tuple[int, int], config: TrainConfig) -> Callable[[Any, Any], tuple[Any, Any]]:
        augment = config.augment
        steps: list = [
            v2.RandomResizedCrop(
                size,
                scale=tuple(augment.random_resized_crop_scale),
                interpolation=InterpolationMode(augment.interpolation),
                antialias=True,
            )
        ]
        if augment.hflip:
            steps.append(v2.RandomHorizontalFlip())
        if augment.photometric_distort > 0:  # after the crop: on fewer pixels (hue is costly)
            steps.append(v2.RandomPhotometricDistort(p=augment.photometric_distort))
        # scales the image only: masks keep their class indices
        steps.append(v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True))
        pipeline = v2.Compose(steps)

        def transform(image: Any, mask: Any) -> tuple[Any, Any]:
            image, mask = pipeline(tv_tensors.Image(image), tv_tensors.Mask(mask))
            return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)

        return transform

    def collate(self, batch: list[tuple[Any, Any]]) -> tuple[torch.Tensor | None, Any, int]:
        kept = [(image, mask) for image, mask in batch if image is not None]
        failed = len(batch) - len(kept)
        if not kept:
            return None, None, failed
        return torch.stack([k[0] for k in kept]), torch.stack([k[1] for k in kept]).long(), failed

    def training_loss(self, model: nn.Module, images: torch.Tensor, targets: Any, config: TrainConfig) -> torch.Tensor:
        return segmentation_loss(model(images), targets, config.class_weights)

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader: DataLoader, device: torch.device, config: TrainConfig, distributed: bool = False
    ) -> tuple[dict[str, float], int]:
        matrix = ConfusionMatrix(int(model.num_classes), device=device)
        batches = ValidationBatches(model, loader)
        for images, masks in batches:
            images = images.to(device)
            if config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            logits = model(images)
            for row, mask in enumerate(masks):
                mask = mask.to(device)
                resized = F.interpolate(
                    logits[row : row + 1].float(), size=list(mask.shape), mode="bilinear", align_corners=False
                )
                matrix.update(resized[0].argmax(0), mask)
        failed = batches.failed
        if distributed:
            matrix.all_reduce()
            failed = int(sum_over_ranks([float(failed)], device)[0])
        scores = matrix.compute()
        if scores.pixels == 0:
            raise TrainingError(
                f"no validation pixel to score: {failed} image(s) failed to decode, or every mask is 255"
            )
        return {
            "miou": scores.miou,
            "pixel_accuracy": scores.pixel_accuracy,
            "mean_accuracy": scores.mean_accuracy,
        }, failed

    def format_metrics(self, metrics: dict[str, float]) -> str:
        return f"val mIoU {metrics['miou']:.4f}, pixel accuracy {metrics['pixel_accuracy']:.4f}"
