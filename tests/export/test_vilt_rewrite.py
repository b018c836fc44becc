"""ViLT's masked attention as ExecuTorch and ONNX get it, rewritten with an added mask
(export/rewrite.py), computes what the model's own attention does in each of its three
uses, and a patch embedding as the int8 exports get it (a linear over the patches) computes
the convolution (that the lowered ViLT then leaves no mask or norm operator outside the XNNPACK
delegate is checked on the exported pipeline, tests/tasks/test_vqa_pipeline.py).
Tolerance: 1e-5, float rounding of the reordered products."""

from __future__ import annotations

import torch
from conftest import max_abs
from torch import nn

from mobilevt.export.rewrite import ExplicitMaskedAttention, PatchwiseLinear, linear_patch_embeddings
from mobilevt.layers.vit import MaskedSelfAttention


def test_the_rewritten_attention_computes_the_models():
    torch.manual_seed(0)
    attention = MaskedSelfAttention(64, 4).eval()
    x = torch.randn(2, 9, 64)
    mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    mask[1, ..., 6:] = False  # the second sequence has three padded keys
    rewritten = ExplicitMaskedAttention(attention).eval()
    with torch.no_grad():
        assert max_abs(rewritten(x, mask), attention(x, mask)) <= 1e-5
        assert max_abs(rewritten(x), attention(x)) <= 1e-5
        assert max_abs(rewritten.forward_queries(x, 2, mask), attention.forward_queries(x, 2, mask)) <= 1e-5
        out, weights = rewritten.forward_with_weights(x, mask)
        expected_out, expected_weights = attention.forward_with_weights(x, mask)
    assert max_abs(out, expected_out) <= 1e-5 and max_abs(weights, expected_weights) <= 1e-6
    assert (weights[1, ..., 6:] == 0).all()  # masked keys get exactly nothing, as in the model


def test_a_patch_embedding_as_a_linear_computes_the_convolution():
    """PatchwiseLinear (what the int8 exports quantize) gives the convolution's output at
    sizes that are multiples of the patch and sizes that are not (the remainder dropped,
    as the convolution drops it)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 16, 8, stride=8).eval()
    linear = PatchwiseLinear(conv).eval()
    with torch.no_grad():
        for shape in ((1, 3, 32, 32), (2, 3, 40, 24), (1, 3, 37, 45)):
            x = torch.randn(shape)
            assert linear(x).shape == conv(x).shape
            assert max_abs(linear(x), conv(x)) <= 1e-5, shape


def test_only_patch_embeddings_are_swapped_and_the_model_is_not_touched():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 4, stride=4),  # a patch embedding
        nn.Conv2d(8, 8, 3, stride=2, padding=1),  # a stem-like convolution: kept
        nn.Conv2d(8, 8, 2, stride=2, groups=8),  # depthwise: kept
    )
    rewritten = linear_patch_embeddings(model)
    assert [type(m).__name__ for m in rewritten] == ["PatchwiseLinear", "Conv2d", "Conv2d"]
    assert all(isinstance(m, nn.Conv2d) for m in model)  # a copy was rewritten
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert max_abs(rewritten(x), model(x)) <= 1e-5
