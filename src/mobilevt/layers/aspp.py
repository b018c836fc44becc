"""Atrous Spatial Pyramid Pooling (DeepLabV3, arXiv:1706.05587), as ml-cvnets builds it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError
from .conv import ConvNormReLU


class ASPPPooling(ConvNormReLU):
    """Image-level branch: global average pool -> 1x1 ConvNormReLU -> broadcast back to the
    input's size (the bilinear upsampling of a 1x1 map that the references do is a
    broadcast; ``expand`` gives the same values exactly)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(x, 1)
        return self.act(self.bn(self.conv(pooled))).expand(-1, -1, x.shape[2], x.shape[3])


class ASPP(nn.Module):
    """Five parallel branches over the same feature map (a 1x1 conv, three dilated 3x3
    convs, image pooling), concatenated and projected back to ``out_channels``.

    Args:
        in_channels: channels of the input feature map.
        out_channels: channels of every branch and of the output (ml-cvnets: 256 for the
            MobileViT v1 DeepLabV3 models, 512 for v2).
        atrous_rates: dilations of the three 3x3 branches; ``(6, 12, 18)`` at output
            stride 16, doubled at output stride 8.
        dropout: channel dropout after the projection (``Dropout2d``, as ml-cvnets).
    """

    def __init__(
        self, in_channels: int, out_channels: int = 256, atrous_rates: Sequence[int] = (6, 12, 18), dropout: float = 0.1
    ) -> None:
        super().__init__()
        if len(atrous_rates) != 3 or any(int(r) < 1 for r in atrous_rates):
            raise InvalidInputError(
                f"atrous_rates must be three positive dilations, e.g. (6, 12, 18); got {tuple(atrous_rates)}"
            )
        if not 0.0 <= dropout < 1.0:
            raise InvalidInputError(f"ASPP dropout must be in [0, 1), got {dropout}")
        self.atrous_rates = tuple(int(r) for r in atrous_rates)
        branches: list[nn.Module] = [ConvNormReLU(in_channels, out_channels, 1)]
        branches += [ConvNormReLU(in_channels, out_channels, 3, dilation=rate) for rate in self.atrous_rates]
        branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = ConvNormReLU(len(branches) * out_channels, out_channels, 1)
        self.drop = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [branch(x) for branch in self.convs]
        return self.drop(self.project(torch.cat(outputs, dim=1)))
