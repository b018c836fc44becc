"""Decoding every image format and colour mode users feed in, and clear errors for files
that are not images."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest import real_photos
from PIL import Image

import mobilevt
from mobilevt.data import ImageDecodeError, load_image


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.open(real_photos(1)[0]).convert("RGB").resize((120, 80))


def _saved(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "fmt, mode",
    [
        ("JPEG", "RGB"),
        ("PNG", "RGB"),
        ("WEBP", "RGB"),
        ("BMP", "RGB"),
        ("PNG", "L"),
        ("JPEG", "L"),
        ("PNG", "P"),
        ("PNG", "RGBA"),
        ("PNG", "LA"),
        ("JPEG", "CMYK"),
        ("GIF", "P"),
        ("TIFF", "RGB"),
    ],
)
def test_formats_and_modes_decode_to_rgb(photo, fmt, mode, tmp_path):
    image = photo.convert(mode)
    path = tmp_path / f"image.{fmt.lower()}"
    path.write_bytes(_saved(image, fmt, **({"lossless": True} if fmt == "WEBP" else {})))
    tensor = load_image(path)
    assert tensor.dtype == torch.uint8 and tensor.shape == (3, 80, 120)
    expected = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
    if fmt in ("PNG", "BMP", "TIFF", "WEBP") and mode in ("RGB", "L", "RGBA", "LA"):
        assert torch.equal(tensor, expected)
    # the picture is still the picture: close to the original photo's gray levels
    reference = torch.from_numpy(np.array(photo.convert("L").convert("RGB"))).permute(2, 0, 1).float()
    assert (tensor.float().mean(0) - reference.mean(0)).abs().mean() < 25


def test_16_bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    values = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    tensor = load_image(path)
    assert tensor.shape == (3, 48, 64)
    expected = torch.from_numpy(np.rint(values / 257.0).astype(np.uint8))
    assert torch.equal(tensor[0], expected) and torch.equal(tensor[1], expected)


def test_exif_orientation_is_applied(tmp_path):
    # A landscape image with a red left half, stored with "rotate 90 CW to display" (6).
    array = np.zeros((40, 60, 3), np.uint8)
    array[:, :30, 0] = 255
    image = Image.fromarray(array)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif.tobytes(), quality=95)
    tensor = load_image(path)
    assert tensor.shape == (3, 60, 40)  # displayed as portrait
    assert tensor[0, :25].float().mean() > 200 and tensor[0, -25:].float().mean() < 50  # red on top


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "not an image"),
        (b"this is a text file, not a photo\n", "not an image"),
        (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, "corrupt|not an image"),
    ],
    ids=["empty", "text", "garbage-jpeg"],
)
def test_non_images_raise_one_line_errors(tmp_path, content, reason):
    path = tmp_path / "broken.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=reason) as info:
        load_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_jpeg_is_an_error(tmp_path, photo):
    data = _saved(photo.resize((400, 300)), "JPEG", quality=95)
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="truncated"):
        load_image(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageDecodeError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageDecodeError, match="directory"):
        load_image(tmp_path)


def test_bytes_and_pil_inputs(photo):
    from_bytes = load_image(_saved(photo, "PNG"))
    from_pil = mobilevt.load_image(photo)
    assert torch.equal(from_bytes, from_pil)
