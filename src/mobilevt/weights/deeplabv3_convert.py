"""DeepLabV3-MobileViT checkpoints: layouts, key conversion, ``create_model`` and
``load_weights`` hooks.

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

As for the classifiers (:mod:`mobilevt.weights.convert`), conversion pulls every key of
the target model from the checkpoint and every checkpoint key must be used, so loading is
strict. One exception: the auxiliary head is a training-only branch, so its keys are
dropped, with a log line, when the model has none (transformers does the same).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Optional
from urllib.parse import urlparse

import torch
from torch import nn

from .convert import CheckpointMismatchError, detect_layout, mismatch_lines, source_keys
from .entries import PreprocessConfig, Weights
from .loading import (
    HF_PREFIX,
    Checkpoint,
    class_names_from_metadata,
    hub_file,
    preprocess_from_metadata,
    read_checkpoint,
    resolve_source,
)

logger = logging.getLogger(__name__)

DEEPLABV3_LAYOUTS = ("mobilevt", "hf", "cvnets")

_SIGNATURES = (
    ("mobilevt", "aspp.project.conv.weight"),
    ("hf", "segmentation_head.aspp.project.convolution.weight"),
    ("cvnets", "seg_head.aspp.aspp_layer.project.block.conv.weight"),
)
_AUX_PREFIXES = {"mobilevt": "aux_head.", "cvnets": "seg_head.aux_head.", "hf": "segmentation_head.aux_head."}
_CLASSIFIER_KEYS = ("classifier.", "aux_head.2.")
ARCH_METADATA = "arch_options"  # save_weights metadata: the options that shape the model


def detect_deeplabv3_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Name the layout of a DeepLabV3 state dict: one of ``DEEPLABV3_LAYOUTS``."""
    for layout, signature in _SIGNATURES:
        if signature in state_dict:
            return layout
    try:
        classifier_layout = detect_layout(state_dict)
    except CheckpointMismatchError:
        classifier_layout = None
    if classifier_layout is not None:
        raise CheckpointMismatchError(
            f"this is a MobileViT image-classification checkpoint ({classifier_layout} layout), not a DeepLabV3 one: "
            "to start a segmentation model from it, pass it as backbone_weights=... (e.g. "
            "create_model('deeplabv3_mobilevit_s', backbone_weights='DEFAULT'))"
        )
    sample = ", ".join(list(state_dict)[:6])
    raise CheckpointMismatchError(
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
        raise ValueError(f"unknown DeepLabV3 checkpoint layout {layout!r}; expected one of {', '.join(DEEPLABV3_LAYOUTS)}")
    if key.startswith("backbone."):
        prefix = "encoder." if layout == "cvnets" else ""
        return [prefix + k for k in source_keys(layout, key[len("backbone.") :], arch)]
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


def convert_deeplabv3_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module, layout: Optional[str] = None, note: str = ""
) -> dict[str, torch.Tensor]:
    """Convert a DeepLabV3 state dict of any supported layout to the keys of ``model``
    (a :class:`~mobilevt.models.deeplabv3.DeepLabV3`, possibly on the meta device).

    Raises ``CheckpointMismatchError`` naming the missing and unexpected keys."""
    state = dict(state_dict)
    layout = layout or detect_deeplabv3_layout(state)
    name = getattr(model, "model_name", "DeepLabV3")
    if model.aux_head is None:
        aux = [k for k in state if k.startswith(_AUX_PREFIXES[layout])]
        if aux:
            logger.info("%s: dropping the checkpoint's auxiliary head (%d tensors, used in training only)", name, len(aux))
            state = {k: v for k, v in state.items() if k not in set(aux)}
    arch = model.backbone.arch
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []
    for key in model.state_dict():
        sources = deeplabv3_source_keys(layout, key, arch)
        if all(s in state for s in sources):
            tensors = [state[s] for s in sources]
            out[key] = tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=0)
            used.update(sources)
        elif key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(0, dtype=torch.long)  # a counter, not a weight
        else:
            missing.extend(s for s in sources if s not in state)
    unexpected = [k for k in state if k not in used]
    if missing or unexpected:
        if not note and any(k.startswith(_AUX_PREFIXES[layout]) for k in missing):
            note = "the checkpoint has no auxiliary head: create the model with aux_head=False"
        lines = mismatch_lines(name, layout, missing, unexpected, [], note or None)
        raise CheckpointMismatchError("\n".join(lines), missing, unexpected)
    return out


def _check_shapes(model: nn.Module, state: Mapping[str, torch.Tensor], layout: str, options: Mapping[str, Any]) -> None:
    target = model.state_dict()
    mis_shaped = [
        f"{k} {list(v.shape)} vs model {list(target[k].shape)}" for k, v in state.items() if v.shape != target[k].shape
    ]
    if not mis_shaped:
        return
    name = getattr(model, "model_name", "DeepLabV3")
    if all(not k.startswith("backbone.") for k in mis_shaped):
        fix = f"the ASPP head differs: pass its width as aspp_channels= (this model: {options.get('aspp_channels')})"
    else:
        guess = _guess_deeplabv3_variant(state)
        fix = f"the checkpoint's backbone matches {guess!r}: create that model instead" \
            if guess and guess != name else None
    lines = mismatch_lines(name, layout, [], [], mis_shaped, fix)
    raise CheckpointMismatchError("\n".join(lines), mis_shaped=mis_shaped)


def _guess_deeplabv3_variant(state: Mapping[str, torch.Tensor]) -> Optional[str]:
    from ..registry import get_model_entry, list_models

    backbone = {k: v for k, v in state.items() if k.startswith("backbone.")}
    for name in list_models("deeplabv3_*"):
        with torch.device("meta"):
            target = get_model_entry(name).builder().state_dict()
        if all(k in target and target[k].shape == v.shape for k, v in backbone.items()):
            return name
    return None


# ---------------------------------------------------------------------------------------
# Sources with a config.json (Hugging Face folders and hub repositories)


def _hub_config(repo: str) -> Optional[dict[str, Any]]:
    try:
        path = hub_file(repo, "config.json")
    except Exception as err:  # offline, no config in the repo ...: the architecture comes from the defaults
        logger.info("no config.json for %s (%s): using the model's default architecture", repo, type(err).__name__)
        return None
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _resolve(weights: str | os.PathLike | Weights) -> tuple[Path, Optional[dict[str, Any]]]:
    sha256 = None
    if isinstance(weights, Weights):
        weights, sha256 = weights.source, weights.sha256
    text = os.fspath(weights)
    if text.startswith(HF_PREFIX):
        path = resolve_source(text)
        return path, _hub_config(text[len(HF_PREFIX) :])
    if urlparse(text).scheme in ("http", "https", "file"):
        return resolve_source(text, sha256), None
    path = Path(text).expanduser()
    folder = path if path.is_dir() else path.parent
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else None
    return resolve_source(path), config


def arch_from_hf_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """DeepLabV3 options and class names (``id2label`` in index order) of a transformers
    ``MobileViTConfig`` / ``MobileViTV2Config`` dict."""
    options: dict[str, Any] = {}
    if "output_stride" in config:
        options["output_stride"] = int(config["output_stride"])
    if "atrous_rates" in config:
        options["atrous_rates"] = tuple(int(r) for r in config["atrous_rates"])
    if "aspp_out_channels" in config:
        options["aspp_channels"] = int(config["aspp_out_channels"])
    names: list[str] = []
    id2label = config.get("id2label")
    if isinstance(id2label, Mapping) and id2label:
        labels = {int(k): str(v) for k, v in id2label.items()}
        if sorted(labels) == list(range(len(labels))):
            names = [labels[i] for i in range(len(labels))]
    return options, names


# ---------------------------------------------------------------------------------------
# create_model / load_weights hooks


def _load_backbone(model: nn.Module, backbone_name: str, backbone_weights: Any) -> Optional[PreprocessConfig]:
    """Load a classifier checkpoint into the backbone; returns its preprocessing."""
    from ..factory import create_model

    classifier = create_model(backbone_name, weights=backbone_weights)
    state = {k: v for k, v in classifier.state_dict().items() if not k.startswith(("final_conv.", "head."))}
    model.backbone.load_state_dict(state, strict=True)
    return getattr(classifier, "preprocess", None)


def _segmentation_preprocess(base: PreprocessConfig, like: PreprocessConfig) -> PreprocessConfig:
    """``base`` (the model's 512x512 segmentation input) with ``like``'s normalisation."""
    return PreprocessConfig(
        base.input_size, base.resize_size, like.interpolation, like.mean, like.std, like.channel_order,
        crop_rounding=base.crop_rounding,
    )


def create_deeplabv3(
    entry,
    weights=None,
    num_classes: Optional[int] = None,
    backbone_weights: Any = None,
    **kwargs: Any,
) -> nn.Module:
    """``create_model`` for ``deeplabv3_*``: build the model and load weights from any source.

    Args:
        entry: the registry entry.
        weights: ``None``, a ``Weights`` entry, or a source (file, folder, URL, ``hf-hub:``
            id) of a DeepLabV3 checkpoint in any supported layout.
        num_classes: segmentation classes; default the checkpoint's, else 21. When it
            differs from the checkpoint's, everything but the classifiers is loaded and they
            are freshly initialised (fine-tuning).
        backbone_weights: with ``weights=None``, a classifier weights tag / source for the
            backbone (``"DEFAULT"``, ``"cvnets_in1k"``, a file ...): the usual start of
            segmentation training.
        **kwargs: architecture options of :func:`mobilevt.models.deeplabv3.build_deeplabv3`
            (``output_stride``, ``aspp_channels``, ``atrous_rates``, ``aux_head``,
            ``upsample`` ...). They override what the weights entry, a ``config.json`` or
            a mobilevt checkpoint's metadata say.
    """
    from ..data.segmentation import VOC_CLASSES

    backbone_name = entry.name[len("deeplabv3_") :]
    if weights is None:
        model = entry.builder(num_classes=21 if num_classes is None else num_classes, **kwargs)
        model.model_name = entry.name
        model.pretrained_weights = None
        model.preprocess = entry.default_preprocess
        if model.num_classes == len(VOC_CLASSES):  # the published heads' classes (as SSDLite's 81: COCO)
            model.class_names = list(VOC_CLASSES)
        if backbone_weights is not None:
            like = _load_backbone(model, backbone_name, backbone_weights)
            if like is not None:
                model.preprocess = _segmentation_preprocess(entry.default_preprocess, like)
        return model
    if backbone_weights is not None:
        raise ValueError("pass either weights= (a whole DeepLabV3 checkpoint) or backbone_weights=, not both")

    from ..models.deeplabv3 import WEIGHTS_ARCH

    weights_entry = weights if isinstance(weights, Weights) else None
    path, config = _resolve(weights)
    checkpoint = read_checkpoint(path)
    layout = detect_deeplabv3_layout(checkpoint.state_dict)
    options: dict[str, Any] = {}
    names: list[str] = []
    if weights_entry is not None:
        options.update(WEIGHTS_ARCH.get(weights_entry.tag, {}))
    if config is not None and layout == "hf":
        config_options, names = arch_from_hf_config(config)
        options.update(config_options)
    stored = checkpoint.metadata.get(ARCH_METADATA)
    if stored:
        options.update({k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(stored).items()})
    options.update(kwargs)
    options.setdefault("aux_head", False)

    with torch.device("meta"):
        skeleton = entry.builder(**options)
    skeleton.model_name = entry.name
    converted = convert_deeplabv3_state_dict(checkpoint.state_dict, skeleton, layout)
    checkpoint_classes = converted["classifier.weight"].shape[0]
    if num_classes is None:
        num_classes = checkpoint_classes
    model = entry.builder(num_classes=num_classes, **options)
    model.model_name = entry.name
    if num_classes != checkpoint_classes:
        logger.warning(
            "%s: the checkpoint has %d classes, the model %d: loading everything but the classifier, which is "
            "freshly initialised",
            entry.name, checkpoint_classes, num_classes,
        )
        converted = {k: v for k, v in converted.items() if not k.startswith(_CLASSIFIER_KEYS)}
        converted.update({k: v for k, v in model.state_dict().items() if k.startswith(_CLASSIFIER_KEYS)})
        names = []
    _check_shapes(model, converted, layout, options)
    model.load_state_dict(converted, strict=True)
    model.pretrained_weights = weights_entry
    if weights_entry is not None:
        model.preprocess = weights_entry.preprocess
    else:
        model.preprocess = preprocess_from_metadata(checkpoint.metadata) or _preprocess_for_layout(entry, layout)
    names = names or class_names_from_metadata(checkpoint.metadata) or []
    if not names and num_classes == len(VOC_CLASSES) and (weights_entry is None or weights_entry.dataset.startswith(
            "PASCAL VOC")):
        names = list(VOC_CLASSES)  # a 21-class head without names: PASCAL VOC's, as every published one
    if names and len(names) == num_classes:
        model.class_names = names
    return model


def _preprocess_for_layout(entry, layout: str) -> PreprocessConfig:
    # an unlisted checkpoint: what that layout's publisher feeds this backbone family
    from ..registry import get_model_entry

    backbone = get_model_entry(entry.name[len("deeplabv3_") :])
    like = dict(backbone.preprocess_by_layout).get(layout, backbone.default_preprocess)
    return _segmentation_preprocess(entry.default_preprocess, like)


def load_deeplabv3(model: nn.Module, checkpoint: Checkpoint) -> None:
    """``load_weights`` for DeepLabV3 models: any supported layout, strict."""
    layout = detect_deeplabv3_layout(checkpoint.state_dict)
    converted = convert_deeplabv3_state_dict(checkpoint.state_dict, model, layout)
    _check_shapes(model, converted, layout, model.arch_options())
    model.load_state_dict(converted, strict=True)
