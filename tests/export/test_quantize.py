"""int8 export (PT2E + XNNPACK for ExecuTorch, onnxruntime static quantization for ONNX)
on a model that was actually trained (digits), and the delegate-friendly rewrite that
lets XNNPACK run the whole MobileViT graph."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import mobilevt
from mobilevt.export.rewrite import delegate_friendly


def _with_random_norms(model: nn.Module) -> nn.Module:
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            module.weight.data = 1 + 0.3 * torch.randn(module.weight.shape, generator=generator)
            module.bias.data = 0.3 * torch.randn(module.bias.shape, generator=generator)
    return model.eval()


@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevitv2_050"])
def test_delegate_friendly_rewrite_keeps_the_outputs(name):
    model = _with_random_norms(mobilevt.create_model(name)).fuse()
    x = torch.rand(2, 3, 160, 224)
    with torch.inference_mode():
        expected, actual = model(x), delegate_friendly(model)(x)
    assert (actual - expected).abs().max() < 1e-5


# a block of each architecture, with its input channels: v1 stage 2 block 1 (48), v2 stage 2
# block 1 (128)
BLOCKS = {"mobilevit_xxs": 48, "mobilevitv2_050": 128}


@pytest.mark.slow  # two XNNPACK lowerings of a block
@pytest.mark.parametrize("name", list(BLOCKS))
def test_xnnpack_runs_the_rewritten_block_whole_and_as_eager_does(name, tmp_path):
    """Without the rewrite, a MobileViT block leaves operators (v1: layer_norm, SDPA's safe
    softmax ...; v2: split, sum) to ExecuTorch's portable kernels; rewritten, XNNPACK runs
    all of it, and the ExecuTorch runtime gives eager's output. (The whole rewritten models
    are checked by the export report's ``outside_delegate`` in tests/export/test_export_cli.py.)"""
    pytest.importorskip("executorch")
    from mobilevt.export.formats.executorch import executorch_runner, outside_delegate, write_xnnpack_program

    x = torch.rand(1, BLOCKS[name], 16, 16)

    def left_outside(module, path):
        return outside_delegate(write_xnnpack_program(torch.export.export(module, (x,)), path))

    block = _with_random_norms(mobilevt.create_model(name)).fuse().stages[2][1]
    assert left_outside(block, tmp_path / "block.pte")
    assert left_outside(delegate_friendly(block), tmp_path / "rewritten.pte") == {}
    run, _ = executorch_runner(tmp_path / "rewritten.pte")
    with torch.inference_mode():
        assert (run(x)[0] - block(x)).abs().max() < 1e-4


@pytest.fixture(scope="module")
def trained_digits(digits_run):
    """mobilevit_xxs trained for a few epochs on scikit-learn's digits, with calibration
    (train split) and check (validation split) folders of the real digit images."""
    result = json.loads((digits_run / "result.json").read_text())
    labels = json.loads((digits_run / "labels.json").read_text())
    return mobilevt.create_model("mobilevit_xxs", weights=result["best_path"]), digits_run, labels


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["executorch", "onnx"])
def test_int8_export_of_a_trained_model(trained_digits, tmp_path, fmt, request):
    """The int8 file is several times smaller than fp32, agrees with the fp32 model on the
    top-1 of real validation digits, and costs (almost) no accuracy."""
    pytest.importorskip({"executorch": "executorch", "onnx": "onnxruntime"}[fmt])
    from mobilevt.data import ImagePreprocess, load_image
    from mobilevt.export import export_model

    model, root, labels = trained_digits
    output = tmp_path / ("int8.pte" if fmt == "executorch" else "int8.onnx")
    report = export_model(
        model,
        output,
        fmt,
        quantize="int8",
        calibration=root / "calibration",
        check_images=root / "val",
        max_check_images=120,
        latency_runs=3,
    )
    quantization = json.loads((tmp_path / f"{output.name}.report.json").read_text())["details"]["quantization"]
    assert quantization["calibration_images"] == 64 and quantization["size_ratio"] >= 3.0
    assert report.check_images == 120 and report.top1_agreement >= 0.97

    preprocess = ImagePreprocess(model.preprocess)
    val = sorted(k for k in labels if k.startswith("val/"))
    batch = torch.stack([preprocess(load_image(root / k)) for k in val])
    targets = torch.tensor([labels[k] for k in val])
    if fmt == "executorch":
        from executorch.runtime import Runtime

        method = Runtime.get().load_program(str(output)).load_method("forward")
        int8 = torch.cat([method.execute([batch[i : i + 1]])[0] for i in range(len(batch))])
        # the ExecuTorch C++ runtime that apps link (quantized kernels and XNNPACK) agrees
        from conftest import assert_cpp_executorch_agrees

        assert_cpp_executorch_agrees(request.getfixturevalue("pte_runner"), output, [batch[:1]], tmp_path)
    else:
        import onnxruntime as ort

        session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
        int8 = torch.from_numpy(session.run(None, {"pixel_values": batch.numpy()})[0])
    with torch.inference_mode():
        fp32_accuracy = (model.eval()(batch).argmax(-1) == targets).float().mean().item()
    int8_accuracy = (int8.argmax(-1) == targets).float().mean().item()
    assert fp32_accuracy > 0.8 and int8_accuracy >= fp32_accuracy - 0.03, (fp32_accuracy, int8_accuracy)


def test_onnx_int8_of_a_freshly_initialised_model(tmp_path, photo_dir, capsys):
    """A fresh model's zero biases are equal tensors, which the ONNX exporter stores once; the
    quantizer wrote that one tensor as a convolution's int32 bias and as an add's uint8 input,
    and onnxruntime refused the file. Each user of a shared weight now gets its own copy, and
    onnxruntime's quantizer prints nothing (it warned about the shape arithmetic's int64 adds)."""
    pytest.importorskip("onnxruntime")
    from mobilevt.export import export_model

    model = mobilevt.create_model("mobilevit_xxs").eval()  # default initialisation
    report = export_model(
        model,
        tmp_path / "m.onnx",
        "onnx",
        image_size=(64, 64),
        quantize="int8",
        calibration=photo_dir,
        check_images=photo_dir,
        latency_runs=1,
    )
    assert report.details["quantization"]["size_ratio"] > 3.0 and report.top1_agreement is not None
    assert "WARNING" not in capsys.readouterr().err


def test_int8_options_are_checked(tmp_path, photo_dir):
    """Checked before anything is exported: the model's weights do not matter."""
    from mobilevt.export import ExportError, export_model

    model = mobilevt.create_model("mobilevit_xxs").eval()
    with pytest.raises(ExportError, match="needs --calibration"):
        export_model(model, tmp_path / "m.onnx", "onnx", quantize="int8")
    with pytest.raises(ExportError, match="onnx and executorch"):
        export_model(model, tmp_path / "m.pt", "torchscript", quantize="int8", calibration=photo_dir)
    with pytest.raises(ExportError, match="unknown quantization"):
        export_model(model, tmp_path / "m.onnx", "onnx", quantize="int4", calibration=photo_dir)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "fmt, speedup, says",
    [
        ("onnx", 0.8, "--format executorch"),  # onnxruntime's int8 slower than its fp32: name the runtime where it pays
        ("executorch", 0.9, "keep the fp32 file"),
        ("onnx", 1.2, None),
        ("executorch", 1.3, None),
    ],
)
def test_the_cli_says_which_runtime_to_use_when_int8_does_not_pay(fmt, speedup, says):
    from mobilevt.cli.export import int8_advice

    advice = int8_advice(fmt, speedup)
    assert (advice is None) if says is None else (says in advice and advice.count("\n") == 0)
