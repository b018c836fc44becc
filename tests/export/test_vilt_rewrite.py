"""ViLT's layers as ExecuTorch gets them: the masked attention rewritten with an added mask
(export/rewrite.py) computes what the model's own attention does, in each of its three
uses, and a lowered ViLT leaves no projection, mask or norm operator outside the XNNPACK
delegate (a run-time slice of the qkv weight and SDPA's boolean-mask softmax did: the full
ViLT-B/32 .pte ran 4x slower than ONNX Runtime). Tolerance: 1e-5, float rounding of the
reordered products; the delegate's kernels 1e-4 (PARITY_ATOL)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import PARITY_ATOL, max_abs

import mobilevt
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


@pytest.mark.slow  # XNNPACK lowering
def test_a_lowered_vilt_runs_its_layers_in_the_delegate(tmp_path: Path):
    pytest.importorskip("executorch")
    from mobilevt.export.formats import WriteOptions, get_format
    from mobilevt.export.vilt import _graph

    torch.manual_seed(0)
    model = mobilevt.create_model(
        "vilt_b32_vqa",
        num_classes=5,
        answers=list("abcde"),
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        mlp_dim=128,
        image_size=128,
        vocab_size=50,
    ).eval()
    inputs = model.example_inputs(1, (96, 128), text_length=7)
    inputs = (torch.randint(5, 50, (1, 7)), inputs[1], torch.randn(1, 3, 96, 128), inputs[3])
    written = get_format("executorch").write(
        _graph(model, inputs, batch=False), tmp_path / "v.pte", WriteOptions(probes=[inputs])
    )
    outside = " ".join(written.details["outside_delegate"])
    for op in ("addmm", "where", "any", "logical_not", "native_layer_norm", "_safe_softmax"):
        assert op not in outside, outside
    with torch.no_grad():
        assert max_abs(written.run(*inputs)[0], model(*inputs)) <= PARITY_ATOL
