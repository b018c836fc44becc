"""Attention layers: multi-head self-attention (MobileViT v1) and separable linear
self-attention (MobileViTv2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError


class MultiHeadSelfAttention(nn.Module):
    """Standard multi-head self-attention over ``[batch, tokens, dim]`` with a fused qkv
    projection (ml-cvnets' ``qkv_proj`` layout: rows are q, then k, then v)."""

    def __init__(self, dim: int, num_heads: int = 4, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise InvalidInputError(f"attention dim {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        # SDPA applies the 1/sqrt(head_dim) scale ml-cvnets applies to q.
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj_drop(self.proj(x))


class LinearSelfAttention(nn.Module):
    """Separable self-attention of MobileViTv2, linear in the number of patches.

    Works on unfolded maps ``[batch, dim, pixels_per_patch, num_patches]`` with 1x1
    convolutions, as ml-cvnets does, so checkpoints load without reshaping. A single
    query channel scores every patch (softmax over patches); the score-weighted sum of
    keys is a context vector that gates ReLU(values).
    """

    def __init__(self, dim: int, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.dim = dim
        self.qkv = nn.Conv2d(dim, 1 + 2 * dim, kernel_size=1)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        query, key, value = qkv.split([1, self.dim, self.dim], dim=1)
        scores = self.attn_drop(query.softmax(dim=-1))
        context = (key * scores).sum(dim=-1, keepdim=True)
        x = F.relu(value) * context
        return self.proj_drop(self.proj(x))
