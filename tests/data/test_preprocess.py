"""mobilevt's scriptable preprocessing against each reference pipeline, on real photos.

References: timm's ``create_transform(**resolve_data_config(model=...))`` and transformers'
``MobileViTImageProcessor`` (run as they are), ml-cvnets' and mmpretrain's evaluation
pipelines (rebuilt here from their source: ml-cvnets resizes PIL images with torchvision
and floors the crop margin; mmpretrain resizes with ``cv2.resize`` and rounds it).

Tolerances (pixel values in [0, 1]):
* transformers (torchvision's uint8 bilinear kernel, the one mobilevt uses): identical.
* PIL bilinear / bicubic (timm, ml-cvnets): >= 99.9% of values identical and fewer than
  0.001% more than 1/255 apart (PIL's fixed-point arithmetic rounds a few values the other
  way; on one of the 1000 sample photos, 320x685, Pillow 13's result is that of a
  vertical-first resize and differs by up to 7/255 at a few saturated edges).
* OpenCV bilinear (mmpretrain): every value within 1/255.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from conftest import real_photos
from PIL import Image

import mobilevt
from mobilevt.data import ImagePreprocess
from mobilevt.models.mobilevit import (
    CVNETS_V1_PREPROCESS,
    CVNETS_V2_PREPROCESS,
    HF_PREPROCESS,
    MMPRETRAIN_PREPROCESS,
    TIMM_V1_PREPROCESS,
    TIMM_V2_PREPROCESS,
)

LEVEL = 1.0 / 255.0
EPS = 1e-6


def _rgb(path) -> Image.Image:
    return Image.open(path).convert("RGB")


def _as_tensor(image: Image.Image) -> torch.Tensor:
    # Plain conversion (no EXIF handling) so both sides see exactly the same pixels.
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)


class _Diff:
    def __init__(self):
        self.values = 0
        self.differing = 0
        self.over_one_level = 0
        self.max = 0.0

    def add(self, ours: torch.Tensor, reference: torch.Tensor) -> None:
        assert ours.shape == reference.shape, (ours.shape, reference.shape)
        d = (ours.float() - reference.float()).abs()
        self.values += d.numel()
        self.differing += int((d > EPS).sum())
        self.over_one_level += int((d > LEVEL + EPS).sum())
        self.max = max(self.max, float(d.max()))

    def __repr__(self) -> str:
        return (
            f"max {self.max * 255:.2f}/255, differing {self.differing / self.values:.5%}, "
            f"over 1/255 {self.over_one_level / self.values:.6%} of {self.values} values"
        )


@pytest.mark.parametrize("name, config", [("mobilevit_s", TIMM_V1_PREPROCESS), ("mobilevitv2_100", TIMM_V2_PREPROCESS)])
def test_matches_timm_create_transform(name, config):
    timm = pytest.importorskip("timm")
    from timm.data import create_transform, resolve_data_config

    reference = create_transform(**resolve_data_config({}, model=timm.create_model(name, pretrained=False)))
    assert mobilevt.get_model_entry(name).get_weights("timm_in1k").preprocess == config
    ours = ImagePreprocess(config)
    diff = _Diff()
    photos = real_photos()
    for path in photos if name == "mobilevit_s" else photos[::4]:
        image = _rgb(path)
        diff.add(ours(_as_tensor(image)), reference(image))
    print(name, "vs timm:", diff)
    assert diff.differing / diff.values < 1e-3, diff
    assert diff.over_one_level / diff.values < 1e-5, diff


def test_matches_transformers_image_processor():
    transformers = pytest.importorskip("transformers")
    from transformers.image_utils import PILImageResampling

    # The settings of the apple/mobilevit-* repositories' preprocessor_config.json.
    processor = transformers.MobileViTImageProcessor(
        size={"shortest_edge": 288},
        crop_size={"height": 256, "width": 256},
        resample=PILImageResampling.BILINEAR,
        do_flip_channel_order=True,
    )
    ours = ImagePreprocess(HF_PREPROCESS)
    diff = _Diff()
    for path in real_photos():
        image = _rgb(path)
        expected = processor(images=image, return_tensors="pt")["pixel_values"][0]
        diff.add(ours(_as_tensor(image)), expected)
    print("vs transformers:", diff)
    assert diff.max <= EPS, diff


def _cvnets_eval(image: Image.Image, config) -> torch.Tensor:
    """ml-cvnets' image_pil Resize + CenterCrop + ToTensor (data/transforms/image_pil.py)."""
    w, h = image.size
    size = config.resize_size
    if w < h:
        new_h, new_w = int(size * h / w), size
    else:
        new_h, new_w = size, int(size * w / h)
    mode = TF.InterpolationMode(config.interpolation)
    image = TF.resize(image, [new_h, new_w], interpolation=mode)
    crop_h, crop_w = config.input_size
    top, left = (new_h - crop_h) // 2, (new_w - crop_w) // 2
    x = TF.to_tensor(TF.crop(image, top, left, crop_h, crop_w))
    return x.flip(0) if config.channel_order == "BGR" else x


@pytest.mark.parametrize("config", [CVNETS_V1_PREPROCESS, CVNETS_V2_PREPROCESS], ids=["v1", "v2"])
def test_matches_cvnets_pipeline(config):
    ours = ImagePreprocess(config)
    diff = _Diff()
    for path in real_photos()[::4]:
        image = _rgb(path)
        diff.add(ours(_as_tensor(image)), _cvnets_eval(image, config))
    print("vs ml-cvnets", config.interpolation, diff)
    assert diff.differing / diff.values < 1e-2, diff
    assert diff.over_one_level / diff.values < 1e-5, diff


def test_matches_mmpretrain_pipeline():
    cv2 = pytest.importorskip("cv2")
    config = MMPRETRAIN_PREPROCESS
    ours = ImagePreprocess(config)
    diff = _Diff()
    for path in real_photos()[::4]:
        rgb = np.array(_rgb(path))
        bgr = rgb[:, :, ::-1]  # mmcv decodes to BGR
        h, w = bgr.shape[:2]
        if w < h:
            size = (config.resize_size, int(config.resize_size * h / w))  # cv2 takes (width, height)
        else:
            size = (int(config.resize_size * w / h), config.resize_size)
        resized = cv2.resize(np.ascontiguousarray(bgr), size, interpolation=cv2.INTER_LINEAR)
        crop_h, crop_w = config.input_size
        top = int(round((resized.shape[0] - crop_h) / 2.0))
        left = int(round((resized.shape[1] - crop_w) / 2.0))
        crop = resized[top : top + crop_h, left : left + crop_w]
        expected = torch.from_numpy(crop.astype(np.float32) / 255.0).permute(2, 0, 1)
        diff.add(ours(torch.from_numpy(rgb).permute(2, 0, 1)), expected)
    print("vs mmpretrain (cv2):", diff)
    assert diff.max <= LEVEL + EPS, diff


CONFIGS = [
    TIMM_V1_PREPROCESS,
    CVNETS_V1_PREPROCESS,
    CVNETS_V2_PREPROCESS,
    MMPRETRAIN_PREPROCESS,
    mobilevt.PreprocessConfig((224, 320), 256, "nearest", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.interpolation}-{c.channel_order}-{c.input_size[1]}")
def test_scripted_equals_eager_and_batches(config):
    eager = ImagePreprocess(config)
    scripted = torch.jit.script(eager)
    photos = real_photos(3)
    for path in photos:
        image = _as_tensor(_rgb(path))
        expected = eager(image)
        assert expected.shape == (3, *config.input_size) and expected.dtype == torch.float32
        assert torch.equal(scripted(image), expected)
        # HWC input (camera frames, bitmaps) and batches give the same values
        hwc = torch.jit.script(ImagePreprocess(config, channels_last_input=True))
        assert torch.equal(hwc(image.permute(1, 2, 0).contiguous()), expected)
        batch = torch.stack([image, image])
        assert torch.equal(scripted(batch), torch.stack([expected, expected]))
        # a PIL image works in eager mode
        assert torch.equal(eager(_rgb(path)), expected)


def test_scripted_decoding_matches_pil_on_jpeg():
    import torchvision

    from mobilevt.data.preprocess import EncodedImagePreprocess

    scripted = torch.jit.script(ImagePreprocess(TIMM_V1_PREPROCESS))
    decoding = torch.jit.script(EncodedImagePreprocess(ImagePreprocess(TIMM_V1_PREPROCESS)))
    for path in real_photos(5):
        if path.suffix.lower() not in (".jpeg", ".jpg"):
            continue
        from_bytes = decoding(torchvision.io.read_file(str(path)))
        from_pil = scripted(mobilevt.load_image(path))
        # torchvision's and Pillow's libjpeg builds may round the IDCT differently.
        assert (from_bytes - from_pil).abs().max() <= 3 * LEVEL


def test_small_images_are_padded_like_torchvision_center_crop():
    config = mobilevt.PreprocessConfig((64, 96), 32, "bilinear")
    image = torch.full((3, 40, 50), 200, dtype=torch.uint8)
    out = ImagePreprocess(config)(image)
    assert out.shape == (3, 64, 96)
    assert out[:, 0, 0].eq(0).all() and out[:, 32, 48].sub(200 / 255).abs().max() < 1e-6


def test_bad_tensor_inputs_have_clear_errors():
    preprocess = ImagePreprocess(TIMM_V1_PREPROCESS)
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        preprocess(torch.zeros(1, 100, 100, dtype=torch.uint8))
    with pytest.raises(ValueError, match="channels_last_input=True"):
        preprocess(torch.zeros(100, 100, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="expected an image"):
        preprocess(torch.zeros(100, 100, dtype=torch.uint8))
    with pytest.raises(ValueError, match="crop_rounding"):
        mobilevt.PreprocessConfig(crop_rounding="ceil")


def test_transforms_for_names_models_and_weights():
    assert mobilevt.transforms_for("mobilevit_s").config == CVNETS_V1_PREPROCESS
    assert mobilevt.transforms_for("mobilevit_s.timm_in1k").config == TIMM_V1_PREPROCESS
    assert mobilevt.transforms_for("mobilevit_xs.mmpretrain_in1k").config == MMPRETRAIN_PREPROCESS
    model = mobilevt.create_model("mobilevitv2_050")
    assert mobilevt.transforms_for(model).config == CVNETS_V2_PREPROCESS
    entry = mobilevt.get_model_entry("mobilevit_xxs").get_weights("hf_in1k")
    assert mobilevt.transforms_for(entry).config == HF_PREPROCESS == entry.transforms().config
    with pytest.raises(ValueError, match="carries no preprocessing"):
        mobilevt.transforms_for(torch.nn.Linear(2, 2))
    with pytest.raises(KeyError, match="mobilevit_s"):
        mobilevt.transforms_for("mobilevit_ss")
