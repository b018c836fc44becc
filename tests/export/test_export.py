"""One variant of each architecture scripts with torch.jit.script at batches 1 and 3 with its
feature pyramid, and exports with torch.export (dynamic batch) and to ONNX opset 17 with a
dynamic batch; the scripted and exported programs reproduce eager outputs (every registered
variant scripts in tests/models/test_every_model.py). Tolerances: scripted and exported
programs run the same kernels (1e-5); onnxruntime uses its own kernels (1e-4)."""

from __future__ import annotations

import pytest
import torch
from conftest import max_abs, randomize_

import mobilevt

# the variants of one architecture differ in widths and depths only, which neither the
# scripting nor the exporters see as structure: one of each architecture (v1, v2, v3 on v1,
# v3 on v2)
EXPORTED = ["mobilevit_xxs", "mobilevitv2_050", "mobilevitv3_xxs", "mobilevitv3_050"]
VARIANTS = EXPORTED


@pytest.fixture(scope="module", params=VARIANTS)
def model_and_inputs(request):
    model = randomize_(mobilevt.create_model(request.param), seed=2)
    generator = torch.Generator().manual_seed(0)
    # 224x320 exercises the resize-to-patch-multiple path at stride 32 (7x10 maps).
    inputs = {b: torch.rand(b, 3, 224, 320, generator=generator) for b in (1, 2, 3)}
    with torch.no_grad():
        expected = {b: model(x) for b, x in inputs.items()}
    return request.param, model, inputs, expected


def test_torchscript(model_and_inputs):
    name, model, inputs, expected = model_and_inputs
    scripted = torch.jit.script(model)
    with torch.no_grad():
        for b in (1, 3):
            assert max_abs(scripted(inputs[b]), expected[b]) <= 1e-5, name
        features = scripted.forward_feature_pyramid(inputs[1])
    assert [f.shape[-1] for f in features] == [160, 80, 40, 20, 10]


@pytest.mark.parametrize("model_and_inputs", EXPORTED, indirect=True)
def test_torch_export_dynamic_batch(model_and_inputs):
    name, model, inputs, expected = model_and_inputs
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (inputs[2],), dynamic_shapes={"x": {0: batch}})
    exported = program.module()
    with torch.no_grad():
        for b in (1, 3):
            assert max_abs(exported(inputs[b]), expected[b]) <= 1e-5, name


@pytest.mark.parametrize("model_and_inputs", EXPORTED, indirect=True)
def test_onnx_opset17_dynamic_batch(model_and_inputs, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    name, model, inputs, expected = model_and_inputs
    path = tmp_path / f"{name}.onnx"
    # torch's TorchScript-based exporter writes opset 17 natively; the dynamo exporter
    # emits opset 18 and its down-conversion to 17 fails (tested separately below).
    torch.onnx.export(
        model,
        (inputs[2],),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["pixel_values"],
        output_names=["logits"],
        dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
    )
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    assert {o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")} == {17}
    ops = {node.op_type for node in graph.graph.node}
    assert not ops & {"Col2Im", "Im2Col"}, "unfold/fold leaked into the graph"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b in (1, 3):
        (logits,) = session.run(None, {"pixel_values": inputs[b].numpy()})
        assert max_abs(torch.from_numpy(logits), expected[b]) <= 1e-4, name


@pytest.mark.slow  # the dynamo exporter: about 20 s each
@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevitv2_050"])
def test_onnx_dynamo_exporter(name, tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    model = randomize_(mobilevt.create_model(name), seed=4)
    x = torch.rand(2, 3, 256, 256)
    path = tmp_path / "model.onnx"
    torch.onnx.export(
        model,
        (x,),
        str(path),
        dynamo=True,
        opset_version=18,
        input_names=["pixel_values"],
        output_names=["logits"],
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x3 = torch.rand(3, 3, 256, 256)
    (logits,) = session.run(None, {"pixel_values": x3.numpy()})
    with torch.no_grad():
        assert max_abs(torch.from_numpy(logits), model(x3)) <= 1e-4
