"""The one export-format interface: every format is found by name, says what to install
and which options it honours; every option that a format or a model family cannot honour
is refused with one line before any work (the check photos are not even read); the family
adapters hand their graphs to the same format objects."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import tomllib
import torch
from conftest import ROOT

import mobilevt
from mobilevt.export import ExportError, export_model
from mobilevt.export.formats import Dim, Graph, get_format, registered_formats
from mobilevt.export.formats.onnx import _onnx_axes
from mobilevt.export.formats.torchscript import TorchscriptFormat

FORMATS = ["torchscript", "onnx", "executorch", "coreml", "tflite"]  # a new format is listed after them


def test_every_format_is_registered_with_its_extra():
    formats = registered_formats()
    assert list(formats)[: len(FORMATS)] == FORMATS
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for name, export_format in formats.items():
        assert get_format(name) is export_format
        assert export_format.suffixes and all(s.startswith(".") for s in export_format.suffixes)
        if export_format.extra:  # TorchScript comes with torch itself
            assert export_format.extra in extras, name
            assert export_format.install_hint.startswith(f'pip install "mobilevt[{export_format.extra}]"')
    with pytest.raises(ExportError, match="^unknown export format 'tensorrt'; choose one of torchscript, onnx, "):
        get_format("tensorrt")


def test_the_cli_offers_the_registered_formats():
    run = subprocess.run([sys.executable, "-m", "mobilevt", "export", "--help"], capture_output=True, text=True)
    assert run.returncode == 0
    assert "{" + ",".join(registered_formats()) + "}" in run.stdout


def test_a_format_class_registers_itself_once():
    with pytest.raises(ValueError, match="'torchscript' is defined twice"):
        type("AnotherTorchscript", (TorchscriptFormat,), {"name": "torchscript"})


def test_graph_dims_are_shared_and_exported_by_name():
    height = Dim("height", min=32, max=1280, multiple_of=32)
    batch = Dim("batch", min=1, max=8)
    example = (torch.zeros(2, 3, 64, 64), torch.zeros(2, 64, 64, dtype=torch.long))
    graph = Graph(
        torch.nn.Identity(),
        example,
        ("pixel_values", "pixel_mask"),
        ("logits",),
        ({0: batch, 2: height}, {0: batch, 1: height}),
        ({0: batch},),
    )
    shapes = graph.torch_export_shapes()
    assert shapes[0][2] is shapes[1][1] and shapes[0][0] is shapes[1][0]  # one size, not two
    assert _onnx_axes(graph) == {
        "pixel_values": {0: "batch", 2: "height"},
        "pixel_mask": {0: "batch", 1: "height"},
        "logits": {0: "batch"},
    }
    static = graph.static()
    assert not static.is_dynamic and static.torch_export_shapes() is None
    assert [tuple(t.shape) for t in static.example] == [(1, 3, 64, 64), (1, 64, 64)]  # batch 1 where it varied


@pytest.fixture(scope="module")
def classifier():
    return mobilevt.create_model("mobilevit_xxs").eval()


@pytest.fixture(scope="module")
def detector():
    return mobilevt.create_model("ssdlite_mobilevit_xxs").eval()


@pytest.fixture(scope="module")
def vqa_pipeline(tmp_path_factory):
    from mobilevt.data.tokenizer import create_tokenizer
    from mobilevt.tasks.vqa import VqaPipeline

    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("".join(t + "\n" for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "what", "is", "?"]))
    model = mobilevt.create_model(
        "vilt_b32_vqa",
        num_classes=3,
        answers=["yes", "no", "two"],
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        mlp_dim=64,
        image_size=64,
        patch_size=32,
        vocab_size=16,
    )
    return VqaPipeline(model.eval(), create_tokenizer(vocab, max_length=model.arch.max_text_len))


# (model, format, options, the one line it gets)
REFUSALS = [
    (
        "classifier",
        "torchscript",
        {"dynamic_batch": False},
        "--static-batch is available for onnx, executorch, coreml and tflite exports, not torchscript",
    ),
    ("classifier", "onnx", {"lite": True}, "--lite is available for torchscript exports, not onnx"),
    (
        "classifier",
        "executorch",
        {"include_preprocessing": True},
        "--include-preprocessing is available for torchscript and onnx exports, not executorch",
    ),
    ("classifier", "torchscript", {"opset": 18}, "--opset is available for onnx exports, not torchscript"),
    ("classifier", "onnx", {"max_batch": 4}, "--max-batch is available for executorch exports, not onnx"),
    (
        "classifier",
        "onnx",
        {"coreml_precision": "float32"},
        "--coreml-precision is available for coreml exports, not onnx",
    ),
    (
        "classifier",
        "tflite",
        {"quantize": "int8", "calibration": "photos"},
        "--quantize is available for onnx and executorch exports, not tflite",
    ),
    (
        "classifier",
        "executorch",
        {"dynamic_size": True},
        "--dynamic-size is available for onnx exports, not executorch",
    ),
    ("classifier", "onnx", {"calibration": "photos"}, "--calibration goes with --quantize"),
    ("classifier", "onnx", {"dynamic_size": True, "opset": 18}, "--dynamic-size applies to onnx at opset 17 or lower"),
    ("classifier", "onnx", {"quantize": "int4", "calibration": "photos"}, "unknown quantization 'int4'"),
    ("classifier", "onnx", {"quantize": "int8"}, "--quantize int8 needs --calibration DIR"),
    (
        "classifier",
        "onnx",
        {"quantize": "int8", "calibration": "photos", "include_preprocessing": True},
        "--quantize does not combine with --include-preprocessing",
    ),
    ("classifier", "coreml", {"coreml_precision": "int8"}, "coreml precision must be float16 or float32"),
    ("detector", "coreml", {}, "detectors export to torchscript, onnx, executorch, not 'coreml'"),
    ("detector", "onnx", {"lite": True}, "detector exports take no --lite: the file holds the network"),
    ("detector", "onnx", {"opset": 18}, "detectors export to ONNX with the TorchScript-based exporter"),
    ("detector", "executorch", {"max_batch": 2}, "detector exports take no --max-batch"),
    ("vqa_pipeline", "tflite", {}, "ViLT VQA pipelines export to torchscript, onnx, executorch, not 'tflite'"),
    ("vqa_pipeline", "onnx", {"image_size": (64, 64)}, "ViLT VQA exports take no --image-size"),
    ("vqa_pipeline", "onnx", {"dynamic_batch": False}, "ViLT VQA exports take no --static-batch"),
    (
        "vqa_pipeline",
        "executorch",
        {"fuse": False, "max_batch": 4},
        "ViLT VQA exports take no --no-fuse or --max-batch",
    ),
    (
        "vqa_pipeline",
        "torchscript",
        {"quantize": "int8", "calibration": "photos"},
        "--quantize is available for onnx and executorch exports, not torchscript",
    ),
    ("vqa_pipeline", "executorch", {"quantize": "int8", "calibration": "photos"}, "it takes no --calibration"),
    ("vqa_pipeline", "onnx", {"quantize": "int8", "calibration": "photos"}, "it takes no --calibration"),
]


@pytest.mark.parametrize(
    "model, export_format, options, message",
    REFUSALS,
    ids=[f"{m}-{f}-{'-'.join(o) or 'format'}" for m, f, o, _ in REFUSALS],
)
def test_what_cannot_be_honoured_is_refused_before_any_work(model, export_format, options, message, request, tmp_path):
    suffix = get_format(export_format).suffixes[0]
    output = tmp_path / f"out{suffix}"
    # a check-photo folder that does not exist: reading it would be another error
    with pytest.raises(ExportError) as error:
        export_model(request.getfixturevalue(model), output, export_format, check_images=tmp_path / "absent", **options)
    text = str(error.value)
    assert "\n" not in text
    if " is available for " in message:  # the formats that honour it (a new one may join them)
        flag, listed = message.split(" is available for ")
        assert text.startswith(f"{flag} is available for ") and text.endswith(f" exports, not {export_format}")
        assert all(name in text for name in re.split(", | and ", listed.split(" exports")[0])), text
    else:
        assert message in text
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a report


def test_a_bare_vilt_model_needs_its_pipeline(vqa_pipeline, tmp_path):
    with pytest.raises(ExportError, match="needs its question tokenizer: export the pipeline"):
        export_model(vqa_pipeline.model, tmp_path / "x.onnx", "onnx")


def test_the_cli_passes_every_option_to_vqa_exports(vqa_pipeline, tmp_path, capsys):
    """`mobilevt export vilt_b32_vqa` hands --static-batch, --no-fuse and --max-batch to the
    export, which refuses them (they were dropped without a word before)."""
    from mobilevt.cli.main import main

    weights = mobilevt.save_weights(vqa_pipeline.model, tmp_path / "vilt.safetensors")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(t + "\n" for t in vqa_pipeline.tokenizer.id_to_token))
    common = [
        "export",
        "vilt_b32_vqa",
        "--weights",
        str(weights),
        "--vocab",
        str(vocab),
        "--format",
        "onnx",
        "-o",
        str(tmp_path / "v.onnx"),
    ]
    for flags, named in [
        (["--static-batch"], "--static-batch"),
        (["--no-fuse"], "--no-fuse"),
        (["--max-batch", "4"], "--max-batch"),
    ]:
        assert main([*common, *flags]) == 1
        assert f"error: ViLT VQA exports take no {named}:" in capsys.readouterr().err
    assert not (tmp_path / "v.onnx").exists()
