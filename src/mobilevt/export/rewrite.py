"""Graph-friendly rewrites of a model for mobile delegates (ExecuTorch's XNNPACK), and
ViLT's masked attention with an added mask for ONNX (:func:`additive_mask_attention`).

ExecuTorch 1.5's XNNPACK partitioner cannot delegate ``layer_norm``, ``group_norm``,
the ``_safe_softmax`` pattern that ``scaled_dot_product_attention`` decomposes into
(``any`` / ``where`` / ``full_like``), ``mul.Scalar``, ``select`` or ``squeeze``. Those ops
fall back to ExecuTorch's portable kernels, single-threaded and unvectorised, and made a
``.pte`` of mobilevit_xxs about 5x slower than the same graph fully delegated. The
modules here compute the same functions from ops XNNPACK runs (linear, bmm, softmax,
mul, add, sub, rsqrt, slices, views); outputs change by float rounding only (< 1e-5).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import InvalidInputError
from ..layers.attention import LinearSelfAttention, MultiHeadSelfAttention
from ..layers.vit import MaskedSelfAttention

# added to the scores of masked keys: exp() of it is exactly 0 in float32, as -inf would be,
# without the NaN of a row that masks every key (never the case in ViLT: [CLS] is a key)
_MASKED_SCORE = -1e30


def _query_rows_scaled(qkv: nn.Linear, scale: float) -> nn.Linear:
    """A copy of a fused qkv projection with the attention's scale folded into its query rows."""
    scaled = copy.deepcopy(qkv)
    dim = qkv.in_features
    with torch.no_grad():
        scaled.weight[:dim] *= scale
        if scaled.bias is not None:
            scaled.bias[:dim] *= scale
    return scaled


class ExplicitAttention(nn.Module):
    """Multi-head self-attention as two ``bmm`` and a softmax. The 1/sqrt(head_dim) scale
    is folded into the query rows of the qkv projection."""

    def __init__(self, attention: MultiHeadSelfAttention) -> None:
        super().__init__()
        self.num_heads = attention.num_heads
        self.head_dim = attention.head_dim
        self.qkv = _query_rows_scaled(attention.qkv, self.head_dim**-0.5)
        self.proj = attention.proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        qkv = qkv.reshape(3 * batch * self.num_heads, tokens, self.head_dim)
        rows = batch * self.num_heads  # slices, not select + squeeze (or split, which is not delegated)
        q, k, v = qkv[:rows], qkv[rows : 2 * rows], qkv[2 * rows :]
        attention = torch.bmm(q, k.transpose(1, 2)).softmax(dim=-1)
        x = torch.bmm(attention, v).reshape(batch, self.num_heads, tokens, self.head_dim)
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, dim))


class ExplicitLinearAttention(nn.Module):
    """MobileViTv2's separable attention with channel slices instead of ``split`` and the
    score-weighted sum over patches as a batched matrix product (XNNPACK reduces only
    spatial dimensions, so ``sum`` over the last one would leave the delegate)."""

    def __init__(self, attention: LinearSelfAttention) -> None:
        super().__init__()
        self.dim = attention.dim
        self.qkv, self.proj = attention.qkv, attention.proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)  # [B, 1 + 2 * dim, P, N]
        batch, _, pixels, patches = qkv.shape
        # The softmax runs on a 3-D view: on the 4-D output of a convolution, which XNNPACK
        # keeps channels-last, ExecuTorch 1.5's delegate takes the softmax over the channels.
        scores = qkv[:, :1].reshape(batch * pixels, 1, patches).softmax(dim=-1).reshape(batch * pixels, patches, 1)
        key, value = qkv[:, 1 : 1 + self.dim], qkv[:, 1 + self.dim :]
        # sum_n key[b, c, p, n] * scores[b, 0, p, n] as [B * P, C, N] @ [B * P, N, 1]
        key = key.permute(0, 2, 1, 3).reshape(batch * pixels, self.dim, patches)
        context = torch.bmm(key, scores).reshape(batch, pixels, self.dim, 1).permute(0, 2, 1, 3)
        return self.proj(torch.relu(value) * context)


class ExplicitMaskedAttention(nn.Module):
    """ViLT's masked self-attention as two ``bmm``, an added mask and a softmax: the boolean
    mask of ``scaled_dot_product_attention`` decomposes into ``_safe_softmax`` (``where``,
    ``any``, ``logical_not`` ...), which XNNPACK does not take. The 1/sqrt(head_dim) scale is
    folded into the query rows of the qkv projection."""

    def __init__(self, attention: MaskedSelfAttention) -> None:
        super().__init__()
        self.num_heads = attention.num_heads
        self.head_dim = attention.head_dim
        self.qkv = _query_rows_scaled(attention.qkv, attention.scale)
        self.proj = attention.proj

    def _attend(
        self, x: torch.Tensor, num_queries: int, attn_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, tokens, dim = x.shape
        rows = batch * self.num_heads
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        qkv = qkv.reshape(3 * rows, tokens, self.head_dim)
        q, k, v = qkv[:rows, :num_queries], qkv[rows : 2 * rows], qkv[2 * rows :]
        scores = torch.bmm(q, k.transpose(1, 2)).reshape(batch, self.num_heads, num_queries, tokens)
        if attn_mask is not None:  # [batch, 1, 1, tokens], True for the keys to attend to
            scores = scores + (1.0 - attn_mask.to(scores.dtype)) * _MASKED_SCORE
        weights = scores.softmax(dim=-1)
        out = torch.bmm(weights.reshape(rows, num_queries, tokens), v)
        out = out.reshape(batch, self.num_heads, num_queries, self.head_dim).transpose(1, 2)
        return self.proj(out.reshape(batch, num_queries, dim)), weights

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self._attend(x, x.shape[1], attn_mask)[0]

    def forward_queries(self, x: torch.Tensor, num_queries: int, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self._attend(x, num_queries, attn_mask)[0]

    def forward_with_weights(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._attend(x, x.shape[1], attn_mask)


class ExplicitLayerNorm(nn.Module):
    """LayerNorm over the last dimension; the means are matrix products with a constant
    averaging vector (XNNPACK's ``mean`` only reduces spatial dimensions of 4-D input)."""

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        if len(norm.normalized_shape) != 1 or not norm.elementwise_affine or norm.bias is None:
            raise InvalidInputError("ExplicitLayerNorm rewrites an affine LayerNorm over the last dimension")
        dim = norm.normalized_shape[0]
        self.register_buffer("average", torch.full((dim, 1), 1.0 / dim))
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 2-D products: a batched matmul would be lowered as views around an mm (left to
        # the portable kernels when the batch is symbolic) or, after PT2E quantization, an
        # expand that XNNPACK does not take
        rows = x.reshape(-1, x.shape[-1])
        centered = rows - torch.mm(rows, self.average)
        variance = torch.mm(centered * centered, self.average)
        normalized = centered * torch.rsqrt(variance + self.eps) * self.weight + self.bias
        return normalized.reshape(x.shape)


class ExplicitGroupNorm1(nn.Module):
    """GroupNorm with one group (MobileViTv2's layer_norm_2d) over ``[B, C, H, W]``: the
    means are spatial means (delegated for 4-D input) followed by a product with a
    constant channel-averaging vector."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        if norm.num_groups != 1 or norm.weight is None:
            raise InvalidInputError("ExplicitGroupNorm1 rewrites an affine GroupNorm with one group")
        channels = norm.num_channels
        self.register_buffer("average", torch.full((channels, 1), 1.0 / channels))
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps

    def _mean(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.mean(dim=(2, 3), keepdim=True)  # [B, C, 1, 1]: XNNPACK's mean keeps the dims
        # a 2-D product, as in ExplicitLayerNorm
        return torch.mm(spatial.reshape(-1, x.shape[1]), self.average).reshape(-1, 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centered = x - self._mean(x)
        normalized = centered * torch.rsqrt(self._mean(centered * centered) + self.eps)
        return normalized * self.weight.reshape(1, -1, 1, 1) + self.bias.reshape(1, -1, 1, 1)


class PatchwiseLinear(nn.Module):
    """A convolution whose kernel is its stride (a patch embedding) as a linear over the
    flattened patches: the same products, in the one operator that dynamic int8 quantizers
    take (onnxruntime's ``quantize_dynamic`` on ``MatMul``, XNNPACK's dynamic linear)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.patch = int(conv.kernel_size[0])
        self.linear = nn.Linear(conv.in_channels * self.patch**2, conv.out_channels, bias=conv.bias is not None)
        with torch.no_grad():
            self.linear.weight.copy_(conv.weight.reshape(conv.out_channels, -1))
            if conv.bias is not None:
                self.linear.bias.copy_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        grid_h, grid_w = height // self.patch, width // self.patch
        x = x[:, :, : grid_h * self.patch, : grid_w * self.patch]  # as the convolution, drop the remainder
        patches = x.reshape(batch, channels, grid_h, self.patch, grid_w, self.patch).permute(0, 2, 4, 1, 3, 5)
        out = self.linear(patches.reshape(batch, grid_h * grid_w, channels * self.patch**2))
        return out.transpose(1, 2).reshape(batch, -1, grid_h, grid_w)


def linear_patch_embeddings(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose patch embeddings (convolutions with kernel = stride, no
    padding, one group) are :class:`PatchwiseLinear`: quantized with the linears in the
    dynamic int8 exports (a tenth of ViLT-B/32's time with pruning and an early exit, in fp32
    otherwise)."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if _is_patch_embedding(child):
                setattr(parent, name, PatchwiseLinear(child))
    return model


def _is_patch_embedding(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Conv2d)
        and module.kernel_size[0] == module.kernel_size[1] == module.stride[0] == module.stride[1] > 1
        and module.padding in ((0, 0), "valid")
        and module.dilation == (1, 1)
        and module.groups == 1
    )


def delegate_friendly(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose attention and norm layers are written with ops that
    ExecuTorch's XNNPACK delegate runs (see the module docstring)."""
    model = copy.deepcopy(model)
    _swap(model, norms=True)
    return model


def additive_mask_attention(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose masked attention adds its mask to the scores
    (:class:`ExplicitMaskedAttention`), for ONNX: the exporter writes the boolean mask of
    ``scaled_dot_product_attention`` as ``Where(IsNaN(Softmax), 0, Softmax)`` over every
    layer's scores, which onnxruntime runs as two more passes over them."""
    model = copy.deepcopy(model)
    _swap(model, norms=False, kinds=(MaskedSelfAttention,))
    return model


def _swap(module: nn.Module, norms: bool, kinds: tuple[type, ...] = (nn.Module,)) -> None:
    for name, child in module.named_children():
        if isinstance(child, MultiHeadSelfAttention) and isinstance(child, kinds):
            setattr(module, name, ExplicitAttention(child))
        elif isinstance(child, MaskedSelfAttention) and isinstance(child, kinds):
            setattr(module, name, ExplicitMaskedAttention(child))
        elif isinstance(child, LinearSelfAttention) and isinstance(child, kinds):
            setattr(module, name, ExplicitLinearAttention(child))
        elif isinstance(child, nn.LayerNorm) and norms:
            setattr(module, name, ExplicitLayerNorm(child) if child.elementwise_affine else child)
        elif isinstance(child, nn.GroupNorm) and child.num_groups == 1 and child.affine and norms:
            setattr(module, name, ExplicitGroupNorm1(child))
        else:
            _swap(child, norms, kinds)
