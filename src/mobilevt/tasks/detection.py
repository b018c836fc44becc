"""Object detection with SSDLite: boxes on photos, drawing them, COCO mAP.

``detect`` runs a detector on photos and returns boxes in the photos' pixels;
``draw_detections`` draws them (``torchvision.utils.draw_bounding_boxes``);
``evaluate_detection`` computes COCO mAP with pycocotools on an images folder and a
COCO-format annotation file (``pip install "mobilevt[detection]"``).

The detector sees each photo resized as a whole to its input size (320x320 for the
published weights; the aspect ratio is not kept, as ml-cvnets trains and evaluates), and
its boxes are scaled back to the photo.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data.coco import CocoDetection
from ..data.images import ImageDecodeError, load_image
from ..data.preprocess import DetectionPreprocess  # noqa: F401  (re-exported)
from ..errors import InvalidInputError, MissingDependencyError
from ..fileio import write_text_atomic
from ..model_kind import ModelKind, kind_of
from ..ops.ssd import Detections
from .classification import _source_name, expand_image_inputs, resolve_device
from .model_io import class_names_for, transforms_for

ImageInput = str | os.PathLike | Image.Image | torch.Tensor

COCO_METRICS = (
    "map",
    "map50",
    "map75",
    "map_small",
    "map_medium",
    "map_large",
    "mar1",
    "mar10",
    "mar100",
    "mar_small",
    "mar_medium",
    "mar_large",
)
_DETECTION_EXTRA = 'pip install "mobilevt[detection]"  (pycocotools)'


@dataclass
class DetectedObject:
    label: int
    name: str
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the image's pixels


@dataclass
class DetectionResult:
    """The objects found in one image (highest score first), boxes in its pixels."""

    source: str
    image_size: tuple[int, int]  # (height, width)
    objects: list[DetectedObject] = field(default_factory=list)
    error: str | None = None

    @property
    def boxes(self) -> torch.Tensor:
        return torch.tensor([o.box for o in self.objects], dtype=torch.float32).reshape(-1, 4)

    @property
    def scores(self) -> torch.Tensor:
        return torch.tensor([o.score for o in self.objects], dtype=torch.float32)

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([o.label for o in self.objects], dtype=torch.int64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "image_size": list(self.image_size),
            "objects": [asdict(o) for o in self.objects],
            "error": self.error,
        }


def run_detector(
    model: nn.Module, batch: torch.Tensor, image_sizes: Sequence[tuple[int, int]], score_threshold: float | None = None
) -> list[Detections]:
    """Detections of a preprocessed ``batch``, boxes in the pixels of each original image
    (``image_sizes``: (height, width) each)."""
    regression, logits = model(batch)
    detections = model.postprocess(regression.float(), logits.float(), tuple(batch.shape[-2:]), score_threshold)
    scaled = []
    for d, (height, width) in zip(detections, image_sizes):
        scale = torch.tensor([width, height, width, height], dtype=d.boxes.dtype, device=d.boxes.device)
        scaled.append(Detections(d.boxes * scale, d.scores, d.labels))
    return scaled


class _DetectInputs(Dataset):
    def __init__(self, items: Sequence[ImageInput], preprocess: nn.Module):
        self.items = list(items)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        item = self.items[index]
        try:
            image = item if isinstance(item, torch.Tensor) else load_image(item)
        except ImageDecodeError as exc:
            return None, (0, 0), index, exc.reason
        return self.preprocess(image), (int(image.shape[-2]), int(image.shape[-1])), index, ""


def _collate(batch):
    good = [b for b in batch if b[0] is not None]
    failures = [(b[2], b[3]) for b in batch if b[0] is None]
    images = torch.stack([b[0] for b in good]) if good else None
    return images, [b[1] for b in good], [b[2] for b in good], failures


@torch.inference_mode()
def detect(
    model: nn.Module,
    images: ImageInput | Iterable[ImageInput],
    *,
    score_threshold: float = 0.3,
    batch_size: int = 8,
    workers: int = 0,
    device: str | torch.device | None = None,
    preprocess: nn.Module | None = None,
    class_names: Sequence[str] | None = None,
    on_error: str = "raise",
) -> list[DetectionResult]:
    """Objects in each image: boxes in the image's pixels, class names and scores.

    ``images``: a path, a folder (every image under it), a PIL image, a uint8
    ``[3, H, W]`` tensor, or a list of these. ``score_threshold``: the lowest score kept
    (0.3 suits display; COCO evaluation uses 0.01). ``on_error="report"`` returns a
    result with ``error`` set for an undecodable file instead of raising.
    """
    if on_error not in ("raise", "report"):
        raise InvalidInputError(f"on_error must be 'raise' or 'report', not {on_error!r}")
    if kind_of(model) != ModelKind.DETECTION:
        raise InvalidInputError(
            f"{type(model).__name__} is not a detector: create an 'ssdlite_*' model "
            "(mobilevt.list_models(kind='object-detection'))"
        )
    items = expand_image_inputs(images)
    preprocess = preprocess if preprocess is not None else transforms_for(model, ModelKind.DETECTION)
    names = list(class_names) if class_names is not None else class_names_for(model, ModelKind.DETECTION)
    device = resolve_device(device)
    model = model.to(device).eval()
    loader = DataLoader(
        _DetectInputs(items, preprocess), batch_size=batch_size, num_workers=workers, collate_fn=_collate
    )
    results: list[DetectionResult | None] = [None] * len(items)
    for batch, sizes, indices, failures in loader:
        for index, reason in failures:
            if on_error == "raise":
                raise ImageDecodeError(_source_name(items[index]), reason)
            results[index] = DetectionResult(_source_name(items[index]), (0, 0), error=reason)
        if batch is None:
            continue
        for d, size, index in zip(run_detector(model, batch.to(device), sizes, score_threshold), sizes, indices):
            objects = [
                DetectedObject(
                    int(label),
                    names[int(label)] if int(label) < len(names) else str(int(label)),
                    float(score),
                    tuple(float(v) for v in box),
                )
                for box, score, label in zip(d.boxes.tolist(), d.scores.tolist(), d.labels.tolist())
            ]
            results[index] = DetectionResult(_source_name(items[index]), size, objects)
    return [r for r in results if r is not None]


def draw_detections(image: torch.Tensor, result: DetectionResult, width: int = 3) -> torch.Tensor:
    """``image`` (uint8 ``[3, H, W]``) with the result's boxes and "name score" labels
    drawn (``torchvision.utils.draw_bounding_boxes``), one colour per class."""
    from torchvision.utils import draw_bounding_boxes

    if not result.objects:
        return image.clone()
    palette = [
        "#e6194b",
        "#3cb44b",
        "#ffe119",
        "#4363d8",
        "#f58231",
        "#911eb4",
        "#46f0f0",
        "#f032e6",
        "#bcf60c",
        "#fabebe",
        "#008080",
        "#e6beff",
        "#9a6324",
        "#800000",
        "#aaffc3",
        "#808000",
    ]
    labels = [f"{o.name} {o.score:.2f}" for o in result.objects]
    colors = [palette[o.label % len(palette)] for o in result.objects]
    return draw_bounding_boxes(image, result.boxes, labels=labels, colors=colors, width=width)


# ---------------------------------------------------------------------------------------
# COCO mAP (pycocotools)


def _pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise MissingDependencyError(f"COCO mAP evaluation needs pycocotools: {_DETECTION_EXTRA}") from None
    return COCO, COCOeval


def coco_ground_truth(annotations: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """A COCO annotation file (or dict) made complete for pycocotools: ``info``, and per
    box an ``id``, ``iscrowd`` (0) and ``area`` (the box area when missing)."""
    data = (
        json.loads(Path(annotations).read_text(encoding="utf-8"))
        if isinstance(annotations, (str, os.PathLike))
        else json.loads(json.dumps(annotations))
    )
    data.setdefault("info", {})
    for i, ann in enumerate(data.get("annotations", [])):
        ann.setdefault("id", i + 1)
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
    return data


def coco_map(
    ground_truth: str | os.PathLike | Mapping[str, Any],
    detections: Sequence[Mapping[str, Any]],
    image_ids: Sequence[int] | None = None,
) -> dict[str, float]:
    """COCO box metrics of ``detections`` (COCO results format: ``image_id``,
    ``category_id``, ``bbox`` [x, y, w, h] in pixels, ``score``) against ``ground_truth``,
    computed by pycocotools' ``COCOeval``: the 12 numbers it prints, as fractions, named
    ``COCO_METRICS`` (``map`` is mAP@[.5:.95], ``map50`` mAP@0.5; -1 where a size range
    has no ground truth). ``image_ids`` restricts the evaluation to those images."""
    COCO, COCOeval = _pycocotools()
    data = coco_ground_truth(ground_truth)
    detections = [dict(d) for d in detections]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = COCO()
        gt.dataset = data
        gt.createIndex()
        ids = list(image_ids) if image_ids is not None else gt.getImgIds()
        if not ids or not data.get("categories"):
            return {name: -1.0 for name in COCO_METRICS}
        if not detections:
            # loadRes refuses an empty list. One zero-size box scored 0 matches nothing and
            # leaves every precision and recall at 0, exactly as no detection at all does.
            detections = [
                {
                    "image_id": ids[0],
                    "category_id": data["categories"][0]["id"],
                    "bbox": [0.0, 0.0, 0.0, 0.0],
                    "score": 0.0,
                }
            ]
        result = gt.loadRes(detections)
        evaluator = COCOeval(gt, result, iouType="bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(COCO_METRICS, evaluator.stats)}


def to_coco_results(detections: Detections, image_id: int, category_ids: Sequence[int]) -> list[dict[str, Any]]:
    """One image's detections (pixels, labels 1 .. K) as COCO result entries; label ``i``
    is category ``category_ids[i - 1]``."""
    out = []
    for (x1, y1, x2, y2), score, label in zip(
        detections.boxes.tolist(), detections.scores.tolist(), detections.labels.tolist()
    ):
        out.append(
            {
                "image_id": int(image_id),
                "category_id": int(category_ids[int(label) - 1]),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": float(score),
            }
        )
    return out


@dataclass
class DetectionEvaluation:
    """COCO box metrics of a detector on a data set (fractions; see ``COCO_METRICS``)."""

    metrics: dict[str, float]
    num_images: int
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def map(self) -> float:
        return self.metrics["map"]

    @property
    def map50(self) -> float:
        return self.metrics["map50"]

    @property
    def images_per_second(self) -> float:
        return self.num_images / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "num_images": self.num_images,
            "failed": self.failed,
            "seconds": self.seconds,
            "images_per_second": self.images_per_second,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


class _EvalInputs(Dataset):
    def __init__(self, dataset: CocoDetection, preprocess: nn.Module, indices: Sequence[int]):
        self.dataset, self.preprocess, self.indices = dataset, preprocess, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int):
        index = self.indices[position]
        try:
            image = load_image(self.dataset.path(index))
        except ImageDecodeError as exc:
            return None, (0, 0), index, exc.reason
        return self.preprocess(image), (int(image.shape[-2]), int(image.shape[-1])), index, ""


@torch.inference_mode()
def evaluate_detection(
    model: nn.Module,
    images: str | os.PathLike | CocoDetection,
    annotations: str | os.PathLike | None = None,
    *,
    batch_size: int = 8,
    workers: int = 0,
    limit: int | None = None,
    score_threshold: float | None = None,
    device: str | torch.device | None = None,
    results_json: str | os.PathLike | None = None,
) -> DetectionEvaluation:
    """COCO mAP of ``model`` on an images folder + COCO annotation file (or a
    :class:`~mobilevt.data.coco.CocoDetection`), computed with pycocotools.

    Detections keep scores above ``score_threshold`` (default: the model's, 0.01 as in
    ml-cvnets' COCO evaluation). ``limit`` evaluates the first N images only;
    undecodable images are listed in ``failed`` and left out of the evaluation.
    ``results_json`` writes the detections in the COCO results format.
    """
    _pycocotools()  # fail before running the model when pycocotools is missing
    if isinstance(images, CocoDetection):
        dataset = images
    else:
        if annotations is None:
            raise InvalidInputError(
                "evaluate_detection needs the COCO annotation file (annotations=...instances_val.json)"
            )
        dataset = CocoDetection(images, annotations)
    if model.num_classes != dataset.num_classes:
        raise InvalidInputError(
            f"the model has {model.num_classes} classes (background included), the annotation file "
            f"{dataset.num_classes - 1} categories + background: use a detector trained on these categories"
        )
    indices = range(len(dataset)) if limit is None else range(min(limit, len(dataset)))
    device = resolve_device(device)
    model = model.to(device).eval()
    loader = DataLoader(
        _EvalInputs(dataset, transforms_for(model, ModelKind.DETECTION), indices),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
    )
    results: list[dict[str, Any]] = []
    evaluated: list[int] = []
    failed: list[str] = []
    start = time.perf_counter()
    for batch, sizes, batch_indices, failures in loader:
        failed += [f"{dataset.path(index)}: {reason}" for index, reason in failures]
        if batch is None:
            continue
        for d, index in zip(run_detector(model, batch.to(device), sizes, score_threshold), batch_indices):
            image_id = dataset.images[index].id
            evaluated.append(image_id)
            results += to_coco_results(d, image_id, dataset.category_ids)
    seconds = time.perf_counter() - start
    if results_json is not None:
        write_text_atomic(Path(results_json), json.dumps(results))
    metrics = coco_map(dataset.annotation_file, results, evaluated)
    return DetectionEvaluation(metrics, len(evaluated), failed, seconds)
