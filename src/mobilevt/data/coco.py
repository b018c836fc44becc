"""COCO-format object detection data: an images folder + an ``instances_*.json`` file.

Read with the standard library (pycocotools is only needed for the mAP evaluation).
Categories are numbered as ml-cvnets does: the annotation file's category ids, sorted,
become labels 1 .. K, and 0 is the background.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from .datasets import DatasetLayoutError
from .images import ImageDecodeError, load_image

# The 80 COCO object categories in the order of their category ids (1 .. 90 with gaps):
# label i + 1 of ml-cvnets' (and torchvision's compact) numbering.
COCO_CLASSES = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)
COCO_CLASSES_WITH_BACKGROUND = ("background", *COCO_CLASSES)


@dataclass(frozen=True)
class CocoImage:
    id: int
    file_name: str
    width: int
    height: int


class CocoDetection(Dataset):
    """Images and boxes of a COCO-format annotation file.

    Items are ``(image, target)``: ``image`` a ``tv_tensors.Image`` (uint8 ``[3, H, W]``,
    RGB) or ``None`` when the file cannot be decoded; ``target`` a dict with ``boxes``
    (``tv_tensors.BoundingBoxes``, XYXY pixels), ``labels`` (int64, 1 .. K) and
    ``image_id`` (the file's image id). Crowd annotations are left out and boxes are
    clipped to the image, as ml-cvnets does; empty boxes are dropped.

    Args:
        images: the images folder (``file_name`` entries are relative to it).
        annotations: the COCO ``instances_*.json`` file.
        skip_empty: leave out images without any (non-crowd) box (ml-cvnets trains so).
    """

    def __init__(self, images: str | os.PathLike, annotations: str | os.PathLike, skip_empty: bool = False) -> None:
        self.images_dir = Path(images)
        self.annotation_file = Path(annotations)
        if not self.images_dir.is_dir():
            raise DatasetLayoutError(f"{self.images_dir}: no such images folder")
        try:
            data = json.loads(self.annotation_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DatasetLayoutError(f"{self.annotation_file}: no such annotation file") from None
        except json.JSONDecodeError as exc:
            raise DatasetLayoutError(f"{self.annotation_file} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
            raise DatasetLayoutError(
                f"{self.annotation_file} is not a COCO detection file: it needs 'images', 'annotations' and "
                "'categories' lists"
            )
        categories = sorted(data["categories"], key=lambda c: c["id"])
        if not categories:
            raise DatasetLayoutError(f"{self.annotation_file} lists no categories")
        self.category_ids: list[int] = [int(c["id"]) for c in categories]
        self.class_names: list[str] = [str(c["name"]) for c in categories]
        self.label_of_category: dict[int, int] = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
        self.images: list[CocoImage] = [
            CocoImage(int(im["id"]), str(im["file_name"]), int(im["width"]), int(im["height"])) for im in data["images"]
        ]
        self._boxes: dict[int, list[tuple[list[float], int]]] = {im.id: [] for im in self.images}
        for ann in data["annotations"]:
            if ann.get("iscrowd", 0):
                continue
            if ann["image_id"] not in self._boxes:
                raise DatasetLayoutError(
                    f"{self.annotation_file}: annotation {ann.get('id')} refers to unknown image id {ann['image_id']}"
                )
            if ann["category_id"] not in self.label_of_category:
                raise DatasetLayoutError(
                    f"{self.annotation_file}: annotation {ann.get('id')} has category id "
                    f"{ann['category_id']}, which is not in 'categories'"
                )
            self._boxes[ann["image_id"]].append(
                ([float(v) for v in ann["bbox"]], self.label_of_category[ann["category_id"]])
            )
        if skip_empty:
            self.images = [im for im in self.images if self._boxes[im.id]]

    @property
    def num_classes(self) -> int:
        """Object classes + the background."""
        return len(self.class_names) + 1

    def __len__(self) -> int:
        return len(self.images)

    def path(self, index: int) -> Path:
        return self.images_dir / self.images[index].file_name

    def target(self, index: int) -> dict[str, Any]:
        """The target of item ``index`` without decoding its image."""
        info = self.images[index]
        boxes, labels = [], []
        for (x, y, w, h), label in self._boxes[info.id]:
            x1, y1 = max(0.0, x), max(0.0, y)
            x2, y2 = min(x + w, float(info.width)), min(y + h, float(info.height))
            if x2 > x1 and y2 > y1:
                boxes.append([x1, y1, x2, y2])
                labels.append(label)
        return {
            "boxes": tv_tensors.BoundingBoxes(
                torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                format="XYXY",
                canvas_size=(info.height, info.width),
            ),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "image_id": info.id,
        }

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image | None, dict[str, Any]]:
        target = self.target(index)
        try:
            image = load_image(self.path(index))
        except ImageDecodeError:
            return None, target
        if tuple(image.shape[-2:]) != tuple(target["boxes"].canvas_size):
            # the file disagrees with the annotation's size: trust the pixels, scale the boxes
            height, width = image.shape[-2:]
            sy, sx = height / target["boxes"].canvas_size[0], width / target["boxes"].canvas_size[1]
            scaled = target["boxes"].as_subclass(torch.Tensor) * torch.tensor([sx, sy, sx, sy])
            target["boxes"] = tv_tensors.BoundingBoxes(scaled, format="XYXY", canvas_size=(height, width))
        return tv_tensors.Image(image), target
