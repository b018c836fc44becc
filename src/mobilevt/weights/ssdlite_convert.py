"""SSDLite checkpoints: layouts, key conversion, ``create_model("ssdlite_...", weights=...)``
and ``load_weights`` for detectors.

Layouts:

- ``cvnets``: apple/ml-cvnets ``SingleShotMaskDetector`` state dicts: ``encoder.*`` (the
  MobileViT classifier's ml-cvnets keys, see :mod:`mobilevt.weights.convert`),
  ``extra_layers.os_<stride>.{dw_conv,pw_conv}.block.{conv,norm}``,
  ``extra_layers.os_-1.1.block.conv`` (global map), ``ssd_heads.<i>.proj_layer.block.{conv,norm}``
  and ``ssd_heads.<i>.loc_cls_layer.{dw_conv,pw_conv}.block.{conv,norm}`` (or
  ``loc_cls_layer.block.conv`` for the 1x1 head).
- ``mobilevt``: :class:`mobilevt.models.ssdlite.SSDLite`'s own keys.

As for the classifiers, conversion pulls: every key of the target model names its source
key, every source key must be used, so a checkpoint of another backbone or task is
refused with the keys named.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import torch
from torch import nn

from .convert import CheckpointMismatchError, detect_layout, mismatch_lines, source_keys, unwrap_state_dict
from .entries import Weights
from .loading import (
    Checkpoint,
    class_names_from_metadata,
    preprocess_from_metadata,
    read_checkpoint,
    resolve_source,
)

logger = logging.getLogger(__name__)

SSDLITE_LAYOUTS = ("mobilevt", "cvnets")
_SIGNATURES = (("mobilevt", "backbone.stem.conv.weight"), ("cvnets", "encoder.conv_1.block.conv.weight"))

# mobilevt sub-module -> ml-cvnets sub-module, inside one extra layer or head
_CONV_NORM = {"conv": "block.conv", "bn": "block.norm"}
_SEPARABLE = {"dw": "dw_conv", "pw": "pw_conv"}


def detect_ssdlite_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Name the layout of an SSDLite state dict: one of ``SSDLITE_LAYOUTS``."""
    for layout, signature in _SIGNATURES:
        if signature in state_dict:
            return layout
    sample = ", ".join(list(state_dict)[:6])
    hint = ""
    try:
        hint = (
            f" It is a MobileViT classifier checkpoint ({detect_layout(state_dict)} layout): to start a detector from "
            "it, pass it as backbone_weights=... to create_model."
        )
    except CheckpointMismatchError:
        pass
    raise CheckpointMismatchError(
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
        raise ValueError(f"unknown SSDLite checkpoint layout {layout!r}; expected one of {', '.join(SSDLITE_LAYOUTS)}")
    if key.startswith("backbone."):
        return ["encoder." + k for k in source_keys("cvnets", key[len("backbone.") :], model.backbone.arch)]
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


def convert_ssdlite_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module, layout: str | None = None
) -> dict[str, torch.Tensor]:
    """Convert an SSDLite state dict of any supported layout to ``model``'s keys.

    Raises ``CheckpointMismatchError`` naming the missing and unexpected keys when the
    checkpoint has another structure (backbone, heads, output strides).
    """
    state = unwrap_state_dict(state_dict)
    layout = layout or detect_ssdlite_layout(state)
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []
    for key in model.state_dict():
        sources = ssdlite_source_keys(layout, key, model)
        if all(s in state for s in sources):
            out[key] = state[sources[0]]
            used.update(sources)
        elif key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(0, dtype=torch.long)  # a counter, not a weight
        else:
            missing.extend(s for s in sources if s not in state)
    unexpected = [k for k in state if k not in used]
    if missing or unexpected:
        raise CheckpointMismatchError(
            _message(model, layout, missing, unexpected, [], state), missing, unexpected
        )
    return out


def _message(
    model: nn.Module, layout: str, missing: list[str], unexpected: list[str], mis_shaped: list[str],
    state: Mapping[str, torch.Tensor] | None,
) -> str:
    name = getattr(model, "model_name", type(model).__name__)
    guess = guess_ssdlite_variant(state, layout) if state is not None else None
    fix = f"the checkpoint matches {guess!r}: create that model instead" if guess and guess != name else None
    return "\n".join(mismatch_lines(name, layout, missing, unexpected, mis_shaped, fix))


def guess_ssdlite_variant(state: Mapping[str, torch.Tensor], layout: str) -> str | None:
    """The registered SSDLite detector whose keys and (class-independent) shapes fit
    ``state``, if any."""
    from ..models.ssdlite import TASK, prediction_keys
    from ..registry import build_model, list_models

    for name in list_models(task=TASK):
        with torch.device("meta"):
            candidate = build_model(name)
        skip = set(prediction_keys(candidate))
        try:
            for key, tensor in candidate.state_dict().items():
                if key in skip or key.endswith("num_batches_tracked"):
                    continue
                sources = ssdlite_source_keys(layout, key, candidate)
                if not all(s in state for s in sources) or state[sources[0]].shape != tensor.shape:
                    break
            else:
                return name
        except (KeyError, ValueError, IndexError):
            continue
    return None


def check_ssdlite_shapes(
    model: nn.Module, state: Mapping[str, torch.Tensor], layout: str, source: Mapping[str, torch.Tensor] | None = None
) -> None:
    """Raise ``CheckpointMismatchError`` naming every key whose shape differs from ``model``'s."""
    target = model.state_dict()
    mis_shaped = [
        f"{k} {list(v.shape)} vs model {list(target[k].shape)}"
        for k, v in state.items()
        if k in target and v.shape != target[k].shape
    ]
    if mis_shaped:
        raise CheckpointMismatchError(_message(model, layout, [], [], mis_shaped, source), mis_shaped=mis_shaped)


def checkpoint_num_classes(converted: Mapping[str, torch.Tensor], model: nn.Module) -> int:
    """Class count (background included) of a converted state dict, from its first head."""
    from ..models.ssdlite import prediction_keys

    weight_key = next(k for k in prediction_keys(model) if k.startswith("heads.0.") and k.endswith("weight"))
    anchors = model.heads[0].num_anchors
    return int(converted[weight_key].shape[0]) // anchors - 4


def load_ssdlite(model: nn.Module, checkpoint: Checkpoint) -> None:
    """``mobilevt.load_weights`` for detectors: strict, any supported layout."""
    layout = detect_ssdlite_layout(checkpoint.state_dict)
    converted = convert_ssdlite_state_dict(checkpoint.state_dict, model, layout)
    check_ssdlite_shapes(model, converted, layout, checkpoint.state_dict)
    model.load_state_dict(converted, strict=True)


def create_ssdlite(
    entry,
    weights: str | os.PathLike | Weights | None = None,
    num_classes: int | None = None,
    backbone_weights: str | os.PathLike | Weights | None = None,
    **kwargs: Any,
) -> nn.Module:
    """``create_model`` for SSDLite detectors.

    Args:
        weights: a detection checkpoint (``Weights`` entry, file, URL or ``hf-hub:`` id) in
            the ml-cvnets or mobilevt layout.
        num_classes: class logits including the background. Default: the checkpoint's,
            else 81 (COCO). When it differs from the checkpoint's, everything but the last
            conv of each head is loaded (fine-tuning on another label set).
        backbone_weights: instead of ``weights``, start the backbone from a classifier
            checkpoint of the backbone model (``"DEFAULT"``, a tag such as ``"cvnets_in1k"``,
            or any source ``create_model`` takes): how ml-cvnets trains its detectors.
        **kwargs: ``SSDLiteConfig`` fields (``score_threshold``, ``output_strides`` ...) and
            backbone options (``drop_path_rate`` ...).
    """
    from ..models.ssdlite import COCO_CLASSES_WITH_BACKGROUND, prediction_keys
    from ..registry import build_model

    if weights is not None and backbone_weights is not None:
        raise ValueError("give weights (a detection checkpoint) or backbone_weights (a classifier checkpoint), not both")
    if weights is None:
        model = build_model(entry.name, num_classes=81 if num_classes is None else num_classes, **kwargs)
        model.preprocess = entry.default_preprocess
        model.pretrained_weights = None
        if model.num_classes == 81:
            model.class_names = list(COCO_CLASSES_WITH_BACKGROUND)
        if backbone_weights is not None:
            _load_backbone(model, backbone_weights)
        return model

    weights_entry = weights if isinstance(weights, Weights) else None
    if weights_entry is not None:
        checkpoint = read_checkpoint(resolve_source(weights_entry.source, weights_entry.sha256))
    else:
        checkpoint = read_checkpoint(resolve_source(weights))
    layout = detect_ssdlite_layout(checkpoint.state_dict)
    with torch.device("meta"):  # the structure alone, to read the checkpoint's class count
        skeleton = build_model(entry.name, **kwargs)
    converted = convert_ssdlite_state_dict(checkpoint.state_dict, skeleton, layout)
    check_ssdlite_shapes(skeleton, {k: v for k, v in converted.items() if k not in prediction_keys(skeleton)},
                         layout, checkpoint.state_dict)
    checkpoint_classes = checkpoint_num_classes(converted, skeleton)
    if num_classes is None:
        num_classes = checkpoint_classes
    model = build_model(entry.name, num_classes=num_classes, **kwargs)
    if num_classes != checkpoint_classes:
        logger.warning(
            "%s: the checkpoint has %d classes, the model %d: loading everything but the heads' last convs, "
            "which are freshly initialised", entry.name, checkpoint_classes, num_classes,
        )
        fresh = model.state_dict()
        for key in prediction_keys(model):
            converted[key] = fresh[key]
    check_ssdlite_shapes(model, converted, layout, checkpoint.state_dict)
    model.load_state_dict(converted, strict=True)
    stored = preprocess_from_metadata(checkpoint.metadata)
    if weights_entry is not None:
        model.preprocess = weights_entry.preprocess
    elif stored is not None:
        model.preprocess = stored
    else:
        model.preprocess = dict(entry.preprocess_by_layout).get(layout, entry.default_preprocess)
    model.pretrained_weights = weights_entry
    names = class_names_from_metadata(checkpoint.metadata)
    if names and len(names) == num_classes:
        model.class_names = names
    elif layout == "cvnets" and num_classes == 81:
        model.class_names = list(COCO_CLASSES_WITH_BACKGROUND)
    return model


def _load_backbone(model: nn.Module, source: str | os.PathLike | Weights) -> None:
    import mobilevt

    classifier = mobilevt.create_model(model.backbone_name, weights=source)
    state = {
        k: v for k, v in classifier.state_dict().items() if not k.startswith(("head.", "final_conv."))
    }
    model.backbone.load_state_dict(state, strict=True)
    model.backbone_preprocess = classifier.preprocess
