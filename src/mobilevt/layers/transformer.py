"""Pre-norm transformer layers used inside MobileViT blocks."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Dropouts:
    """The dropout rates of a MobileViT transformer (ml-cvnets' option names in brackets)."""

    drop: float = 0.0  # after the attention and FFN projections (transformer dropout)
    attn_drop: float = 0.0  # on the attention weights (attn_dropout)
    ffn_drop: float = 0.0  # between the FFN's two layers (ffn_dropout)
    drop_path: float = 0.0  # stochastic depth of the residual branches


class _PreNormLayer(nn.Module):
    """``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``, each branch with stochastic depth."""

    def __init__(self, norm1: nn.Module, attn: nn.Module, norm2: nn.Module, mlp: nn.Module, drop_path: float) -> None:
        super().__init__()
        self.norm1 = norm1
        self.attn = attn
        self.drop_path1 = _drop_path(drop_path)
        self.norm2 = norm2
        self.mlp = mlp
        self.drop_path2 = _drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x


class TransformerLayer(_PreNormLayer):
    """MobileViT v1 transformer encoder layer on ``[batch, tokens, dim]`` (pre-norm)."""

    def __init__(self, dim: int, mlp_dim: int, num_heads: int = 4, dropouts: Dropouts = Dropouts()) -> None:
        attention = MultiHeadSelfAttention(dim, num_heads, attn_drop=dropouts.attn_drop, proj_drop=dropouts.drop)
        mlp = Mlp(dim, mlp_dim, ffn_drop=dropouts.ffn_drop, drop=dropouts.drop)
        super().__init__(nn.LayerNorm(dim), attention, nn.LayerNorm(dim), mlp, dropouts.drop_path)


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


class LinearTransformerLayer(_PreNormLayer):
    """MobileViTv2 transformer layer on ``[batch, dim, pixels, patches]``.

    The norm is GroupNorm with one group ("layer_norm_2d" in ml-cvnets): it normalises
    over channels, pixels and patches together, not per token.
    """

    def __init__(self, dim: int, mlp_dim: int, dropouts: Dropouts = Dropouts()) -> None:
        attention = LinearSelfAttention(dim, attn_drop=dropouts.attn_drop, proj_drop=dropouts.drop)
        mlp = ConvMlp(dim, mlp_dim, ffn_drop=dropouts.ffn_drop, drop=dropouts.drop)
        super().__init__(nn.GroupNorm(1, dim), attention, nn.GroupNorm(1, dim), mlp, dropouts.drop_path)
