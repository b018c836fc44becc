"""Parameter and multiply-accumulate (MAC) counts.

MACs are counted with ``torch.utils.flop_counter`` on a real forward pass: convolutions,
linear layers and the attention matmuls (q @ k^T and attn @ v inside
``scaled_dot_product_attention``, whichever kernel runs) are included; element-wise
work (norms, activations, softmax, MobileViTv2's linear-attention products) is not,
following the convention of the published tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

aten = torch.ops.aten


def _sdpa_flops(query, key, value, *args, **kwargs) -> int:
    # flop_counter passes shapes, not tensors, to custom formulas
    return sdpa_flop_count(tuple(query), tuple(key), tuple(value))


# Kernels that flop_counter does not know on every build (the CPU flash kernel).
_CUSTOM = {}
for _name in ("_scaled_dot_product_flash_attention_for_cpu",):
    if hasattr(aten, _name):
        _CUSTOM[getattr(aten, _name)] = _sdpa_flops


@dataclass(frozen=True)
class ModelCost:
    params: int
    macs: int
    conv_macs: int
    linear_macs: int
    attention_macs: int
    input_size: tuple[int, int]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, int] = (256, 256), in_chans: int = 3) -> ModelCost:
    """MACs of one image at ``input_size`` (height, width)."""
    device = next(model.parameters()).device
    x = torch.zeros(1, in_chans, *input_size, device=device)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False, custom_mapping=_CUSTOM) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    conv = linear = attention = 0
    for op, flops in counter.get_flop_counts()["Global"].items():
        name = str(op)
        if "convolution" in name:
            conv += flops
        elif "attention" in name:
            attention += flops
        else:
            linear += flops
    return ModelCost(
        params=count_parameters(model),
        macs=(conv + linear + attention) // 2,
        conv_macs=conv // 2,
        linear_macs=linear // 2,
        attention_macs=attention // 2,
        input_size=tuple(input_size),
    )
