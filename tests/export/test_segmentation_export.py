"""DeepLabV3-MobileViT exports (TorchScript, ONNX, ExecuTorch) reproduce the eager
logits on real photos. Tolerances: TorchScript runs the same kernels (1e-5); onnxruntime
and XNNPACK their own (1e-4). Agreement is the share of pixels whose argmax class matches."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_cpp_executorch_agrees, max_abs, randomize_

import mobilevt
from mobilevt.export.core import export_model

SIZE = (128, 160)


def _model(name: str) -> torch.nn.Module:
    model = randomize_(mobilevt.create_model(name, num_classes=5), seed=3)
    model.preprocess = mobilevt.PreprocessConfig(SIZE, SIZE[0])
    return model


def _check(report, tolerance: float) -> None:
    assert report.max_abs_diff is not None and report.max_abs_diff <= tolerance, report.max_abs_diff
    assert report.top1_agreement >= 0.99 and report.agreement_of == "top-1 class per pixel"


@pytest.mark.parametrize("name", ["deeplabv3_mobilevit_xxs", "deeplabv3_mobilevitv2_050"])
def test_torchscript_and_onnx(name, tmp_path, photo_dir):
    pytest.importorskip("onnxruntime")
    model = _model(name)
    scripted = export_model(model, tmp_path / "seg.pt", "torchscript", check_images=photo_dir, latency_runs=1)
    _check(scripted, 1e-5)
    loaded = torch.jit.load(str(tmp_path / "seg.pt"))
    x = torch.rand(1, 3, 96, 128)
    eager = model.eval().fuse()
    with torch.no_grad():
        assert loaded(x).shape == (1, 5, 6, 8)  # any input size, logits at stride 16
        assert max_abs(loaded(x), eager(x)) <= 1e-5
    onnx_report = export_model(_model(name), tmp_path / "seg.onnx", "onnx", check_images=photo_dir, latency_runs=1)
    _check(onnx_report, 1e-4)


def test_onnx_dynamic_size(tmp_path, photo_dir):
    ort = pytest.importorskip("onnxruntime")
    model = _model("deeplabv3_mobilevit_xxs")
    export_model(model, tmp_path / "seg.onnx", "onnx", dynamic_size=True, check_images=photo_dir, latency_runs=1)
    session = ort.InferenceSession(str(tmp_path / "seg.onnx"), providers=["CPUExecutionProvider"])
    x = torch.rand(2, 3, 96, 224)
    (logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        assert max_abs(torch.from_numpy(logits), model.eval().fuse()(x)) <= 1e-4


@pytest.mark.slow
def test_executorch(tmp_path, photo_dir, pte_runner):
    pytest.importorskip("executorch")
    report = export_model(
        _model("deeplabv3_mobilevit_xxs"),
        tmp_path / "seg.pte",
        "executorch",
        check_images=photo_dir,
        latency_runs=1,
        dynamic_batch=False,
    )
    _check(report, 1e-4)
    # the ExecuTorch C++ runtime that apps link gives Python's runtime's logits
    assert_cpp_executorch_agrees(pte_runner, tmp_path / "seg.pte", [torch.rand(1, 3, *SIZE)], tmp_path)
