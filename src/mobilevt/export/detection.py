"""Exporting SSDLite detectors: TorchScript, ONNX and ExecuTorch.

The exported graph is the network plus box decoding, for one input size (the anchors are
a constant of the graph):

    pixel_values [B, 3, H, W]  ->  boxes [B, N, 4]   corner form (x1, y1, x2, y2), fractions of the input
                                   scores [B, N, C]  softmax class probabilities, column 0 the background

Non-maximum suppression is the separate, documented step after it (data-dependent
shapes, and no NMS op in ExecuTorch's XNNPACK): per object class, the scores above a
threshold (at most ``top_k``), ``torchvision.ops.batched_nms`` (or the platform's NMS) at
IoU ``nms_iou_threshold``, the ``max_detections`` best. :func:`mobilevt.ops.postprocess_detections`
is that step as the library itself runs it, and ``<output>.detection.json`` beside the
file records its settings, the class names, the input preprocessing and the output layout.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.ops import box_iou

from ..fileio import write_text_atomic
from ..ops.ssd import box_cxcywh_to_xyxy, decode_boxes, postprocess_detections
from ..weights.entries import PreprocessConfig
from .errors import ExportError
from .family import ExportOptions, FamilyAdapter
from .formats import Dim, ExportFormat, Graph, WriteOptions, Written
from .image import calibration_batches, check_quantize, compare_with_fp32
from .report import ExportReport, check_inputs, file_size, median_ms, write_report

MAX_CHECK_IMAGES = 32


class DecodedSSDLite(nn.Module):
    """An SSDLite detector with its box decoding, for one input size: image batch in,
    ``(boxes [B, N, 4] corner form in fractions of the input, scores [B, N, C] softmax)``
    out. Scriptable and exportable; NMS comes after it."""

    def __init__(self, model: nn.Module, height: int, width: int) -> None:
        super().__init__()
        self.model = model
        self.height = int(height)
        self.width = int(width)
        self.center_variance = float(model.config.center_variance)
        self.size_variance = float(model.config.size_variance)
        self.register_buffer("anchors", model.anchors(height, width).clone())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        regression, logits = self.model(x)
        boxes = box_cxcywh_to_xyxy(decode_boxes(regression, self.anchors, self.center_variance, self.size_variance))
        return boxes, logits.softmax(dim=-1)


def detection_metadata(model: nn.Module, height: int, width: int) -> dict[str, Any]:
    """What an app needs around an exported detector: input, outputs, post-processing."""
    config = model.config
    preprocess: PreprocessConfig = getattr(model, "preprocess", None) or PreprocessConfig((height, width), height)
    names = getattr(model, "class_names", None)
    return {
        "model": getattr(model, "model_name", type(model).__name__),
        "input": {
            "name": "pixel_values",
            "shape": ["batch", 3, height, width],
            "preprocess": f"resize the whole image to {height}x{width} ({preprocess.interpolation}), scale pixels to "
            f"[0, 1], normalise with mean/std, channel order {preprocess.channel_order}",
            "interpolation": preprocess.interpolation,
            "mean": list(preprocess.mean),
            "std": list(preprocess.std),
            "channel_order": preprocess.channel_order,
        },
        "outputs": {
            "boxes": "[batch, N, 4] x1, y1, x2, y2 as fractions of the input (multiply by the photo's width/height)",
            "scores": "[batch, N, classes] softmax probabilities; column 0 is the background",
        },
        "num_anchors": int(model.anchors(height, width).shape[0]),
        "class_names": list(names) if names else None,
        "postprocess": {
            "method": "per class 1..C-1: scores > score_threshold, the top_k best, then NMS (class-wise) at "
            "nms_iou_threshold; keep max_detections (mobilevt.ops.postprocess_detections)",
            "score_threshold": config.score_threshold,
            "display_score_threshold": 0.3,
            "nms_iou_threshold": config.nms_iou_threshold,
            "top_k": config.top_k,
            "max_detections": config.max_detections,
        },
    }


def export_detector(
    model: nn.Module, output: Path, export_format: ExportFormat, options: ExportOptions
) -> ExportReport:
    """Export an SSDLite detector (:class:`DecodedSSDLite`: network + box decoding) and
    check the file against eager on real photos: max-abs difference of boxes and scores,
    and the share of photos whose detections after NMS (score > 0.3) are the same (same
    labels, boxes within 1e-3 of the input size). Writes ``<output>.detection.json`` (input,
    outputs, NMS settings, class names) and ``<output>.report.json``.

    Formats that plan memory for a bounded batch (ExecuTorch) get batch 1: phones detect
    one frame at a time. int8 (ONNX, ExecuTorch) quantizes the network; the box decoding
    and the softmax stay fp32, where int8's 256 steps would move the boxes."""
    if options.opset > 17:
        raise ExportError("detectors export to ONNX with the TorchScript-based exporter: opset 17 or lower")
    check_quantize(options)
    preprocess_config: PreprocessConfig = getattr(model, "preprocess", None) or PreprocessConfig((320, 320), 320)
    height, width = tuple(options.image_size) if options.image_size else tuple(preprocess_config.input_size)
    eager_model = copy.deepcopy(model).eval()
    if options.fuse:
        eager_model = eager_model.fuse()
    eager = DecodedSSDLite(eager_model, height, width).eval()
    options.stage("reading the check photos and running the eager detector on them")
    photos, source = check_inputs(options.check_images, options.max_check_images or MAX_CHECK_IMAGES)
    batch = _check_batch(photos, preprocess_config, height, width)
    with torch.inference_mode():
        expected = eager(batch)
    write_options, details = _write_options(options, preprocess_config, height, width)

    options.stage(
        f"writing the {export_format.name} file (network and box decoding)"
        + (", lowering to XNNPACK (a minute or more)" if "max_batch" in export_format.options else "")
    )
    written = export_format.write(_graph(eager, height, width, options, export_format), output, write_options)
    options.stage(f"running the file on the {len(photos)} check photos and timing it")
    actual = _run_checks(written, batch)
    if written.fp32 is not None:
        details["quantization"] |= compare_with_fp32(written, (batch[:1],), options.latency_runs)
        written.notes.append("int8: the network; the box decoding and the softmax stay fp32")
    agreement, compared, ties = _detections_agreement(actual, expected, eager_model.config)
    write_text_atomic(_metadata_path(output), json.dumps(detection_metadata(model, height, width), indent=2) + "\n")
    notes = (
        written.notes
        + (["the file takes batch 1"] if not written.dynamic else [])
        + [
            "outputs: boxes [B, N, 4] (corner form, fractions of the input) and scores [B, N, C] (softmax); "
            f"NMS is the separate step described in {_metadata_path(output).name}"
        ]
    )
    report = ExportReport(
        format=export_format.name,
        path=str(output),
        file_bytes=file_size(output),
        input_size=(height, width),
        dynamic_batch=written.dynamic,
        include_preprocessing=False,
        check_images=len(photos),
        check_source=source,
        max_abs_diff=max(float((a.float() - e.float()).abs().max()) for a, e in zip(actual, expected)),
        top1_agreement=agreement,
        top5_agreement=None,
        agreement_of="detections",
        eager_latency_ms=median_ms(lambda: eager(batch[:1]), options.latency_runs),
        exported_latency_ms=median_ms(lambda: written.run(batch[:1]), options.latency_runs),
        runtime=written.runtime,
        notes=notes,
        details={
            "task": "object-detection",
            "detections_agreement": agreement,
            "detections_compared": compared,
            "detections_near_ties": ties,
            "max_abs_diff_boxes": float((actual[0] - expected[0]).abs().max()),
            "max_abs_diff_scores": float((actual[1] - expected[1]).abs().max()),
            "preprocess": asdict(preprocess_config),
            "opset": options.opset if "opset" in export_format.options else None,
            "fused": options.fuse,
            "threads": torch.get_num_threads(),
            "metadata": str(_metadata_path(output)),
        }
        | written.details
        | details,
    )
    return write_report(report)


def _write_options(
    options: ExportOptions, config: PreprocessConfig, height: int, width: int
) -> tuple[WriteOptions, dict[str, Any]]:
    """The format's options, with the calibration inputs of an int8 export (and what they
    were, for the report)."""
    write_options = WriteOptions(opset=options.opset, stage=options.stage)
    details: dict[str, Any] = {}
    if options.quantize is None:
        return write_options, details
    resize = _resize(config, height, width)
    calibration = calibration_batches(options, resize, details)
    return replace(
        write_options, quantize=options.quantize, calibration=[(b,) for b in calibration], quantize_only="model"
    ), details


def _graph(eager: nn.Module, height: int, width: int, options: ExportOptions, export_format: ExportFormat) -> Graph:
    dynamic_batch = options.dynamic_batch and "max_batch" not in export_format.options
    # batch 2 in the example: a traced or exported size-1 dimension becomes a constant
    example = torch.rand(2 if dynamic_batch else 1, 3, height, width)
    batch = {0: Dim("batch")} if dynamic_batch else {}
    return Graph(eager, (example,), ("pixel_values",), ("boxes", "scores"), (batch,), (batch, batch))


def _run_checks(written: Written, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if written.dynamic:
        return written.run(batch)
    parts = [written.run(batch[i : i + 1]) for i in range(len(batch))]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _check_batch(photos: list, config: PreprocessConfig, height: int, width: int) -> torch.Tensor:
    """The check photos resized (not cropped) to the exported input size, as detection does."""
    resize = _resize(config, height, width)
    return torch.stack([resize(photo) for photo in photos])


def _resize(config: PreprocessConfig, height: int, width: int) -> nn.Module:
    from ..tasks.detection import DetectionPreprocess

    return DetectionPreprocess(
        PreprocessConfig(
            (height, width),
            height,
            config.interpolation,
            config.mean,
            config.std,
            config.channel_order,
            config.antialias,
        )
    )


def _metadata_path(output: Path) -> Path:
    return output.with_name(output.name + ".detection.json")


def _detections_agreement(
    actual, expected, config, threshold: float = 0.3, box_tolerance: float = 1e-3, score_tolerance: float = 1e-4
) -> tuple[float, int, int]:
    """Share of images whose detections after NMS (scores > ``threshold``) are the same
    (same labels, boxes within ``box_tolerance`` of the input size), how many eager
    detections that compared, and how many were near-ties.

    A difference that a score change of ``score_tolerance`` can cause is a near-tie, not a
    disagreement: a detection scoring within it of ``threshold``, or of the lowest score
    kept when ``max_detections`` cut the list, may be kept on one side only, and of two
    overlapping anchors of one class scoring within it of each other NMS may keep either.
    Any other missing, extra, moved or relabelled box is a disagreement."""
    ours = postprocess_detections(
        actual[0].float(), actual[1].float(), threshold, config.nms_iou_threshold, config.top_k, config.max_detections
    )
    theirs = postprocess_detections(
        expected[0].float(),
        expected[1].float(),
        threshold,
        config.nms_iou_threshold,
        config.top_k,
        config.max_detections,
    )
    tie = _NearTie(threshold, config.nms_iou_threshold, config.max_detections, score_tolerance)
    same = ties = 0
    for image, (a, e) in enumerate(zip(ours, theirs)):
        raw_a = (actual[0][image].float(), actual[1][image].float())
        raw_e = (expected[0][image].float(), expected[1][image].float())
        a_left, e_left = _unmatched(a, e, box_tolerance)
        tied = [tie(a, i, raw_a, e, raw_e) for i in a_left] + [tie(e, i, raw_e, a, raw_a) for i in e_left]
        same += int(all(tied))
        ties += len(tied)
    return same / max(1, len(ours)), sum(len(e.labels) for e in theirs), ties


def _unmatched(a, e, box_tolerance: float) -> tuple[list[int], list[int]]:
    """Indices of the detections of ``a`` and of ``e`` left after pairing each detection of
    ``e`` with one of ``a`` of the same label and a box within ``box_tolerance``."""
    a_left = list(range(len(a.labels)))
    e_left: list[int] = []
    for j in range(len(e.labels)):
        match = next(
            (
                i
                for i in a_left
                if int(a.labels[i]) == int(e.labels[j])
                and float((a.boxes[i] - e.boxes[j]).abs().max()) <= box_tolerance
            ),
            None,
        )
        if match is None:
            e_left.append(j)
        else:
            a_left.remove(match)
    return a_left, e_left


class _NearTie:
    """Whether a detection kept on one side only is explained by score differences within
    ``score_tolerance``: the other side scores its anchor within it, and it scores within it
    of the threshold or of the other side's ``max_detections`` cut, or the other side kept
    an overlapping box of its class from another anchor whose score, on both sides, is
    within twice that of this anchor's (the two anchors swapped places in NMS)."""

    def __init__(self, threshold: float, nms_iou: float, max_detections: int, score_tolerance: float) -> None:
        self.threshold, self.nms_iou, self.score_tolerance = threshold, nms_iou, score_tolerance
        self.max_detections = max_detections

    def __call__(self, side, index: int, side_raw, other, other_raw) -> bool:
        label = int(side.labels[index])
        score = float(side.scores[index])
        anchor = _anchor_of(side_raw[0], side.boxes[index])
        if abs(float(other_raw[1][anchor, label]) - score) > self.score_tolerance:
            return False  # the other side scores this box differently: not a tie
        if score <= self.threshold + self.score_tolerance:
            return True
        if len(other.scores) >= self.max_detections and score <= float(other.scores.min()) + 2 * self.score_tolerance:
            return True
        for k in range(len(other.labels)):
            if int(other.labels[k]) != label:
                continue
            rival = _anchor_of(other_raw[0], other.boxes[k])
            if rival == anchor or float(box_iou(side.boxes[index : index + 1], other.boxes[k : k + 1])) <= self.nms_iou:
                continue
            if all(
                abs(float(scores[anchor, label] - scores[rival, label])) <= 2 * self.score_tolerance
                for _, scores in (side_raw, other_raw)
            ):
                return True
        return False


def _anchor_of(boxes: torch.Tensor, box: torch.Tensor) -> int:
    """The anchor whose decoded box a detection is (NMS keeps boxes as they are)."""
    return int((boxes - box).abs().amax(dim=-1).argmin())


DETECTOR = FamilyAdapter(
    "detectors",
    "detector exports",
    frozenset({"image_size", "dynamic_batch", "opset", "fuse", "quantize"}),
    "the file holds the network and its box decoding at one input size",
    export_detector,
    formats=("torchscript", "onnx", "executorch"),
)
