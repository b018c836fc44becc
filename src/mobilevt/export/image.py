"""The image family's export: classifiers and segmenters (one image batch in, logits out).

It says what to export (the fused model, or the photo-in file with the preprocessing
inside) and how to compare the written file with eager: max-abs logit difference and
top-1 / top-5 agreement on real photos (per pixel for segmenters), then batch-1 latency
of both, measured in the same process so the ratio is fair."""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.images import list_images, load_image
from ..data.preprocess import ImagePreprocess
from ..weights.entries import PreprocessConfig
from .errors import ExportError
from .family import ExportOptions, FamilyAdapter
from .formats import Dim, ExportFormat, Graph, Runner, WriteOptions, Written
from .quantize import METHODS
from .report import ExportReport, check_inputs, file_size, median_ms, topk_agreement, write_report

MAX_CHECK_IMAGES = 32


def export_image_model(
    model: nn.Module, output: Path, export_format: ExportFormat, options: ExportOptions
) -> ExportReport:
    _check_options(options)
    config: PreprocessConfig = getattr(model, "preprocess", None) or PreprocessConfig()
    height, width = tuple(options.image_size) if options.image_size else tuple(config.input_size)
    sized = with_size(config, height, width)
    eager = copy.deepcopy(model).eval()
    if options.fuse and hasattr(eager, "fuse"):
        eager = eager.fuse()
    graph = _graph(eager, height, width, options)
    write_options = WriteOptions(
        opset=options.opset,
        lite=options.lite,
        quantize=options.quantize,
        precision=options.coreml_precision,
        preprocessing=sized if options.include_preprocessing or not export_format.runs_here else None,
        stage=options.stage,
    )
    export_format.check(write_options)
    if not export_format.runs_here:
        return _spec_only_report(export_format.write(graph, output, write_options), config, options, height, width)
    options.stage("reading the check photos and running the eager model on them")
    images, source = check_inputs(options.check_images, options.max_check_images or MAX_CHECK_IMAGES)
    preprocess = ImagePreprocess(sized)
    batch = torch.stack([preprocess(image) for image in images])
    details: dict[str, Any] = {}
    if options.quantize is not None:
        calibration = calibration_batches(options, preprocess, details)
        write_options = replace(write_options, calibration=[(b,) for b in calibration])
    with torch.inference_mode():
        expected = eager(batch)
    written = export_format.write(graph, output, write_options)
    if export_format.check_stage:
        options.stage(f"{export_format.check_stage} on the {len(batch)} check images")
    actual, latency_input = _run_checks(written, batch, images, options.include_preprocessing)
    if written.fp32 is not None:
        details["quantization"] |= compare_with_fp32(written, (latency_input,), options.latency_runs)
    if options.latency_runs > 0:
        options.stage(f"timing eager and the file at batch 1 ({options.latency_runs} runs each)")
    if options.include_preprocessing:
        eager_ms = median_ms(lambda: eager(preprocess(images[0])[None]), options.latency_runs)
        difference = export_format.preprocessing_difference(sized, images)
        if difference is not None:
            written.notes.append(
                f"opset {written.details['opset']} (antialiased Resize); preprocessing in onnxruntime vs the eager "
                f"ImagePreprocess on the check photos: at most {difference['max_steps']:g}/255, on "
                f"{100 * difference['fraction_differing']:.3f}% of the values"
            )
            details["preprocessing_vs_eager"] = difference
        written.notes.append("input: one uint8 [H, W, 3] RGB image of any size; output: logits [1, classes]")
    else:
        eager_ms = median_ms(lambda: eager(batch[:1]), options.latency_runs)
    top1, top5 = topk_agreement(actual, expected)
    return write_report(
        ExportReport(
            format=options.format,
            path=str(output),
            file_bytes=file_size(output),
            input_size=(height, width),
            dynamic_batch=written.dynamic and not options.include_preprocessing,
            include_preprocessing=options.include_preprocessing,
            check_images=len(images),
            check_source=source,
            max_abs_diff=float((actual.float() - expected.float()).abs().max()),
            top1_agreement=top1,
            top5_agreement=top5,
            eager_latency_ms=eager_ms,
            agreement_of="top-1 class per pixel" if expected.dim() == 4 else "top-1 class",
            exported_latency_ms=median_ms(lambda: written.run(latency_input), options.latency_runs),
            runtime=written.runtime,
            notes=written.notes,
            details={
                "preprocess": asdict(config),
                "opset": options.opset if "opset" in export_format.options else None,
                "lite": options.lite,
                "fused": bool(options.fuse and hasattr(model, "fuse")),
                "threads": torch.get_num_threads(),
                "max_batch": written.max_batch,
                "dynamic_size": options.dynamic_size,
            }
            | written.details
            | details,
        )
    )


def _check_options(options: ExportOptions) -> None:
    """The combinations of options the image family cannot honour (the format checks its own)."""
    if options.dynamic_size and options.opset > 17:
        raise ExportError("--dynamic-size applies to onnx at opset 17 or lower (TorchScript files take any size)")
    if options.include_preprocessing and options.dynamic_size:
        raise ExportError("--dynamic-size does not apply with --include-preprocessing: the image input takes any size")
    check_quantize(options)


def check_quantize(options: ExportOptions) -> None:
    """Static int8 of an image model: a known method, and calibration photos."""
    if options.quantize is not None:
        if options.quantize not in METHODS:
            raise ExportError(f"unknown quantization {options.quantize!r}; choose one of {', '.join(METHODS)}")
        if options.calibration is None:
            raise ExportError("--quantize int8 needs --calibration DIR: a folder of representative photos")


def _graph(eager: nn.Module, height: int, width: int, options: ExportOptions) -> Graph:
    """The network with one image-batch input, dynamic as asked; batch 1 and static with
    the preprocessing inside (the photo is the input)."""
    dynamic_batch = options.dynamic_batch and not options.include_preprocessing
    # batch 2 in the example: torch.export specialises a size-1 dimension to a constant
    example = torch.rand(2 if dynamic_batch else 1, 3, height, width)
    batch = Dim("batch", min=1, max=options.max_batch)
    pixels: dict[int, Dim] = ({0: batch} if dynamic_batch else {}) | (
        {2: Dim("height"), 3: Dim("width")} if options.dynamic_size else {}
    )
    return Graph(eager, (example,), ("pixel_values",), ("logits",), (pixels,), ({0: batch} if dynamic_batch else {},))


def _run_checks(
    written: Written, batch: torch.Tensor, images: list[torch.Tensor], photo_input: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The file's logits on the check batch (or photos), and the input to time it on."""
    if photo_input:
        photos = [image.permute(1, 2, 0).contiguous() for image in images]
        return torch.cat([written.run(photo)[0] for photo in photos]), photos[0]
    step = (written.max_batch or len(batch)) if written.dynamic else 1
    return torch.cat([written.run(batch[i : i + step])[0] for i in range(0, len(batch), step)]), batch[:1]


def _spec_only_report(
    written: Written, config: PreprocessConfig, options: ExportOptions, height: int, width: int
) -> ExportReport:
    """A file that cannot run here (Core ML off macOS): its spec was validated, nothing compared."""
    return write_report(
        ExportReport(
            format=options.format,
            path=str(written.path),
            file_bytes=file_size(written.path),
            input_size=(height, width),
            dynamic_batch=False,
            include_preprocessing=True,
            check_images=0,
            check_source="",
            max_abs_diff=None,
            top1_agreement=None,
            top5_agreement=None,
            eager_latency_ms=None,
            exported_latency_ms=None,
            runtime=written.runtime,
            notes=written.notes,
            details={"preprocess": asdict(config), **written.details, "threads": torch.get_num_threads()},
        )
    )


def calibration_batches(options: ExportOptions, preprocess: nn.Module, details: dict) -> list[torch.Tensor]:
    """The calibration photos, each preprocessed into a batch of one; records what was used
    in ``details["quantization"]``."""
    paths = list_images(options.calibration)[: options.max_calibration_images]
    if not paths:
        raise ExportError(f"{options.calibration}: no calibration images found")
    details["quantization"] = {
        "method": options.quantize,
        "calibration_images": len(paths),
        "calibration_source": str(options.calibration),
    }
    return [preprocess(load_image(p))[None] for p in paths]


def compare_with_fp32(written: Written, latency_inputs: tuple[torch.Tensor, ...], runs: int) -> dict[str, Any]:
    """Size and batch-1 latency of an int8 file against the fp32 file on the same runtime,
    timed interleaved so that machine noise hits both alike."""
    fp32_run, fp32_bytes = written.fp32
    int8_bytes = file_size(written.path)
    times: dict[str, list[float]] = {"int8": [], "fp32": []}
    runners: tuple[tuple[str, Runner], ...] = (("int8", written.run), ("fp32", fp32_run))
    if runs > 0:
        with torch.inference_mode():
            written.run(*latency_inputs), fp32_run(*latency_inputs)
            for _ in range(runs):
                for name, run in runners:
                    start = time.perf_counter()
                    run(*latency_inputs)
                    times[name].append(time.perf_counter() - start)
    int8_ms = 1e3 * statistics.median(times["int8"]) if runs > 0 else None
    fp32_ms = 1e3 * statistics.median(times["fp32"]) if runs > 0 else None
    return {
        "fp32_file_bytes": fp32_bytes,
        "size_ratio": fp32_bytes / int8_bytes,
        "int8_latency_ms": int8_ms,
        "fp32_latency_ms": fp32_ms,
        "speedup_vs_fp32": fp32_ms / int8_ms if int8_ms and fp32_ms else None,
    }


def with_size(config: PreprocessConfig, height: int, width: int) -> PreprocessConfig:
    """``config`` at another crop size, keeping its resize-to-crop ratio."""
    if (height, width) == tuple(config.input_size):
        return config
    ratio = config.resize_size / max(config.input_size)
    return PreprocessConfig(
        (height, width),
        round(max(height, width) * ratio),
        config.interpolation,
        config.mean,
        config.std,
        config.channel_order,
        config.antialias,
        config.crop_rounding,
    )


IMAGE_OPTIONS = frozenset(
    {
        "image_size",
        "dynamic_batch",
        "dynamic_size",
        "include_preprocessing",
        "lite",
        "opset",
        "fuse",
        "max_batch",
        "coreml_precision",
        "quantize",
    }
)
CLASSIFIER = FamilyAdapter("classifiers", "classifier exports", IMAGE_OPTIONS, "", export_image_model)
SEGMENTER = FamilyAdapter("segmenters", "segmenter exports", IMAGE_OPTIONS, "", export_image_model)
