"""MobileViT blocks: local convolutions + a transformer over unfolded patches.

Unfolding and folding are pure reshape/permute (no ``F.unfold``/``F.fold``), which keeps
the blocks scriptable and exportable to ONNX opset 17, Core ML and ExecuTorch.

The v1-style blocks (MobileViT, MobileViTv3 on v1) share ``_PatchTransformerV1``, the
v2-style ones (MobileViTv2, MobileViTv3 on v2) ``_PatchTransformerV2``: the unfold ->
transformer -> fold part, which the block classes do not differ in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .conv import ConvNormAct
from .transformer import Dropouts, LinearTransformerLayer, TransformerLayer


def _local_convs(channels: int, transformer_dim: int, depthwise: bool, dilation: int) -> tuple[nn.Module, nn.Module]:
    """The local representation every block starts with: a 3x3 conv (depthwise in the
    v2 and v3 designs), then a 1x1 to the transformer's width."""
    kxk = ConvNormAct(channels, channels, 3, groups=channels if depthwise else 1, dilation=dilation)
    return kxk, nn.Conv2d(channels, transformer_dim, 1, bias=False)


def _padded_size(size: int, patch: int) -> int:
    return (size + patch - 1) // patch * patch


class _PatchTransformerV1(nn.Module):
    """Multi-head-attention transformer over unfolded patches (MobileViT v1's global
    representation). Subclasses define ``patch_h``, ``patch_w``, ``transformer`` (on
    ``[B * patch_area, num_patches, dim]``) and ``norm``."""

    def global_representation(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, transformer_dim, H, W]`` -> the transformer over unfolded patches, folded
        back to the same shape. A size that is not a multiple of the patch is bilinearly
        resized up to the next multiple and back afterwards (ml-cvnets' rule,
        ``align_corners=False``)."""
        batch, dim, height, width = x.shape
        ph, pw = self.patch_h, self.patch_w
        new_h, new_w = _padded_size(height, ph), _padded_size(width, pw)
        # When tracing (ONNX export) the size test would be frozen at the example's size:
        # always emit the resize, an exact identity when the size already fits.
        resized = new_h != height or new_w != width or torch.jit.is_tracing()
        if resized:
            x = F.interpolate(x, size=[new_h, new_w], mode="bilinear", align_corners=False)
        nh, nw = new_h // ph, new_w // pw

        # [B, C, nh, ph, nw, pw] -> [B * ph * pw, nh * nw, C]: one sequence per pixel
        # position inside a patch, one token per patch.
        x = x.reshape(batch, dim, nh, ph, nw, pw).permute(0, 3, 5, 2, 4, 1)
        x = x.reshape(batch * ph * pw, nh * nw, dim)
        x = self.norm(self.transformer(x))
        x = x.reshape(batch, ph, pw, nh, nw, dim).permute(0, 5, 3, 1, 4, 2)
        x = x.reshape(batch, dim, new_h, new_w)

        if resized:
            x = F.interpolate(x, size=[height, width], mode="bilinear", align_corners=False)
        return x


class _PatchTransformerV2(nn.Module):
    """Separable-attention transformer over unfolded patches (MobileViTv2's global
    representation). Subclasses define ``patch_h``, ``patch_w``, ``transformer`` (on
    ``[B, dim, patch_area, num_patches]``) and ``norm``."""

    def resize_to_patches(self, x: torch.Tensor) -> torch.Tensor:
        """Resize ``x`` up to the next multiple of the patch size (bilinear,
        ``align_corners=True``): v2-style blocks do it on entry and never resize back."""
        height, width = x.shape[2], x.shape[3]
        new_h, new_w = _padded_size(height, self.patch_h), _padded_size(width, self.patch_w)
        # Always emitted when tracing, as in _PatchTransformerV1.
        if new_h != height or new_w != width or torch.jit.is_tracing():
            x = F.interpolate(x, size=[new_h, new_w], mode="bilinear", align_corners=True)
        return x

    def global_representation(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, transformer_dim, H, W]`` (H, W multiples of the patch) -> the transformer
        over ``[B, dim, pixels, patches]``, folded back to the same shape."""
        batch, dim, height, width = x.shape
        ph, pw = self.patch_h, self.patch_w
        nh, nw = height // ph, width // pw
        # [B, C, nh, ph, nw, pw] -> [B, C, ph * pw, nh * nw]
        x = x.reshape(batch, dim, nh, ph, nw, pw).permute(0, 1, 3, 5, 2, 4)
        x = x.reshape(batch, dim, ph * pw, nh * nw)
        x = self.norm(self.transformer(x))
        x = x.reshape(batch, dim, ph, pw, nh, nw).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(batch, dim, height, width)


class MobileViTBlock(_PatchTransformerV1):
    """MobileViT (v1) block.

    local 3x3 conv -> 1x1 to ``transformer_dim`` -> unfold into ``patch_h * patch_w``
    sequences of ``num_patches`` tokens -> transformer -> fold -> 1x1 back to
    ``channels`` -> 3x3 fusion with the block input. Maps whose size is not a multiple
    of the patch are bilinearly resized up to the next multiple and back afterwards
    (ml-cvnets' rule, ``align_corners=False``).
    """

    def __init__(
        self,
        channels: int,
        transformer_dim: int,
        mlp_dim: int,
        depth: int,
        num_heads: int = 4,
        patch_size: int = 2,
        dilation: int = 1,
        dropouts: Dropouts = Dropouts(),
    ) -> None:
        super().__init__()
        self.patch_h = self.patch_w = patch_size
        self.local_kxk, self.local_1x1 = _local_convs(channels, transformer_dim, False, dilation)
        layers = [TransformerLayer(transformer_dim, mlp_dim, num_heads, dropouts) for _ in range(depth)]
        self.transformer = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(transformer_dim)
        self.proj = ConvNormAct(transformer_dim, channels, 1)
        self.fusion = ConvNormAct(2 * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.local_1x1(self.local_kxk(x))
        x = self.proj(self.global_representation(x))
        return self.fusion(torch.cat([shortcut, x], dim=1))


class MobileViTV3Block(MobileViTBlock):
    """MobileViTv3 block on the v1 design (MobileViTv3-XXS/XS/S); arguments as
    :class:`MobileViTBlock`.

    Three changes to :class:`MobileViTBlock` (arXiv:2209.15159): the local convolution is
    depthwise 3x3; the fusion is a 1x1 convolution of the *local* features (the 1x1
    output, ``transformer_dim`` channels) concatenated with the projected global ones,
    instead of a 3x3 on input + global; and the block input is added to the fusion's
    output. Everything else (transformer, resizing) is v1's.
    """

    def __init__(self, channels: int, transformer_dim: int, *args, dilation: int = 1, **kwargs) -> None:
        super().__init__(channels, transformer_dim, *args, dilation=dilation, **kwargs)
        self.local_kxk = ConvNormAct(channels, channels, 3, groups=channels, dilation=dilation)
        self.fusion = ConvNormAct(transformer_dim + channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = self.local_1x1(self.local_kxk(x))
        global_ = self.proj(self.global_representation(local))
        # the authors' order: local features first, then global
        return self.fusion(torch.cat([local, global_], dim=1)) + x


class MobileViTV2Block(_PatchTransformerV2):
    """MobileViTv2 block: depthwise 3x3 -> 1x1 -> separable-attention transformer over
    ``[B, C, pixels, patches]`` -> fold -> 1x1 projection (no fusion, no activation).

    Maps whose size is not a multiple of the patch are resized up to the next multiple
    on entry (bilinear, ``align_corners=True``) and not resized back, as ml-cvnets does.
    """

    def __init__(
        self,
        channels: int,
        transformer_dim: int,
        mlp_dim: int,
        depth: int,
        patch_size: int = 2,
        dilation: int = 1,
        dropouts: Dropouts = Dropouts(),
    ) -> None:
        super().__init__()
        self.patch_h = self.patch_w = patch_size
        self.local_kxk, self.local_1x1 = _local_convs(channels, transformer_dim, True, dilation)
        self.transformer = nn.Sequential(
            *[LinearTransformerLayer(transformer_dim, mlp_dim, dropouts) for _ in range(depth)]
        )
        self.norm = nn.GroupNorm(1, transformer_dim)
        self.proj = ConvNormAct(transformer_dim, channels, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resize_to_patches(x)
        x = self.local_1x1(self.local_kxk(x))
        return self.proj(self.global_representation(x))


class MobileViTV3V2Block(MobileViTV2Block):
    """MobileViTv3 block on the v2 design (MobileViTv3-0.5/0.75/1.0); arguments as
    :class:`MobileViTV2Block`.

    As :class:`MobileViTV2Block`, but the final 1x1 projection (BatchNorm, no activation)
    takes the global features concatenated with the local ones (``2 * transformer_dim``
    channels) and the block input is added to its output. An input whose size is not a
    multiple of the patch is resized on entry, and the resized input is the residual.
    """

    def __init__(self, channels: int, transformer_dim: int, *args, **kwargs) -> None:
        super().__init__(channels, transformer_dim, *args, **kwargs)
        self.proj = ConvNormAct(2 * transformer_dim, channels, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resize_to_patches(x)
        local = self.local_1x1(self.local_kxk(x))
        # the authors' order: global features first, then local
        return self.proj(torch.cat([self.global_representation(local), local], dim=1)) + x
