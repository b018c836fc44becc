"""Evaluation preprocessing as a TorchScript-compatible module.

The module reproduces each reference pipeline from its uint8 image:

* PIL's resize (timm, ml-cvnets, transformers' PIL path): filters when shrinking and
  rounds to uint8 after each of its two 1-D passes (horizontal first). Bilinear uses
  torch's uint8 antialiased kernel, which implements the same algorithm; bicubic runs
  the two passes in float with the same rounding.
* OpenCV's ``cv2.resize`` (mmpretrain): no antialiasing.
* The center crop's odd margin is rounded (torchvision, mmcv) or floored (ml-cvnets,
  transformers).

It has no Python-only code on the tensor path, so ``torch.jit.script`` and
``torch.export`` can put it in front of a model that ships to a phone.
"""

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.io import ImageReadMode, decode_image

from ..errors import InvalidInputError

ChannelOrder = Literal["RGB", "BGR"]
Interpolation = Literal["bilinear", "bicubic", "nearest"]
CropRounding = Literal["round", "floor"]


@dataclass(frozen=True)
class PreprocessConfig:
    """Evaluation preprocessing a checkpoint was trained with.

    The shorter side is resized to ``resize_size`` (the longer one keeps the aspect ratio,
    truncated to an integer as every reference does), then ``input_size`` (height, width)
    is cropped from the center. Pixels are scaled to [0, 1], normalised with
    ``mean``/``std`` (given in RGB order) and put in ``channel_order``: ml-cvnets v1
    weights were trained on OpenCV's BGR images.

    The details that differ between the reference pipelines are explicit so that each
    can be reproduced: ``antialias`` (PIL and torchvision filter when shrinking, OpenCV's
    ``cv2.resize`` used by mmpretrain does not) and ``crop_rounding`` (torchvision/timm and
    mmcv round an odd margin, ml-cvnets and transformers floor it).
    """

    input_size: tuple[int, int] = (256, 256)
    resize_size: int = 288
    interpolation: Interpolation = "bilinear"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channel_order: ChannelOrder = "RGB"
    antialias: bool = True
    crop_rounding: CropRounding = "round"

    def __post_init__(self) -> None:
        if self.interpolation not in ("bilinear", "bicubic", "nearest"):
            raise InvalidInputError(
                f"interpolation must be 'bilinear', 'bicubic' or 'nearest', not {self.interpolation!r}"
            )
        if self.channel_order not in ("RGB", "BGR"):
            raise InvalidInputError(f"channel_order must be 'RGB' or 'BGR', not {self.channel_order!r}")
        if self.crop_rounding not in ("round", "floor"):
            raise InvalidInputError(f"crop_rounding must be 'round' or 'floor', not {self.crop_rounding!r}")
        if self.resize_size <= 0 or min(self.input_size) <= 0:
            raise InvalidInputError(
                f"sizes must be positive: input_size={self.input_size}, resize_size={self.resize_size}"
            )

    @classmethod
    def from_crop_pct(cls, input_size: int, crop_pct: float, **kwargs) -> "PreprocessConfig":
        # timm's rule: resize the shorter side to floor(size / crop_pct).
        return cls(input_size=(input_size, input_size), resize_size=math.floor(input_size / crop_pct), **kwargs)

    @property
    def crop_pct(self) -> float:
        return self.input_size[0] / self.resize_size

    def with_normalisation_of(self, like: "PreprocessConfig") -> "PreprocessConfig":
        """These sizes with ``like``'s resampling and normalisation: a task model's input
        whose backbone was trained with ``like``."""
        return PreprocessConfig(
            self.input_size,
            self.resize_size,
            like.interpolation,
            like.mean,
            like.std,
            like.channel_order,
            crop_rounding=self.crop_rounding,
        )

    def transforms(self, *, channels_last_input: bool = False) -> nn.Module:
        """The scriptable preprocessing module (:class:`mobilevt.data.ImagePreprocess`):
        a PIL image or uint8 ``[3, H, W]`` / ``[B, 3, H, W]`` tensor in, the model's input
        tensor out."""
        return ImagePreprocess(self, channels_last_input=channels_last_input)


class ImagePreprocess(nn.Module):
    """Resize the shorter side, center crop, scale to [0, 1], normalise, order channels.

    Input: a uint8 image ``[3, H, W]`` or batch ``[B, 3, H, W]`` (``[H, W, 3]`` /
    ``[B, H, W, 3]`` with ``channels_last_input=True``, the layout camera frames and
    bitmaps come in); float input is taken as already scaled to [0, 1]. In eager mode a PIL
    image or a numpy ``HxWx3`` array also works. Output: float32 ``[3, h, w]`` or
    ``[B, 3, h, w]`` in the model's channel order.
    """

    def __init__(self, config: PreprocessConfig, channels_last_input: bool = False):
        super().__init__()
        self.config = config
        self.crop_height = int(config.input_size[0])
        self.crop_width = int(config.input_size[1])
        self.resize_size = int(config.resize_size)
        self.interpolation = str(config.interpolation)
        self.antialias = bool(config.antialias)
        self.floor_crop = config.crop_rounding == "floor"
        self.flip_channels = config.channel_order == "BGR"
        self.normalize = tuple(config.mean) != (0.0, 0.0, 0.0) or tuple(config.std) != (1.0, 1.0, 1.0)
        self.channels_last_input = bool(channels_last_input)
        self.register_buffer("mean", torch.tensor(config.mean, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std, dtype=torch.float32).view(3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if not isinstance(image, torch.Tensor):  # eager only: TorchScript knows it is a tensor
            image = self._python_image_to_tensor(image)
        batched = image.dim() == 4
        if image.dim() == 3:
            image = image.unsqueeze(0)
        if image.dim() != 4:
            raise InvalidInputError(
                f"expected an image [3, H, W] or a batch [B, 3, H, W], got shape {list(image.shape)}"
            )
        if self.channels_last_input:
            image = image.permute(0, 3, 1, 2)
        if image.shape[1] != 3:
            raise InvalidInputError(
                f"expected 3 (RGB) channels, got shape {list(image.shape)}; grayscale or RGBA images must be "
                "converted first (mobilevt.data.load_image does it)"
                + ("" if self.channels_last_input else ", and an HxWx3 image needs channels_last_input=True")
            )
        image = self.resize(image)
        image = self.center_crop(image)
        if image.dtype == torch.uint8:
            x = image.float().div(255.0)
        else:
            x = image.float()
        if self.normalize:
            x = x.sub(self.mean).div(self.std)
        if self.flip_channels:
            x = x.flip(1)
        x = x.contiguous()
        return x if batched else x[0]

    @torch.jit.export
    def output_size(self, height: int, width: int) -> list[int]:
        """Height and width after the resize step for an input of ``height`` x ``width``."""
        short, long = (height, width) if height <= width else (width, height)
        new_long = int(self.resize_size * long / short)
        if height <= width:
            return [self.resize_size, new_long]
        return [new_long, self.resize_size]

    def resize(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2], image.shape[-1]
        size = self.output_size(height, width)
        if size[0] == height and size[1] == width:
            return image
        if self.interpolation == "nearest":
            # PIL's and OpenCV's nearest pick the pixel whose center is closest.
            return F.interpolate(image, size=size, mode="nearest-exact")
        # PIL filters with its own kernels (bicubic a=-0.5) whether it shrinks or enlarges:
        # torch's antialias kernels are those, so they are used in both directions.
        antialias = self.antialias
        if image.dtype == torch.uint8 and self.interpolation == "bilinear" and antialias and image.device.type == "cpu":
            # torch's uint8 antialiased bilinear kernel is PIL's algorithm.
            return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
        is_uint8 = image.dtype == torch.uint8
        x = image.float()
        if antialias:
            # Two 1-D passes, horizontal first, as PIL does; uint8 images are rounded
            # after each pass as PIL's 8-bit buffers are.
            if size[1] != width:
                x = F.interpolate(
                    x, size=[height, size[1]], mode=self.interpolation, align_corners=False, antialias=True
                )
                if is_uint8:
                    x = x.round().clamp(0.0, 255.0)
            if size[0] != height:
                x = F.interpolate(x, size=size, mode=self.interpolation, align_corners=False, antialias=True)
        else:
            x = F.interpolate(x, size=size, mode=self.interpolation, align_corners=False)
        if is_uint8:
            return x.round().clamp(0.0, 255.0).to(torch.uint8)
        return x

    def center_crop(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2], image.shape[-1]
        if self.crop_height > height or self.crop_width > width:
            # As torchvision's CenterCrop: pad with zeros to the crop size first.
            pad_h = max(self.crop_height - height, 0)
            pad_w = max(self.crop_width - width, 0)
            image = F.pad(image, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
            height, width = image.shape[-2], image.shape[-1]
        top = self._margin(height - self.crop_height)
        left = self._margin(width - self.crop_width)
        return image[..., top : top + self.crop_height, left : left + self.crop_width]

    def _margin(self, extra: int) -> int:
        if self.floor_crop:
            return extra // 2
        # torchvision and mmcv: int(round(extra / 2)), rounding half to even.
        return int(round(extra / 2.0))

    @torch.jit.unused
    def _python_image_to_tensor(self, image: Any) -> torch.Tensor:
        from PIL import Image

        from .images import pil_to_tensor

        if isinstance(image, Image.Image):
            tensor = pil_to_tensor(image)
            return tensor.permute(1, 2, 0) if self.channels_last_input else tensor
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[-1] != 3:
                raise InvalidInputError(f"a numpy image must be HxWx3 RGB, got shape {image.shape}")
            tensor = torch.from_numpy(np.ascontiguousarray(image))
            return tensor if self.channels_last_input else tensor.permute(2, 0, 1)
        raise TypeError(f"expected a tensor, PIL image or numpy array, got {type(image).__name__}")

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"resize_shorter={c.resize_size} ({c.interpolation}, antialias={c.antialias}), "
            f"crop={c.input_size} ({c.crop_rounding} margin), mean={c.mean}, std={c.std}, "
            f"channel_order={c.channel_order}"
        )


class EncodedImagePreprocess(nn.Module):
    """Decoding + :class:`ImagePreprocess`: an encoded image (JPEG/PNG/WebP bytes as a 1-D
    uint8 tensor, e.g. from ``torchvision.io.read_file``) in, the model's input out.

    Scriptable, but the scripted module calls torchvision's image operators: only a runtime
    that loads torchvision's library can run it, which a phone app or a plain libtorch
    program does not; ``mobilevt export`` never writes it (apps decode the image themselves
    and pass uint8 pixels to the exported file)."""

    def __init__(self, preprocess: ImagePreprocess):
        super().__init__()
        self.preprocess = preprocess

    def forward(self, data: torch.Tensor) -> torch.Tensor:
        image = decode_image(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
        if self.preprocess.channels_last_input:
            image = image.permute(1, 2, 0)
        return self.preprocess(image)


class DetectionPreprocess(ImagePreprocess):
    """Resize the whole image to the detector's input size (aspect ratio not kept), scale
    to [0, 1], normalise and order channels as ``config`` says; ``resize_size`` and the
    crop settings are unused. Scriptable, like :class:`ImagePreprocess`."""

    @torch.jit.export
    def output_size(self, height: int, width: int) -> list[int]:
        return [self.crop_height, self.crop_width]


class SegmentationPreprocess(nn.Module):
    """uint8 ``[3, H, W]`` / ``[B, 3, H, W]`` RGB -> the model input: resized to
    ``config.input_size`` (the whole image, no crop; antialiased bilinear or bicubic),
    scaled to [0, 1], normalised and put in ``config.channel_order``. Scriptable."""

    def __init__(self, config: PreprocessConfig) -> None:
        super().__init__()
        self.height = int(config.input_size[0])
        self.width = int(config.input_size[1])
        self.interpolation = "bicubic" if config.interpolation == "bicubic" else "bilinear"
        self.flip_channels = config.channel_order == "BGR"
        self.register_buffer("mean", torch.tensor(config.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        batched = image.dim() == 4
        x = image if batched else image.unsqueeze(0)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if x.shape[2] != self.height or x.shape[3] != self.width:
            x = F.interpolate(
                x, size=[self.height, self.width], mode=self.interpolation, align_corners=False, antialias=True
            )
            x = x.clamp(0.0, 1.0)
        x = (x - self.mean) / self.std
        if self.flip_channels:
            x = x.flip(1)
        return x if batched else x.squeeze(0)
