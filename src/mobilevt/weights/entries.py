"""Weights entries: where a checkpoint lives, how its inputs must be prepared, and what
it scores. Modelled on torchvision's weights API, so that ``create_model(name,
weights=entry)`` and ``entry.transforms()`` go together."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

ChannelOrder = Literal["RGB", "BGR"]
Layout = Literal["mobilevt", "cvnets", "timm", "hf", "mmpretrain"]


@dataclass(frozen=True)
class PreprocessConfig:
    """Evaluation preprocessing a checkpoint was trained with.

    ``resize_size`` is the length of the shorter side before the center crop of
    ``input_size`` (height, width). Pixels are scaled to [0, 1], then normalised with
    ``mean``/``std``, then put in ``channel_order`` (ml-cvnets v1 weights were trained on
    OpenCV's BGR images).
    """

    input_size: tuple[int, int] = (256, 256)
    resize_size: int = 288
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channel_order: ChannelOrder = "RGB"

    @classmethod
    def from_crop_pct(cls, input_size: int, crop_pct: float, **kwargs) -> "PreprocessConfig":
        # timm's rule: resize the shorter side to floor(size / crop_pct).
        return cls(input_size=(input_size, input_size), resize_size=math.floor(input_size / crop_pct), **kwargs)

    @property
    def crop_pct(self) -> float:
        return self.input_size[0] / self.resize_size

    def transforms(self) -> nn.Module:
        """A torchvision transforms-v2 pipeline from a PIL image or uint8 tensor to the
        model's input tensor."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import v2

        steps: list[nn.Module] = [
            v2.ToImage(),
            v2.Resize(self.resize_size, interpolation=InterpolationMode(self.interpolation), antialias=True),
            v2.CenterCrop(list(self.input_size)),
            v2.ToDtype(torch.float32, scale=True),
        ]
        if self.mean != (0.0, 0.0, 0.0) or self.std != (1.0, 1.0, 1.0):
            steps.append(v2.Normalize(list(self.mean), list(self.std)))
        if self.channel_order == "BGR":
            steps.append(FlipChannels())
        return v2.Compose(steps)


class FlipChannels(nn.Module):
    """RGB <-> BGR on a ``[..., 3, H, W]`` tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-3)


@dataclass(frozen=True)
class Weights:
    """One published checkpoint of one model variant."""

    model: str
    tag: str
    source: str  # https URL or "hf-hub:<repo id>"
    layout: Layout
    preprocess: PreprocessConfig
    top1: float | None = None
    top5: float | None = None
    num_classes: int = 1000
    dataset: str = "ImageNet-1k"
    sha256: str | None = None
    paper_source: str = ""  # where the accuracy figure comes from

    @property
    def name(self) -> str:
        return f"{self.model}.{self.tag}"

    def transforms(self) -> nn.Module:
        return self.preprocess.transforms()
