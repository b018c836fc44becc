"""Image classification: preprocessing lookup, prediction and ImageNet-style evaluation
(single process or distributed with torchrun)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..data.datasets import (
    ClassificationSample,
    ImageClassificationDataset,
    collate_classification,
    open_classification_dataset,
)
from ..data.images import ImageDecodeError, list_images, load_image
from ..data.preprocess import ImagePreprocess
from ..errors import InvalidInputError
from ..fileio import write_text_atomic
from ..weights.entries import PreprocessConfig
from .model_io import class_names_for, preprocess_config_for, transforms_for  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

ImageInput = str | os.PathLike | Image.Image | torch.Tensor


# ---------------------------------------------------------------------------------------
# predict


@dataclass(frozen=True)
class ClassScore:
    index: int
    name: str
    probability: float


@dataclass
class Prediction:
    """Top-k classes of one image; ``error`` is set (and ``top`` empty) when the input
    could not be decoded and ``on_error="report"`` was asked for."""

    source: str
    top: list[ClassScore] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "top": [asdict(c) for c in self.top], "error": self.error}


class _PredictInputs(Dataset):
    def __init__(self, items: Sequence[ImageInput], preprocess: ImagePreprocess):
        self.items = list(items)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> ClassificationSample:
        item = self.items[index]
        try:
            image = item if isinstance(item, torch.Tensor) else load_image(item)
            return ClassificationSample(self.preprocess(image), -1, index, "")
        except ImageDecodeError as exc:
            return ClassificationSample(torch.empty(0), -1, index, exc.reason)


def expand_image_inputs(inputs: ImageInput | Iterable[ImageInput]) -> list[ImageInput]:
    """Single input or many; a directory stands for every image file under it."""
    if isinstance(inputs, (str, os.PathLike, Image.Image, torch.Tensor)):
        inputs = [inputs]
    expanded: list[ImageInput] = []
    for item in inputs:
        if isinstance(item, (str, os.PathLike)) and Path(item).is_dir():
            expanded.extend(list_images(item))
        else:
            expanded.append(item)
    return expanded


@torch.inference_mode()
def predict(
    model: nn.Module,
    images: ImageInput | Iterable[ImageInput],
    *,
    topk: int = 5,
    batch_size: int = 16,
    workers: int = 0,
    device: str | torch.device | None = None,
    preprocess: nn.Module | None = None,
    class_names: Sequence[str] | None = None,
    on_error: str = "raise",
) -> list[Prediction]:
    """Top-``topk`` classes with probabilities for each image.

    ``images``: a path, a directory (all images under it), a PIL image, a uint8
    ``[3, H, W]`` tensor, or a list of these. Preprocessing defaults to the model's
    (``transforms_for(model)``). ``on_error="report"`` returns a :class:`Prediction` with
    ``error`` set for an undecodable file instead of raising :class:`ImageDecodeError`.
    """
    if on_error not in ("raise", "report"):
        raise InvalidInputError(f"on_error must be 'raise' or 'report', not {on_error!r}")
    items = expand_image_inputs(images)
    preprocess = preprocess if preprocess is not None else transforms_for(model)
    names = list(class_names) if class_names is not None else class_names_for(model)
    device = resolve_device(device)
    model = model.to(device).eval()
    loader = DataLoader(
        _PredictInputs(items, preprocess),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_classification,
        # PIL images and tensors are passed in memory; only paths are worth worker processes
    )
    results: list[Prediction | None] = [None] * len(items)
    for batch, _, indices, failures in loader:
        for index, reason in failures:
            if on_error == "raise":
                raise ImageDecodeError(_source_name(items[index]), reason)
            results[index] = Prediction(_source_name(items[index]), error=reason)
        if batch is None:
            continue
        logits = model(batch.to(device))
        probabilities = logits.float().softmax(dim=-1)
        k = min(topk, probabilities.shape[-1])
        values, classes = probabilities.topk(k, dim=-1)
        for row, index in enumerate(indices.tolist()):
            top = [
                ClassScore(int(c), names[int(c)] if int(c) < len(names) else str(int(c)), float(v))
                for v, c in zip(values[row].tolist(), classes[row].tolist())
            ]
            results[index] = Prediction(_source_name(items[index]), top)
    return [r for r in results if r is not None]


def _source_name(item: ImageInput) -> str:
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    if isinstance(item, torch.Tensor):
        return f"<tensor {list(item.shape)}>"
    return f"<PIL image {item.size[0]}x{item.size[1]}>"


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    return device


# ---------------------------------------------------------------------------------------
# evaluate


@dataclass
class ClassAccuracy:
    index: int
    name: str
    wnid: str
    images: int
    top1: float
    top5: float


@dataclass
class EvaluationResult:
    """Accuracy (in %) over every image that decoded; ``failures`` lists the others."""

    images: int
    top1: float
    top5: float
    per_class: list[ClassAccuracy]
    failures: list[tuple[str, str]]
    real_top1: float | None = None
    real_images: int | None = None
    seconds: float = 0.0
    images_per_second: float = 0.0
    data_wait_seconds: float = 0.0
    model_seconds: float = 0.0
    world_size: int = 1
    details: dict[str, Any] = field(default_factory=dict)
    # (file, target, top-5 class indices) of every decoded image, in dataset order
    predictions: list[tuple[str, int, list[int]]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["failures"] = [{"file": f, "error": e} for f, e in self.failures]
        out.pop("per_class")
        out.pop("predictions")
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def per_class_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["class_index", "wnid", "name", "images", "top1", "top5"])
        for c in self.per_class:
            writer.writerow([c.index, c.wnid, c.name, c.images, f"{c.top1:.4f}", f"{c.top5:.4f}"])
        return buffer.getvalue()

    def predictions_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["file", "target", "top5"])
        for path, target, top in self.predictions:
            writer.writerow([path, target, " ".join(map(str, top))])
        return buffer.getvalue()

    def write(
        self,
        json_path: str | os.PathLike | None = None,
        csv_path: str | os.PathLike | None = None,
        predictions_path: str | os.PathLike | None = None,
    ) -> None:
        """Write the summary JSON, the per-class CSV and the per-image predictions CSV
        (each only if its path is given), atomically."""
        if json_path is not None:
            write_text_atomic(json_path, self.to_json() + "\n")
        if csv_path is not None:
            write_text_atomic(csv_path, self.per_class_csv())
        if predictions_path is not None:
            write_text_atomic(predictions_path, self.predictions_csv())


class _Preprocessed(Dataset):
    """A user's dataset of ``(image, target)`` pairs, as ClassificationSamples: PIL images
    and uint8 tensors are preprocessed, float tensors are taken as model inputs."""

    def __init__(self, dataset: Dataset, preprocess: nn.Module):
        self.dataset = dataset
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> ClassificationSample:
        item = self.dataset[index]
        if isinstance(item, ClassificationSample):
            return item
        image, target = item[0], int(item[1])
        if isinstance(image, Image.Image) or (isinstance(image, torch.Tensor) and image.dtype == torch.uint8):
            image = self.preprocess(image)
        return ClassificationSample(image, target, index, "")


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    data: str | os.PathLike | Dataset,
    *,
    batch_size: int = 64,
    workers: int | None = None,
    device: str | torch.device | None = None,
    amp: bool = False,
    amp_dtype: torch.dtype = torch.float16,
    limit: int | None = None,
    labels: str | os.PathLike | None = None,
    real_labels: str | os.PathLike | None = None,
    preprocess: nn.Module | None = None,
    progress: bool = True,
    distributed: bool | None = None,
) -> EvaluationResult:
    """Top-1 / top-5 accuracy of ``model`` on ``data``.

    ``data``: an ImageFolder tree (folders named by wnid, class index or anything), the
    flat ILSVRC validation folder (``labels``: its ``LOC_val_solution.csv``;
    ``real_labels``: ImageNet-ReaL's ``real.json``), or any Dataset of ``(image, target)``
    (PIL images / uint8 tensors are preprocessed, float tensors used as they are).

    Distributed (``distributed=True``, or automatically under ``torchrun`` with more than
    one process): each rank evaluates every ``world_size``-th image, with no padding, and
    the per-image results are gathered, so totals are exact. Every rank returns the full
    result.
    """
    preprocess = preprocess if preprocess is not None else transforms_for(model)
    dataset = _evaluation_dataset(data, preprocess, labels, real_labels, limit)
    total = len(dataset)  # type: ignore[arg-type]
    with _distributed_context(distributed, device) as (rank, world_size, device):
        shard = Subset(dataset, range(rank, total, world_size))
        num_workers = min(4, os.cpu_count() or 1) if workers is None else workers
        loader = DataLoader(
            shard,
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=collate_classification,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
        model = model.to(device).eval()
        if amp and device.type != "cuda":
            logger.warning("mixed precision (amp) applies on CUDA only; evaluating in float32 on %s", device)
        autocast = (
            torch.autocast(device_type="cuda", dtype=amp_dtype)
            if amp and device.type == "cuda"
            else contextlib.nullcontext()
        )
        local, num_classes = _predict_top5(model, loader, device, autocast, progress and rank == 0)
        shards = _all_gather(local, world_size)

    result = _score(dataset, shards, num_classes, world_size, total)
    config = getattr(preprocess, "config", None)
    if isinstance(config, PreprocessConfig):
        result.details["preprocess"] = asdict(config)
    result.details["batch_size"] = batch_size
    result.details["device"] = str(device)
    return result


def _evaluation_dataset(data, preprocess: nn.Module, labels, real_labels, limit: int | None) -> Dataset:
    """``data`` opened (a folder) or wrapped (a Dataset) with ``preprocess``, cut to its
    first ``limit`` images."""
    if isinstance(data, (str, os.PathLike)):
        dataset: Dataset = open_classification_dataset(data, labels, real_labels, transform=preprocess)
    else:
        dataset = _Preprocessed(data, preprocess)
    if limit is not None:
        if limit <= 0:
            raise InvalidInputError(f"limit must be positive, got {limit}")
        if isinstance(dataset, ImageClassificationDataset):
            dataset = dataset.subset(limit)
        else:
            dataset = Subset(dataset, range(min(limit, len(dataset))))  # type: ignore[arg-type]
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise InvalidInputError("the dataset is empty")
    return dataset


def _predict_top5(model: nn.Module, loader: DataLoader, device: torch.device, autocast, progress: bool):
    """This rank's predictions: ``(indices, targets, top-5 classes, undecodable files,
    seconds, data wait, model time)`` as a dict, and the number of classes."""
    from tqdm.auto import tqdm

    num_classes = int(getattr(getattr(model, "module", model), "num_classes", 0) or 0)
    bar = tqdm(total=len(loader.dataset), unit="img", disable=not progress, desc="evaluate", smoothing=0.1)
    local_indices, local_targets, local_top, local_failures = [], [], [], []
    data_wait = model_time = 0.0
    start = last = time.perf_counter()
    correct1 = seen = 0
    for images, targets, indices, failures in loader:
        fetched = time.perf_counter()
        data_wait += fetched - last
        local_failures.extend(failures)
        if images is not None:
            with autocast:
                logits = model(images.to(device, non_blocking=True))
            num_classes = num_classes or logits.shape[-1]
            top = logits.float().topk(min(5, logits.shape[-1]), dim=-1).indices.cpu()
            local_top.append(top)
            local_indices.append(indices)
            local_targets.append(targets)
            correct1 += int((top[:, 0] == targets).sum())
            seen += len(indices)
        last = time.perf_counter()
        model_time += last - fetched
        bar.update(len(indices) + len(failures))
        if seen:
            bar.set_postfix(top1=f"{100.0 * correct1 / seen:.2f}", refresh=False)
    bar.close()
    local = {
        "indices": torch.cat(local_indices) if local_indices else torch.empty(0, dtype=torch.long),
        "targets": torch.cat(local_targets) if local_targets else torch.empty(0, dtype=torch.long),
        "top": torch.cat(local_top) if local_top else torch.empty(0, 5, dtype=torch.long),
        "failures": local_failures,
        "seconds": time.perf_counter() - start,
        "data_wait": data_wait,
        "model_time": model_time,
    }
    return local, num_classes


def _score(dataset: Dataset, shards: list[dict], num_classes: int, world_size: int, total: int) -> EvaluationResult:
    indices = torch.cat([s["indices"] for s in shards])
    targets = torch.cat([s["targets"] for s in shards])
    top = torch.cat([s["top"] for s in shards if len(s["top"])]) if any(len(s["top"]) for s in shards) else None
    failures = sorted(idx for s in shards for idx, _ in s["failures"])
    failure_reasons = {idx: reason for s in shards for idx, reason in s["failures"]}
    counted = indices.tolist() + failures
    if len(counted) != total or len(set(counted)) != total:
        raise RuntimeError(
            f"evaluation covered {len(set(counted))} distinct of {total} images with {len(counted)} results: "
            "a sampler dropped or repeated images"
        )
    order = indices.argsort()
    indices = indices[order]
    targets = targets[order]
    if top is None:
        raise RuntimeError(f"none of the {total} images could be decoded; first error: {failure_reasons[failures[0]]}")
    top = top[order]
    hit1 = top[:, 0] == targets
    hit5 = (top == targets[:, None]).any(dim=1)
    count = len(indices)

    base, _ = _base_dataset(dataset)
    classes = getattr(base, "classes", None) or [str(i) for i in range(num_classes)]
    wnids = getattr(base, "wnids", None)
    per_class = []
    for c in targets.unique().tolist():
        mask = targets == c
        n = int(mask.sum())
        per_class.append(
            ClassAccuracy(
                c,
                classes[c] if c < len(classes) else str(c),
                wnids[c] if wnids and c < len(wnids) else "",
                n,
                100.0 * float(hit1[mask].sum()) / n,
                100.0 * float(hit5[mask].sum()) / n,
            )
        )

    real_top1 = real_images = None
    real = _real_labels_of(dataset)
    if real is not None:
        good = [(row, real[int(i)]) for row, i in enumerate(indices.tolist()) if real[int(i)]]
        real_images = len(good)
        if real_images:
            real_top1 = 100.0 * sum(int(top[row, 0]) in labels for row, labels in good) / real_images

    seconds = max(s["seconds"] for s in shards)
    return EvaluationResult(
        images=count,
        top1=100.0 * float(hit1.sum()) / count,
        top5=100.0 * float(hit5.sum()) / count,
        per_class=per_class,
        failures=list(zip(_paths_of(dataset, failures), [failure_reasons[i] for i in failures])),
        real_top1=real_top1,
        real_images=real_images,
        seconds=seconds,
        images_per_second=total / seconds if seconds > 0 else 0.0,
        data_wait_seconds=sum(s["data_wait"] for s in shards) / len(shards),
        model_seconds=sum(s["model_time"] for s in shards) / len(shards),
        world_size=world_size,
        details={"layout": getattr(base, "layout", type(base).__name__)},
        predictions=list(zip(_paths_of(dataset, indices.tolist()), targets.tolist(), top.tolist())),
    )


def _base_dataset(dataset: Dataset) -> tuple[Dataset, list[int] | None]:
    """Unwrap Subset / _Preprocessed layers: the innermost dataset and the index map."""
    mapping: list[int] | None = None
    while True:
        if isinstance(dataset, Subset):
            sub = list(dataset.indices)
            mapping = sub if mapping is None else [sub[i] for i in mapping]
            dataset = dataset.dataset
        elif isinstance(dataset, _Preprocessed):
            dataset = dataset.dataset
        else:
            return dataset, mapping


def _paths_of(dataset: Dataset, indices: Sequence[int]) -> list[str]:
    base, mapping = _base_dataset(dataset)
    samples = getattr(base, "samples", None)
    out = []
    for index in indices:
        real_index = mapping[index] if mapping is not None else index
        out.append(str(samples[real_index][0]) if samples is not None else f"#{real_index}")
    return out


def _real_labels_of(dataset: Dataset) -> list[list[int]] | None:
    base, mapping = _base_dataset(dataset)
    real = getattr(base, "real_labels", None)
    if real is None:
        return None
    return [real[i] for i in mapping] if mapping is not None else real


# ---------------------------------------------------------------------------------------
# distributed


def distributed_requested(flag: bool | None) -> bool:
    if flag is not None:
        return flag
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def _distributed_context(flag: bool | None, device):
    """Yield ``(rank, world_size, device)``; joins (and later leaves) the process group
    that torchrun's environment describes when distributed evaluation is on."""
    if not distributed_requested(flag):
        yield 0, 1, resolve_device(device)
        return
    if "RANK" not in os.environ and not dist.is_initialized():
        raise RuntimeError(
            "distributed evaluation needs torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR): launch with "
            "`torchrun --nproc_per_node N -m mobilevt evaluate ...`"
        )
    created = False
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        resolved = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
        created = True
    try:
        yield dist.get_rank(), dist.get_world_size(), resolved
    finally:
        if created:
            dist.destroy_process_group()


def _all_gather(local: dict, world_size: int) -> list[dict]:
    if world_size == 1:
        return [local]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, local)
    return gathered
