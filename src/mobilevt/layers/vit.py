"""ViT-style pre-norm encoder layers with key padding masks (ViLT's multimodal encoder).

Unlike the MobileViT transformer layers these take a boolean attention mask (padded text
tokens and padded image patches are never attended to), use GELU in the MLP, and can
return the attention weights of a layer, which attention-guided token pruning needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError


class MaskedSelfAttention(nn.Module):
    """Multi-head self-attention over ``[batch, tokens, dim]`` with a fused qkv
    projection (rows: q, then k, then v, as timm's ViT and dandelin/ViLT store it).

    ``attn_mask`` is boolean, ``True`` where a key may be attended to, broadcastable to
    ``[batch, heads, queries, keys]`` (a key padding mask is ``[batch, 1, 1, keys]``).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads != 0:
            raise InvalidInputError(f"attention dim {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        return q, k, v

    def _merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, tokens, _ = x.shape
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim)))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self._split_heads(x)
        # SDPA's default scale is 1/sqrt(head_dim), as in ViLT.
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_drop if self.training else 0.0
        )
        return self._merge_heads(out)

    def forward_queries(self, x: torch.Tensor, num_queries: int, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs for the first ``num_queries`` tokens only, every token still a key and
        value. One projection of all tokens, its queries sliced after it: projecting with a
        slice of the weight instead saves a third of one layer's projection, but the sliced
        weight is computed at run time, and ExecuTorch's XNNPACK delegate only takes
        constant weights (the two matrix products then ran on its slow portable kernels:
        249 of 285 ms of a 2-layer ViLT-B/32 at 384x384)."""
        batch, tokens, dim = x.shape
        qkv = self.qkv(x)
        q = qkv[:, :num_queries, :dim].reshape(batch, num_queries, self.num_heads, self.head_dim).transpose(1, 2)
        kv = qkv[:, :, dim:].reshape(batch, tokens, 2, self.num_heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_drop if self.training else 0.0
        )
        return self._merge_heads(out)

    def forward_with_weights(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like ``forward`` (without attention dropout), also returning the attention
        probabilities ``[batch, heads, queries, keys]`` (masked keys get exactly 0)."""
        q, k, v = self._split_heads(x)
        scores = (q * self.scale) @ k.transpose(-2, -1)
        if attn_mask is not None:
            scores = scores.masked_fill(attn_mask.logical_not(), float("-inf"))
        weights = scores.softmax(dim=-1)
        return self._merge_heads(weights @ v), weights


class GeluMlp(nn.Module):
    """Linear -> GELU (erf) -> Linear -> dropout, the ViT/BERT feed-forward block."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


class PreNormEncoderLayer(nn.Module):
    """``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``: the layer of ViT, and of ViLT,
    whose encoder is a ViT run over text and image tokens together."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        drop: float = 0.0,
        attn_drop: float = 0.0,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MaskedSelfAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = GeluMlp(dim, mlp_dim, drop=drop)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), attn_mask)
        return x + self.mlp(self.norm2(x))

    def forward_queries(self, x: torch.Tensor, num_queries: int, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The layer output of the first ``num_queries`` tokens only (all tokens still
        attended to): for a last layer whose other outputs nobody reads."""
        out = x[:, :num_queries] + self.attn.forward_queries(self.norm1(x), num_queries, attn_mask)
        return out + self.mlp(self.norm2(out))

    def forward_with_attention(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer output and its attention probabilities ``[batch, heads, tokens, tokens]``."""
        attended, weights = self.attn.forward_with_weights(self.norm1(x), attn_mask)
        x = x + attended
        return x + self.mlp(self.norm2(x)), weights
