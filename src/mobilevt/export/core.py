"""``export_model``: write a model in a deployment format and verify the written file.

Verification runs the exported file in its own runtime (TorchScript interpreter,
onnxruntime) on real photos preprocessed as the weights expect, and compares with the
eager model: max-abs logit difference and top-1 / top-5 agreement. Latency is the median
of repeated batch-1 runs of both, measured in the same process so the ratio is fair.
"""
from __future__ import annotations

import copy
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from ..data.images import list_images, load_image
from ..data.preprocess import ImagePreprocess
from ..fileio import atomic_path, write_text_atomic
from ..weights.entries import PreprocessConfig

FORMATS = ("torchscript", "onnx")
_EXTRAS = {"onnx": 'pip install "mobilevt[onnx]"  (onnx, onnxruntime)'}


class ExportError(RuntimeError):
    """An export that cannot be made as asked (missing package, unsupported option)."""


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
    max_abs_diff: float
    top1_agreement: float
    top5_agreement: float
    eager_latency_ms: Optional[float]
    exported_latency_ms: Optional[float]
    runtime: str
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def export_model(
    model: nn.Module,
    output: str | os.PathLike,
    format: str,
    *,
    image_size: Optional[Sequence[int]] = None,
    dynamic_batch: bool = True,
    include_preprocessing: bool = False,
    lite: bool = False,
    opset: int = 17,
    check_images: str | os.PathLike | None = None,
    max_check_images: int = 32,
    latency_runs: int = 20,
    fuse: bool = True,
) -> ExportReport:
    """Export ``model`` (a mobilevt classifier with ``model.preprocess``) to ``output``.

    Args:
        format: ``"torchscript"`` or ``"onnx"``.
        image_size: (height, width) of the exported input; default: the weights' crop.
        dynamic_batch: let the batch dimension vary (ONNX axis / TorchScript always does).
        include_preprocessing: the exported model takes one uint8 ``[H, W, 3]`` RGB image
            of any size and does resize, crop, scaling and channel order inside
            (TorchScript only for now).
        lite: TorchScript only: ``optimize_for_mobile`` and the lite-interpreter format
            (``.ptl``) that PyTorch Mobile loads.
        check_images: folder of photos to verify on; default: the sample photos shipped
            in scikit-learn / scikit-image when installed.
        fuse: fold BatchNorm into convolutions first (outputs change < 1e-5).
    """
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if lite and format != "torchscript":
        raise ExportError("--lite applies to the torchscript format only")
    if include_preprocessing and format != "torchscript":
        raise ExportError(
            "--include-preprocessing is available for torchscript exports; for onnx, export the model and "
            "preprocess in the app"
        )
    config: PreprocessConfig = getattr(model, "preprocess", None) or PreprocessConfig()
    height, width = tuple(image_size) if image_size else tuple(config.input_size)
    eager = copy.deepcopy(model).eval()
    if fuse and hasattr(eager, "fuse"):
        eager = eager.fuse()

    images, source = _check_inputs(check_images, max_check_images)
    preprocess = ImagePreprocess(_with_size(config, height, width))
    batch = torch.stack([preprocess(image) for image in images])
    with torch.inference_mode():
        expected = eager(batch)

    output = Path(output)
    notes: list[str] = []
    if format == "torchscript":
        run, runtime = _export_torchscript(eager, output, include_preprocessing, lite, config, height, width, notes)
        if include_preprocessing:
            # the exported module preprocesses raw photos itself: feed it the photos
            actual = torch.cat([run(image.permute(1, 2, 0).contiguous()) for image in images])
            latency_input: Any = images[0].permute(1, 2, 0).contiguous()
            notes.append("input: one uint8 [H, W, 3] RGB image of any size; output: logits [1, classes]")
        else:
            actual = run(batch)
            latency_input = batch[:1]
    else:
        run, runtime = _export_onnx(eager, output, height, width, dynamic_batch, opset)
        actual = run(batch) if dynamic_batch else torch.cat([run(batch[i : i + 1]) for i in range(len(batch))])
        latency_input = batch[:1]

    agreement = _agreement(actual, expected)
    eager_input = batch[:1]
    if include_preprocessing:
        eager_ms = _median_ms(lambda: eager(preprocess(images[0])[None]), latency_runs)
    else:
        eager_ms = _median_ms(lambda: eager(eager_input), latency_runs)
    exported_ms = _median_ms(lambda: run(latency_input), latency_runs)
    report = ExportReport(
        format=format,
        path=str(output),
        file_bytes=output.stat().st_size,
        input_size=(height, width),
        dynamic_batch=dynamic_batch if format == "onnx" else True,
        include_preprocessing=include_preprocessing,
        check_images=len(images),
        check_source=source,
        max_abs_diff=float((actual.float() - expected.float()).abs().max()),
        top1_agreement=agreement[0],
        top5_agreement=agreement[1],
        eager_latency_ms=eager_ms,
        exported_latency_ms=exported_ms,
        runtime=runtime,
        notes=notes,
        details={"preprocess": asdict(config), "opset": opset if format == "onnx" else None, "lite": lite,
                 "fused": bool(fuse and hasattr(model, "fuse")), "threads": torch.get_num_threads()},
    )
    write_text_atomic(_report_path(output), report.to_json() + "\n")
    return report


def _report_path(output: Path) -> Path:
    return output.with_name(output.name + ".report.json")


def _with_size(config: PreprocessConfig, height: int, width: int) -> PreprocessConfig:
    if (height, width) == tuple(config.input_size):
        return config
    # keep the source's resize-to-crop ratio at the new size
    ratio = config.resize_size / max(config.input_size)
    return PreprocessConfig(
        (height, width), round(max(height, width) * ratio), config.interpolation, config.mean, config.std,
        config.channel_order, config.antialias, config.crop_rounding,
    )


class _ImageClassifier(nn.Module):
    """Preprocessing + model in one scriptable module: uint8 ``[H, W, 3]`` in, logits out."""

    def __init__(self, preprocess: ImagePreprocess, model: nn.Module):
        super().__init__()
        self.preprocess = preprocess
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(self.preprocess(image).unsqueeze(0))


def _export_torchscript(
    model, output: Path, include_preprocessing: bool, lite: bool, config, height, width, notes: list[str]
):
    module: nn.Module = model
    if include_preprocessing:
        module = _ImageClassifier(ImagePreprocess(_with_size(config, height, width), channels_last_input=True), model)
    scripted = torch.jit.script(module.eval())
    with atomic_path(output) as tmp:
        if lite:
            from torch.utils.mobile_optimizer import optimize_for_mobile

            try:
                scripted = optimize_for_mobile(scripted)
            except RuntimeError as exc:
                if "XNNPACK" not in str(exc):
                    raise
                # CPU wheels without XNNPACK cannot run the mobile rewrite passes; the
                # lite-interpreter file is still valid, only not pre-optimised.
                notes.append("optimize_for_mobile skipped: this torch build has no XNNPACK")
            scripted._save_for_lite_interpreter(str(tmp))
        else:
            torch.jit.save(scripted, str(tmp))
    if lite:
        from torch.jit.mobile import _load_for_lite_interpreter

        loaded = _load_for_lite_interpreter(str(output))
        runtime = "PyTorch lite interpreter"
    else:
        loaded = torch.jit.load(str(output))
        runtime = "TorchScript interpreter"

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return loaded(x)

    return run, runtime


def _export_onnx(model, output: Path, height: int, width: int, dynamic_batch: bool, opset: int):
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as exc:
        raise ExportError(f"the onnx export needs {exc.name}: {_EXTRAS['onnx']}") from None
    example = torch.rand(2 if dynamic_batch else 1, 3, height, width)
    with atomic_path(output) as tmp:
        if opset <= 17:
            # The TorchScript-based exporter writes opset <= 17 natively; the dynamo
            # exporter starts at 18 and cannot down-convert MobileViT's graph.
            torch.onnx.export(
                model, (example,), str(tmp), dynamo=False, opset_version=opset,
                input_names=["pixel_values"], output_names=["logits"],
                dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None,
            )
        else:
            torch.onnx.export(
                model, (example,), str(tmp), dynamo=True, opset_version=opset,
                input_names=["pixel_values"], output_names=["logits"],
                dynamic_shapes={"x": {0: torch.export.Dim("batch")}} if dynamic_batch else None,
            )
        onnx.checker.check_model(onnx.load(str(tmp)))
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        (logits,) = session.run(None, {"pixel_values": x.numpy()})
        return torch.from_numpy(logits)

    return run, f"onnxruntime {ort.__version__} (CPUExecutionProvider)"


def _check_inputs(folder, limit: int) -> tuple[list[torch.Tensor], str]:
    if folder is not None:
        paths = list_images(folder)[:limit]
        if not paths:
            raise ExportError(f"{folder}: no images to check the export on")
        return [load_image(p) for p in paths], str(folder)
    photos = _packaged_photos()
    if photos:
        return photos[:limit], "sample photos of scikit-learn / scikit-image"
    raise ExportError(
        "no photos to check the export on: pass check_images / --check-images DIR, or pip install scikit-learn"
    )


def _packaged_photos() -> list[torch.Tensor]:
    """Real photos shipped inside PyPI packages, when those packages are installed."""
    photos: list[torch.Tensor] = []
    try:
        from sklearn.datasets import load_sample_images

        photos += [torch.from_numpy(array).permute(2, 0, 1) for array in load_sample_images().images]
    except ImportError:
        pass
    try:
        from skimage import data

        for name in ("chelsea", "coffee", "astronaut", "rocket"):
            photos.append(torch.from_numpy(getattr(data, name)()).permute(2, 0, 1))
    except (ImportError, AttributeError, OSError):
        pass
    return photos


def _agreement(actual: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    k = min(5, expected.shape[-1])
    top1 = (actual.argmax(-1) == expected.argmax(-1)).float().mean().item()
    a5, e5 = actual.topk(k, -1).indices.sort(-1).values, expected.topk(k, -1).indices.sort(-1).values
    top5 = (a5 == e5).all(-1).float().mean().item()
    return top1, top5


def _median_ms(fn: Callable[[], Any], runs: int) -> Optional[float]:
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
