"""Inference fast paths: BatchNorm folded into the convolutions (``model.fuse()``) and
channels-last memory format change outputs by float rounding only, keep the model
scriptable and exportable; in-place activations leave training gradients intact."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import PARITY_ATOL, max_abs, randomize_

import mobilevt

FAST_TOLERANCE = 1e-5  # relative to the logits' scale


@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevit_s", "mobilevitv2_050"])
def test_fused_channels_last_matches_eager(name):
    model = randomize_(mobilevt.create_model(name), seed=7)
    fast = copy.deepcopy(model).fuse().to(memory_format=torch.channels_last)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    generator = torch.Generator().manual_seed(0)
    for shape in [(1, 3, 256, 256), (3, 3, 192, 320)]:
        x = torch.rand(*shape, generator=generator)
        with torch.no_grad():
            expected, actual = model(x), fast(x)
        assert expected.abs().max() > 0.05
        assert max_abs(actual, expected) <= FAST_TOLERANCE * max(1.0, expected.abs().max().item()), shape


def test_fused_model_scripts_and_exports():
    model = randomize_(mobilevt.create_model("mobilevitv2_050")).fuse()
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        expected = model(x)
        assert max_abs(torch.jit.script(model)(x), expected) <= PARITY_ATOL
        program = torch.export.export(model, (x,))
        assert max_abs(program.module()(x), expected) <= PARITY_ATOL


def test_fuse_refuses_training_mode():
    with pytest.raises(RuntimeError, match="model.eval"):
        mobilevt.create_model("mobilevit_xxs").train().fuse()


@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevitv2_050"])
def test_training_gradients_match_timm(name):
    """In-place SiLU must not corrupt autograd: input gradients in train mode equal timm's."""
    timm = pytest.importorskip("timm")
    reference = randomize_(timm.create_model(name, drop_rate=0.0), seed=1).train()
    # no dropout anywhere (timm's default), so both train-mode passes are deterministic
    model = mobilevt.create_model(name, drop_rate=0.0, transformer_dropout=0.0, attn_dropout=0.0, ffn_dropout=0.0)
    model.load_state_dict(mobilevt.convert_state_dict(reference.state_dict(), name))
    model.train()
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    grads = []
    for net in (reference, model):
        inp = x.clone().requires_grad_(True)
        (net(inp) ** 2).sum().backward()
        grads.append(inp.grad)
    scale = grads[0].abs().max().item()
    assert scale > 0 and max_abs(grads[1], grads[0]) <= 1e-4 * max(1.0, scale)
