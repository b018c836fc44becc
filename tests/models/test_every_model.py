"""Every registered model, whatever its family, as timm's model tests do: it builds with
random weights, runs a forward pass at an odd input size, and scripts with the scripted
module giving the same outputs (1e-5: the same kernels). A new variant is covered the
moment it is registered."""

from __future__ import annotations

import pytest
import torch
from conftest import max_abs

import mobilevt
from mobilevt import ModelKind

# odd sizes: not multiples of the patch or the output stride (ViLT takes its 32-pixel grid)
ODD_SIZE = {
    ModelKind.CLASSIFICATION: (97, 131),
    ModelKind.SEGMENTATION: (97, 131),
    ModelKind.DETECTION: (161, 193),
    ModelKind.VQA: (96, 160),
}


def _inputs(model: torch.nn.Module, kind: ModelKind) -> tuple[torch.Tensor, ...]:
    height, width = ODD_SIZE[kind]
    generator = torch.Generator().manual_seed(0)
    if kind == ModelKind.VQA:
        input_ids, attention_mask, _, pixel_mask = model.example_inputs(1, (height, width), text_length=11)
        return input_ids, attention_mask, torch.randn(1, 3, height, width, generator=generator), pixel_mask
    return (torch.randn(1, 3, height, width, generator=generator),)


def _flat(outputs) -> list[torch.Tensor]:
    return list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]


@pytest.mark.parametrize("name", mobilevt.list_models())
def test_builds_runs_at_an_odd_size_and_scripts(name):
    torch.manual_seed(0)
    model = mobilevt.create_model(name).eval()
    kind = mobilevt.get_model_entry(name).kind
    assert model.kind == kind  # the class declares what its registry entry says
    inputs = _inputs(model, kind)
    with torch.inference_mode():
        expected = _flat(model(*inputs))
        assert all(torch.isfinite(t).all() for t in expected), name
        scripted = torch.jit.script(model)
        with torch.jit.optimized_execution(False):  # the first call of a scripted module compiles no fused graph
            actual = _flat(scripted(*inputs))
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape and max_abs(a, e) <= 1e-5, name
