"""examples/cpp/mobilevt_run, a C++ program on the libtorch inside the torch wheel (no
Python, no torchvision), loads the TorchScript files that `mobilevt export` writes and
gives the outputs that Python's TorchScript interpreter gives for the same file and input
(within 1e-4: the same kernels, so in practice equal), on real photos."""

from __future__ import annotations

import subprocess

import pytest
import torch
from conftest import randomize_, read_raw_tensor, real_photos, write_ppm, write_raw_tensor

import mobilevt
from mobilevt.data.imagenet import imagenet_classes
from mobilevt.export import export_model

pytestmark = pytest.mark.slow  # the example is compiled once per run (about a minute of g++)

TOLERANCE = 1e-4


def _run(runner, *args) -> subprocess.CompletedProcess:
    run = subprocess.run([str(runner), *map(str, args)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    return run


def _photos(count: int) -> list[torch.Tensor]:
    return [mobilevt.load_image(path).permute(1, 2, 0).contiguous() for path in real_photos(count)]


@pytest.mark.parametrize("suffix", ["pt", "ptl"])
def test_classifier_with_preprocessing_gives_pythons_logits_and_top5(cpp_runner, tmp_path, suffix):
    model = randomize_(mobilevt.create_model("mobilevit_xxs"), seed=1)
    model.preprocess = mobilevt.get_model_entry("mobilevit_xxs").get_weights("cvnets_in1k").preprocess
    output = tmp_path / f"classifier.{suffix}"
    export_model(model, output, "torchscript", include_preprocessing=True, lite=suffix == "ptl", latency_runs=0)
    if suffix == "ptl":
        from torch.jit.mobile import _load_for_lite_interpreter

        python = _load_for_lite_interpreter(str(output))
    else:
        python = torch.jit.load(str(output))
    names = imagenet_classes().names
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(name + "\n" for name in names))
    for i, image in enumerate(_photos(3)):
        run = _run(
            cpp_runner,
            "classify",
            output,
            write_ppm(image, tmp_path / f"{i}.ppm"),
            "--labels",
            labels,
            "--dump",
            tmp_path / f"out{i}",
        )
        with torch.inference_mode():
            expected = python(image)
        assert (read_raw_tensor(tmp_path / f"out{i}.0.bin") - expected).abs().max() <= TOLERANCE
        printed = [line.split("\t")[2] for line in run.stdout.splitlines()[:5]]
        assert printed == [names[k] for k in expected[0].topk(5).indices.tolist()]


@pytest.mark.parametrize(
    "name, options",
    [
        ("mobilevitv2_050", {}),
        ("deeplabv3_mobilevit_xxs", {"num_classes": 5}),
        ("ssdlite_mobilevit_xxs", {"num_classes": 4}),
    ],
)
def test_classifier_segmenter_and_detector_give_pythons_outputs(cpp_runner, tmp_path, name, options):
    model = randomize_(mobilevt.create_model(name, **options), seed=2).eval()
    model.preprocess = mobilevt.PreprocessConfig((128, 128), 128, "bilinear")
    output = tmp_path / "model.pt"
    export_model(model, output, "torchscript", latency_runs=0)
    python = torch.jit.load(str(output))
    preprocess = mobilevt.data.ImagePreprocess(model.preprocess)
    batch = torch.stack([preprocess(image.permute(2, 0, 1)) for image in _photos(2)])
    run = _run(
        cpp_runner, "tensor", output, write_raw_tensor(batch, tmp_path / "input.bin"), "--dump", tmp_path / "out"
    )
    with torch.inference_mode():
        expected = python(batch)
    expected = list(expected) if isinstance(expected, tuple) else [expected]
    assert run.stdout.count("output\t") == len(expected)
    for i, tensor in enumerate(expected):
        assert (read_raw_tensor(tmp_path / f"out.{i}.bin") - tensor).abs().max() <= TOLERANCE, i


def test_bad_input_is_one_error_line(cpp_runner, tmp_path):
    (tmp_path / "bad.ppm").write_bytes(b"P3\n1 1\n255\n0 0 0\n")
    run = subprocess.run(
        [str(cpp_runner), "classify", tmp_path / "missing.pt", tmp_path / "bad.ppm"], capture_output=True, text=True
    )
    assert run.returncode == 1 and run.stderr.count("\n") == 1 and run.stderr.startswith("error: ")
