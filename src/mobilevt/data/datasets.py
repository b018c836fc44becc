"""Image classification datasets on disk: ImageFolder trees and the flat ILSVRC validation
layout, with ImageNet's label space resolved from WordNet ids."""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import Dataset
from torchvision.datasets.folder import make_dataset

from ..errors import MobilevtError
from .imagenet import imagenet_classes
from .images import IMAGE_EXTENSIONS, ImageDecodeError, load_image

_WNID = re.compile(r"^n\d{8}$")
_VAL_FILE = re.compile(r"^ILSVRC2012_val_(\d{8})\.(jpe?g|png)$", re.IGNORECASE)


class DatasetLayoutError(MobilevtError, ValueError):
    """A folder that is not one of the supported dataset layouts, or labels that do not fit it."""


class ClassificationSample(NamedTuple):
    """One item: the preprocessed image (empty when decoding failed), its class, its
    position in the dataset, and the decoding error (empty string when it decoded)."""

    image: torch.Tensor
    target: int
    index: int
    error: str


class ImageClassificationDataset(Dataset):
    """A list of ``(image path, class index)`` pairs with class names.

    Items are :class:`ClassificationSample`; an undecodable file yields an empty image and
    its error instead of raising, so one broken JPEG does not stop an evaluation (the
    evaluation reports it). ``label_space`` is ``"imagenet"`` when class indices are the
    standard ImageNet-1k ones, else ``"folder"`` (indices of the sorted folder names).
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        classes: Sequence[str],
        label_space: str,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        wnids: Sequence[str] | None = None,
        real_labels: Sequence[Sequence[int]] | None = None,
        layout: str = "",
    ):
        self.samples = list(samples)
        self.classes = list(classes)
        self.label_space = label_space
        self.transform = transform
        self.wnids = list(wnids) if wnids is not None else None
        self.real_labels = [list(r) for r in real_labels] if real_labels is not None else None
        self.layout = layout

    @property
    def targets(self) -> list[int]:
        return [t for _, t in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> ClassificationSample:
        path, target = self.samples[index]
        try:
            image = load_image(path)
        except ImageDecodeError as exc:
            return ClassificationSample(torch.empty(0), target, index, str(exc))
        if self.transform is not None:
            image = self.transform(image)
        return ClassificationSample(image, target, index, "")

    def subset(self, count: int) -> ImageClassificationDataset:
        """The first ``count`` samples (in file order), e.g. for ``--limit``."""
        real = self.real_labels[:count] if self.real_labels is not None else None
        return ImageClassificationDataset(
            self.samples[:count], self.classes, self.label_space, self.transform, self.wnids, real, self.layout
        )


def image_folder(root: str | os.PathLike, transform=None) -> ImageClassificationDataset:
    """An ImageFolder tree ``root/<class>/<image>``.

    Folder names that are all WordNet ids (``n01440764``) or all integers (``0`` ... ``999``)
    map to ImageNet-1k class indices, so a folder with only some classes still scores
    against a 1000-class model. Any other names are classes in sorted order, as
    torchvision's ``ImageFolder`` does.
    """
    root = Path(root)
    folders = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not folders:
        raise DatasetLayoutError(f"{root}: no class folders (expected {root}/<class>/<image files>)")
    imagenet = imagenet_classes()
    if all(_WNID.match(f) for f in folders):
        unknown = [f for f in folders if f not in imagenet.index_of_wnid]
        if unknown:
            raise DatasetLayoutError(f"{root}: folders {unknown[:5]} are WordNet ids but not ImageNet-1k classes")
        class_to_idx = {f: imagenet.index_of_wnid[f] for f in folders}
        classes, label_space, wnids = list(imagenet.names), "imagenet", list(imagenet.wnids)
    elif all(f.isdigit() for f in folders):
        class_to_idx = {f: int(f) for f in folders}
        top = max(class_to_idx.values())
        if top < 1000:
            classes, label_space, wnids = list(imagenet.names), "imagenet", list(imagenet.wnids)
        else:
            classes, label_space, wnids = [str(i) for i in range(top + 1)], "folder", None
    else:
        class_to_idx = {f: i for i, f in enumerate(folders)}
        classes, label_space, wnids = folders, "folder", None
    samples = make_dataset(str(root), class_to_idx, extensions=IMAGE_EXTENSIONS, allow_empty=True)
    if not samples:
        raise DatasetLayoutError(f"{root}: the class folders hold no images ({', '.join(IMAGE_EXTENSIONS)})")
    samples.sort()
    return ImageClassificationDataset(samples, classes, label_space, transform, wnids, layout="image-folder")


def imagenet_val(
    root: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    real_labels: str | os.PathLike | None = None,
    transform=None,
) -> ImageClassificationDataset:
    """The flat ILSVRC-2012 validation layout: ``root/ILSVRC2012_val_00000001.JPEG`` ...

    ``labels``: the ground truth, a ``LOC_val_solution.csv`` (``ImageId,PredictionString``
    whose first token is the wnid) or a CSV with ``file`` and ``wnid`` or ``class_index``
    columns. Found automatically as ``LOC_val_solution.csv`` or ``labels.csv`` in ``root``
    or its parent. ``real_labels``: ImageNet-ReaL's ``real.json`` (one list of class
    indices per validation image, in file-number order).
    """
    root = Path(root)
    files = sorted(p for p in root.iterdir() if _VAL_FILE.match(p.name))
    if not files:
        raise DatasetLayoutError(f"{root}: no ILSVRC2012_val_*.JPEG files")
    labels_path = Path(labels) if labels is not None else _find_labels_file(root)
    truth = read_validation_labels(labels_path)
    imagenet = imagenet_classes()
    samples, missing = [], []
    for path in files:
        stem = path.stem
        if stem not in truth:
            missing.append(path.name)
            continue
        samples.append((str(path), truth[stem]))
    if missing:
        raise DatasetLayoutError(
            f"{labels_path} has no label for {len(missing)} image(s), e.g. {missing[:3]}: is it the ground truth "
            "of this validation set?"
        )
    real = None
    if real_labels is not None:
        all_real = json.loads(Path(real_labels).read_text())
        real = []
        for path in files:
            number = int(_VAL_FILE.match(path.name).group(1))
            if number > len(all_real):
                raise DatasetLayoutError(f"{real_labels} has {len(all_real)} entries, {path.name} needs #{number}")
            real.append(all_real[number - 1])
    return ImageClassificationDataset(
        samples, imagenet.names, "imagenet", transform, imagenet.wnids, real, layout="ilsvrc-val"
    )


def read_validation_labels(path: str | os.PathLike) -> dict[str, int]:
    """Ground truth of validation images by file stem (``ILSVRC2012_val_00000001``)."""
    path = Path(path)
    imagenet = imagenet_classes()
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise DatasetLayoutError(f"{path}: empty labels file")
    columns = set(rows[0])
    truth: dict[str, int] = {}

    def wnid_index(wnid: str, where: str) -> int:
        try:
            return imagenet.index_of_wnid[wnid]
        except KeyError:
            raise DatasetLayoutError(f"{path}: {wnid!r} ({where}) is not an ImageNet-1k WordNet id") from None

    if {"ImageId", "PredictionString"} <= columns:  # LOC_val_solution.csv
        for row in rows:
            tokens = row["PredictionString"].split()
            if not tokens:
                raise DatasetLayoutError(f"{path}: no label for {row['ImageId']}")
            truth[row["ImageId"]] = wnid_index(tokens[0], row["ImageId"])
    elif "file" in columns and ("wnid" in columns or "class_index" in columns):
        for row in rows:
            stem = Path(row["file"]).stem
            if "class_index" in columns and row["class_index"] != "":
                truth[stem] = int(row["class_index"])
            else:
                truth[stem] = wnid_index(row["wnid"], stem)
    else:
        raise DatasetLayoutError(
            f"{path}: unknown labels format with columns {sorted(columns)}; expected LOC_val_solution.csv "
            "(ImageId,PredictionString) or a CSV with 'file' and 'wnid' or 'class_index' columns"
        )
    return truth


def _find_labels_file(root: Path) -> Path:
    for folder in (root, root.parent):
        for name in ("LOC_val_solution.csv", "labels.csv"):
            if (folder / name).is_file():
                return folder / name
    raise DatasetLayoutError(
        f"{root} is the flat ILSVRC validation layout but no ground truth was found: pass --labels "
        "LOC_val_solution.csv (from the ImageNet Kaggle challenge) or put it next to the images"
    )


def open_classification_dataset(
    root: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    real_labels: str | os.PathLike | None = None,
    transform=None,
) -> ImageClassificationDataset:
    """Open ``root`` as the flat ILSVRC validation layout if it holds
    ``ILSVRC2012_val_*`` files, else as an ImageFolder tree."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: not a directory")
    if any(_VAL_FILE.match(e.name) for e in os.scandir(root)):
        return imagenet_val(root, labels, real_labels, transform)
    if real_labels is not None:
        raise DatasetLayoutError("ImageNet-ReaL labels apply to the flat ILSVRC validation layout only")
    return image_folder(root, transform)


def collate_classification(batch: Sequence[ClassificationSample]):
    """Stack the decoded images; return the failed ones separately.

    Returns ``(images, targets, indices, failures)`` where ``failures`` is a list of
    ``(index, error)``; ``images`` is ``None`` when every image of the batch failed.
    """
    good = [s for s in batch if not s.error]
    failures = [(s.index, s.error) for s in batch if s.error]
    if not good:
        return None, torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), failures
    images = torch.stack([s.image for s in good])
    targets = torch.tensor([s.target for s in good], dtype=torch.long)
    indices = torch.tensor([s.index for s in good], dtype=torch.long)
    return images, targets, indices, failures
