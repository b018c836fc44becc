"""``mobilevt export`` / ``mobilevt.export.export_model``: the written files run in their
runtimes and agree with eager on real photos; dynamic batch and non-square inputs work in
the exported files; the preprocessing-included TorchScript takes raw photos.
Tolerances: TorchScript runs torch's kernels on the BatchNorm-folded model: 5e-5 on logits of magnitude
up to ~10 (float rounding of the folding); onnxruntime its own kernels (1e-4)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import assert_cpp_executorch_agrees, export_stages, max_abs, model_with_structure, real_photos

import mobilevt
from mobilevt.export import ExportError, export_model


def _model(name):
    # BatchNorm statistics from the photos, so that photos get different top-1 classes
    return model_with_structure(name, [mobilevt.load_image(p) for p in real_photos(6)], seed=5)


@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevitv2_050"])
def test_torchscript_export_runs_and_agrees(name, tmp_path, photo_dir):
    model = _model(name)
    out = tmp_path / f"{name}.pt"
    report = export_model(model, out, "torchscript", image_size=(224, 320), check_images=photo_dir, latency_runs=3)
    assert report.top1_agreement == 1.0 and report.max_abs_diff <= 5e-5 and report.check_images == 6
    assert json.loads((tmp_path / f"{name}.pt.report.json").read_text())["file_bytes"] == out.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.pt", f"{name}.pt.report.json"]  # no temp files
    loaded = torch.jit.load(str(out))
    x = torch.rand(3, 3, 224, 320)
    with torch.no_grad():
        assert max_abs(loaded(x), model.eval()(x)) <= 5e-5  # another batch size, non-square


@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevitv2_050"])
def test_onnx_export_dynamic_batch_non_square(name, tmp_path, photo_dir):
    ort = pytest.importorskip("onnxruntime")
    model = _model(name)
    out = tmp_path / f"{name}.onnx"
    stages = []
    report = export_model(
        model, out, "onnx", image_size=(224, 320), check_images=photo_dir, latency_runs=3, progress=stages.append
    )
    assert report.top1_agreement == 1.0 and report.top5_agreement == 1.0 and report.max_abs_diff <= 1e-4
    # the caller is told each stage as it starts
    assert stages == [
        "reading the check photos and running the eager model on them",
        "exporting to ONNX (opset 17) and checking the graph",
        "running the file in onnxruntime on the 6 check images",
        "timing eager and the file at batch 1 (3 runs each)",
    ]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 3, 224, 320)
    (logits,) = session.run(None, {"pixel_values": x.numpy()})
    with torch.no_grad():
        assert max_abs(torch.from_numpy(logits), model.eval()(x)) <= 1e-4


def test_torchscript_with_preprocessing_takes_raw_photos(tmp_path, photo_dir):
    model = _model("mobilevit_xxs")
    out = tmp_path / "with_preprocessing.pt"
    report = export_model(model, out, "torchscript", include_preprocessing=True, check_images=photo_dir, latency_runs=3)
    assert report.include_preprocessing and report.top1_agreement == 1.0
    loaded = torch.jit.load(str(out))
    preprocess = mobilevt.transforms_for(model)
    for photo in sorted(photo_dir.iterdir())[:3]:
        image = mobilevt.load_image(photo)  # any size, uint8
        with torch.no_grad():
            expected = model.eval()(preprocess(image)[None])
            assert max_abs(loaded(image.permute(1, 2, 0).contiguous()), expected) <= 5e-5


def test_lite_interpreter_file(tmp_path, photo_dir):
    from torch.jit.mobile import _load_for_lite_interpreter

    model = _model("mobilevitv2_050")
    out = tmp_path / "model.ptl"
    report = export_model(model, out, "torchscript", lite=True, check_images=photo_dir, latency_runs=2)
    assert report.runtime == "PyTorch lite interpreter" and report.top1_agreement == 1.0
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        assert max_abs(_load_for_lite_interpreter(str(out))(x), model.eval()(x)) <= 5e-5


def test_unsupported_options_and_missing_packages(tmp_path, monkeypatch, photo_dir):
    model = mobilevt.create_model("mobilevit_xxs")
    with pytest.raises(ExportError, match="include-preprocessing"):
        export_model(model, tmp_path / "m.pte", "executorch", include_preprocessing=True)
    with pytest.raises(ExportError, match="unknown export format"):
        export_model(model, tmp_path / "m.bin", "caffe")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ExportError, match=r"pip install \"mobilevt\[onnx\]\""):
        export_model(model, tmp_path / "m.onnx", "onnx", check_images=photo_dir)
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_cli_export(tmp_path, photo_dir):
    weights = tmp_path / "xxs.safetensors"
    mobilevt.save_weights(mobilevt.create_model("mobilevit_xxs"), weights)
    out = tmp_path / "xxs.onnx"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mobilevt",
            "export",
            "mobilevit_xxs",
            "--weights",
            str(weights),
            "--format",
            "onnx",
            "-o",
            str(out),
            "--check-images",
            str(photo_dir),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "top-1 agreement 100.0%" in run.stdout and out.is_file()
    # a successful export prints its stages and nothing else: no tracer or deprecation warnings
    assert export_stages(run.stderr, "mobilevit_xxs")[1:] == [
        "exporting to ONNX (opset 17) and checking the graph",
        "running the file in onnxruntime on the 6 check images",
        "timing eager and the file at batch 1 (20 runs each)",
    ], run.stderr
    scripted = subprocess.run(
        [
            sys.executable,
            "-m",
            "mobilevt",
            "export",
            "mobilevit_xxs",
            "--weights",
            str(weights),
            "--format",
            "torchscript",
            "--include-preprocessing",
            "-o",
            str(tmp_path / "xxs.pt"),
            "--check-images",
            str(photo_dir),
        ],
        capture_output=True,
        text=True,
    )
    assert scripted.returncode == 0, scripted.stderr[-2000:]
    assert export_stages(scripted.stderr, "mobilevit_xxs")[1:] == [
        "scripting the model and saving the TorchScript file",
        "timing eager and the file at batch 1 (20 runs each)",
    ]
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "mobilevt",
            "export",
            "mobilevit_xxs",
            "--weights",
            "none",
            "--format",
            "executorch",
            "--include-preprocessing",
            "-o",
            str(tmp_path / "x.pte"),
        ],
        capture_output=True,
        text=True,
    )
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert bad.returncode == 1 and len(errors) == 1 and "torchscript" in errors[0]


def test_export_on_default_photos_says_they_prove_little(tmp_path, photo_dir, capsys):
    from mobilevt.cli.main import main

    weights = mobilevt.save_weights(mobilevt.create_model("mobilevit_xxs"), tmp_path / "xxs.safetensors")
    common = ["export", "mobilevit_xxs", "--weights", str(weights), "--format", "torchscript"]
    assert main([*common, "-o", str(tmp_path / "a.pt")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert (
        lines[-1].startswith("note: checked on the 6 check photos shipped with mobilevt only")
        and "--check-images" in lines[-1]
    )
    assert main([*common, "-o", str(tmp_path / "b.pt"), "--check-images", str(photo_dir)]) == 0
    assert "note:" not in capsys.readouterr().out


@pytest.mark.slow
# one architecture (the suite's time): v2's attention rewrite is lowered whole in
# tests/export/test_quantize.py, and v2 scripts and runs in tests/models/test_every_model.py
@pytest.mark.parametrize("name", ["mobilevit_xxs"])
def test_executorch_export_runs_with_dynamic_batch(name, tmp_path, photo_dir, pte_runner):
    """`mobilevt export --format executorch` as a user runs it: the file agrees with eager,
    its report names what XNNPACK does not run, and the terminal shows the status line and
    the result only (no C++ log lines of the runtime, no library deprecations)."""
    pytest.importorskip("executorch")
    from executorch.runtime import Runtime

    model = _model(name)
    weights = mobilevt.save_weights(model, tmp_path / f"{name}.safetensors")
    out = tmp_path / f"{name}.pte"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mobilevt",
            "export",
            name,
            "--weights",
            str(weights),
            "--format",
            "executorch",
            "-o",
            str(out),
            "--image-size",
            "224",
            "320",
            "--check-images",
            str(photo_dir),
            "--max-batch",
            "4",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    # one line per stage as it starts, nothing else (no runtime log lines, no deprecations)
    assert export_stages(run.stderr, name) == [
        "reading the check photos and running the eager model on them",
        "loading ExecuTorch and rewriting attention and norms for XNNPACK",
        "capturing the graph with torch.export (batch 1 to 4)",
        "lowering to ExecuTorch's XNNPACK delegate and writing the .pte (the longest stage)",
        "checking that the program runs at batch 1 and 4",
        "running the file in the ExecuTorch runtime on the 6 check images",
        "timing eager and the file at batch 1 (20 runs each)",
    ], run.stderr[-2000:]
    report = json.loads((tmp_path / f"{name}.pte.report.json").read_text())
    assert report["top1_agreement"] == 1.0 and report["top5_agreement"] == 1.0 and report["max_abs_diff"] <= 1e-4
    # the report names what XNNPACK does not run (a symbolic batch leaves reshapes to the
    # portable kernels) and says so in a note
    outside = report["details"]["outside_delegate"]
    assert all(op.startswith("aten.") and count > 0 for op, count in outside.items()), outside
    noted = [note for note in report["notes"] if "portable kernels" in note]
    assert noted == (
        [
            f"{sum(outside.values())} operators run on ExecuTorch's portable kernels, outside XNNPACK: "
            + ", ".join(f"{n} x{c}" for n, c in sorted(outside.items(), key=lambda kv: -kv[1]))
        ]
        if outside
        else []
    )
    method = Runtime.get().load_program(str(out)).load_method("forward")
    # the program keeps its symbolic batch: a batch of 3 runs
    assert report["dynamic_batch"] and report["details"]["max_batch"] == 4, report["notes"]
    x = torch.rand(3, 3, 224, 320)
    with torch.no_grad():
        assert max_abs(method.execute([x])[0], model.eval()(x)) <= 1e-4
    # the ExecuTorch C++ runtime that apps link runs the file as Python's runtime does
    assert_cpp_executorch_agrees(pte_runner, out, [x], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name, tag", [("mobilevit_xxs", "cvnets_in1k"), ("mobilevitv2_050", "timm_in1k")])
def test_coreml_package_has_image_input_and_validates(name, tag, tmp_path):
    ct = pytest.importorskip("coremltools")
    model = _model(name)
    model.preprocess = mobilevt.get_model_entry(name).get_weights(tag).preprocess
    out = tmp_path / f"{name}.mlpackage"
    report = export_model(model, out, "coreml")
    assert out.is_dir() and report.file_bytes > 1e6 and "needs macOS" in " ".join(report.notes)
    spec = ct.models.MLModel(str(out), skip_model_load=True).get_spec()
    image = spec.description.input[0].type.imageType
    expected_space = (
        ct.proto.FeatureTypes_pb2.ImageFeatureType.BGR
        if model.preprocess.channel_order == "BGR"
        else ct.proto.FeatureTypes_pb2.ImageFeatureType.RGB
    )
    assert (image.width, image.height, image.colorSpace) == (256, 256, expected_space)
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    with pytest.raises(ExportError, match=".mlpackage"):
        export_model(model, tmp_path / "model.mlmodel", "coreml")


@pytest.mark.slow
def test_coreml_export_prints_the_status_line_and_the_result_only(tmp_path):
    """`mobilevt export --format coreml` as a user runs it on Linux: coremltools' import-time
    version and native-library warnings and its per-stage progress bars stay off the
    terminal, and the status line does not promise an output check that cannot run here."""
    pytest.importorskip("coremltools")
    weights = mobilevt.save_weights(_model("mobilevit_xxs"), tmp_path / "xxs.safetensors")
    out = tmp_path / "xxs.mlpackage"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mobilevt",
            "export",
            "mobilevit_xxs",
            "--weights",
            str(weights),
            "--format",
            "coreml",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert export_stages(run.stderr, "mobilevit_xxs") == [
        "converting to a Core ML ML Program, then validating its spec"
    ], run.stderr[-2000:]
    assert run.stdout.startswith(f"wrote {out} (") and "needs macOS/iOS" in run.stdout
    assert out.is_dir()


@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevitv2_050"])
def test_onnx_dynamic_height_and_width(name, tmp_path, photo_dir):
    ort = pytest.importorskip("onnxruntime")
    model = _model(name)
    out = tmp_path / "dynamic.onnx"
    report = export_model(model, out, "onnx", dynamic_size=True, check_images=photo_dir, latency_runs=2)
    assert report.top1_agreement == 1.0 and report.details["dynamic_size"]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 200, 300), (2, 3, 320, 192), (1, 3, 256, 256)]:
        x = torch.rand(*shape)
        (logits,) = session.run(None, {"pixel_values": x.numpy()})
        with torch.no_grad():
            assert max_abs(torch.from_numpy(logits), model.eval()(x)) <= 1e-4, shape
    with pytest.raises(ExportError, match="dynamic-size"):
        export_model(model, tmp_path / "x.pt", "torchscript", dynamic_size=True)


@pytest.mark.parametrize(("fmt", "suffix", "flags"), [("onnx", "onnx", []), ("torchscript", "ptl", ["--lite"])])
def test_export_shows_no_warning_that_mobilevt_itself_causes(fmt, suffix, flags, tmp_path, capfd):
    """The legacy ONNX exporter's and the lite interpreter's deprecations, and the tracer's
    notes on shape checks, are expected (export/native_logs.py says why each path stays):
    none reaches the user, and stderr holds only the export's own lines."""
    import warnings

    from mobilevt.cli.main import main

    argv = ["export", "mobilevit_xxs", "--weights", "none", "--format", fmt, "-o", str(tmp_path / f"x.{suffix}")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*argv, *flags]) == 0
    shown = [f"{w.category.__name__}: {w.message}" for w in caught]
    assert not [m for m in shown if "Lite Interpreter" in m or "legacy TorchScript-based ONNX" in m], shown
    assert not [m for m in shown if m.startswith("TracerWarning")], shown
    err = capfd.readouterr().err.strip().splitlines()
    assert all(line.startswith(("mobilevit_xxs: [", "warning: mobilevit_xxs has random weights")) for line in err), err
