"""SSDLite checkpoints: their layouts, key maps and rules for the engine.

Layouts:

- ``cvnets``: apple/ml-cvnets ``SingleShotMaskDetector`` state dicts: ``encoder.*`` (the
  MobileViT classifier's ml-cvnets keys, see :mod:`mobilevt.weights.mobilevit_layouts`),
  ``extra_layers.os_<stride>.{dw_conv,pw_conv}.block.{conv,norm}``,
  ``extra_layers.os_-1.1.block.conv`` (global map), ``ssd_heads.<i>.proj_layer.block.{conv,norm}``
  and ``ssd_heads.<i>.loc_cls_layer.{dw_conv,pw_conv}.block.{conv,norm}`` (or
  ``loc_cls_layer.block.conv`` for the 1x1 head).
- ``mobilevt``: :class:`mobilevt.models.ssdlite.SSDLite`'s own keys.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..errors import InvalidInputError
from .entries import Weights
from .family import CheckpointFamily
from .mobilevit_layouts import MOBILEVIT_CHECKPOINTS
from .mobilevit_layouts import source_keys as classifier_source_keys

SSDLITE_LAYOUTS = ("mobilevt", "cvnets")

# mobilevt sub-module -> ml-cvnets sub-module, inside one extra layer or head
_CONV_NORM = {"conv": "block.conv", "bn": "block.norm"}
_SEPARABLE = {"dw": "dw_conv", "pw": "pw_conv"}


def _not_a_detector(state: Mapping[str, torch.Tensor]) -> str:
    sample = ", ".join(list(state)[:6])
    hint = ""
    try:
        hint = (
            f" It is a MobileViT classifier checkpoint ({MOBILEVIT_CHECKPOINTS.detect_layout(state)} layout): to "
            "start a detector from it, pass it as backbone_weights=... to create_model."
        )
    except Exception:  # noqa: BLE001 - not a classifier either
        pass
    return (
        f"this is not an SSDLite checkpoint (first keys: {sample}). Supported: ml-cvnets SSD detection checkpoints "
        f"(encoder.*, extra_layers.*, ssd_heads.*) and mobilevt SSDLite state dicts.{hint}"
    )


def _conv_norm(rest: str) -> str:
    first, _, tail = rest.partition(".")
    return f"{_CONV_NORM[first]}.{tail}"


def ssdlite_source_keys(layout: str, key: str, model: nn.Module) -> list[str]:
    """The key(s) in ``layout`` that hold the mobilevt SSDLite key ``key`` of ``model``."""
    if layout == "mobilevt":
        return [key]
    if layout != "cvnets":
        raise InvalidInputError(
            f"unknown SSDLite checkpoint layout {layout!r}; expected one of {', '.join(SSDLITE_LAYOUTS)}"
        )
    if key.startswith("backbone."):
        return ["encoder." + k for k in classifier_source_keys("cvnets", key[len("backbone.") :], model.backbone.arch)]
    parts = key.split(".")
    index, rest = int(parts[1]), ".".join(parts[2:])
    if parts[0] == "extra_layers":
        stride = model.config.output_strides[len(model.backbone_levels) + index]
        prefix = f"extra_layers.os_{stride}."
        if stride == -1:  # Sequential(AdaptiveAvgPool2d, ConvLayer2d)
            return [prefix + "1.block." + rest]
        part, _, tail = rest.partition(".")
        return [prefix + f"{_SEPARABLE[part]}." + _conv_norm(tail)]
    if parts[0] == "heads":
        prefix = f"ssd_heads.{index}."
        first, _, tail = rest.partition(".")
        if first == "proj":
            return [prefix + "proj_layer." + _conv_norm(tail)]
        # first == "pred"
        part, _, tail = tail.partition(".")
        if part in ("weight", "bias"):  # the 1x1 head: one ConvLayer2d
            return [prefix + f"loc_cls_layer.block.conv.{part}"]
        if part == "pw":  # pointwise conv with bias, no norm
            return [prefix + f"loc_cls_layer.pw_conv.block.conv.{tail}"]
        return [prefix + "loc_cls_layer.dw_conv." + _conv_norm(tail)]
    raise KeyError(f"no ml-cvnets key for {key!r}")


def ssdlite_head_keys(model: nn.Module) -> list[str]:
    """State-dict keys of the layers whose size depends on the class count (the last
    conv of every head)."""
    keys = []
    for name in model.state_dict():
        parts = name.split(".")
        if parts[0] == "heads" and parts[2] == "pred" and (parts[3] in ("weight", "bias") or parts[3] == "pw"):
            keys.append(name)
    return keys


def ssdlite_classes_in(converted: Mapping[str, torch.Tensor], model: nn.Module) -> int:
    """Class count (background included) of a converted state dict, from its first head."""
    weight_key = next(k for k in ssdlite_head_keys(model) if k.startswith("heads.0.") and k.endswith("weight"))
    return int(converted[weight_key].shape[0]) // model.heads[0].num_anchors - 4


def _coco_names(num_classes: int, weights: Weights | None, layout: str | None) -> list[str]:
    # 81 outputs of a random or ml-cvnets detector: COCO's, as every published one
    from ..data.coco import COCO_CLASSES_WITH_BACKGROUND

    if num_classes == len(COCO_CLASSES_WITH_BACKGROUND) and layout in (None, "cvnets"):
        return list(COCO_CLASSES_WITH_BACKGROUND)
    return []


SSDLITE_CHECKPOINTS = CheckpointFamily(
    name="ssdlite",
    layouts=(("mobilevt", "backbone.stem.conv.weight"), ("cvnets", "encoder.conv_1.block.conv.weight")),
    source_keys=ssdlite_source_keys,
    head_keys=ssdlite_head_keys,
    not_this_family=_not_a_detector,
    default_num_classes=81,
    classes_in=ssdlite_classes_in,
    default_names=_coco_names,
)
