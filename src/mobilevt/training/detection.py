"""Object detection training (``TrainConfig.task: detection``) with SSDLite.

- data: ``data.dataset`` is ``shapes`` (the synthetic shapes data set with COCO boxes,
  generated once into a cache folder) or a COCO-layout folder: ``annotations/instances_
  {train,val}[2017].json`` and the images in ``{train,val}2017/``, ``images/{train,val}[2017]/``
  or ``JPEGImages/``. Training images without boxes are left out (as ml-cvnets does);
- model: an ``ssdlite_*`` model with one logit per category plus the background;
  ``model_options`` passes ``backbone_weights`` (an ImageNet classifier checkpoint, how
  ml-cvnets starts its detectors), ``score_threshold`` ... to ``create_model``;
- augmentation per resolution with torchvision transforms v2 on ``tv_tensors.Image`` and
  ``tv_tensors.BoundingBoxes`` (SSD's): photometric distortion
  (``augment.photometric_distort``), zoom-out (``augment.zoom_out``: probability, up to
  ``augment.zoom_out_max`` x the size, filled with the ImageNet mean), random IoU crop
  (``augment.iou_crop``), horizontal flip, resize to the batch's resolution, then
  ``SanitizeBoundingBoxes`` drops boxes that became degenerate or left the image;
- loss: anchors matched to the boxes at IoU 0.5 (each box also claims its best anchor),
  SSD multibox loss: smooth L1 on the matched boxes' regression + cross-entropy on the
  positives and 3x as many hard negatives (``label_smoothing`` applies), over the
  positives (:func:`mobilevt.ops.ssd_multibox_loss`);
- validation: images resized to ``sampler.image_size`` square, detections (score > the
  model's 0.01, NMS) scaled back to each image, COCO mAP with pycocotools on the
  annotation file; primary metric ``map50`` (mAP@0.5), also ``map`` (mAP@[.5:.95]).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..data.coco import CocoDetection
from ..data.datasets import DatasetLayoutError
from ..model_kind import ModelKind
from ..ops.ssd import match_anchors, ssd_multibox_loss
from .config import TrainConfig
from .tasks import DenseTask, ResizedValidation, ValidationBatches, sum_over_ranks

SHAPES = "shapes"
# RandomZoomOut's canvas: the ImageNet mean colour (torchvision's SSD recipe)
_ZOOM_FILL = (124, 116, 104)


def _shapes_dataset() -> Path:
    from .segmentation import _prepare_shapes  # one cached copy for both dense tasks

    return _prepare_shapes()


def open_coco_split(root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """(images folder, annotation file) of ``split`` ("train" / "val") in a COCO-layout
    folder; the error names every place looked at."""
    root = Path(root)
    annotation_candidates = [
        root / "annotations" / f"instances_{split}2017.json",
        root / "annotations" / f"instances_{split}.json",
    ]
    image_candidates = [
        root / f"{split}2017",
        root / "images" / f"{split}2017",
        root / "images" / split,
        root / split,
        root / "JPEGImages",
    ]
    annotations = next((p for p in annotation_candidates if p.is_file()), None)
    images = next((p for p in image_candidates if p.is_dir()), None)
    if annotations is None or images is None:
        raise DatasetLayoutError(
            f"{root} is not a COCO-layout folder for split {split!r}: looked for "
            f"{' or '.join(str(p.relative_to(root)) for p in annotation_candidates)} and an images folder "
            f"{' or '.join(str(p.relative_to(root)) + '/' for p in image_candidates)}"
        )
    return images, annotations


def _image_info(image: Any, target: dict[str, Any]) -> tuple[int, tuple[int, int]]:
    """The validation target: the COCO image id and the image's original (height, width)."""
    size = tuple(target["boxes"].canvas_size) if image is None else tuple(image.shape[-2:])
    return target["image_id"], size


class DetectionTask(DenseTask):
    """SSDLite object detection: COCO-format data, SSD augmentation, multibox loss, COCO mAP."""

    validation_target = staticmethod(_image_info)

    name = "detection"
    primary_metric = "map50"
    model_kind = ModelKind.DETECTION
    model_prefix = "ssdlite_"
    with_background = True

    def build_datasets(self, config: TrainConfig) -> tuple[Dataset, Dataset, list[str]]:
        if config.data.dataset == SHAPES:
            root = _shapes_dataset()
            train_split = (root / "JPEGImages", root / "annotations" / "instances_train.json")
            val_split = (root / "JPEGImages", root / "annotations" / "instances_val.json")
        else:
            train_split = open_coco_split(config.data.dataset, "train")
            val_split = open_coco_split(config.data.dataset, "val")
        train_set = CocoDetection(*train_split, skip_empty=True)
        val_set = CocoDetection(*val_split)
        if train_set.class_names != val_set.class_names:
            raise DatasetLayoutError(
                f"train and val annotation files list different categories: {train_set.class_names} vs "
                f"{val_set.class_names}"
            )
        if len(train_set) == 0:
            raise DatasetLayoutError(f"{train_split[1]}: no training image has a box")
        return train_set, val_set, list(train_set.class_names)

    def train_transform(self, size: tuple[int, int], config: TrainConfig) -> Callable[[Any, Any], tuple[Any, Any]]:
        augment = config.augment
        steps: list[nn.Module] = []
        photometric = getattr(augment, "photometric_distort", 0.0)
        if photometric > 0:
            steps.append(v2.RandomPhotometricDistort(p=photometric))
        if augment.zoom_out > 0:
            steps.append(
                v2.RandomZoomOut(
                    fill={tv_tensors.Image: _ZOOM_FILL, "others": 0},
                    side_range=(1.0, augment.zoom_out_max),
                    p=augment.zoom_out,
                )
            )
        if augment.iou_crop:
            steps.append(v2.RandomIoUCrop())
        if augment.hflip:
            steps.append(v2.RandomHorizontalFlip())
        steps += [v2.Resize(size, antialias=True), v2.SanitizeBoundingBoxes(min_size=1.0)]
        pipeline = v2.Compose(steps)
        height, width = size

        def transform(image: Any, target: Any) -> tuple[Any, Any]:
            image, target = pipeline(image, {"boxes": target["boxes"], "labels": target["labels"]})
            scale = torch.tensor([width, height, width, height], dtype=torch.float32)
            boxes = target["boxes"].as_subclass(torch.Tensor).float() / scale
            return image.as_subclass(torch.Tensor).float().div_(255.0), {"boxes": boxes, "labels": target["labels"]}

        return transform

    def collate(self, batch: list[tuple[Any, Any]]) -> tuple[torch.Tensor | None, Any, int]:
        kept = [b for b in batch if b[0] is not None]
        if len(kept) == 1:
            # BatchNorm cannot train on one value per channel, which the small maps of a
            # one-image batch give (an epoch's remainder batch): add its mirror image
            image, target = kept[0]
            boxes = target["boxes"]
            mirrored = torch.stack([1.0 - boxes[:, 2], boxes[:, 1], 1.0 - boxes[:, 0], boxes[:, 3]], dim=1)
            kept.append((image.flip(-1), {"boxes": mirrored, "labels": target["labels"]}))
        images = torch.stack([b[0] for b in kept]) if kept else None
        return images, [b[1] for b in kept], len(batch) - len(kept)

    def targets_to(self, targets: Any, device: torch.device) -> Any:
        return [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]

    def training_loss(self, model: nn.Module, images: torch.Tensor, targets: Any, config: TrainConfig) -> torch.Tensor:
        detector = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        anchors = detector.anchors(images.shape[-2], images.shape[-1]).to(images.device)
        settings = detector.config
        matched = [
            match_anchors(
                t["boxes"],
                t["labels"],
                anchors,
                settings.iou_threshold,
                settings.center_variance,
                settings.size_variance,
            )
            for t in targets
        ]
        labels = torch.stack([m[0] for m in matched])
        regression_targets = torch.stack([m[1] for m in matched])
        box_regression, class_logits = model(images)
        return ssd_multibox_loss(
            box_regression, class_logits, labels, regression_targets, label_smoothing=config.label_smoothing
        ).total

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader: DataLoader, device: torch.device, config: TrainConfig, distributed: bool = False
    ) -> tuple[dict[str, float], int]:
        from ..tasks.detection import coco_map, run_detector, to_coco_results

        dataset = _coco_of(loader)
        results: list[dict[str, Any]] = []
        evaluated: list[int] = []
        batches = ValidationBatches(model, loader)
        for images, infos in batches:
            detections = run_detector(model, images.to(device), [size for _, size in infos])
            for d, (image_id, _) in zip(detections, infos):
                evaluated.append(int(image_id))
                results += to_coco_results(d, image_id, dataset.category_ids)
        failed = batches.failed
        if distributed:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (results, evaluated))
            results = [r for part in gathered for r in part[0]]
            evaluated = [i for part in gathered for i in part[1]]
            failed = int(sum_over_ranks([float(failed)], device)[0])
        metrics: list[Any] = [None]
        if not distributed or dist.get_rank() == 0:  # COCOeval once, then shared
            everything = coco_map(dataset.annotation_file, results, evaluated)
            metrics[0] = {"map50": everything["map50"], "map": everything["map"]}
        if distributed:
            dist.broadcast_object_list(metrics, src=0)
        return metrics[0], failed

    def format_metrics(self, metrics: dict[str, float]) -> str:
        return f"val mAP@0.5 {metrics['map50']:.4f}, mAP@[.5:.95] {metrics['map']:.4f}"


def _coco_of(loader: DataLoader) -> CocoDetection:
    data = loader.dataset
    while not isinstance(data, ResizedValidation):
        data = data.dataset  # a rank's Subset
    return data.dataset
