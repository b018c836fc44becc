"""Semantic segmentation: per-pixel classes of images, colour masks and overlays, and
mean IoU on PASCAL VOC- and ADE20K-layout folders.

A segmentation model (``deeplabv3_*``) sees the whole image resized to its input size
(``model.preprocess.input_size``, no crop: every pixel gets a class), normalised and put
in channel order as its weights expect; its logits are resized (bilinear) back to the
image's own size before the per-pixel argmax, so masks and scores are at the original
resolution.

Mean IoU comes from a confusion matrix summed over the whole dataset: per class,
IoU = TP / (TP + FP + FN) over all its pixels, 255-labelled pixels ignored; the mean is
over the classes that occur in the ground truth or the predictions (a class absent from
both has no IoU), as ml-cvnets, mmsegmentation and torchmetrics compute it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data.images import ImageDecodeError, load_image
from ..data.preprocess import SegmentationPreprocess
from ..data.segmentation import SegmentationFolder, open_segmentation_dataset
from ..data.segmentation_palette import IGNORE_INDEX, voc_palette
from ..errors import InvalidInputError
from ..fileio import atomic_path
from ..model_kind import ModelKind
from .classification import ImageInput, _source_name, expand_image_inputs, resolve_device
from .model_io import class_names_for, transforms_for

# ---------------------------------------------------------------------------------------
# Metrics


class ConfusionMatrix:
    """Pixel counts ``matrix[true, predicted]`` over ``num_classes`` classes; labels equal
    to ``ignore_index`` (or outside ``0 .. num_classes - 1``) are not counted."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, device: str | torch.device = "cpu"):
        if num_classes < 1:
            raise InvalidInputError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, predicted: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``predicted`` and ``target`` class-index tensors of one shape."""
        if predicted.shape != target.shape:
            raise InvalidInputError(
                f"predicted {list(predicted.shape)} and target {list(target.shape)} differ in shape"
            )
        target = target.to(self.matrix.device).long().flatten()
        predicted = predicted.to(self.matrix.device).long().flatten()
        valid = (target != self.ignore_index) & (target >= 0) & (target < self.num_classes)
        k = self.num_classes
        counts = torch.bincount(target[valid] * k + predicted[valid].clamp(0, k - 1), minlength=k * k)
        self.matrix += counts.view(k, k)

    def all_reduce(self) -> None:
        """Sum the matrix over the processes of the default group (distributed evaluation)."""
        dist.all_reduce(self.matrix)

    def compute(self) -> SegmentationScores:
        return SegmentationScores.from_matrix(self.matrix)


@dataclass
class SegmentationScores:
    """mIoU and pixel accuracies of a confusion matrix. ``iou[c]`` / ``accuracy[c]`` are
    ``nan`` for a class with no pixels in the ground truth nor the predictions
    (IoU) / the ground truth (accuracy), and those classes are left out of the means."""

    miou: float
    pixel_accuracy: float
    mean_accuracy: float
    iou: list[float]
    accuracy: list[float]
    pixels: int

    @classmethod
    def from_matrix(cls, matrix: torch.Tensor) -> SegmentationScores:
        m = matrix.double().cpu()
        true_positive = m.diag()
        gt = m.sum(dim=1)
        predicted = m.sum(dim=0)
        union = gt + predicted - true_positive
        iou = torch.where(union > 0, true_positive / union.clamp(min=1), torch.full_like(union, float("nan")))
        accuracy = torch.where(gt > 0, true_positive / gt.clamp(min=1), torch.full_like(gt, float("nan")))
        total = m.sum()
        return cls(
            miou=_nanmean(iou),
            pixel_accuracy=float(true_positive.sum() / total) if total > 0 else float("nan"),
            mean_accuracy=_nanmean(accuracy),
            iou=iou.tolist(),
            accuracy=accuracy.tolist(),
            pixels=int(total),
        )


def _nanmean(values: torch.Tensor) -> float:
    present = values[~values.isnan()]
    return float(present.mean()) if present.numel() else float("nan")


def mean_iou(
    predicted: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> float:
    """mIoU of one set of class-index predictions against targets (see :class:`ConfusionMatrix`)."""
    matrix = ConfusionMatrix(num_classes, ignore_index)
    matrix.update(predicted, target)
    return matrix.compute().miou


# ---------------------------------------------------------------------------------------
# Preprocessing


def upsampled_logits(model: nn.Module, batch: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``model``'s logits for ``batch`` resized (bilinear) to ``size`` (height, width)."""
    logits = model(batch)
    if tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits.float(), size=[int(size[0]), int(size[1])], mode="bilinear", align_corners=False)
    return logits


# ---------------------------------------------------------------------------------------
# Segmenting images


@dataclass
class Segmentation:
    """One image's result: ``mask`` (int64 ``[H, W]`` class indices at the image's size),
    ``class_names``, and the class pixel fractions; ``error`` for an undecodable input."""

    source: str
    mask: torch.Tensor | None = None
    class_names: list[str] = field(default_factory=list)
    error: str = ""

    def class_fractions(self) -> dict[str, float]:
        """Fraction of the image's pixels given to each class present, largest first."""
        if self.mask is None:
            return {}
        counts = torch.bincount(self.mask.flatten(), minlength=len(self.class_names))
        total = float(self.mask.numel())
        order = counts.argsort(descending=True).tolist()
        return {self._name(i): counts[i].item() / total for i in order if counts[i] > 0}

    def _name(self, index: int) -> str:
        return self.class_names[index] if index < len(self.class_names) else str(index)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "classes": self.class_fractions(), "error": self.error}


@torch.inference_mode()
def segment(
    model: nn.Module,
    images: ImageInput | Iterable[ImageInput],
    *,
    device: str | torch.device | None = None,
    on_error: str = "raise",
) -> list[Segmentation]:
    """Per-pixel classes of each image at its own size.

    ``images``: a path, a directory (all images under it), a PIL image, a uint8
    ``[3, H, W]`` tensor, or a list of these. ``on_error="report"`` returns a
    :class:`Segmentation` with ``error`` set for an undecodable file instead of raising
    :class:`~mobilevt.data.ImageDecodeError`.
    """
    if on_error not in ("raise", "report"):
        raise InvalidInputError(f"on_error must be 'raise' or 'report', not {on_error!r}")
    device = resolve_device(device)
    model = model.to(device).eval()
    preprocess = transforms_for(model, ModelKind.SEGMENTATION).to(device)
    names = class_names_for(model, ModelKind.SEGMENTATION)
    results = []
    for item in expand_image_inputs(images):
        source = _source_name(item)
        try:
            image = item if isinstance(item, torch.Tensor) else load_image(item)
        except ImageDecodeError as exc:
            if on_error == "raise":
                raise
            results.append(Segmentation(source, error=exc.reason))
            continue
        logits = upsampled_logits(model, preprocess(image.to(device)).unsqueeze(0), image.shape[-2:])
        results.append(Segmentation(source, logits[0].argmax(0).cpu(), names))
    return results


def colorize(mask: torch.Tensor, palette: Sequence[int] | None = None) -> Image.Image:
    """A class-index mask as a palette PNG image (VOC colours by default): the pixel
    values stay the class indices, viewers show the colours."""
    values = mask.detach().cpu().numpy()
    if values.size and (values.min() < 0 or values.max() > 255):
        raise InvalidInputError("a palette image holds class indices 0..255")
    image = Image.fromarray(values.astype(np.uint8), mode="L").convert("P")
    image.putpalette(list(palette) if palette is not None else voc_palette())
    return image


def overlay(
    image: torch.Tensor | Image.Image, mask: torch.Tensor, alpha: float = 0.5, background: int = 0
) -> Image.Image:
    """The image with each non-``background`` class's colour blended in at ``alpha``."""
    if isinstance(image, Image.Image):
        image = load_image(image)
    rgb = image.permute(1, 2, 0).float()
    palette = torch.tensor(voc_palette(), dtype=torch.float32).view(256, 3)
    colours = palette[mask.long().clamp(0, 255)]
    blend = (mask != background).unsqueeze(-1).float() * alpha
    out = rgb * (1 - blend) + colours * blend
    return Image.fromarray(out.round().clamp(0, 255).to(torch.uint8).numpy(), mode="RGB")


def write_segmentation(
    result: Segmentation,
    image: torch.Tensor | Image.Image | str | os.PathLike,
    out_dir: str | os.PathLike,
    stem: str | None = None,
) -> tuple[Path, Path]:
    """Write ``<stem>_mask.png`` (palette PNG of class indices) and ``<stem>_overlay.png``
    into ``out_dir``, atomically; returns their paths."""
    if result.mask is None:
        raise InvalidInputError(f"{result.source}: no mask to write ({result.error})")
    if not isinstance(image, (torch.Tensor, Image.Image)):
        image = load_image(image)
    stem = stem or Path(result.source).stem
    out_dir = Path(out_dir)
    mask_path, overlay_path = out_dir / f"{stem}_mask.png", out_dir / f"{stem}_overlay.png"
    with atomic_path(mask_path) as tmp:
        colorize(result.mask).save(tmp, format="PNG")
    with atomic_path(overlay_path) as tmp:
        overlay(image, result.mask).save(tmp, format="PNG")
    return mask_path, overlay_path


# ---------------------------------------------------------------------------------------
# Evaluation


@dataclass
class SegmentationEvaluation:
    """mIoU, pixel accuracy and per-class IoU over a dataset (see :class:`SegmentationScores`)."""

    miou: float
    pixel_accuracy: float
    mean_accuracy: float
    iou: list[float]
    class_names: list[str]
    num_images: int
    failed: list[str]
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.num_images / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        def clean(v: float) -> float | None:
            return None if v != v else v  # nan -> null in JSON

        return {
            "miou": clean(self.miou),
            "pixel_accuracy": clean(self.pixel_accuracy),
            "mean_accuracy": clean(self.mean_accuracy),
            "per_class_iou": {n: clean(v) for n, v in zip(self.class_names, self.iou)},
            "num_images": self.num_images,
            "failed": self.failed,
            "images_per_second": clean(self.images_per_second),
        }


class _EvalItems(Dataset):
    """(preprocessed image or None, int64 mask, index) of a segmentation dataset."""

    def __init__(self, dataset: Dataset, preprocess: nn.Module):
        self.dataset = dataset
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, mask = self.dataset[index]
        if image is None:
            return None, None, index
        return self.preprocess(image.as_subclass(torch.Tensor)), mask.as_subclass(torch.Tensor).long(), index


def _collate_eval(batch):
    kept = [b for b in batch if b[0] is not None]
    failed = [b[2] for b in batch if b[0] is None]
    images = torch.stack([b[0] for b in kept]) if kept else None
    return images, [b[1] for b in kept], failed


@torch.inference_mode()
def evaluate_segmentation(
    model: nn.Module,
    data: str | os.PathLike | Dataset,
    *,
    split: str = "val",
    layout: str | None = None,
    batch_size: int = 8,
    workers: int = 0,
    limit: int | None = None,
    device: str | torch.device | None = None,
) -> SegmentationEvaluation:
    """mIoU of ``model`` on a VOC- or ADE20K-layout folder (``split``; layout detected
    unless given) or on any dataset of ``(image, mask)`` items (uint8 ``[3, H, W]`` and
    ``[H, W]`` class indices, 255 = ignore). Predictions are scored at each mask's own
    resolution. Undecodable images are skipped and listed in ``failed``."""
    dataset = open_segmentation_dataset(data, split, layout) if isinstance(data, (str, os.PathLike)) else data
    if limit is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
    base = dataset.dataset if isinstance(dataset, torch.utils.data.Subset) else dataset
    num_classes = int(model.num_classes)
    names = list(getattr(base, "class_names", None) or class_names_for(model, ModelKind.SEGMENTATION))
    if isinstance(base, SegmentationFolder) and base.num_classes != num_classes:
        raise InvalidInputError(
            f"the dataset has {base.num_classes} classes but the model predicts {num_classes}: use a model made for "
            f"this dataset (create_model(..., num_classes={base.num_classes}) and train it)"
        )
    device = resolve_device(device)
    model = model.to(device).eval()
    preprocess = transforms_for(model, ModelKind.SEGMENTATION)
    loader = DataLoader(
        _EvalItems(dataset, preprocess), batch_size=batch_size, num_workers=workers, collate_fn=_collate_eval
    )
    matrix = ConfusionMatrix(num_classes, device=device)
    failed: list[str] = []
    count = 0
    start = time.perf_counter()
    for images, masks, failures in loader:
        failed += [_item_name(base, dataset, i) for i in failures]
        if images is None:
            continue
        logits = model(images.to(device))
        for row, mask in enumerate(masks):
            mask = mask.to(device)
            per_image = F.interpolate(
                logits[row : row + 1].float(), size=list(mask.shape), mode="bilinear", align_corners=False
            )
            matrix.update(per_image[0].argmax(0), mask)
            count += 1
    seconds = time.perf_counter() - start
    scores = matrix.compute()
    return SegmentationEvaluation(
        scores.miou, scores.pixel_accuracy, scores.mean_accuracy, scores.iou, names, count, failed, seconds
    )


def _item_name(base: Dataset, dataset: Dataset, index: int) -> str:
    if isinstance(dataset, torch.utils.data.Subset):
        index = dataset.indices[index]
    images = getattr(base, "images", None)
    return str(images[index]) if images is not None else f"item {index}"


__all__: list[str] = [
    "ConfusionMatrix",
    "Segmentation",
    "SegmentationEvaluation",
    "SegmentationPreprocess",
    "SegmentationScores",
    "colorize",
    "evaluate_segmentation",
    "mean_iou",
    "overlay",
    "segment",
    "upsampled_logits",
    "write_segmentation",
]
