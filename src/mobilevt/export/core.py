"""``export_model``: write a model in a deployment format and verify the written file.

Verification runs the exported file in its own runtime (TorchScript interpreter,
onnxruntime) on real photos preprocessed as the weights expect, and compares with the
eager model: max-abs logit difference and top-1 / top-5 agreement. Latency is the median
of repeated batch-1 runs of both, measured in the same process so the ratio is fair.
"""
from __future__ import annotations

import copy
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from ..data.images import list_images, load_image
from ..data.preprocess import ImagePreprocess
from ..fileio import atomic_path
from ..weights.entries import PreprocessConfig
from .errors import ExportError
from .report import (
    ExportReport,
    topk_agreement,
    check_inputs,
    file_size,
    median_ms,
    write_report,
)
from .quantize import METHODS, quantize_onnx_static, quantize_pt2e_xnnpack
from .native_logs import RESIZE_ERRORS, expected_warnings_silenced, native_stderr_without
from .rewrite import delegate_friendly
from .backends import (
    executorch_runner,
    onnx_runner,
    onnx_runtime_name,
    require_executorch,
    require_onnx,
    write_xnnpack_program,
)
from .coreml import export_coreml
from .torchscript import save_torchscript

FORMATS = ("torchscript", "onnx", "executorch", "coreml", "tflite")
@dataclass(frozen=True)
class ExportOptions:
    """What ``export_model`` was asked for, in one value the family adapters share."""

    format: str
    image_size: Optional[Sequence[int]] = None
    dynamic_batch: bool = True
    dynamic_size: bool = False
    include_preprocessing: bool = False
    lite: bool = False
    opset: int = 17
    check_images: str | os.PathLike | None = None
    max_check_images: int = 32
    latency_runs: int = 20
    fuse: bool = True
    max_batch: int = 32
    coreml_precision: str = "float16"
    quantize: Optional[str] = None
    calibration: str | os.PathLike | None = None
    max_calibration_images: int = 128
    progress: Optional[Callable[[str], None]] = None  # told each stage as it starts ("lowering to XNNPACK")


@expected_warnings_silenced()
def export_model(model: nn.Module, output: str | os.PathLike, format: str, **options: Any) -> ExportReport:
    """Export ``model`` to ``output`` in ``format`` and verify the written file against
    the eager model: every family (classifier, segmenter, detector, ViLT VQA pipeline)
    goes through this one function, which picks the family's adapter.

    Options (keywords, all optional; :class:`ExportOptions`):
        format: ``"torchscript"``, ``"onnx"``, ``"executorch"`` (``.pte`` lowered to XNNPACK),
            ``"coreml"`` (ML Program ``.mlpackage`` whose input is an image with the
            pixel scale and channel order baked in) or ``"tflite"`` (LiteRT flatbuffer from
            litert-torch, builtin ops only, NCHW float input, batch 1).
        image_size: (height, width) of the exported input; default: the weights' crop.
        dynamic_batch: let the batch dimension vary (ONNX axis / TorchScript always does).
        dynamic_size: ONNX (opset <= 17): let height and width vary too.
        include_preprocessing: the exported model takes one uint8 ``[H, W, 3]`` RGB image
            of any size and does resize, crop, scaling and channel order inside
            (TorchScript; ONNX at opset >= 18, raised to 18 if lower, whose antialiased
            ``Resize`` differs from PIL by at most 1-2/255 on a few pixels, see the report).
        lite: TorchScript only: ``optimize_for_mobile`` and the lite-interpreter format
            (``.ptl``) that PyTorch Mobile loads.
        check_images: folder of photos to verify on; default: the sample photos shipped
            in scikit-learn when installed.
        fuse: fold BatchNorm into convolutions first (outputs change < 1e-5).
        max_batch: ExecuTorch plans memory for the largest batch: the dynamic batch
            dimension's upper bound.
        coreml_precision: ``"float16"`` (Core ML's default, what the Neural Engine runs)
            or ``"float32"``.
        quantize: ``"int8"``: post-training static quantization calibrated on the photos
            in ``calibration`` (onnx: onnxruntime static quantization; executorch: PT2E with
            the XNNPACK quantizer). The report adds the fp32 file's size and latency on the
            same runtime; its agreement figures are with the fp32 eager model.
        calibration: folder of representative photos (a few hundred from the training
            distribution; not the images the report checks on).
        progress: a function told each stage as it starts, e.g. ``print`` (the CLI prints
            each with the seconds elapsed); exports can take a minute.

    A ViLT :class:`~mobilevt.tasks.vqa.VqaPipeline` exports to torchscript, onnx and
    executorch (:mod:`mobilevt.export.vilt`); an SSDLite detector to the same three, as
    network + box decoding with NMS described beside the file (:mod:`mobilevt.export.detection`).
    """
    unknown = sorted(set(options) - {f.name for f in fields(ExportOptions)})
    if unknown:
        raise TypeError(f"export_model() got unexpected option(s) {', '.join(unknown)}")
    chosen = ExportOptions(format=format, **options)
    export = _adapter_for(model)
    return export(model, Path(output), chosen)


def _quiet(stage: str) -> None:
    pass


def _stage(options: ExportOptions, text: str) -> None:
    if options.progress is not None:
        options.progress(text)


def _adapter_for(model: nn.Module) -> Callable[[nn.Module, Path, ExportOptions], ExportReport]:
    """The family's export: how it wraps the model, checks its options and compares outputs."""
    if hasattr(model, "answer_logits") and hasattr(model, "tokenizer"):  # a ViLT VqaPipeline
        return _export_vqa_pipeline
    if getattr(model, "image_size_rule", None) is not None:
        raise ExportError("a ViLT model also needs its question tokenizer: export the pipeline, "
                          "export_model(mobilevt.create_vqa_pipeline(weights=...), ...)")
    if getattr(model, "anchor_generator", None) is not None:  # an SSDLite detector
        return _export_detector
    return _export_image_model  # classifiers, and segmenters (agreement per pixel)


def _refuse_options(options: ExportOptions, names: Sequence[str], what: str, why: str) -> None:
    defaults = ExportOptions(format=options.format)
    if any(getattr(options, name) != getattr(defaults, name) for name in names):
        flags = ["--" + name.replace("_", "-") for name in names]
        raise ExportError(f"{what} take no {', '.join(flags[:-1])} or {flags[-1]}: {why}")


def _export_vqa_pipeline(pipeline: nn.Module, output: Path, options: ExportOptions) -> ExportReport:
    _refuse_options(options, ("quantize", "lite", "include_preprocessing", "image_size", "dynamic_size"),
                    "ViLT VQA exports", "TorchScript holds the whole pipeline, ONNX and ExecuTorch take any image size")
    from .vilt import export_vqa_pipeline

    return export_vqa_pipeline(pipeline, output, options.format, check_images=options.check_images,
                               latency_runs=options.latency_runs, opset=options.opset,
                               progress=options.progress or _quiet)


def _export_detector(model: nn.Module, output: Path, options: ExportOptions) -> ExportReport:
    _refuse_options(options, ("quantize", "lite", "include_preprocessing", "dynamic_size"),
                    "detector exports", "the file holds the network and its box decoding at one input size")
    from .detection import export_detector

    return export_detector(model, output, options.format, image_size=options.image_size,
                           dynamic_batch=options.dynamic_batch, opset=options.opset,
                           check_images=options.check_images, max_check_images=options.max_check_images,
                           latency_runs=options.latency_runs, fuse=options.fuse, progress=options.progress or _quiet)


def _check_image_model_options(options: ExportOptions) -> None:
    fmt = options.format
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if options.dynamic_size and (fmt != "onnx" or options.opset > 17):
        raise ExportError("--dynamic-size applies to onnx at opset 17 or lower (TorchScript files take any size)")
    if options.lite and fmt != "torchscript":
        raise ExportError("--lite applies to the torchscript format only")
    if options.include_preprocessing and fmt not in ("torchscript", "onnx"):
        raise ExportError(
            f"--include-preprocessing is available for torchscript and onnx exports, not {fmt}; export the "
            "model alone and preprocess in the app"
        )
    if options.quantize is not None:
        if options.quantize not in METHODS:
            raise ExportError(f"unknown quantization {options.quantize!r}; choose one of {', '.join(METHODS)}")
        if fmt not in ("onnx", "executorch"):
            raise ExportError(f"--quantize int8 is available for onnx and executorch exports, not {fmt}")
        if options.include_preprocessing:
            raise ExportError("--quantize does not combine with --include-preprocessing yet; export the model alone")
        if options.calibration is None:
            raise ExportError("--quantize int8 needs --calibration DIR: a folder of representative photos")
    if options.include_preprocessing and options.dynamic_size:
        raise ExportError("--dynamic-size does not apply with --include-preprocessing: the image input takes any size")


@dataclass
class _Job:
    """One image-model export: the eager model, the check batch and what the writer reports."""

    eager: nn.Module
    output: Path
    options: ExportOptions
    config: PreprocessConfig
    height: int
    width: int
    images: list
    batch: torch.Tensor
    notes: list = field(default_factory=list)
    details: dict = field(default_factory=dict)
    calibration: list = field(default_factory=list)

    def stage(self, text: str) -> None:
        _stage(self.options, text)


@dataclass
class _Written:
    """What a format writer hands back: the file's runner, its outputs on the check batch."""

    run: Callable[[torch.Tensor], torch.Tensor]
    runtime: str
    actual: torch.Tensor
    latency_input: torch.Tensor
    dynamic_batch: bool
    max_batch: Optional[int] = None


def _export_image_model(model: nn.Module, output: Path, options: ExportOptions) -> ExportReport:
    _check_image_model_options(options)
    config: PreprocessConfig = getattr(model, "preprocess", None) or PreprocessConfig()
    height, width = tuple(options.image_size) if options.image_size else tuple(config.input_size)
    eager = copy.deepcopy(model).eval()
    if options.fuse and hasattr(eager, "fuse"):
        eager = eager.fuse()
    if options.format == "coreml":
        return _coreml_report(eager, output, options, config, height, width)
    _stage(options, "reading the check photos and running the eager model on them")
    images, source = check_inputs(options.check_images, options.max_check_images)
    preprocess = ImagePreprocess(_with_size(config, height, width))
    job = _Job(eager, output, options, config, height, width, images, torch.stack([preprocess(i) for i in images]))
    if options.quantize is not None:
        job.calibration = _calibration_batches(options, preprocess, job.details)
    with torch.inference_mode():
        expected = eager(job.batch)
    written = _WRITERS[_writer_key(options)](job)
    top1, top5 = topk_agreement(written.actual, expected)
    if options.latency_runs > 0:
        job.stage(f"timing eager and the file at batch 1 ({options.latency_runs} runs each)")
    if options.include_preprocessing:
        eager_ms = median_ms(lambda: eager(preprocess(images[0])[None]), options.latency_runs)
    else:
        eager_ms = median_ms(lambda: eager(job.batch[:1]), options.latency_runs)
    return write_report(ExportReport(
        format=options.format, path=str(output), file_bytes=file_size(output), input_size=(height, width),
        dynamic_batch=written.dynamic_batch, include_preprocessing=options.include_preprocessing,
        check_images=len(images), check_source=source,
        max_abs_diff=float((written.actual.float() - expected.float()).abs().max()),
        top1_agreement=top1, top5_agreement=top5, eager_latency_ms=eager_ms,
        agreement_of="top-1 class per pixel" if expected.dim() == 4 else "top-1 class",
        exported_latency_ms=median_ms(lambda: written.run(written.latency_input), options.latency_runs),
        runtime=written.runtime, notes=job.notes,
        details={"preprocess": asdict(config), "opset": options.opset if options.format == "onnx" else None,
                 "lite": options.lite, "fused": bool(options.fuse and hasattr(model, "fuse")),
                 "threads": torch.get_num_threads(), "max_batch": written.max_batch,
                 "dynamic_size": options.dynamic_size} | job.details,
    ))


def _calibration_batches(options: ExportOptions, preprocess: ImagePreprocess, details: dict) -> list[torch.Tensor]:
    paths = list_images(options.calibration)[: options.max_calibration_images]
    if not paths:
        raise ExportError(f"{options.calibration}: no calibration images found")
    details["quantization"] = {"method": options.quantize, "calibration_images": len(paths),
                               "calibration_source": str(options.calibration)}
    return [preprocess(load_image(p))[None] for p in paths]


def _writer_key(options: ExportOptions) -> str:
    if options.include_preprocessing:
        return options.format + "+preprocessing"
    if options.quantize is not None:
        return options.format + "+" + options.quantize
    return options.format


def _one_at_a_time(run, batch: torch.Tensor, step: int = 1) -> torch.Tensor:
    return torch.cat([run(batch[i : i + step]) for i in range(0, len(batch), step)])


def _write_torchscript(job: _Job) -> _Written:
    options = job.options
    job.stage("scripting the model and saving the TorchScript file" + (
        " (optimize_for_mobile, lite interpreter)" if options.lite else ""))
    run, runtime = _export_torchscript(job.eager, job.output, options.include_preprocessing, options.lite,
                                       job.config, job.height, job.width, job.notes)
    if options.include_preprocessing:
        actual, latency_input = _run_on_photos(run, job.images, job.notes)
        return _Written(run, runtime, actual, latency_input, True)
    return _Written(run, runtime, run(job.batch), job.batch[:1], True)


def _write_onnx_with_preprocessing(job: _Job) -> _Written:
    from .onnx_preprocessing import export_onnx_with_preprocessing

    opset = max(job.options.opset, 18)  # the antialiased Resize needs opset 18
    job.stage(f"exporting preprocessing and model to ONNX (opset {opset}), then running it on the check photos")
    run, runtime, details = export_onnx_with_preprocessing(
        job.eager, job.output, _with_size(job.config, job.height, job.width), opset, job.images, job.notes
    )
    job.details.update(details, opset=opset)
    actual, latency_input = _run_on_photos(run, job.images, job.notes)
    return _Written(run, runtime, actual, latency_input, False)


def _write_onnx(job: _Job) -> _Written:
    options = job.options
    job.stage(f"exporting to ONNX (opset {options.opset}) and checking the graph")
    run, runtime = _export_onnx(job.eager, job.output, job.height, job.width, options.dynamic_batch,
                                options.dynamic_size, options.opset)
    job.stage(f"running the file in onnxruntime on the {len(job.batch)} check images")
    actual = run(job.batch) if options.dynamic_batch else _one_at_a_time(run, job.batch)
    return _Written(run, runtime, actual, job.batch[:1], options.dynamic_batch)


def _write_onnx_int8(job: _Job) -> _Written:
    options = job.options
    with tempfile.TemporaryDirectory() as folder:
        fp32_path = Path(folder) / "fp32.onnx"
        job.stage(f"exporting the fp32 model to ONNX (opset {options.opset})")
        fp32_run, runtime = _export_onnx(job.eager, fp32_path, job.height, job.width, options.dynamic_batch,
                                         options.dynamic_size, options.opset)
        job.stage(f"quantizing to int8 (onnxruntime static), calibrating on {len(job.calibration)} photos")
        quantize_onnx_static(fp32_path, job.output, job.calibration, "pixel_values")
        fp32_bytes = file_size(fp32_path)
    run = _onnx_runner(job.output)
    job.stage("running the int8 file on the check images and timing it against the fp32 file")
    job.notes.append("int8: onnxruntime static quantization (QOperator, per-channel int8 weights, uint8 "
                     "activations) of convolutions, weight matmuls, adds, products and sigmoids; attention matmuls, "
                     "softmax and norms stay fp32")
    actual = run(job.batch) if options.dynamic_batch else _one_at_a_time(run, job.batch)
    job.details["quantization"] |= _compare_with_fp32(run, fp32_run, fp32_bytes, job.output, job.batch[:1],
                                                      options.latency_runs)
    return _Written(run, runtime, actual, job.batch[:1], options.dynamic_batch)


def _write_tflite(job: _Job) -> _Written:
    from .tflite import export_tflite

    job.stage("converting to LiteRT (litert-torch), then running the file on the check images")
    run, runtime, details = export_tflite(job.eager, job.output, job.height, job.width, job.notes)
    job.details.update(details)
    return _Written(run, runtime, _one_at_a_time(run, job.batch), job.batch[:1], False)


def _write_executorch_int8(job: _Job) -> _Written:
    # PT2E captures one static shape: int8 programs take batch 1
    program = _export_executorch(job.eager, job.output, job.height, job.width, False, 1, job.calibration, job.stage)
    job.details["outside_delegate"] = program.outside_delegate
    with tempfile.TemporaryDirectory() as folder:
        fp32_path = Path(folder) / "fp32.pte"
        job.stage("exporting the fp32 program to compare size and speed with")
        fp32_run = _export_executorch(job.eager, fp32_path, job.height, job.width, False, 1).run
        job.stage("running the int8 file on the check images and timing it against the fp32 file")
        job.notes.append("int8: PT2E static quantization with the XNNPACK quantizer (per-channel int8 weights, "
                         "int8 activations), batch 1")
        actual = _one_at_a_time(program.run, job.batch)
        job.details["quantization"] |= _compare_with_fp32(program.run, fp32_run, file_size(fp32_path), job.output,
                                                          job.batch[:1], job.options.latency_runs)
    return _Written(program.run, program.runtime, actual, job.batch[:1], False, 1)


def _write_executorch(job: _Job) -> _Written:
    dynamic_batch, max_batch = job.options.dynamic_batch, job.options.max_batch
    program = _export_executorch(job.eager, job.output, job.height, job.width, dynamic_batch, max_batch,
                                 stage=job.stage)
    if dynamic_batch and program.planned_batch < max_batch:
        job.notes.append(f"the ExecuTorch memory planner bounded the batch at {program.planned_batch} "
                         f"(asked for up to {max_batch})")
        max_batch = program.planned_batch
    if dynamic_batch:
        job.stage(f"checking that the program runs at batch 1 and {max_batch}")
    if dynamic_batch and not _runs_at(program.run, [1, max_batch], job.height, job.width):
        # The XNNPACK delegate can keep a tensor at the example's batch (ExecuTorch 1.5;
        # seen: mobilevitv2_050 at 224x320): a static batch-1 program is what runs.
        job.notes.append("dynamic batch failed in the ExecuTorch runtime for this model: exported with batch 1")
        job.stage("the dynamic-batch program failed in the runtime: exporting again with batch 1")
        dynamic_batch, max_batch = False, 1
        program = _export_executorch(job.eager, job.output, job.height, job.width, False, 1, stage=job.stage)
    job.details["outside_delegate"] = program.outside_delegate
    job.notes += [note for note in [_outside_delegate_note(program.outside_delegate)] if note]
    job.stage(f"running the file in the ExecuTorch runtime on the {len(job.batch)} check images")
    actual = _one_at_a_time(program.run, job.batch, max_batch if dynamic_batch else 1)
    return _Written(program.run, program.runtime, actual, job.batch[:1], dynamic_batch, max_batch)


_WRITERS: dict[str, Callable[[_Job], _Written]] = {
    "torchscript": _write_torchscript,
    "torchscript+preprocessing": _write_torchscript,
    "onnx": _write_onnx,
    "onnx+preprocessing": _write_onnx_with_preprocessing,
    "onnx+int8": _write_onnx_int8,
    "executorch": _write_executorch,
    "executorch+int8": _write_executorch_int8,
    "tflite": _write_tflite,
}


def _coreml_report(eager: nn.Module, output: Path, options: ExportOptions, config, height: int, width: int):
    notes: list[str] = []
    _stage(options, "converting to a Core ML ML Program, then validating its spec")
    runtime = export_coreml(eager, output, height, width, config, options.coreml_precision, notes)
    return write_report(ExportReport(
        format=options.format, path=str(output), file_bytes=file_size(output), input_size=(height, width),
        dynamic_batch=False, include_preprocessing=True, check_images=0, check_source="",
        max_abs_diff=None, top1_agreement=None, top5_agreement=None, eager_latency_ms=None,
        exported_latency_ms=None, runtime=runtime, notes=notes,
        details={"preprocess": asdict(config), "precision": options.coreml_precision,
                 "threads": torch.get_num_threads()},
    ))


def _with_size(config: PreprocessConfig, height: int, width: int) -> PreprocessConfig:
    if (height, width) == tuple(config.input_size):
        return config
    # keep the source's resize-to-crop ratio at the new size
    ratio = config.resize_size / max(config.input_size)
    return PreprocessConfig(
        (height, width), round(max(height, width) * ratio), config.interpolation, config.mean, config.std,
        config.channel_order, config.antialias, config.crop_rounding,
    )


def _run_on_photos(run, images: list[torch.Tensor], notes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of a preprocessing-included export fed the raw photos, and its latency input."""
    notes.append("input: one uint8 [H, W, 3] RGB image of any size; output: logits [1, classes]")
    photos = [image.permute(1, 2, 0).contiguous() for image in images]
    return torch.cat([run(photo) for photo in photos]), photos[0]


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
    notes += save_torchscript(module, output, lite)
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


def _export_onnx(model, output: Path, height: int, width: int, dynamic_batch: bool, dynamic_size: bool, opset: int):
    onnx = require_onnx()
    example = torch.rand(2 if dynamic_batch else 1, 3, height, width)
    with atomic_path(output) as tmp:
        if opset <= 17:
            # The TorchScript-based exporter writes opset <= 17 natively; the dynamo
            # exporter starts at 18 and cannot down-convert MobileViT's graph.
            torch.onnx.export(
                model, (example,), str(tmp), dynamo=False, opset_version=opset,
                input_names=["pixel_values"], output_names=["logits"],
                dynamic_axes=_onnx_axes(dynamic_batch, dynamic_size),
            )
        else:
            torch.onnx.export(
                model, (example,), str(tmp), dynamo=True, opset_version=opset,
                input_names=["pixel_values"], output_names=["logits"],
                dynamic_shapes={"x": {0: torch.export.Dim("batch")}} if dynamic_batch else None,
            )
        onnx.checker.check_model(onnx.load(str(tmp)))
    return _onnx_runner(output), onnx_runtime_name()


def _onnx_runner(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    run = onnx_runner(path)
    return lambda x: run(x)[0]


def _onnx_axes(dynamic_batch: bool, dynamic_size: bool):
    axes = ({0: "batch"} if dynamic_batch else {}) | ({2: "height", 3: "width"} if dynamic_size else {})
    if not axes:
        return None
    return {"pixel_values": axes, "logits": {0: "batch"} if dynamic_batch else {}}


@dataclass
class _ExecutorchProgram:
    run: Callable[[torch.Tensor], torch.Tensor]
    runtime: str
    outside_delegate: dict[str, int]  # operators left to the portable kernels, by count
    planned_batch: int  # the largest batch the runtime planned memory for


def _export_executorch(
    model, output: Path, height: int, width: int, dynamic_batch: bool, max_batch: int,
    calibration: Sequence[torch.Tensor] = (), stage: Callable[[str], None] = _quiet,
) -> _ExecutorchProgram:
    stage("loading ExecuTorch and rewriting attention and norms for XNNPACK")
    require_executorch()
    # batch 2 in the example: torch.export specialises a size-1 dimension to a constant
    example = torch.rand(2 if dynamic_batch else 1, 3, height, width)
    dynamic = {"x": {0: torch.export.Dim("batch", min=1, max=max_batch)}} if dynamic_batch else None
    # attention and norms rewritten so that XNNPACK runs the whole graph (see rewrite.py)
    model = delegate_friendly(model)
    if calibration:
        stage(f"quantizing to int8 (PT2E, XNNPACK quantizer), calibrating on {len(calibration)} photos")
        model = quantize_pt2e_xnnpack(model, example, calibration)
    stage("capturing the graph with torch.export" + (f" (batch 1 to {max_batch})" if dynamic_batch else " (batch 1)"))
    program = torch.export.export(model, (example,), dynamic_shapes=dynamic)
    stage("lowering to ExecuTorch's XNNPACK delegate and writing the .pte (the longest stage)")
    outside = outside_delegate(write_xnnpack_program(program, output))
    run_file, loaded = executorch_runner(output)

    def run(x: torch.Tensor) -> torch.Tensor:
        return run_file(x)[0]

    # memory planning may bound the batch below the exported range (ExecuTorch 1.5 planned
    # mobilevit_xxs at 256x256 for 15 when asked for 32)
    planned = loaded.metadata("forward").input_tensor_meta(0).sizes()[0]
    return _ExecutorchProgram(run, "ExecuTorch runtime (XNNPACK delegate)", outside, planned)


def outside_delegate(graph: torch.fx.Graph) -> dict[str, int]:
    """Tensor operators of a lowered ExecuTorch graph left to the portable CPU kernels (not
    delegated to XNNPACK), by name (``aten.view_copy.default``) with their counts. Shape
    arithmetic (``sym_size``, SymInt products) is not counted."""
    counts: dict[str, int] = {}
    for node in graph.nodes:
        target = str(getattr(node.target, "_op", node.target))  # an edge op wraps its ATen op
        value = node.meta.get("val")
        is_tensor_op = isinstance(value, torch.Tensor) or (
            isinstance(value, (list, tuple)) and all(isinstance(v, torch.Tensor) for v in value))
        if node.op == "call_function" and is_tensor_op and "getitem" not in target and "call_delegate" not in target:
            counts[target] = counts.get(target, 0) + 1
    return counts


def _outside_delegate_note(counts: dict[str, int]) -> Optional[str]:
    if not counts:
        return None
    listed = ", ".join(f"{name} x{count}" for name, count in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"{sum(counts.values())} operators run on ExecuTorch's portable kernels, outside XNNPACK: {listed}"


def _compare_with_fp32(run, fp32_run, fp32_bytes: int, output: Path, latency_input, runs: int) -> dict[str, Any]:
    """Size and batch-1 latency of the quantized file vs the fp32 file on the same runtime,
    timed interleaved so that machine noise hits both alike."""
    int8_bytes = file_size(output)
    times: dict[str, list[float]] = {"int8": [], "fp32": []}
    if runs > 0:
        with torch.inference_mode():
            run(latency_input), fp32_run(latency_input)
            for _ in range(runs):
                for name, fn in (("int8", run), ("fp32", fp32_run)):
                    start = time.perf_counter()
                    fn(latency_input)
                    times[name].append(time.perf_counter() - start)
    int8_ms = 1e3 * statistics.median(times["int8"]) if runs > 0 else None
    fp32_ms = 1e3 * statistics.median(times["fp32"]) if runs > 0 else None
    return {
        "fp32_file_bytes": fp32_bytes, "size_ratio": fp32_bytes / int8_bytes,
        "int8_latency_ms": int8_ms, "fp32_latency_ms": fp32_ms,
        "speedup_vs_fp32": fp32_ms / int8_ms if int8_ms and fp32_ms else None,
    }


def _runs_at(run, batches: list[int], height: int, width: int) -> bool:
    # a failure is expected here and reported as a note: not the runtime's C++ error lines
    with native_stderr_without(RESIZE_ERRORS):
        for batch in batches:
            try:
                if run(torch.zeros(batch, 3, height, width)).shape[0] != batch:
                    return False
            except RuntimeError:
                return False
    return True



