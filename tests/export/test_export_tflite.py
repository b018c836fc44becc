"""TFLite / LiteRT export (litert-torch): the written flatbuffer uses builtin ops only, runs
in the LiteRT interpreter and agrees with eager on real photos at a non-square size.

Tolerance: fp32, XNNPACK's kernels against torch's: logits within 1e-4 (measured ~1e-6).
The models are randomised with BatchNorm statistics measured on photos, so that their
logits depend on the image and top-1 agreement means something. litert-torch is an
optional 770 MB install (``pip install "mobilevt[tflite]"``): without it these tests skip,
except the one checking the error message that names it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import export_stages, max_abs, model_with_structure, real_photos

import mobilevt
from mobilevt.data.preprocess import ImagePreprocess
from mobilevt.export import ExportError, export_model
from mobilevt.weights.entries import PreprocessConfig

ATOL = 1e-4
SIZE = (224, 320)  # height, width: non-square


def _needs_litert():
    pytest.importorskip("litert_torch", reason='litert-torch is not installed: pip install "mobilevt[tflite]"')
    pytest.importorskip("ai_edge_litert", reason='ai-edge-litert is not installed: pip install "mobilevt[tflite]"')


@pytest.fixture(scope="module", params=["mobilevit_xxs", "mobilevitv2_050"])
def exported(request, tmp_path_factory, photo_dir):
    """(model, report, folder) of one export, shared by the tests below."""
    _needs_litert()
    name = request.param
    model = model_with_structure(name, [mobilevt.load_image(p) for p in sorted(photo_dir.iterdir())])
    folder = tmp_path_factory.mktemp(name)
    report = export_model(
        model, folder / f"{name}.tflite", "tflite", image_size=SIZE, check_images=photo_dir, latency_runs=3
    )
    return model, report, folder


def test_tflite_runs_in_litert_and_agrees_with_eager(exported, photo_dir, tmp_path, monkeypatch):
    """(and, on mobilevit_xxs, a file with Flex or custom operators is refused: in the same test
    so that each model is converted once, whichever pytest-xdist worker runs it)"""
    from ai_edge_litert.interpreter import Interpreter

    model, report, folder = exported
    assert report.format == "tflite" and report.input_size == SIZE and report.check_images == 6
    assert report.top1_agreement == 1.0 and report.top5_agreement == 1.0 and report.max_abs_diff <= ATOL
    assert not report.dynamic_batch and any("batch 1" in note for note in report.notes)
    assert any("NCHW" in note for note in report.notes) and report.details["input_layout"] == "NCHW"
    assert "CONV_2D" in report.details["tflite_ops"] and report.exported_latency_ms > 0
    path = next(folder.glob("*.tflite"))
    assert sorted(p.name for p in folder.iterdir()) == [path.name, path.name + ".report.json"]  # no temp files

    # the file on its own, in a fresh interpreter: a photo at the export size and random input
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert list(inp["shape"]) == [1, 3, *SIZE] and inp["dtype"] == np.float32
    photo = ImagePreprocess(PreprocessConfig(SIZE, 320))(mobilevt.load_image(sorted(photo_dir.iterdir())[0]))[None]
    for x in (photo, torch.rand(1, 3, *SIZE, generator=torch.Generator().manual_seed(0))):
        interpreter.set_tensor(inp["index"], x.numpy())
        interpreter.invoke()
        logits = torch.from_numpy(interpreter.get_tensor(out["index"]))
        with torch.no_grad():
            expected = model(x)
        assert logits.shape == (1, 1000) and max_abs(logits, expected) <= ATOL
        assert logits.argmax() == expected.argmax()
    if path.name.startswith("mobilevit_xxs"):
        _flex_and_custom_ops_are_rejected(exported, tmp_path, monkeypatch, photo_dir)


def test_cli_prints_only_its_status_line_and_the_result(tmp_path, photo_dir):
    """`mobilevt export --format tflite` as a user runs it: no converter progress lines, no
    absl or LiteRT C++ log lines (they go to the process's stderr, hence a subprocess)."""
    _needs_litert()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mobilevt",
            "export",
            "mobilevit_xxs",
            "--weights",
            "none",
            "--format",
            "tflite",
            "-o",
            str(tmp_path / "m.tflite"),
            "--image-size",
            "128",
            "128",
            "--check-images",
            str(photo_dir),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(run.stdout.splitlines()) == 1 and run.stdout.startswith(f"wrote {tmp_path / 'm.tflite'}"), run.stdout
    warning, *stages = run.stderr.splitlines()
    assert warning == "warning: mobilevit_xxs has random weights (--weights none); its predictions are meaningless"
    assert export_stages("\n".join(stages), "mobilevit_xxs") == [
        "reading the check photos and running the eager model on them",
        "converting to LiteRT (litert-torch), then running the file on the check images",
        "timing eager and the file at batch 1 (20 runs each)",
    ], run.stderr


def _with_extra_operator(flatbuffer: bytes, custom_code: str) -> bytes:
    """``flatbuffer`` with one more operator code: a custom op named ``custom_code``."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = custom_code
    model.operatorCodes.append(code)
    builder = flatbuffers.Builder(len(flatbuffer) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _flex_and_custom_ops_are_rejected(exported, tmp_path, monkeypatch, photo_dir):
    import litert_torch

    from mobilevt.export.formats.tflite import check_builtin_ops, tflite_op_names

    model, _, folder = exported
    flatbuffer = next(folder.glob("*.tflite")).read_bytes()
    assert not any(name.startswith("CUSTOM") for name in check_builtin_ops(flatbuffer))
    flex = _with_extra_operator(flatbuffer, "FlexErf")
    assert "CUSTOM:FlexErf" in tflite_op_names(flex)
    with pytest.raises(ExportError, match=r"Flex \(TensorFlow select\) ops FlexErf"):
        check_builtin_ops(flex)
    with pytest.raises(ExportError, match="custom ops MyDetectionPostprocess"):
        check_builtin_ops(_with_extra_operator(flatbuffer, "MyDetectionPostprocess"))

    # a conversion that comes out with a Flex op fails before anything is written
    class _ConvertedWithFlex:
        def model_content(self) -> bytes:
            return flex

    monkeypatch.setattr(litert_torch, "convert", lambda *args, **kwargs: _ConvertedWithFlex())
    with pytest.raises(ExportError, match="Flex"):
        export_model(
            model,
            tmp_path / "flex.tflite",
            "tflite",
            image_size=SIZE,
            check_images=photo_dir,
            max_check_images=1,
            latency_runs=0,
        )
    assert not any(tmp_path.iterdir())


def test_missing_litert_names_the_extra(tmp_path, monkeypatch, capsys):
    from mobilevt.cli.main import main

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(real_photos(1)[0], photos)
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # as if not installed
    with pytest.raises(ExportError, match=r'tflite export needs litert_torch: pip install "mobilevt\[tflite\]"'):
        export_model(mobilevt.create_model("mobilevit_xxs"), tmp_path / "m.tflite", "tflite", check_images=photos)
    # the command line: one error line naming the extra
    code = main(
        [
            "export",
            "mobilevit_xxs",
            "--weights",
            "none",
            "--format",
            "tflite",
            "-o",
            str(tmp_path / "c.tflite"),
            "--check-images",
            str(photos),
        ]
    )
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and 'pip install "mobilevt[tflite]"' in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]
