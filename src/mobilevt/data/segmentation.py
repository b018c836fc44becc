"""Semantic segmentation folders: PASCAL VOC and ADE20K layouts.

Items are ``(image, mask)``: a ``tv_tensors.Image`` (uint8 ``[3, H, W]``, RGB) and a
``tv_tensors.Mask`` (uint8 ``[H, W]``, class indices from 0, 255 = ignore), the form
torchvision's transforms v2 augment together. An image that cannot be decoded gives
``(None, None)`` so that training and evaluation can count and skip it.

- PASCAL VOC: ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNG of class
  indices, 255 on object borders = ignore), ``ImageSets/Segmentation/<split>.txt``. The
  root may also be the ``VOCdevkit`` folder or the one above it. Class names: a
  ``classes.txt`` in the root (one per line, index order) or the 21 VOC classes.
- ADE20K (SceneParsing, ``ADEChallengeData2016``): ``images/{training,validation}/*.jpg``
  and ``annotations/{training,validation}/*.png`` with 0 = "other" (ignored) and classes
  1..150, shifted here to 0..149 as ml-cvnets and mmsegmentation do.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from ..errors import InvalidInputError
from .datasets import DatasetLayoutError
from .images import ImageDecodeError, load_image
from .segmentation_palette import IGNORE_INDEX

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
_ADE_SPLITS = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}


class SegmentationFolder(Dataset):
    """Pairs of image and mask files.

    Args:
        images, masks: file paths, pairwise.
        class_names: the names of class indices 0, 1, ...
        label_offset: added to every mask value but 255 after reading (ADE20K: -1, with
            0 becoming 255 = ignore).
        transform: optional ``transform(image, mask) -> (image, mask)`` on the tv_tensors.
    """

    def __init__(
        self,
        images: Sequence[Path],
        masks: Sequence[Path],
        class_names: Sequence[str],
        label_offset: int = 0,
        transform=None,
        layout: str = "",
    ) -> None:
        if len(images) != len(masks):
            raise InvalidInputError(f"{len(images)} images but {len(masks)} masks")
        self.images = [Path(p) for p in images]
        self.masks = [Path(p) for p in masks]
        self.class_names = list(class_names)
        self.label_offset = label_offset
        self.transform = transform
        self.layout = layout

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.images)

    def read_mask(self, index: int) -> torch.Tensor:
        """The class-index mask of item ``index`` as uint8 ``[H, W]`` (255 = ignore)."""
        return read_mask(self.masks[index], self.label_offset)

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image | None, tv_tensors.Mask | None]:
        try:
            image = load_image(self.images[index])
        except ImageDecodeError:
            return None, None
        mask = self.read_mask(index)
        if tuple(mask.shape) != tuple(image.shape[1:]):
            raise DatasetLayoutError(
                f"{self.masks[index]}: mask is {tuple(mask.shape)} (H, W) but its image {self.images[index].name} is "
                f"{tuple(image.shape[1:])}; masks must have their image's size"
            )
        sample = tv_tensors.Image(image), tv_tensors.Mask(mask)
        if self.transform is not None:
            sample = self.transform(*sample)
        return sample


def read_mask(path: str | os.PathLike, label_offset: int = 0) -> torch.Tensor:
    """Read a class-index mask PNG (palette or 8-bit gray) as uint8 ``[H, W]``; with
    ``label_offset`` -1, 0 becomes 255 (ignore) and k becomes k - 1 (ADE20K)."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise DatasetLayoutError(
                    f"{path}: the mask is a {image.mode!r} image; segmentation masks must be palette ('P') or "
                    "gray ('L') "
                    "PNGs whose pixel values are class indices, not colours"
                )
            values = np.array(image, dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetLayoutError(f"{path}: mask file not found") from None
    except (OSError, SyntaxError) as exc:
        raise DatasetLayoutError(f"{path}: unreadable mask ({exc})") from None
    mask = torch.from_numpy(values)
    if label_offset:
        ignore = mask == IGNORE_INDEX
        if label_offset < 0:
            ignore |= mask < -label_offset
        mask = (mask.to(torch.int16) + label_offset).clamp(0, 255).to(torch.uint8)
        mask[ignore] = IGNORE_INDEX
    return mask


def _voc_root(root: Path) -> Path:
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir() and (candidate / "SegmentationClass").is_dir():
            return candidate
    raise DatasetLayoutError(
        f"{root}: not a PASCAL VOC segmentation folder (expected JPEGImages/ and SegmentationClass/, "
        "possibly under VOC2012/ or VOCdevkit/VOC2012/)"
    )


def voc_segmentation(root: str | os.PathLike, split: str = "val", transform=None) -> SegmentationFolder:
    """The PASCAL VOC-layout split ``split`` (``ImageSets/Segmentation/<split>.txt``)."""
    root = _voc_root(Path(root))
    list_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not list_file.is_file():
        known = sorted(p.stem for p in (root / "ImageSets" / "Segmentation").glob("*.txt"))
        raise DatasetLayoutError(
            f"{root}: no split {split!r} ({list_file} is missing); splits found: {known or 'none'}"
        )
    ids = [line.strip() for line in list_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    images, masks = [], []
    for image_id in ids:
        image = root / "JPEGImages" / f"{image_id}.jpg"
        mask = root / "SegmentationClass" / f"{image_id}.png"
        if not mask.is_file():
            raise DatasetLayoutError(f"{list_file} lists {image_id!r} but {mask} does not exist")
        images.append(image)
        masks.append(mask)
    classes_file = root / "classes.txt"
    if classes_file.is_file():
        names = [n.strip() for n in classes_file.read_text(encoding="utf-8").splitlines() if n.strip()]
    else:
        names = list(VOC_CLASSES)
    return SegmentationFolder(images, masks, names, 0, transform, layout="voc")


def ade20k_segmentation(root: str | os.PathLike, split: str = "validation", transform=None) -> SegmentationFolder:
    """The ADE20K-layout split ``split`` (``training`` / ``validation``, or ``train`` / ``val``);
    150 classes (``objectInfo150.csv`` names when present)."""
    root = Path(root)
    if split not in _ADE_SPLITS:
        raise DatasetLayoutError(f"ADE20K splits are 'training' and 'validation' (or 'train' / 'val'), not {split!r}")
    folder = _ADE_SPLITS[split]
    image_dir, mask_dir = root / "images" / folder, root / "annotations" / folder
    if not image_dir.is_dir() or not mask_dir.is_dir():
        raise DatasetLayoutError(f"{root}: not an ADE20K folder (expected images/{folder}/ and annotations/{folder}/)")
    images, masks = [], []
    for image in sorted(image_dir.glob("*.jpg")):
        mask = mask_dir / f"{image.stem}.png"
        if mask.is_file():
            images.append(image)
            masks.append(mask)
    if not images:
        raise DatasetLayoutError(f"{image_dir}: no .jpg image with a mask of the same name in {mask_dir}")
    return SegmentationFolder(images, masks, _ade_names(root), -1, transform, layout="ade20k")


def _ade_names(root: Path) -> list[str]:
    info = root / "objectInfo150.csv"  # Idx,Ratio,Train,Val,Name (names separated by ';')
    if info.is_file():
        rows = info.read_text(encoding="utf-8").splitlines()[1:]
        names = [row.split(",")[-1].split(";")[0].strip() for row in rows if row.strip()]
        if len(names) == 150:
            return names
    return [f"class_{i}" for i in range(150)]


def detect_segmentation_layout(root: str | os.PathLike) -> str:
    """``"voc"`` or ``"ade20k"`` from the folder's structure."""
    root = Path(root)
    if (root / "images").is_dir() and (root / "annotations").is_dir():
        return "ade20k"
    try:
        _voc_root(root)
        return "voc"
    except DatasetLayoutError:
        pass
    raise DatasetLayoutError(
        f"{root}: not a segmentation dataset folder. Expected the PASCAL VOC layout (JPEGImages/, "
        "SegmentationClass/, ImageSets/Segmentation/<split>.txt) or the ADE20K layout (images/{training,validation}/, "
        "annotations/{training,validation}/)"
    )


def open_segmentation_dataset(
    root: str | os.PathLike, split: str = "val", layout: str | None = None, transform=None
) -> SegmentationFolder:
    """A VOC- or ADE20K-layout folder (detected unless ``layout`` is given); ``split``
    ``"train"`` or ``"val"`` (ADE20K's ``training`` / ``validation`` also accepted)."""
    if not Path(root).is_dir():
        raise DatasetLayoutError(f"{root}: no such folder")
    layout = layout or detect_segmentation_layout(root)
    if layout == "voc":
        return voc_segmentation(root, {"training": "train", "validation": "val"}.get(split, split), transform)
    if layout == "ade20k":
        return ade20k_segmentation(root, split, transform)
    raise InvalidInputError(f"segmentation layout must be 'voc' or 'ade20k', not {layout!r}")
