"""The benchmarked models: mobilevt's, and timm's and transformers' as references, with
well-scaled random weights."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InvalidInputError
from ..factory import create_model
from ..model_kind import ModelKind
from ..registry import get_model_entry, list_models

# transformers' configs for ml-cvnets' v1 variants (its defaults are mobilevit_s); v2 variants
# differ only by width.
_TRANSFORMERS_V1 = {
    "mobilevit_xxs": dict(hidden_sizes=[64, 80, 96], neck_hidden_sizes=[16, 16, 24, 48, 64, 80, 320], expand_ratio=2.0),
    "mobilevit_xs": dict(hidden_sizes=[96, 120, 144], neck_hidden_sizes=[16, 32, 48, 64, 80, 96, 384]),
    "mobilevit_s": dict(hidden_sizes=[144, 192, 240], neck_hidden_sizes=[16, 32, 64, 96, 128, 160, 640]),
}


_KIND = ModelKind.CLASSIFICATION


def resolve_models(patterns: Sequence[str] | None) -> list[str]:
    """Image classifiers from names or shell patterns (``'mobilevitv2_*'``); every registered
    image classifier when empty."""

    if not patterns:
        return list_models(kind=_KIND)
    names: list[str] = []
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            matched = list_models(pattern, kind=_KIND)
            if not matched:
                raise InvalidInputError(f"no image classifier matches {pattern!r}; `mobilevt models` lists them")
        else:
            # a weights tag (name.tag) does not matter here: the benchmark uses random weights
            entry = get_model_entry(pattern)
            if entry.kind != _KIND:
                raise InvalidInputError(f"mobilevt bench times image classifiers; {entry.name} is a {entry.kind} model")
            matched = [entry.name]
        names += [n for n in matched if n not in names]
    return names


def well_scaled_random_(model: nn.Module, seed: int) -> nn.Module:
    """Random weights whose activations stay in a normal float range: default
    initialisations of some references (transformers' MobileViT) decay activations to
    denormals, which CPUs process many times slower."""
    generator = torch.Generator().manual_seed(seed)
    norms = (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)
    with torch.no_grad():
        for module in model.modules():
            own = list(module.named_parameters(recurse=False))
            if isinstance(module, norms):
                for name, param in own:
                    param.copy_(
                        torch.randn(param.shape, generator=generator) * 0.05 + (1.0 if name == "weight" else 0.0)
                    )
                if isinstance(module, nn.BatchNorm2d) and module.running_mean is not None:
                    module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
                    module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
            else:
                for _, param in own:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return model.eval()


def mobilevt_model(name: str, seed: int) -> nn.Module:

    return well_scaled_random_(create_model(name), seed)


def fast_path(model: nn.Module) -> nn.Module:
    return model.eval().fuse().to(memory_format=torch.channels_last)


def timm_model(name: str, seed: int) -> nn.Module:
    import timm

    return well_scaled_random_(timm.create_model(name), seed)


class TransformersLogits(nn.Module):
    """A transformers vision model as images in, logits out (it returns an output object)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


def transformers_model(name: str, seed: int) -> nn.Module:
    import transformers

    config = transformers_backbone_config(name, num_labels=1000)
    if config is None:
        raise InvalidInputError(f"transformers has no counterpart of {name}")
    if name in _TRANSFORMERS_V1:
        model = transformers.MobileViTForImageClassification(config)
    else:
        model = transformers.MobileViTV2ForImageClassification(config)
    return TransformersLogits(well_scaled_random_(model, seed)).eval()


def transformers_backbone_config(backbone: str, **fields) -> object | None:
    """transformers' ``MobileViTConfig`` / ``MobileViTV2Config`` of a mobilevt backbone name
    (``mobilevit_xxs``, ``mobilevitv2_050`` ...), or None when transformers has none (v3)."""
    import transformers

    if backbone in _TRANSFORMERS_V1:
        return transformers.MobileViTConfig(**_TRANSFORMERS_V1[backbone], **fields)
    match = re.fullmatch(r"mobilevitv2_(\d{3})", backbone)
    if match is None:
        return None
    return transformers.MobileViTV2Config(width_multiplier=int(match.group(1)) / 100, **fields)
