"""ViLT's masked attention as ExecuTorch gets it, rewritten with an added mask
(export/rewrite.py), computes what the model's own attention does in each of its three
uses (that the lowered ViLT then leaves no mask or norm operator outside the XNNPACK
delegate is checked on the exported pipeline, tests/tasks/test_vqa_pipeline.py).
Tolerance: 1e-5, float rounding of the reordered products."""

from __future__ import annotations

import torch
from conftest import max_abs

from mobilevt.export.rewrite import ExplicitMaskedAttention
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
