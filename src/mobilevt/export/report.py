"""What every export shares: the report (written beside the file as JSON), the check
photos, agreement with the eager model and the timing."""

from __future__ import annotations

import importlib.resources
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.images import list_images, load_image
from ..fileio import write_text_atomic
from .errors import ExportError

# pip extras that bring each format's tools
EXTRAS = {
    "onnx": 'pip install "mobilevt[onnx]"  (onnx, onnxruntime)',
    "executorch": 'pip install "mobilevt[executorch]"  (executorch)',
    "coreml": 'pip install "mobilevt[coreml]"  (coremltools)',
    "tflite": 'pip install "mobilevt[tflite]"  (litert-torch, ai-edge-litert)',
}


@dataclass
class ExportReport:
    format: str
    path: str
    file_bytes: int
    input_size: tuple[int, int]
    dynamic_batch: bool
    include_preprocessing: bool
    check_images: int
    check_source: str
    max_abs_diff: float | None
    top1_agreement: float | None
    top5_agreement: float | None
    eager_latency_ms: float | None
    exported_latency_ms: float | None
    runtime: str
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    # what top1_agreement / top5_agreement compare: "top-1 class" (classifiers),
    # "top-1 class per pixel" (segmenters), "detections" (same boxes, labels and
    # scores within tolerance), "top-1 answer" (VQA)
    agreement_of: str = "top-1 class"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def write_report(report: ExportReport) -> ExportReport:
    write_text_atomic(report_path(Path(report.path)), report.to_json() + "\n")
    return report


def file_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def report_path(output: Path) -> Path:
    return output.with_name(output.name + ".report.json")


PACKAGED_PHOTOS_SOURCE = "check photos shipped with mobilevt"


def check_inputs(folder, limit: int) -> tuple[list[torch.Tensor], str]:
    if folder is not None:
        paths = list_images(folder)[:limit]
        if not paths:
            raise ExportError(f"{folder}: no images to check the export on")
        return [load_image(p) for p in paths], str(folder)
    return packaged_photos()[:limit], PACKAGED_PHOTOS_SOURCE


def packaged_photos() -> list[torch.Tensor]:
    """The six photos shipped in the package (public-domain and CC0 samples of scikit-image,
    at most 384 px; ``data/check_photos/LICENSE.md``): every export can be checked on real
    photos with its own extra installed and nothing else."""
    folder = importlib.resources.files("mobilevt.data") / "check_photos"
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".jpg"))
    return [load_image((folder / name).read_bytes()) for name in names]


def topk_agreement(actual: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    if expected.dim() == 4:  # dense logits [B, K, H, W] (segmentation): agreement per pixel
        actual, expected = (t.movedim(1, -1).reshape(-1, t.shape[1]) for t in (actual, expected))
    k = min(5, expected.shape[-1])
    top1 = (actual.argmax(-1) == expected.argmax(-1)).float().mean().item()
    a5, e5 = actual.topk(k, -1).indices.sort(-1).values, expected.topk(k, -1).indices.sort(-1).values
    top5 = (a5 == e5).all(-1).float().mean().item()
    return top1, top5


def median_ms(fn: Callable[[], Any], runs: int) -> float | None:
    if runs <= 0:
        return None
    with torch.inference_mode():
        fn()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)
