"""DeepLabV3-MobileViT checkpoints: their layouts, key maps and rules for the engine.

Layouts:

- ``hf``: transformers' ``MobileViTForSemanticSegmentation`` / ``MobileViTV2ForSemanticSegmentation``
  (``mobilevit.`` or ``mobilevitv2.`` backbone keys, ``segmentation_head.aspp.convs.N`` ...,
  ``segmentation_head.classifier.convolution``), e.g. ``hf-hub:apple/deeplabv3-mobilevit-small``;
  a ``config.json`` beside the weights gives the output stride, ASPP rates and channels,
  and the class names;
- ``cvnets``: ml-cvnets' ``SegEncoderDecoder`` (``encoder.`` + the classifier's ml-cvnets keys,
  ``seg_head.aspp.aspp_layer.*``, ``seg_head.classifier.block.conv``, ``seg_head.aux_head.*``);
- ``mobilevt``: :class:`mobilevt.models.deeplabv3.DeepLabV3`'s own keys (``backbone.``,
  ``aspp.``, ``classifier.``, ``aux_head.``).

The auxiliary head is a training-only branch: its keys are dropped, with a log line, when
the model has none (transformers does the same).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from torch import nn

from ..errors import InvalidInputError
from .entries import Weights
from .family import CheckpointFamily, Mismatch, names_from_id2label
from .mobilevit_layouts import MOBILEVIT_CHECKPOINTS
from .mobilevit_layouts import source_keys as classifier_source_keys

logger = logging.getLogger(__name__)

DEEPLABV3_LAYOUTS = ("mobilevt", "hf", "cvnets")
_AUX_PREFIXES = {"mobilevt": "aux_head.", "cvnets": "seg_head.aux_head.", "hf": "segmentation_head.aux_head."}
ARCH_METADATA = "arch_options"  # save_weights metadata: the options that shape the model


def _not_a_segmenter(state: Mapping) -> str:
    try:
        classifier_layout = MOBILEVIT_CHECKPOINTS.detect_layout(state)
    except Exception:  # noqa: BLE001 - not a classifier either
        classifier_layout = None
    if classifier_layout is not None:
        return (
            f"this is a MobileViT image-classification checkpoint ({classifier_layout} layout), not a DeepLabV3 one: "
            "to start a segmentation model from it, pass it as backbone_weights=... (e.g. "
            "create_model('deeplabv3_mobilevit_s', backbone_weights='DEFAULT'))"
        )
    sample = ", ".join(list(state)[:6])
    return (
        f"this is not a DeepLabV3-MobileViT checkpoint (first keys: {sample}). Supported: transformers' "
        "MobileViT(V2)ForSemanticSegmentation, ml-cvnets segmentation checkpoints (encoder. / seg_head. keys) "
        "and mobilevt DeepLabV3 state dicts."
    )


def _conv_bn(rest: str, conv: str, norm: str) -> str:
    first, _, tail = rest.partition(".")
    return {"conv": conv, "bn": norm}[first] + "." + tail


def deeplabv3_source_keys(layout: str, key: str, arch) -> list[str]:
    """The key(s) in ``layout`` that hold the mobilevt DeepLabV3 key ``key`` (``arch``:
    the backbone's ``MobileViTArch``)."""
    if layout == "mobilevt":
        return [key]
    if layout not in ("hf", "cvnets"):
        raise InvalidInputError(
            f"unknown DeepLabV3 checkpoint layout {layout!r}; expected one of {', '.join(DEEPLABV3_LAYOUTS)}"
        )
    if key.startswith("backbone."):
        prefix = "encoder." if layout == "cvnets" else ""
        return [prefix + k for k in classifier_source_keys(layout, key[len("backbone.") :], arch)]
    hf = layout == "hf"
    conv, norm = ("convolution", "normalization") if hf else ("block.conv", "block.norm")
    head = "segmentation_head." if hf else "seg_head."
    aspp = head + ("aspp." if hf else "aspp.aspp_layer.")
    parts = key.split(".")
    if key.startswith("aspp.convs."):
        index, rest = parts[2], ".".join(parts[3:])
        if index == "4":  # image pooling branch
            pool = "conv_1x1." if hf else "aspp_pool.conv_1x1."
            return [aspp + f"convs.4.{pool}" + _conv_bn(rest, conv, norm)]
        return [aspp + f"convs.{index}." + _conv_bn(rest, conv, norm)]
    if key.startswith("aspp.project."):
        return [aspp + "project." + _conv_bn(key[len("aspp.project.") :], conv, norm)]
    if key.startswith("classifier."):
        return [head + "classifier." + conv + "." + parts[-1]]
    if key.startswith("aux_head.0."):
        return [head + "aux_head.0." + _conv_bn(key[len("aux_head.0.") :], conv, norm)]
    if key.startswith("aux_head.2."):
        return [head + "aux_head.2." + conv + "." + parts[-1]]
    raise KeyError(f"no source key for {key!r}")


def deeplabv3_options_from_hf_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """DeepLabV3 options and class names (``id2label`` in index order) of a transformers
    ``MobileViTConfig`` / ``MobileViTV2Config`` dict."""
    options: dict[str, Any] = {}
    if "output_stride" in config:
        options["output_stride"] = int(config["output_stride"])
    if "atrous_rates" in config:
        options["atrous_rates"] = tuple(int(r) for r in config["atrous_rates"])
    if "aspp_out_channels" in config:
        options["aspp_channels"] = int(config["aspp_out_channels"])
    return options, names_from_id2label(config)


def _drop_aux_head(layout: str, state: dict, model: nn.Module | None) -> dict:
    if model is None or model.aux_head is not None:
        return state
    aux = [k for k in state if k.startswith(_AUX_PREFIXES[layout])]
    if aux:
        logger.info(
            "%s: dropping the checkpoint's auxiliary head (%d tensors, used in training only)",
            getattr(model, "model_name", "DeepLabV3"),
            len(aux),
        )
    return {k: v for k, v in state.items() if not k.startswith(_AUX_PREFIXES[layout])}


def _explain(found: Mismatch) -> str:
    if any(k.startswith(_AUX_PREFIXES[found.layout]) for k in found.missing):
        return "the checkpoint has no auxiliary head: create the model with aux_head=False"
    if found.mis_shaped and all(not k.startswith("backbone.") for k in found.mis_shaped):
        width = found.model.classifier.in_channels
        return f"the ASPP head differs: pass its width as aspp_channels= (this model: {width})"
    return ""


def _head_keys(model: nn.Module) -> list[str]:
    keys = list(model.state_dict())
    return [k for k in keys if k.startswith("classifier.")] + [k for k in keys if k.startswith("aux_head.2.")]


def _options_from_metadata(metadata: Mapping[str, str]) -> dict[str, Any]:
    stored = metadata.get(ARCH_METADATA)
    if not stored:
        return {}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(stored).items()}


def _voc_names(num_classes: int, weights: Weights | None, layout: str | None) -> list[str]:
    # a 21-class head without names: PASCAL VOC's, as every published one
    from ..data.segmentation import VOC_CLASSES

    if num_classes == len(VOC_CLASSES) and (weights is None or weights.dataset.startswith("PASCAL VOC")):
        return list(VOC_CLASSES)
    return []


DEEPLABV3_CHECKPOINTS = CheckpointFamily(
    name="deeplabv3",
    layouts=(
        ("mobilevt", "aspp.project.conv.weight"),
        ("hf", "segmentation_head.aspp.project.convolution.weight"),
        ("cvnets", "seg_head.aspp.aspp_layer.project.block.conv.weight"),
    ),
    source_keys=lambda layout, key, model: deeplabv3_source_keys(layout, key, model.backbone.arch),
    head_keys=_head_keys,
    not_this_family=_not_a_segmenter,
    default_num_classes=21,
    prepare_state=_drop_aux_head,
    options_from_config=lambda config: deeplabv3_options_from_hf_config(config),
    options_from_metadata=_options_from_metadata,
    metadata_of=lambda model: {ARCH_METADATA: json.dumps(model.arch_options())},
    default_names=_voc_names,
    explain=_explain,
    identifying_keys=lambda model: [k for k in model.state_dict() if k.startswith("backbone.")],
)
