"""Weights entries: where a checkpoint lives, how its inputs must be prepared, and what
it scores. Modelled on torchvision's weights API, so that ``create_model(name,
weights=entry)`` and ``entry.transforms()`` go together."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

ChannelOrder = Literal["RGB", "BGR"]
Interpolation = Literal["bilinear", "bicubic", "nearest"]
CropRounding = Literal["round", "floor"]
Layout = Literal["mobilevt", "cvnets", "timm", "hf", "mmpretrain"]


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
            raise ValueError(f"interpolation must be 'bilinear', 'bicubic' or 'nearest', not {self.interpolation!r}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', not {self.channel_order!r}")
        if self.crop_rounding not in ("round", "floor"):
            raise ValueError(f"crop_rounding must be 'round' or 'floor', not {self.crop_rounding!r}")
        if self.resize_size <= 0 or min(self.input_size) <= 0:
            raise ValueError(f"sizes must be positive: input_size={self.input_size}, resize_size={self.resize_size}")

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
            self.input_size, self.resize_size, like.interpolation, like.mean, like.std, like.channel_order,
            crop_rounding=self.crop_rounding,
        )

    def transforms(self, *, channels_last_input: bool = False) -> nn.Module:
        """The scriptable preprocessing module (:class:`mobilevt.data.ImagePreprocess`):
        a PIL image or uint8 ``[3, H, W]`` / ``[B, 3, H, W]`` tensor in, the model's input
        tensor out."""
        from ..data.preprocess import ImagePreprocess

        return ImagePreprocess(self, channels_last_input=channels_last_input)


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
    # builder options these weights need beyond the model's defaults (output stride ...)
    arch_options: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        return f"{self.model}.{self.tag}"

    def transforms(self) -> nn.Module:
        return self.preprocess.transforms()
