"""``mobilevt bench deeplabv3_* ssdlite_*``: the task models against their references.

Segmentation (every ``deeplabv3_*`` asked for), at 512x512 by default (PASCAL VOC and
ADE20K's evaluation size): mobilevt eager and fused (BatchNorm folded, channels-last)
against transformers' ``MobileViT(V2)ForSemanticSegmentation`` with the same random weights
(v2 in transformers' dilation convention, so both compute the same function: the max-abs
logit difference is reported).

Detection (every ``ssdlite_*``), at 320x320 by default (ml-cvnets' COCO resolution):
mobilevt eager and fused against torchvision's ``ssdlite320_mobilenet_v3_large`` network
(backbone and heads, random weights; box decoding and NMS excluded on both sides, since with
random weights NMS time means nothing). Another network: no output comparison.

fp32, batch 1, timed round-robin (``timing.time_interleaved``); with params and MACs next to
the published counts (and the published COCO mAP for detectors).
"""

from __future__ import annotations

import copy
import json
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..engine import load_weights
from ..errors import InvalidInputError
from ..factory import create_model
from ..fileio import write_text_atomic
from ..model_kind import ModelKind
from ..models.ssdlite import published_map
from ..profiling import count_macs
from ..registry import get_model_entry
from .models import TransformersLogits, transformers_backbone_config, well_scaled_random_
from .timing import time_interleaved

TASK_KINDS = (ModelKind.SEGMENTATION, ModelKind.DETECTION)
DEFAULT_SIZES = {ModelKind.SEGMENTATION: 512, ModelKind.DETECTION: 320}


@dataclass
class TaskRow:
    task: str
    model: str
    input: str
    params_m: float
    published_params_m: float | None
    macs_g: float
    published_macs_g: float | None
    eager_ms: float
    fused_ms: float
    reference: str | None  # what the reference row runs, None where no reference exists
    reference_ms: float | None
    ratio_to_reference: float | None  # mobilevt eager / reference (below 1: mobilevt faster)
    max_abs_diff: float | None  # vs the reference's outputs, where it computes the same function
    published_coco_map: float | None = None


@dataclass
class TaskBenchReport:
    threads: int
    runs: int
    rows: list[TaskRow] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {"threads": self.threads, "runs": self.runs, "rows": [asdict(r) for r in self.rows]}, indent=2
        )

    def to_markdown(self) -> str:
        lines = [
            f"Task models, fp32, batch 1, {self.threads} threads, medians of {self.runs} interleaved rounds",
            "",
            "| model | input | params (M) | published (M) | MACs (G) | published MACs (G) | mobilevt eager (ms) "
            "| mobilevt fused (ms) | reference | reference (ms) | eager / reference | max abs diff |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.model} | {r.input} | {r.params_m:.2f} | {_fmt(r.published_params_m, '.1f')} | {r.macs_g:.2f} "
                f"| {_fmt(r.published_macs_g, '.2f')} | {r.eager_ms:.1f} | {r.fused_ms:.1f} | {r.reference or '-'} "
                f"| {_fmt(r.reference_ms, '.1f')} | {_fmt(r.ratio_to_reference, '.2f')} "
                f"| {_fmt(r.max_abs_diff, '.1e')} |"
            )
        return "\n".join(lines) + "\n"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _transformers_segmenter(name: str, ours: nn.Module, seed: int) -> nn.Module | None:
    """transformers' DeepLabV3 of ``name`` with ``ours``'s head settings, or None (no
    transformers, or no counterpart: MobileViTv3)."""
    try:
        import transformers
    except ImportError:
        return None
    backbone = name[len("deeplabv3_") :]
    config = transformers_backbone_config(
        backbone,
        num_labels=ours.num_classes,
        output_stride=ours.output_stride,
        atrous_rates=list(ours.aspp.atrous_rates),
        aspp_out_channels=ours.classifier.in_channels,
    )
    if config is None:
        return None
    model_class = (
        transformers.MobileViTV2ForSemanticSegmentation
        if backbone.startswith("mobilevitv2_")
        else transformers.MobileViTForSemanticSegmentation
    )
    return TransformersLogits(well_scaled_random_(model_class(config), seed)).eval()


def _torchvision_ssdlite() -> Callable[[torch.Tensor], object]:
    """torchvision's SSDLite320-MobileNetV3-Large network: backbone and heads, random weights."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    return lambda x: model.head(list(model.backbone(x).values()))


def _task_row(name: str, size: int, runs: int, warmup: int, seed: int, advance) -> TaskRow:
    entry = get_model_entry(name)
    segmenter = entry.kind == ModelKind.SEGMENTATION
    v2 = "mobilevitv2_" in name
    ours = well_scaled_random_(
        create_model(name, transformers_v2_dilation=v2) if segmenter else create_model(name), seed
    )
    cost = count_macs(ours, (size, size))
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed + 1))
    reference, label, diff = None, None, None
    if segmenter:
        reference = _transformers_segmenter(name, ours, seed)
        if reference is not None:
            load_weights(ours, reference.model.state_dict())  # transformers' layout, converted
            label = "transformers eager (same weights)"
            with torch.inference_mode():
                diff = (ours(x) - reference(x)).abs().max().item()
    else:
        reference, label = _torchvision_ssdlite(), "torchvision ssdlite320_mobilenet_v3_large network"
    runners = {"eager": ours, "fused": copy.deepcopy(ours).fuse().to(memory_format=torch.channels_last)}
    if reference is not None:
        runners["reference"] = reference
    times = time_interleaved(runners, x, runs, warmup, advance, name)
    median = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    reference_ms = median.get("reference")
    coco_map = None if segmenter else published_map(name)
    return TaskRow(
        "segmentation" if segmenter else "detection",
        name,
        f"{size}x{size}",
        cost.params / 1e6,
        entry.published_params_m,
        cost.macs / 1e9,
        entry.published_macs_g,
        median["eager"],
        median["fused"],
        label,
        reference_ms,
        median["eager"] / reference_ms if reference_ms else None,
        diff,
        coco_map,
    )


def run_task_benchmark(
    names: Sequence[str],
    image_size: int | None = None,
    threads: int | None = None,
    runs: int = 10,
    warmup: int = 2,
    seed: int = 0,
    progress: Callable[[str], None] = lambda stage: None,
) -> TaskBenchReport:
    """Time each segmentation or detection model of ``names`` against its reference."""
    for name in names:
        kind = get_model_entry(name).kind
        if kind not in TASK_KINDS:
            raise InvalidInputError(f"{name} is a {kind} model: bench the task models (deeplabv3_*, ssdlite_*) alone")
    threads = threads or len(os.sched_getaffinity(0))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rows = []
        for name in names:
            size = image_size or DEFAULT_SIZES[get_model_entry(name).kind]
            progress(f"{name} at {size}x{size}")
            rows.append(_task_row(name, size, runs, warmup, seed, lambda stage: None))
    finally:
        torch.set_num_threads(previous)
    return TaskBenchReport(threads, runs, rows)


def write_task_report(report: TaskBenchReport, output_dir: str | os.PathLike) -> dict[str, Path]:
    out = Path(output_dir)
    return {
        "markdown": write_text_atomic(out / "tasks-bench.md", report.to_markdown()),
        "json": write_text_atomic(out / "tasks-bench.json", report.to_json() + "\n"),
    }
