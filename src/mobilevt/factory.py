"""``create_model``: build a registered model and load weights from any source."""
from __future__ import annotations

import logging
import os
from typing import Any

from torch import nn

from .registry import build_model, get_model_entry
from .weights.convert import check_shapes, convert_state_dict, detect_layout
from .weights.entries import PreprocessConfig, Weights
from .weights.loading import (
    Checkpoint,
    class_names_from_metadata,
    preprocess_from_metadata,
    read_checkpoint,
    resolve_source,
)

logger = logging.getLogger(__name__)

_HEAD_PREFIX = "head."


def create_model(
    name: str,
    *,
    weights: str | os.PathLike | Weights | None = None,
    num_classes: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build model ``name`` and optionally load weights into it.

    Args:
        name: a registered name (``mobilevt.list_models()``), optionally with a weights
            tag as in timm: ``"mobilevit_s.cvnets_in1k"``.
        weights: ``None`` (random init), ``"DEFAULT"``, a weights tag of the model
            (``"timm_in1k"``), a ``Weights`` entry, a local file (.safetensors, .pt,
            .pth, .bin) or model folder, an http(s) URL, or ``"hf-hub:<org>/<repo>"``.
        num_classes: classifier outputs. Default: the checkpoint's class count, else
            1000. When it differs from the checkpoint's, every weight but the classifier
            is loaded and the classifier is freshly initialised (fine-tuning).
        **kwargs: architecture options (``drop_rate``, ``drop_path_rate``,
            ``output_stride``, ``in_chans`` ...).

    The model carries ``model.preprocess`` (the evaluation preprocessing its weights
    expect) and ``model.pretrained_weights`` (the ``Weights`` entry, if any).
    """
    entry = get_model_entry(name)
    if weights is not None and not isinstance(weights, (str, os.PathLike, Weights)):
        raise TypeError(
            f"weights must be a weights tag, 'DEFAULT', a path, a URL, an 'hf-hub:' id or a Weights entry, "
            f"not {type(weights).__name__} {weights!r} (for the published weights use weights='DEFAULT')"
        )
    if weights is None and "." in name:
        weights = name.split(".", 1)[1]
    weights_entry = _find_entry(entry, weights)
    if entry.create is not None:  # a family with its own layouts and options (ViLT)
        return entry.create(entry, weights=weights_entry or weights, num_classes=num_classes, **kwargs)

    if weights is None:
        model = build_model(entry.name, num_classes=1000 if num_classes is None else num_classes, **kwargs)
        model.preprocess = entry.default_preprocess
        model.pretrained_weights = None
        return model

    if weights_entry is not None:
        checkpoint = read_checkpoint(resolve_source(weights_entry.source, weights_entry.sha256))
    else:
        checkpoint = read_checkpoint(resolve_source(weights))
    layout = detect_layout(checkpoint.state_dict)
    converted = convert_state_dict(checkpoint.state_dict, entry.name, layout)
    checkpoint_classes = converted[_HEAD_PREFIX + "weight"].shape[0] if _HEAD_PREFIX + "weight" in converted else 0
    if num_classes is None:
        num_classes = checkpoint_classes
    model = build_model(entry.name, num_classes=num_classes, **kwargs)
    if num_classes != checkpoint_classes:
        logger.warning(
            "%s: the checkpoint has %d classes, the model %d: loading everything but the classifier, "
            "which is freshly initialised",
            entry.name,
            checkpoint_classes,
            num_classes,
        )
        converted = {k: v for k, v in converted.items() if not k.startswith(_HEAD_PREFIX)}
        converted.update({k: v for k, v in model.state_dict().items() if k.startswith(_HEAD_PREFIX)})
    check_shapes(model, converted, layout, checkpoint.state_dict)
    model.load_state_dict(converted, strict=True)
    model.preprocess = _preprocess_for(entry, weights_entry, layout, checkpoint)
    model.pretrained_weights = weights_entry
    names = class_names_from_metadata(checkpoint.metadata)
    if names and len(names) == num_classes:
        model.class_names = names
    return model


def _find_entry(entry, weights) -> Weights | None:
    if isinstance(weights, Weights):
        return weights
    if isinstance(weights, str):
        if weights.upper() == "DEFAULT":
            if entry.default_weights is None:
                raise ValueError(f"model {entry.name!r} has no published weights")
            return entry.default_weights
        for candidate in entry.weights:
            if weights in (candidate.tag, candidate.name):
                return candidate
        looks_like_source = any(c in weights for c in "/\\:") or os.path.splitext(weights)[1] or os.path.exists(weights)
        if not looks_like_source:
            known = ", ".join(w.tag for w in entry.weights) or "none"
            raise ValueError(
                f"{weights!r} is neither a weights tag of {entry.name!r} (known: {known}) nor a file, URL or "
                "'hf-hub:' id"
            )
    return None


def _preprocess_for(entry, weights_entry: Weights | None, layout: str, checkpoint: Checkpoint) -> PreprocessConfig:
    if weights_entry is not None:
        return weights_entry.preprocess
    stored = preprocess_from_metadata(checkpoint.metadata)
    if stored is not None:
        return stored
    # An unlisted file: assume what that layout's publisher uses for this family.
    return dict(entry.preprocess_by_layout).get(layout, entry.default_preprocess)
