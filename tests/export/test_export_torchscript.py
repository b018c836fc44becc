"""Every TorchScript file that mobilevt exports loads with libtorch alone: its code calls
no operator outside core libtorch (read from the file), and a module that would call one
(here torchvision's image decoder) is refused with nothing written, for each family."""

from __future__ import annotations

import pytest
import torch
from conftest import randomize_

import mobilevt
from mobilevt.data.preprocess import EncodedImagePreprocess, ImagePreprocess
from mobilevt.export import ExportError, export_model
from mobilevt.export.formats.torchscript import extension_operators

SIZE = (128, 128)


def _model(name: str, **options) -> torch.nn.Module:
    model = randomize_(mobilevt.create_model(name, **options), seed=5)
    model.preprocess = mobilevt.PreprocessConfig(SIZE, SIZE[0], "bilinear")
    return model.eval()


EXPORTS = {
    "classifier": ("mobilevit_xxs", {}, {}),
    "classifier with preprocessing": ("mobilevitv2_050", {}, {"include_preprocessing": True}),
    "lite classifier with preprocessing": ("mobilevit_xxs", {}, {"include_preprocessing": True, "lite": True}),
    "segmenter": ("deeplabv3_mobilevit_xxs", {"num_classes": 5}, {}),
    "detector": ("ssdlite_mobilevit_xxs", {"num_classes": 4}, {}),
}


@pytest.mark.parametrize("export", list(EXPORTS))
def test_exported_files_call_core_operators_only_and_others_are_refused(export, tmp_path, photo_dir):
    name, options, export_options = EXPORTS[export]
    model = _model(name, **options)
    suffix = "ptl" if export_options.get("lite") else "pt"
    output = tmp_path / f"model.{suffix}"
    export_model(model, output, "torchscript", check_images=photo_dir, latency_runs=0, **export_options)
    assert extension_operators(output) == []
    # the same model carrying a torchvision decoder (scripted with it): refused, nothing written
    model.decoder = EncodedImagePreprocess(ImagePreprocess(model.preprocess))
    refused = tmp_path / f"refused.{suffix}"
    with pytest.raises(
        ExportError,
        match=r"calls image::decode_image, image::read_file, operators that core "
        r"libtorch does not have.*pass uint8 \[H, W, 3\] pixels",
    ):
        export_model(model, refused, "torchscript", check_images=photo_dir, latency_runs=0, **export_options)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [output.name, output.name + ".report.json"]
        + ([output.name + ".detection.json"] if export == "detector" else [])
    )
