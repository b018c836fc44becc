"""SSDLite exports (network + box decoding; NMS as the documented separate step) checked
against eager: TorchScript, ONNX (onnxruntime) and ExecuTorch (XNNPACK)."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest
import torch
from conftest import assert_cpp_executorch_agrees, measure_batchnorm_, packaged_photos, randomize_

import mobilevt
from mobilevt.export import ExportError, export_model
from mobilevt.export.detection import DecodedSSDLite, _detections_agreement
from mobilevt.ops import postprocess_detections
from mobilevt.tasks.detection import DetectionPreprocess

SIZE = (160, 160)


@pytest.fixture(scope="module")
def detector():
    photos = [mobilevt.load_image(p) for p in packaged_photos()[:4]]
    if not photos:
        pytest.skip("no sample photos (pip install scikit-learn or scikit-image)")
    model = randomize_(mobilevt.create_model("ssdlite_mobilevit_xxs", num_classes=4))
    model.class_names = ["background", "circle", "square", "triangle"]
    model.preprocess = mobilevt.PreprocessConfig(SIZE, SIZE[0], "bilinear")
    # BatchNorm statistics measured on photos, so that photos get different detections
    preprocess = mobilevt.transforms_for(model)
    return measure_batchnorm_(model, torch.stack([preprocess(p) for p in photos]))


@pytest.mark.parametrize("fmt,suffix,tolerance", [("torchscript", "pt", 1e-5), ("onnx", "onnx", 1e-4)])
def test_torchscript_and_onnx(detector, tmp_path, photo_dir, fmt, suffix, tolerance):
    pytest.importorskip("onnxruntime") if fmt == "onnx" else None
    report = export_model(detector, tmp_path / f"det.{suffix}", fmt, check_images=photo_dir, latency_runs=2)
    assert report.details["task"] == "object-detection" and report.input_size == SIZE
    assert report.max_abs_diff <= tolerance
    assert report.details["detections_compared"] > 0  # the agreement below is about real boxes
    assert report.top1_agreement == 1.0 and report.agreement_of == "detections"
    meta = json.loads((tmp_path / f"det.{suffix}.detection.json").read_text())
    assert meta["class_names"] == detector.class_names
    assert meta["postprocess"]["nms_iou_threshold"] == 0.5 and meta["postprocess"]["score_threshold"] == 0.01
    assert meta["num_anchors"] == detector.anchors(*SIZE).shape[0]
    assert json.loads((tmp_path / f"det.{suffix}.report.json").read_text())["format"] == fmt


def test_onnx_outputs_plus_the_documented_nms_give_the_library_detections(detector, tmp_path, photo_dir):
    """An app's path: run the ONNX file, then NMS with the settings of .detection.json;
    it finds what mobilevt.detect finds."""
    ort = pytest.importorskip("onnxruntime")
    export_model(detector, tmp_path / "det.onnx", "onnx", check_images=photo_dir, latency_runs=0, fuse=False)
    meta = json.loads((tmp_path / "det.onnx.detection.json").read_text())
    session = ort.InferenceSession(str(tmp_path / "det.onnx"), providers=["CPUExecutionProvider"])
    photo = mobilevt.load_image(next(iter(sorted(photo_dir.iterdir()))))
    x = DetectionPreprocess(detector.preprocess)(photo)[None]
    boxes, scores = (torch.from_numpy(a) for a in session.run(None, {"pixel_values": x.numpy()}))
    post = meta["postprocess"]
    (library,) = mobilevt.detect(detector, photo, score_threshold=0.3)
    # the library's detections are eager's outputs through the documented NMS ...
    with torch.no_grad():
        eager = DecodedSSDLite(detector, *SIZE).eval()(x)
    (expected,) = postprocess_detections(*eager, 0.3, post["nms_iou_threshold"], post["top_k"], post["max_detections"])
    height, width = photo.shape[-2:]
    assert len(expected.labels) == len(library.objects) > 0
    assert expected.labels.tolist() == library.labels.tolist()
    scale = torch.tensor([width, height, width, height])
    torch.testing.assert_close(expected.boxes.clamp(0, 1) * scale, library.boxes, atol=1e-2, rtol=0)
    # ... and the app's NMS on the ONNX outputs keeps the same boxes: a random detector keeps
    # hundreds per photo, so scores within onnxruntime's 1e-5 of each other (near-ties) may
    # swap places, and nothing else may differ
    settings = SimpleNamespace(
        nms_iou_threshold=post["nms_iou_threshold"], top_k=post["top_k"], max_detections=post["max_detections"]
    )
    agreement, compared, _ = _detections_agreement((boxes, scores), eager, settings)
    assert agreement == 1.0 and compared == len(expected.labels)


@pytest.mark.slow
def test_executorch(detector, tmp_path, photo_dir, pte_runner):
    pytest.importorskip("executorch")
    report = export_model(
        detector, tmp_path / "det.pte", "executorch", image_size=(128, 128), check_images=photo_dir, latency_runs=2
    )
    assert report.runtime.startswith("ExecuTorch") and not report.dynamic_batch
    assert report.max_abs_diff <= 1e-4
    assert report.details["detections_compared"] > 0 and report.top1_agreement >= 0.75
    # boxes and scores from the ExecuTorch C++ runtime that apps link, as in Python's runtime
    assert_cpp_executorch_agrees(pte_runner, tmp_path / "det.pte", [torch.rand(1, 3, 128, 128)], tmp_path)


def test_detector_export_options_are_checked(detector, tmp_path):
    with pytest.raises(ExportError, match="detectors export to"):
        export_model(detector, tmp_path / "x.mlpackage", "coreml")
    with pytest.raises(ExportError, match="^detector exports take no --include-preprocessing: the file holds"):
        export_model(detector, tmp_path / "x.onnx", "onnx", include_preprocessing=True)
    with pytest.raises(ExportError, match="^detector exports take no --max-batch: the file holds"):
        export_model(detector, tmp_path / "x.pte", "executorch", quantize="int8", calibration=tmp_path, max_batch=4)
    with pytest.raises(ExportError, match="needs --calibration DIR"):
        export_model(detector, tmp_path / "x.onnx", "onnx", quantize="int8")
    assert not list(tmp_path.iterdir())


def _producers(graph) -> dict[str, str]:
    return {output: node.op_type for node in graph.node for output in node.output}


def test_int8_onnx_quantizes_the_network_and_leaves_the_box_decoding_fp32(detector, tmp_path, photo_dir, capsys):
    """`mobilevt export ssdlite_... --format onnx --quantize int8`: the network's layers int8,
    the box decoding and softmax fp32 (int8's 256 steps over the boxes' range would move them);
    the file is several times smaller, its detections near eager's, and the terminal shows the
    result lines only (no warnings of onnxruntime's quantizer)."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from mobilevt.cli.main import main

    weights = mobilevt.save_weights(detector, tmp_path / "det.safetensors")
    output = tmp_path / "det.onnx"
    args = ["export", "ssdlite_mobilevit_xxs", "--weights", str(weights), "--format", "onnx", "-o", str(output)]
    assert main([*args, "--quantize", "int8", "--calibration", str(photo_dir), "--check-images", str(photo_dir)]) == 0
    captured = capsys.readouterr()
    assert "WARNING" not in captured.err and "int8 vs fp32 on onnxruntime" in captured.out, captured
    report = json.loads((tmp_path / "det.onnx.report.json").read_text())
    assert report["details"]["quantization"]["size_ratio"] > 3.0
    assert "int8: the network; the box decoding and the softmax stay fp32" in report["notes"]
    graph = onnx.load(str(output)).graph
    ops = [node.op_type for node in graph.node]
    assert "QLinearConv" in ops and "Softmax" in ops and "Exp" in ops  # the decoding's exp, fp32
    producers = _producers(graph)
    assert producers["scores"] == "Softmax" and producers["boxes"] != "DequantizeLinear"


def test_int8_executorch_graph_quantizes_the_network_only(detector):
    """The PT2E graph of the ExecuTorch int8 export (before lowering): the network's
    convolutions quantized, its outputs dequantized into the fp32 decoding and softmax."""
    pytest.importorskip("executorch")
    from mobilevt.export.quantize import quantize_pt2e_xnnpack

    decoded = DecodedSSDLite(copy.deepcopy(detector).fuse(), 128, 128).eval()  # the fixture stays unfused
    example = (torch.rand(1, 3, 128, 128),)
    graph = quantize_pt2e_xnnpack(decoded, example, [example], only="model").graph
    outputs = next(node for node in graph.nodes if node.op == "output").args[0]
    assert [node.target for node in outputs] == [torch.ops.aten.cat.default, torch.ops.aten.softmax.int]
    quantized = [node for node in graph.nodes if "quantize_per_tensor" in str(node.target)]
    assert len(quantized) > 50
    # every quantize op belongs to the network: what it quantizes comes from `model` (or is the
    # input), not from the decoding
    for node in quantized:
        source = node.args[0]
        while "quantize_per_tensor" in str(source.target):  # a requantization: look further back
            source = source.args[0]
        stack = source.meta.get("nn_module_stack", {})
        assert source.op != "call_function" or any(path == "model" for path, _ in stack.values()), source


def test_cli_export_detector(tmp_path, capsys, photo_dir):
    from mobilevt.cli.main import main

    code = main(
        [
            "export",
            "ssdlite_mobilevit_xxs",
            "--weights",
            "none",
            "--format",
            "torchscript",
            "--image-size",
            "128",
            "128",
            "-o",
            str(tmp_path / "d.pt"),
            "--check-images",
            str(photo_dir),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "same detections after NMS" in out and "d.pt.detection.json" in out
    scripted = torch.jit.load(str(tmp_path / "d.pt"))
    boxes, scores = scripted(torch.rand(2, 3, 128, 128))
    assert boxes.shape[0] == 2 and boxes.shape[-1] == 4 and scores.shape[-1] == 81
    torch.testing.assert_close(scores.sum(-1), torch.ones(scores.shape[:2]))


def _outputs(rows):
    """(boxes [1, N, 4], scores [1, N, 4]) with one anchor per row (box, label, score); the
    rest of each anchor's probability goes to the background."""
    boxes = torch.tensor([[box for box, _, _ in rows]])
    scores = torch.zeros(1, len(rows), 4)
    for i, (_, label, score) in enumerate(rows):
        scores[0, i, label] = score
        scores[0, i, 0] = 1 - score
    return boxes, scores


class _Settings:
    nms_iou_threshold, top_k, max_detections = 0.5, 400, 200


def test_detection_agreement_tolerates_near_ties_and_catches_real_differences():
    a, b, far = [0.1, 0.1, 0.4, 0.4], [0.12, 0.1, 0.42, 0.4], [0.6, 0.6, 0.9, 0.9]  # a and b overlap (IoU 0.82)
    eager = [(a, 1, 0.7), (b, 1, 0.69995), (far, 2, 0.3 + 2e-5)]
    # the same outputs up to 5e-5 per score: NMS keeps b instead of a, the far box falls under 0.3
    tied = [(a, 1, 0.69993), (b, 1, 0.69997), (far, 2, 0.3 - 2e-5)]

    def agreement(rows, reference=eager):
        return _detections_agreement(_outputs(rows), _outputs(reference), _Settings)

    assert agreement(eager)[:2] == (1.0, 2)
    assert agreement(tied) == (1.0, 2, 3)  # a and b swapped (2 near-ties), the far box dropped (1)
    # real differences: a box moved by 1% of the input, another label, a confident box lost, an extra box
    moved = [([0.11, 0.1, 0.41, 0.4], 1, 0.7), (b, 1, 0.69995), (far, 2, 0.3 + 2e-5)]
    assert agreement(moved)[0] == 0.0
    assert agreement([(a, 3, 0.7), (b, 1, 0.69995), (far, 2, 0.3 + 2e-5)])[0] == 0.0
    assert (
        agreement([(a, 1, 0.7), (b, 1, 0.69995), (far, 2, 0.29)], [(a, 1, 0.7), (b, 1, 0.69995), (far, 2, 0.6)])[0]
        == 0.0
    )
    assert (
        agreement([(a, 1, 0.7), (b, 1, 0.69995), (far, 2, 0.6)], [(a, 1, 0.7), (b, 1, 0.69995), (far, 2, 0.29)])[0]
        == 0.0
    )
    # an NMS swap between boxes whose scores differ by more than the tolerance is a real difference
    assert agreement([(a, 1, 0.6), (b, 1, 0.7)], [(a, 1, 0.7), (b, 1, 0.6)])[0] == 0.0


def test_detection_agreement_tolerates_near_ties_at_the_max_detections_cut():
    class TwoDetections(_Settings):
        max_detections = 2

    boxes = [[0.0, 0.0, 0.2, 0.2], [0.4, 0.4, 0.6, 0.6], [0.8, 0.8, 1.0, 1.0]]
    eager = _outputs([(boxes[0], 1, 0.9), (boxes[1], 2, 0.50002), (boxes[2], 3, 0.5)])
    tied = _outputs([(boxes[0], 1, 0.9), (boxes[1], 2, 0.49999), (boxes[2], 3, 0.50001)])
    far = _outputs([(boxes[0], 1, 0.9), (boxes[1], 2, 0.4), (boxes[2], 3, 0.5)])
    assert _detections_agreement(tied, eager, TwoDetections) == (1.0, 2, 2)
    assert _detections_agreement(far, eager, TwoDetections)[0] == 0.0
