"""MobileNetV2 inverted residual block (called MV2 in the MobileViT papers)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from .conv import ConvNormAct


class InvertedResidual(nn.Module):
    """1x1 expand -> depthwise 3x3 -> 1x1 linear project, residual when shapes allow.

    ml-cvnets sizes the hidden width as ``make_divisible(in * expand_ratio, 8)``; every
    MobileViT configuration gives a multiple of 8 already, so a plain product is used.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        expand_ratio: float = 4.0,
        dilation: int = 1,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.expand = ConvNormAct(in_channels, hidden, 1)
        self.depthwise = ConvNormAct(hidden, hidden, 3, stride=stride, groups=hidden, dilation=dilation)
        self.project = ConvNormAct(hidden, out_channels, 1, act=False)
        self.use_residual = stride == 1 and in_channels == out_channels
        self.drop_path = StochasticDepth(drop_path, "row") if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        if self.use_residual:
            out = x + self.drop_path(out)
        return out
