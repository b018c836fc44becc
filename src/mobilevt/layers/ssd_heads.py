"""SSDLite building blocks: separable convolutions, the extra down-sampling layers and the
prediction heads, laid out as ml-cvnets' ``SeparableConv2d`` and ``SSDHead``
(``cvnets/modules/ssd_heads.py``).

ml-cvnets builds these layers with the detection config's activation (ReLU) while the
MobileViT backbone keeps its SiLU.
"""

from __future__ import annotations

import torch
from torch import nn

from .conv import ConvNormReLU


class SeparableConvNormReLU(nn.Module):
    """Depthwise kxk conv + BatchNorm (no activation), then pointwise conv + BatchNorm +
    ReLU: an SSDLite extra layer (stride 2 halves the map)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.dw = ConvNormReLU(in_channels, in_channels, kernel_size, stride=stride, groups=in_channels, act=False)
        self.pw = ConvNormReLU(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class GlobalPoolProj(nn.Module):
    """Global average pooling, 1x1 conv (no bias, no norm) and ReLU: the 1x1 map of the
    last SSDLite level (output stride -1 in ml-cvnets)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a mean over H and W rather than AdaptiveAvgPool2d: same numbers, plainer export
        return self.act(self.conv(x.mean(dim=(2, 3), keepdim=True)))


class SeparablePredictor(nn.Module):
    """Depthwise kxk conv + BatchNorm, then a pointwise conv with bias: the SSDLite
    prediction layer."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.dw = ConvNormReLU(in_channels, in_channels, kernel_size, groups=in_channels, act=False)
        self.pw = nn.Conv2d(in_channels, out_channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class SSDHead(nn.Module):
    """Box regression and class logits of one feature map.

    An optional 1x1 projection (conv + BatchNorm + ReLU, when ``proj_channels`` differs
    from ``in_channels`` and the kernel is larger than 1), then one prediction layer with
    ``num_anchors * (4 + num_classes)`` outputs per cell: separable kxk, or a plain 1x1
    conv for ``kernel_size=1``. As in ml-cvnets, the outputs of one anchor are adjacent
    channels (4 box values, then the class logits), so that one reshape gives
    ``[B, H * W * A, 4 + C]`` in (row, column, anchor) order.

    Returns ``(box_regression [B, H*W*A, 4], class_logits [B, H*W*A, C])``.
    """

    def __init__(
        self, in_channels: int, num_anchors: int, num_classes: int, proj_channels: int = -1, kernel_size: int = 3
    ) -> None:
        super().__init__()
        self.num_anchors = num_anchors
        self.num_classes = num_classes
        if proj_channels not in (-1, in_channels) and kernel_size > 1:
            self.proj: nn.Module = ConvNormReLU(in_channels, proj_channels, 1)
            in_channels = proj_channels
        else:
            self.proj = nn.Identity()
        out_channels = num_anchors * (4 + num_classes)
        if kernel_size > 1:
            self.pred: nn.Module = SeparablePredictor(in_channels, out_channels, kernel_size)
        else:
            self.pred = nn.Conv2d(in_channels, out_channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pred(self.proj(x))
        batch = x.shape[0]
        x = x.permute(0, 2, 3, 1).reshape(batch, -1, 4 + self.num_classes)
        return x[..., :4], x[..., 4:]
