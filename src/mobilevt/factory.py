"""``create_model``: build a registered model and load weights from any source."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from . import engine
from .errors import InvalidInputError
from .registry import ModelName, get_model_entry
from .weights.entries import Weights


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
        weights: ``None`` (random init, or the tag's weights when ``name`` has a tag),
            ``"none"`` (random init, keeping a tag's preprocessing: what the command line's
            ``--weights none`` passes), ``"DEFAULT"`` (the published weights, or the tag's),
            a weights tag of the model (``"timm_in1k"``), a ``Weights`` entry, a local file
            (.safetensors, .pt, .pth, .bin) or model folder, an http(s) URL, or
            ``"hf-hub:<org>/<repo>"``.
        num_classes: outputs (classes, or a VQA model's answers). Default: the
            checkpoint's, else the family's (1000 ImageNet classes, 21 PASCAL VOC, 81 COCO
            with background, 3129 VQAv2 answers). When it differs from the checkpoint's,
            every weight but the class-sized head is loaded and the head is freshly
            initialised (fine-tuning), with one warning.
        **kwargs: architecture options (``drop_rate``, ``drop_path_rate``,
            ``output_stride``, ``aspp_channels``, ``hidden_size`` ...), which override
            what the weights entry, a ``config.json`` or the file's metadata say; and for
            task models ``backbone_weights=`` (a classifier checkpoint for the backbone).

    Every family goes through the same engine (:mod:`mobilevt.engine`). The model
    carries ``model.preprocess`` (the evaluation preprocessing its weights expect),
    ``model.pretrained_weights`` (the ``Weights`` entry, if any) and the output names the
    checkpoint or its data set gives (``class_names``, or ``answers`` for ViLT).
    """
    entry = get_model_entry(name)
    if weights is not None and not isinstance(weights, (str, os.PathLike, Weights)):
        raise TypeError(
            f"weights must be a weights tag, 'DEFAULT', a path, a URL, an 'hf-hub:' id or a Weights entry, "
            f"not {type(weights).__name__} {weights!r} (for the published weights use weights='DEFAULT')"
        )
    tag = ModelName.parse(name).tag
    if is_random_weights(weights):
        model = engine.create(entry, None, num_classes=num_classes, **kwargs)
        if tag is not None:  # random weights, evaluated as the tagged weights would be
            model.preprocess = entry.get_weights(tag).preprocess
        return model
    if tag is not None and (weights is None or (isinstance(weights, str) and weights.upper() == "DEFAULT")):
        weights = tag
    weights_entry = _find_entry(entry, weights)
    return engine.create(entry, weights_entry or weights, num_classes=num_classes, **kwargs)


def is_random_weights(weights: object) -> bool:
    """``"none"`` (or ``"random"``): random initialisation, as ``weights=None``."""
    return isinstance(weights, str) and weights.lower() in ("none", "random")


def _find_entry(entry, weights) -> Weights | None:
    if isinstance(weights, Weights):
        return weights
    if isinstance(weights, str):
        if weights.upper() == "DEFAULT":
            if entry.default_weights is None:
                raise InvalidInputError(f"model {entry.name!r} has no published weights")
            return entry.default_weights
        found = entry.find_weights(weights)
        if found is not None:
            return found
        looks_like_source = any(c in weights for c in "/\\:") or os.path.splitext(weights)[1] or os.path.exists(weights)
        if not looks_like_source:
            known = ", ".join(w.tag for w in entry.weights) or "none"
            raise InvalidInputError(
                f"{weights!r} is neither a weights tag of {entry.name!r} (known: {known}) nor a file, URL or "
                "'hf-hub:' id"
            )
    return None
