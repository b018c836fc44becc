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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from ..data.images import list_images, load_image
from ..data.preprocess import ImagePreprocess
from ..fileio import atomic_directory, atomic_path
from ..weights.entries import PreprocessConfig
from .errors import ExportError
from .report import (
    EXTRAS,
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
from .torchscript import save_torchscript

FORMATS = ("torchscript", "onnx", "executorch", "coreml", "tflite")
@expected_warnings_silenced()
def export_model(
    model: nn.Module,
    output: str | os.PathLike,
    format: str,
    *,
    image_size: Optional[Sequence[int]] = None,
    dynamic_batch: bool = True,
    dynamic_size: bool = False,
    include_preprocessing: bool = False,
    lite: bool = False,
    opset: int = 17,
    check_images: str | os.PathLike | None = None,
    max_check_images: int = 32,
    latency_runs: int = 20,
    fuse: bool = True,
    max_batch: int = 32,
    coreml_precision: str = "float16",
    quantize: Optional[str] = None,
    calibration: str | os.PathLike | None = None,
    max_calibration_images: int = 128,
) -> ExportReport:
    """Export ``model`` (a mobilevt classifier with ``model.preprocess``) to ``output``.

    Args:
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
            in scikit-learn / scikit-image when installed.
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

    A :class:`mobilevt.tasks.vqa.VqaPipeline` (ViLT) is exported by
    :func:`mobilevt.export.vilt.export_vqa_pipeline` (torchscript, onnx, executorch).
    An SSDLite detector is exported by :func:`mobilevt.export.detection.export_detector`
    (torchscript, onnx, executorch: network + box decoding; NMS described beside the file).
    """
    if hasattr(model, "answer_logits") and hasattr(model, "tokenizer"):  # a ViLT VqaPipeline
        if quantize is not None or lite or include_preprocessing or image_size is not None or dynamic_size:
            raise ExportError("the ViLT VQA export takes no --quantize, --lite, --include-preprocessing, "
                              "--image-size or --dynamic-size: TorchScript holds the whole pipeline, ONNX and "
                              "ExecuTorch take any image size")
        from .vilt import export_vqa_pipeline

        return export_vqa_pipeline(model, output, format, check_images=check_images, latency_runs=latency_runs,
                                   opset=opset)
    if getattr(model, "image_size_rule", None) is not None:
        raise ExportError("a ViLT model also needs its question tokenizer: export the pipeline, "
                          "export_model(mobilevt.create_vqa_pipeline(weights=...), ...)")
    if getattr(model, "anchor_generator", None) is not None:  # an SSDLite detector: network + box decoding
        if quantize is not None or lite or include_preprocessing or dynamic_size:
            raise ExportError("detector exports take no --quantize, --lite, --include-preprocessing or --dynamic-size: "
                              "the file holds the network and its box decoding at one input size")
        from .detection import export_detector

        return export_detector(model, output, format, image_size=image_size, dynamic_batch=dynamic_batch, opset=opset,
                               check_images=check_images, max_check_images=max_check_images,
                               latency_runs=latency_runs, fuse=fuse)
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if dynamic_size and (format != "onnx" or opset > 17):
        raise ExportError("--dynamic-size applies to onnx at opset 17 or lower (TorchScript files take any size)")
    if lite and format != "torchscript":
        raise ExportError("--lite applies to the torchscript format only")
    if include_preprocessing and format not in ("torchscript", "onnx"):
        raise ExportError(
            f"--include-preprocessing is available for torchscript and onnx exports, not {format}; export the "
            "model alone and preprocess in the app"
        )
    if quantize is not None:
        if quantize not in METHODS:
            raise ExportError(f"unknown quantization {quantize!r}; choose one of {', '.join(METHODS)}")
        if format not in ("onnx", "executorch"):
            raise ExportError(f"--quantize int8 is available for onnx and executorch exports, not {format}")
        if include_preprocessing:
            raise ExportError("--quantize does not combine with --include-preprocessing yet; export the model alone")
        if calibration is None:
            raise ExportError("--quantize int8 needs --calibration DIR: a folder of representative photos")
    if include_preprocessing and dynamic_size:
        raise ExportError("--dynamic-size does not apply with --include-preprocessing: the image input takes any size")
    config: PreprocessConfig = getattr(model, "preprocess", None) or PreprocessConfig()
    height, width = tuple(image_size) if image_size else tuple(config.input_size)
    eager = copy.deepcopy(model).eval()
    if fuse and hasattr(eager, "fuse"):
        eager = eager.fuse()

    images, source = check_inputs(check_images, max_check_images)
    preprocess = ImagePreprocess(_with_size(config, height, width))
    batch = torch.stack([preprocess(image) for image in images])
    with torch.inference_mode():
        expected = eager(batch)

    output = Path(output)
    notes: list[str] = []
    format_details: dict[str, Any] = {}
    calibration_batches: list[torch.Tensor] = []
    if quantize is not None:
        paths = list_images(calibration)[:max_calibration_images]
        if not paths:
            raise ExportError(f"{calibration}: no calibration images found")
        calibration_batches = [preprocess(load_image(p))[None] for p in paths]
        format_details["quantization"] = {"method": quantize, "calibration_images": len(paths),
                                          "calibration_source": str(calibration)}
    if format == "torchscript":
        run, runtime = _export_torchscript(eager, output, include_preprocessing, lite, config, height, width, notes)
        if include_preprocessing:
            actual, latency_input = _run_on_photos(run, images, notes)
        else:
            actual = run(batch)
            latency_input = batch[:1]
    elif format == "onnx" and include_preprocessing:
        from .onnx_preprocessing import export_onnx_with_preprocessing

        opset = max(opset, 18)  # the antialiased Resize needs opset 18
        run, runtime, format_details = export_onnx_with_preprocessing(
            eager, output, _with_size(config, height, width), opset, images, notes, EXTRAS["onnx"]
        )
        actual, latency_input = _run_on_photos(run, images, notes)
        dynamic_batch = False
    elif format == "tflite":
        from .tflite import export_tflite

        run, runtime, format_details = export_tflite(eager, output, height, width, notes)
        dynamic_batch = False
        actual = torch.cat([run(batch[i : i + 1]) for i in range(len(batch))])
        latency_input = batch[:1]
    elif format == "onnx" and quantize is not None:
        with tempfile.TemporaryDirectory() as folder:
            fp32_path = Path(folder) / "fp32.onnx"
            fp32_run, runtime = _export_onnx(eager, fp32_path, height, width, dynamic_batch, dynamic_size, opset)
            quantize_onnx_static(fp32_path, output, calibration_batches, "pixel_values")
            fp32_bytes = file_size(fp32_path)
        run = _onnx_runner(output)
        notes.append("int8: onnxruntime static quantization (QOperator, per-channel int8 weights, uint8 "
                     "activations) of convolutions and weight matmuls; attention matmuls and softmax stay fp32")
        actual = run(batch) if dynamic_batch else torch.cat([run(batch[i : i + 1]) for i in range(len(batch))])
        latency_input = batch[:1]
        format_details["quantization"] |= _compare_with_fp32(run, fp32_run, fp32_bytes, output, latency_input,
                                                             latency_runs)
    elif format == "onnx":
        run, runtime = _export_onnx(eager, output, height, width, dynamic_batch, dynamic_size, opset)
        actual = run(batch) if dynamic_batch else torch.cat([run(batch[i : i + 1]) for i in range(len(batch))])
        latency_input = batch[:1]
    elif format == "executorch" and quantize is not None:
        # PT2E captures one static shape: int8 programs take batch 1
        dynamic_batch = False
        program = _export_executorch(eager, output, height, width, False, 1, calibration_batches)
        run, runtime = program.run, program.runtime
        format_details["outside_delegate"] = program.outside_delegate
        with tempfile.TemporaryDirectory() as folder:
            fp32_path = Path(folder) / "fp32.pte"
            fp32_run = _export_executorch(eager, fp32_path, height, width, False, 1).run
            fp32_bytes = file_size(fp32_path)
            notes.append("int8: PT2E static quantization with the XNNPACK quantizer (per-channel int8 weights, "
                         "int8 activations), batch 1")
            actual = torch.cat([run(batch[i : i + 1]) for i in range(len(batch))])
            latency_input = batch[:1]
            format_details["quantization"] |= _compare_with_fp32(run, fp32_run, fp32_bytes, output, latency_input,
                                                                 latency_runs)
    elif format == "executorch":
        program = _export_executorch(eager, output, height, width, dynamic_batch, max_batch)
        if dynamic_batch and program.planned_batch < max_batch:
            notes.append(f"the ExecuTorch memory planner bounded the batch at {program.planned_batch} "
                         f"(asked for up to {max_batch})")
            max_batch = program.planned_batch
        if dynamic_batch and not _runs_at(program.run, [1, max_batch], height, width):
            # The XNNPACK delegate can keep a tensor at the example's batch (ExecuTorch 1.5;
            # seen: mobilevitv2_050 at 224x320): a static batch-1 program is what runs.
            notes.append("dynamic batch failed in the ExecuTorch runtime for this model: exported with batch 1")
            dynamic_batch, max_batch = False, 1
            program = _export_executorch(eager, output, height, width, False, 1)
        run, runtime = program.run, program.runtime
        format_details["outside_delegate"] = program.outside_delegate
        notes += [note for note in [_outside_delegate_note(program.outside_delegate)] if note]
        actual = torch.cat([run(batch[i : i + max_batch]) for i in range(0, len(batch), max_batch)]) \
            if dynamic_batch else torch.cat([run(batch[i : i + 1]) for i in range(len(batch))])
        latency_input = batch[:1]
    else:
        runtime = _export_coreml(eager, output, height, width, config, coreml_precision, notes)
        return write_report(ExportReport(
            format=format, path=str(output), file_bytes=file_size(output), input_size=(height, width),
            dynamic_batch=False, include_preprocessing=True, check_images=0, check_source="",
            max_abs_diff=None, top1_agreement=None, top5_agreement=None, eager_latency_ms=None,
            exported_latency_ms=None, runtime=runtime, notes=notes,
            details={"preprocess": asdict(config), "precision": coreml_precision, "threads": torch.get_num_threads()},
        ))

    agreement = topk_agreement(actual, expected)
    eager_input = batch[:1]
    if include_preprocessing:
        eager_ms = median_ms(lambda: eager(preprocess(images[0])[None]), latency_runs)
    else:
        eager_ms = median_ms(lambda: eager(eager_input), latency_runs)
    exported_ms = median_ms(lambda: run(latency_input), latency_runs)
    report = ExportReport(
        format=format,
        path=str(output),
        file_bytes=file_size(output),
        input_size=(height, width),
        dynamic_batch=dynamic_batch if format in ("onnx", "executorch", "tflite") else True,
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
                 "fused": bool(fuse and hasattr(model, "fuse")), "threads": torch.get_num_threads(),
                 "max_batch": max_batch if format == "executorch" else None, "dynamic_size": dynamic_size}
        | format_details,
    )
    return write_report(report)


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
    calibration: Sequence[torch.Tensor] = (),
) -> _ExecutorchProgram:
    require_executorch()
    # batch 2 in the example: torch.export specialises a size-1 dimension to a constant
    example = torch.rand(2 if dynamic_batch else 1, 3, height, width)
    dynamic = {"x": {0: torch.export.Dim("batch", min=1, max=max_batch)}} if dynamic_batch else None
    # attention and norms rewritten so that XNNPACK runs the whole graph (see rewrite.py)
    model = delegate_friendly(model)
    if calibration:
        model = quantize_pt2e_xnnpack(model, example, calibration)
    program = torch.export.export(model, (example,), dynamic_shapes=dynamic)
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


def _export_coreml(model, output: Path, height: int, width: int, config, precision: str, notes: list[str]) -> str:
    try:
        import coremltools as ct
    except ImportError as exc:
        raise ExportError(f"the coreml export needs {exc.name}: {EXTRAS['coreml']}") from None
    if output.suffix != ".mlpackage":
        raise ExportError(f"a Core ML ML Program is a .mlpackage folder; name the output *.mlpackage, not {output.name}")
    if precision not in ("float16", "float32"):
        raise ExportError(f"coreml precision must be float16 or float32, not {precision!r}")
    module: nn.Module = model
    if tuple(config.mean) != (0.0, 0.0, 0.0) or tuple(config.std) != (1.0, 1.0, 1.0):
        # Core ML's image input applies one scale for all channels: normalise in the graph
        module = _Normalize(model, config)
    example = torch.rand(1, 3, height, width)
    # coremltools converts torch.export programs once decomposed to core ATen ops (its
    # TorchScript path fails on MobileViT)
    program = torch.export.export(module.eval(), (example,)).run_decompositions({})
    layout = ct.colorlayout.BGR if config.channel_order == "BGR" else ct.colorlayout.RGB
    converted = ct.convert(
        program,
        inputs=[ct.ImageType(name="image", shape=example.shape, scale=1.0 / 255.0, color_layout=layout)],
        outputs=[ct.TensorType(name="logits")],
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT16 if precision == "float16" else ct.precision.FLOAT32,
        minimum_deployment_target=ct.target.iOS16,
    )
    with atomic_directory(output) as tmp:
        converted.save(str(tmp))
    spec = ct.models.MLModel(str(output), skip_model_load=True).get_spec()
    image_input = spec.description.input[0].type
    if image_input.WhichOneof("Type") != "imageType" or [o.name for o in spec.description.output] != ["logits"]:
        raise ExportError("the written Core ML model does not have the expected image input / logits output")
    notes.append(
        f"input 'image': a {width}x{height} {config.channel_order} image, pixels scaled by 1/255 inside; resize "
        "and crop the photo in the app (or with Vision's VNCoreMLRequest)"
    )
    notes.append("spec validated here; running the model needs macOS/iOS, so no output comparison or latency on Linux")
    return f"Core ML (coremltools {ct.__version__}, ML Program, {precision})"


class _Normalize(nn.Module):
    def __init__(self, model: nn.Module, config):
        super().__init__()
        self.model = model
        order = [2, 1, 0] if config.channel_order == "BGR" else [0, 1, 2]
        self.register_buffer("mean", torch.tensor(config.mean)[order].view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(config.std)[order].view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


