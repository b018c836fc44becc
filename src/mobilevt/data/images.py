"""Decoding image files into uint8 RGB tensors, whatever their format and colour mode."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import MobilevtError

ImageSource = str | os.PathLike | bytes | Image.Image

# What Pillow can open and ImageNet-style folders contain; used to pick files from folders.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".jfif")


class ImageDecodeError(MobilevtError, ValueError):
    """An input that is not a readable image: corrupt, truncated, or not an image at all."""

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


def load_image(source: ImageSource) -> torch.Tensor:
    """Read an image as a uint8 RGB tensor of shape ``[3, H, W]``.

    Handles JPEG, PNG, WebP, BMP, GIF and TIFF; grayscale, palette, RGBA, CMYK and 16-bit
    images are converted to 8-bit RGB, and the EXIF orientation is applied, so the
    tensor looks like the photo a person sees. Alpha is dropped as timm and transformers
    do (``PIL.Image.convert("RGB")``), so predictions match theirs.

    Raises:
        ImageDecodeError: the file is missing, corrupt, truncated or not an image.
    """
    name = _describe(source)
    if isinstance(source, Image.Image):
        image = source
    else:
        try:
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
            image.load()  # decode now so that truncation surfaces here, not later
        except FileNotFoundError:
            raise ImageDecodeError(name, "no such file") from None
        except IsADirectoryError:
            raise ImageDecodeError(name, "is a directory, not an image") from None
        except UnidentifiedImageError:
            raise ImageDecodeError(
                name, "not an image file Pillow can identify (corrupt or another file type)"
            ) from None
        except Image.DecompressionBombError as exc:
            raise ImageDecodeError(name, f"refused as a decompression bomb: {exc}") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageDecodeError(name, f"corrupt or truncated image ({exc})") from None
    try:
        return pil_to_tensor(image)
    except (OSError, ValueError) as exc:
        raise ImageDecodeError(name, f"cannot convert {image.mode!r} image to RGB ({exc})") from None


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image (any mode) as a uint8 RGB ``[3, H, W]`` tensor, EXIF orientation applied."""
    image = _apply_exif_orientation(image)
    rgb = np.array(_to_rgb(image), dtype=np.uint8)  # a writable copy that torch may own
    # The permuted HWC view is what torch's resize kernels prefer (channels-last): no copy.
    return torch.from_numpy(rgb).permute(2, 0, 1)


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, ValueError, KeyError, TypeError, SyntaxError):
        # A broken EXIF block must not make a decodable photo unusable.
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit (and 32-bit) grayscale: Pillow's convert("RGB") clips at 255 instead of
        # scaling, which turns most 16-bit photos white.
        values = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values / 257.0
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([gray] * 3, axis=-1), "RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # avoids Pillow's warning; same RGB values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return image.convert("RGB")


def list_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (by extension), sorted by path."""
    folder = Path(folder)
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    return f"<PIL image {getattr(source, 'mode', '?')} {getattr(source, 'size', '')}>"
