"""Pre-norm transformer layers used inside MobileViT blocks."""
from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from .attention import LinearSelfAttention, MultiHeadSelfAttention


def _drop_path(rate: float) -> nn.Module:
    return StochasticDepth(rate, "row") if rate > 0 else nn.Identity()


class Mlp(nn.Module):
    """Linear -> SiLU -> dropout -> Linear -> dropout (ml-cvnets' transformer FFN)."""

    def __init__(self, dim: int, hidden_dim: int, ffn_drop: float = 0.0, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.SiLU(inplace=True)  # fc1's output is fresh
        self.ffn_drop = nn.Dropout(ffn_drop)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.ffn_drop(self.act(self.fc1(x)))))


class TransformerLayer(nn.Module):
    """MobileViT v1 transformer encoder layer on ``[batch, tokens, dim]`` (pre-norm)."""

    def __init__(
        self,
        dim: int,
        mlp_dim: int,
        num_heads: int = 4,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        ffn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, num_heads, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path1 = _drop_path(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_dim, ffn_drop=ffn_drop, drop=drop)
        self.drop_path2 = _drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x


class ConvMlp(nn.Module):
    """The v2 FFN: 1x1 conv -> SiLU -> dropout -> 1x1 conv -> dropout on ``[B, C, P, N]``."""

    def __init__(self, dim: int, hidden_dim: int, ffn_drop: float = 0.0, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden_dim, kernel_size=1)
        self.act = nn.SiLU(inplace=True)  # fc1's output is fresh
        self.ffn_drop = nn.Dropout(ffn_drop)
        self.fc2 = nn.Conv2d(hidden_dim, dim, kernel_size=1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.ffn_drop(self.act(self.fc1(x)))))


class LinearTransformerLayer(nn.Module):
    """MobileViTv2 transformer layer on ``[batch, dim, pixels, patches]``.

    The norm is GroupNorm with one group ("layer_norm_2d" in ml-cvnets): it normalises
    over channels, pixels and patches together, not per token.
    """

    def __init__(
        self,
        dim: int,
        mlp_dim: int,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        ffn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(1, dim)
        self.attn = LinearSelfAttention(dim, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path1 = _drop_path(drop_path)
        self.norm2 = nn.GroupNorm(1, dim)
        self.mlp = ConvMlp(dim, mlp_dim, ffn_drop=ffn_drop, drop=drop)
        self.drop_path2 = _drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x
