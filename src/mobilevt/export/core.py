"""``export_model``: write a model in a deployment format and verify the written file.

One function for every family: it finds the format (:mod:`mobilevt.export.formats`) and
the family's adapter by the model's declared kind, refuses any option that either cannot
honour before any work, and hands over. The adapter says what to export and how to compare
the file with eager; the format writes it and runs it in its runtime."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from torch import nn

from ..model_kind import ModelKind, kind_of
from .detection import DETECTOR
from .errors import ExportError
from .family import ExportOptions, FamilyAdapter
from .formats import FORMAT_NAMES, get_format
from .image import CLASSIFIER, SEGMENTER
from .native_logs import expected_warnings_silenced
from .report import ExportReport
from .vilt import VQA_PIPELINE

FORMATS = FORMAT_NAMES
ADAPTERS: dict[ModelKind, FamilyAdapter] = {
    ModelKind.CLASSIFICATION: CLASSIFIER,
    ModelKind.SEGMENTATION: SEGMENTER,
    ModelKind.DETECTION: DETECTOR,
    ModelKind.VQA: VQA_PIPELINE,
}


@expected_warnings_silenced()
def export_model(model: nn.Module, output: str | os.PathLike, format: str, **options: Any) -> ExportReport:  # noqa: A002
    """Export ``model`` to ``output`` in ``format`` and verify the written file against
    the eager model: every family (classifier, segmenter, detector, ViLT VQA pipeline)
    goes through this one function, which picks the family's adapter by ``model.kind``.

    Options (keywords, all optional; :class:`ExportOptions`):
        format: ``"torchscript"``, ``"onnx"``, ``"executorch"`` (``.pte`` lowered to XNNPACK),
            ``"coreml"`` (ML Program ``.mlpackage`` whose input is an image with the
            pixel scale and channel order baked in) or ``"tflite"`` (LiteRT flatbuffer from
            litert-torch, builtin ops only, NCHW float input, batch 1).
        image_size: (height, width) of the exported input; default: the weights' crop.
        dynamic_batch: let the batch dimension vary (``False``: ``--static-batch``; ONNX and
            ExecuTorch; TFLite and Core ML files are always batch 1, TorchScript never).
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
            the XNNPACK quantizer); a detector's network is quantized, its box decoding and
            softmax stay fp32. The report adds the fp32 file's size and latency on the
            same runtime; its agreement figures are with the fp32 eager model.
        calibration: folder of representative photos (a few hundred from the training
            distribution; not the images the report checks on).
        progress: a function told each stage as it starts, e.g. ``print`` (the CLI prints
            each with the seconds elapsed); exports can take a minute.

    An option that the format or the model's family cannot honour is refused with one
    line before any work. A ViLT :class:`~mobilevt.tasks.vqa.VqaPipeline` exports to
    torchscript, onnx and executorch (:mod:`mobilevt.export.vilt`); an SSDLite detector to
    the same three, as network + box decoding with NMS described beside the file
    (:mod:`mobilevt.export.detection`).
    """
    unknown = sorted(set(options) - {f.name for f in fields(ExportOptions)})
    if unknown:
        raise TypeError(f"export_model() got unexpected option(s) {', '.join(unknown)}")
    chosen = ExportOptions(format=format, **options)
    export_format = get_format(format)
    adapter = ADAPTERS[kind_of(model)]
    adapter.refuse_unsupported(chosen, export_format)
    export_format.require()
    return adapter.export(model, Path(output), export_format, chosen)


__all__ = ["ExportError", "ExportOptions", "ExportReport", "FORMATS", "export_model"]
