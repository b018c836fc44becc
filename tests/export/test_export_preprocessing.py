"""ONNX export with preprocessing inside: one uint8 [H, W, 3] photo of any size in, logits out.

The reference is the eager pipeline ``model(ImagePreprocess(config)(image)[None])``, which
the preprocessing tests show equals PIL. onnxruntime's antialiased uint8 Resize is PIL's
algorithm in its own fixed-point arithmetic, so values that fall near a rounding tie can
land one 8-bit step away: measured on 50 ImageNet photos, 0.02% (bicubic) to 1.2%
(bilinear) of the values on average, up to 10% on one bilinear upscaled photo, never more
than two steps (ImagePreprocess itself differs from Pillow as much: bilinear 0.31% of the
values, at most 2 steps). Tolerances: preprocessed pixels within 2/255 and identical on
>= 97% of all values; the same top-1 class and logits within 5e-2 for a randomised model
whose BatchNorm statistics are measured on photos, so that its logits depend on the image
(spread ~0.2 across photos; differences measured up to 2.6e-2 on 100 photos). Nearest picks the same pixels except where
``(i + 0.5) * in / out`` is an exact integer (float rounding decides: one column of one photo).
"""

from __future__ import annotations

import pytest
import torch
from conftest import max_abs, model_with_structure, randomize_

import mobilevt
from mobilevt.data.preprocess import ImagePreprocess
from mobilevt.export import ExportError, export_model
from mobilevt.weights.entries import PreprocessConfig

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")  # the dynamo exporter (opset 18)

from mobilevt.export.onnx_preprocessing import preprocessing_model  # noqa: E402  (needs onnx)

LOGIT_ATOL = 5e-2
MAX_STEPS = 2.0  # 8-bit steps
MAX_FRACTION_DIFFERING = 0.03


@pytest.fixture(scope="module")
def photos_of_two_shapes(photo_dir):
    """A landscape photo as it is, and a smaller portrait crop of another one (upscaled by
    the resize to the shorter side)."""
    photos = [mobilevt.load_image(p) for p in sorted(photo_dir.iterdir())]
    # the packaged fallback photos include square ones: crop a landscape view if needed
    first = next((p for p in photos if p.shape[1] < p.shape[2]), None)
    if first is None:
        first = photos[0][:, : photos[0].shape[1] * 3 // 4].contiguous()
    second = next(p for p in photos if p is not first)
    portrait = second[:, : min(second.shape[1], 250), : min(second.shape[2], 170)].contiguous()
    assert first.shape[1] < first.shape[2] and portrait.shape[1] > portrait.shape[2]
    assert first.shape[1:] != portrait.shape[1:]
    return [first, portrait]


def _steps(actual: torch.Tensor, expected: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """|actual - expected| in 8-bit steps before normalisation."""
    order = [2, 1, 0] if config.channel_order == "BGR" else [0, 1, 2]
    return (actual - expected).abs() * 255.0 * torch.tensor(config.std)[order].view(-1, 3, 1, 1)


@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevitv2_050"])
def test_onnx_with_preprocessing_takes_photos_of_any_size(name, tmp_path, photo_dir, photos_of_two_shapes):
    model = model_with_structure(name, [mobilevt.load_image(p) for p in sorted(photo_dir.iterdir())])
    config = model.preprocess  # v1: bilinear, BGR; v2: bicubic, RGB (ml-cvnets' pipelines)
    out = tmp_path / f"{name}.onnx"
    report = export_model(model, out, "onnx", include_preprocessing=True, check_images=photo_dir, latency_runs=2)
    assert report.include_preprocessing and report.top1_agreement == 1.0 and report.check_images == 6
    assert report.max_abs_diff <= LOGIT_ATOL and report.details["opset"] >= 18
    assert report.details["preprocessing_vs_eager"]["max_steps"] <= MAX_STEPS
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.onnx", f"{name}.onnx.report.json"]

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (image_input,) = session.get_inputs()
    assert image_input.type == "tensor(uint8)" and image_input.shape == ["height", "width", 3]
    eager_preprocess = ImagePreprocess(config)
    outputs = []
    for image in photos_of_two_shapes:  # two sizes, two orientations, one file
        (logits,) = session.run(None, {"image": image.permute(1, 2, 0).contiguous().numpy()})
        with torch.no_grad():
            expected = model(eager_preprocess(image)[None])
        logits = torch.from_numpy(logits)
        outputs.append(expected)
        assert logits.shape == (1, 1000)
        assert logits.argmax() == expected.argmax(), tuple(image.shape)
        assert max_abs(logits, expected) <= LOGIT_ATOL, tuple(image.shape)
    # the model tells the photos apart by far more than the tolerance (so agreement means something)
    assert max_abs(outputs[0], outputs[1]) > 5 * LOGIT_ATOL


_CONFIGS = {
    # timm's: bicubic, mean/std, torchvision's rounded crop margin
    "timm": PreprocessConfig.from_crop_pct(
        256, 0.9, interpolation="bicubic", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
    ),
    # mmpretrain's OpenCV resize: no antialiasing, BGR
    "opencv_bilinear": PreprocessConfig((256, 256), 288, "bilinear", channel_order="BGR", antialias=False),
    "opencv_bicubic": PreprocessConfig((256, 256), 288, "bicubic", antialias=False),
    "nearest": PreprocessConfig((224, 224), 256, "nearest"),
    # a crop larger than the resized image: zero padding first
    "crop_larger_than_resize": PreprocessConfig((256, 300), 240, "bilinear"),
    # odd margins on both axes, rounded half to even
    "odd_margins": PreprocessConfig((255, 223), 290, "bilinear"),
}


@pytest.mark.parametrize("config_name", sorted(_CONFIGS))
def test_preprocessing_graph_matches_image_preprocess(config_name, photo_dir, photos_of_two_shapes):
    config = _CONFIGS[config_name]
    graph = preprocessing_model(config)
    onnx.checker.check_model(graph, full_check=True)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    reference = ImagePreprocess(config)
    images = [mobilevt.load_image(p) for p in sorted(photo_dir.iterdir())] + photos_of_two_shapes
    differing, total = 0, 0
    for image in images:
        (pixels,) = session.run(None, {"image": image.permute(1, 2, 0).contiguous().numpy()})
        expected = reference(image)[None]
        pixels = torch.from_numpy(pixels)
        assert pixels.shape == expected.shape == (1, 3, *config.input_size)
        steps = _steps(pixels, expected, config)
        if config.interpolation != "nearest":  # nearest: a tie may pick the neighbouring column
            assert steps.max() <= MAX_STEPS + 1e-3, tuple(image.shape)
        differing, total = differing + int((steps > 0.5).sum()), total + steps.numel()
    assert differing <= MAX_FRACTION_DIFFERING * total


def test_preprocessing_graph_needs_opset_18():
    with pytest.raises(ValueError, match="opset >= 18"):
        preprocessing_model(PreprocessConfig(), opset=17)


def test_preprocessing_rejected_for_formats_without_it(tmp_path):
    model = mobilevt.create_model("mobilevit_xxs")
    for export_format in ("executorch", "tflite", "coreml"):
        with pytest.raises(ExportError, match="include-preprocessing is available for torchscript and onnx"):
            export_model(model, tmp_path / f"m.{export_format}", export_format, include_preprocessing=True)
    with pytest.raises(ExportError, match="dynamic-size does not apply"):
        export_model(model, tmp_path / "m.onnx", "onnx", include_preprocessing=True, dynamic_size=True)
    assert not any(tmp_path.iterdir())


def test_cli_onnx_with_preprocessing(tmp_path, photo_dir, capsys):
    from mobilevt.cli.main import main

    weights = tmp_path / "xxs.safetensors"
    mobilevt.save_weights(randomize_(mobilevt.create_model("mobilevit_xxs"), seed=4), weights)
    out = tmp_path / "app.onnx"
    code = main(
        [
            "export",
            "mobilevit_xxs",
            "--weights",
            str(weights),
            "--format",
            "onnx",
            "--include-preprocessing",
            "-o",
            str(out),
            "--check-images",
            str(photo_dir),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    assert "top-1 agreement 100.0%" in captured.out
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "image" and session.get_outputs()[0].shape == [1, 1000]
