"""The one engine: every model family is created, loaded and saved here; ``weights/``
reads and converts checkpoints and knows nothing of the registry.

``create_model(name, weights=...)`` and ``load_weights(model, source)`` take the same
steps for every family: read the source safely (:func:`~mobilevt.weights.loading.read_source`),
detect its layout, gather the architecture options (the weights entry, ``config.json``,
the file's metadata, then the caller's keywords), convert the keys by pulling them, check
the shapes, load strictly, and attach what the checkpoint carries (preprocessing, class
or answer names). What differs by family is data: its
:class:`~mobilevt.weights.family.CheckpointFamily`.

One rule for every family: a ``num_classes`` other than the checkpoint's loads everything
but the class-sized head keys, which stay freshly initialised (one warning); a checkpoint
of another variant is refused with its keys named and, when one fits, the variant to
create instead.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from .errors import InvalidInputError
from .fileio import atomic_path
from .registry import ModelEntry, get_model_entry, list_models
from .weights.entries import PreprocessConfig, Weights
from .weights.family import CheckpointFamily, Mismatch
from .weights.loading import Checkpoint, class_names_from_metadata, preprocess_from_metadata, read_source
from .weights.state_dicts import CheckpointMismatchError, format_keys, mismatch_lines, unwrap_state_dict

logger = logging.getLogger(__name__)


def family_of(entry: ModelEntry) -> CheckpointFamily:
    if entry.checkpoints is None:
        raise InvalidInputError(
            f"model {entry.name!r} has no checkpoint layouts: it can only be created with random weights"
        )
    return entry.checkpoints


# ---------------------------------------------------------------------------------------
# Building


def build(entry: ModelEntry, options: Mapping[str, Any], num_classes: int | None = None) -> nn.Module:
    """``entry``'s model with builder ``options`` (and ``num_classes`` when given)."""
    family = family_of(entry) if entry.checkpoints is not None else None
    keywords = dict(options)
    if num_classes is not None:
        keywords[family.num_classes_option if family else "num_classes"] = num_classes
    model = entry.builder(**keywords)
    model.model_name = entry.name
    return model


def _skeleton(entry: ModelEntry, options: Mapping[str, Any], num_classes: int | None = None) -> nn.Module:
    with torch.device("meta"):  # the structure alone: keys and shapes, no memory
        return build(entry, options, num_classes)


# ---------------------------------------------------------------------------------------
# Converting and checking


def convert(
    family: CheckpointFamily, checkpoint: Checkpoint, model: nn.Module, layout: str | None = None
) -> dict[str, torch.Tensor]:
    """``checkpoint``'s tensors under ``model``'s keys. Every model key names the
    checkpoint key(s) holding it, and every checkpoint key must be used: otherwise
    ``CheckpointMismatchError`` names the missing and unexpected keys."""
    layout = layout or family.detect_layout(checkpoint.state_dict)
    state = family.prepare_state(layout, dict(checkpoint.state_dict), model)
    out: dict[str, torch.Tensor] = {}
    used = set(family.ignored_keys.get(layout, ()))
    missing: list[str] = []
    for key in model.state_dict():
        sources = family.source_keys(layout, key, model)
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
        raise mismatch_error(family, model, layout, checkpoint, missing, unexpected, [])
    return out


def check_shapes(
    family: CheckpointFamily,
    model: nn.Module,
    converted: Mapping[str, torch.Tensor],
    layout: str,
    checkpoint: Checkpoint,
    skip: tuple[str, ...] = (),
) -> None:
    """Raise ``CheckpointMismatchError`` naming every key whose shape differs from ``model``'s."""
    target = model.state_dict()
    mis_shaped = [
        f"{k} {list(v.shape)} vs model {list(target[k].shape)}"
        for k, v in converted.items()
        if k in target and k not in skip and v.shape != target[k].shape
    ]
    if mis_shaped:
        raise mismatch_error(family, model, layout, checkpoint, [], [], mis_shaped)


def mismatch_error(
    family: CheckpointFamily,
    model: nn.Module,
    layout: str,
    checkpoint: Checkpoint,
    missing: list[str],
    unexpected: list[str],
    mis_shaped: list[str],
) -> CheckpointMismatchError:
    name = str(getattr(model, "model_name", type(model).__name__))
    found = Mismatch(name, layout, checkpoint.state_dict, missing, unexpected, mis_shaped, model, checkpoint)
    fixes = [family.explain(found)]
    guess = guess_variant(family, checkpoint.state_dict, layout)
    if guess and guess != name:
        fixes.append(f"the checkpoint matches {guess!r}: create that model instead")
    fix = "; ".join(f for f in fixes if f) or None
    lines = mismatch_lines(name, layout, missing, unexpected, mis_shaped, fix)
    return CheckpointMismatchError("\n".join(lines), missing, unexpected, mis_shaped)


def guess_variant(family: CheckpointFamily, state: Mapping[str, torch.Tensor], layout: str) -> str | None:
    """The registered model of ``family`` whose identifying keys all sit in ``state`` with
    the right sizes (numel and trailing dimensions), if any."""
    for name in list_models():
        entry = get_model_entry(name)
        if entry.checkpoints is not family:
            continue
        try:
            candidate = _skeleton(entry, {})
            if _fits(family, candidate, state, layout):
                return name
        except (KeyError, ValueError, IndexError, AttributeError, CheckpointMismatchError):
            continue
    return None


def _fits(family: CheckpointFamily, candidate: nn.Module, state: Mapping[str, torch.Tensor], layout: str) -> bool:
    target = candidate.state_dict()
    head = set(family.head_keys(candidate))
    keys = family.identifying_keys(candidate) if family.identifying_keys else [k for k in target if k not in head]
    state = family.prepare_state(layout, dict(state), candidate)
    for key in keys:
        if key.endswith("num_batches_tracked"):
            continue
        sources = family.source_keys(layout, key, candidate)
        if not all(s in state for s in sources):
            return False
        numel = sum(state[s].numel() for s in sources)
        if numel != target[key].numel() or state[sources[0]].shape[1:] != target[key].shape[1:]:
            return False
    return True


# ---------------------------------------------------------------------------------------
# create_model


def create(
    entry: ModelEntry,
    weights: str | os.PathLike | Weights | None = None,
    num_classes: int | None = None,
    backbone_weights: str | os.PathLike | Weights | None = None,
    **options: Any,
) -> nn.Module:
    """``mobilevt.create_model`` for any family, ``weights`` being ``None``, a ``Weights``
    entry or a source (file, folder, URL, ``hf-hub:`` id)."""
    if backbone_weights is not None:
        if weights is not None:
            raise InvalidInputError(
                "pass either weights= (a whole checkpoint of this model) or backbone_weights= "
                "(a classifier checkpoint for its backbone), not both"
            )
        if entry.backbone is None:
            raise InvalidInputError(
                f"model {entry.name!r} has no separate backbone: pass weights= instead of backbone_weights="
            )
    if weights is None:
        return _create_random(entry, num_classes, backbone_weights, options)
    return _create_from_checkpoint(entry, weights, num_classes, options)


def _create_random(entry: ModelEntry, num_classes: int | None, backbone_weights: Any, options: dict) -> nn.Module:
    family = entry.checkpoints
    default = family.default_num_classes if family is not None else 1000
    model = build(entry, options, default if num_classes is None else num_classes)
    model.preprocess = entry.default_preprocess
    model.pretrained_weights = None
    if family is not None:
        _attach_names(family, model, [], _num_outputs(family, model), None, None)
    if backbone_weights is not None:
        classifier = create(get_model_entry(entry.backbone), weights=backbone_weights)
        backbone_keys = model.backbone.state_dict()
        model.backbone.load_state_dict(
            {k: v for k, v in classifier.state_dict().items() if k in backbone_keys}, strict=True
        )
        model.preprocess = entry.default_preprocess.with_normalisation_of(classifier.preprocess)
    return model


def _create_from_checkpoint(entry: ModelEntry, weights: Any, num_classes: int | None, kwargs: dict) -> nn.Module:
    family = family_of(entry)
    weights_entry = weights if isinstance(weights, Weights) else None
    checkpoint = read_source(weights, with_config=family.options_from_config is not None)
    layout = family.detect_layout(checkpoint.state_dict)
    options, names = _options(family, entry, weights_entry, checkpoint, layout)
    options.update(kwargs)
    user_names = options.pop(family.names_attribute, None)
    skeleton = _skeleton(entry, options)
    converted = convert(family, checkpoint, skeleton, layout)
    head = tuple(family.head_keys(skeleton))
    check_shapes(family, skeleton, converted, layout, checkpoint, skip=head)
    checkpoint_classes = _classes_in(family, converted, skeleton)
    num_classes = checkpoint_classes if num_classes is None else num_classes
    if num_classes != checkpoint_classes:
        logger.warning(
            "%s: the checkpoint has %d classes, the model %d: loading everything but the class-sized head (%s), "
            "which is freshly initialised",
            entry.name,
            checkpoint_classes,
            num_classes,
            format_keys(list(head), 4),
        )
        model = build(entry, options, num_classes)
        fresh = model.state_dict()
        converted.update({k: fresh[k] for k in family.head_keys(model)})
        names = []
    else:
        # the skeleton already has the checkpoint's class count unless the builder's default differs
        model = skeleton if _num_outputs(family, skeleton) == num_classes else _skeleton(entry, options, num_classes)
        if not _assignable(model):
            model = build(entry, options, num_classes)
    model = _load(family, model, converted, layout, checkpoint)
    model.pretrained_weights = weights_entry
    model.preprocess = _preprocess(entry, weights_entry, layout, checkpoint)
    if user_names is not None:
        setattr(model, family.names_attribute, list(user_names))
    else:
        _attach_names(family, model, names, num_classes, weights_entry, layout)
    return model


def _options(
    family: CheckpointFamily, entry: ModelEntry, weights_entry: Weights | None, checkpoint: Checkpoint, layout: str
) -> tuple[dict[str, Any], list[str]]:
    """Builder options and output names the checkpoint implies, weakest source first."""
    options: dict[str, Any] = dict(family.layout_options.get(layout, {}))
    names: list[str] = []
    if weights_entry is not None:
        options.update(dict(weights_entry.arch_options))
    if checkpoint.config is not None and layout == "hf" and family.options_from_config is not None:
        config_options, names = family.options_from_config(checkpoint.config)
        options.update(config_options)
    options.update(family.options_from_metadata(checkpoint.metadata))
    names = class_names_from_metadata(checkpoint.metadata) or names
    return options, names


def _classes_in(family: CheckpointFamily, converted: Mapping[str, torch.Tensor], model: nn.Module) -> int:
    if family.classes_in is not None:
        return family.classes_in(converted, model)
    head = family.head_keys(model)
    return int(converted[head[0]].shape[0]) if head else 0


def _num_outputs(family: CheckpointFamily, model: nn.Module) -> int:
    return int(getattr(model, family.num_classes_option, getattr(model, "num_classes", 0)) or 0)


def _assignable(model: nn.Module) -> bool:
    # every parameter and buffer is in the state dict (no non-persistent buffer that only
    # the constructor computes): the checkpoint's tensors can replace them as they are
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    return set(tensors) <= set(model.state_dict())


def _load(
    family: CheckpointFamily, model: nn.Module, converted: dict[str, torch.Tensor], layout: str, checkpoint: Checkpoint
) -> nn.Module:
    """Load ``converted`` into ``model`` strictly, in the model's dtypes. A model on the
    meta device takes the tensors as they are (no 100M-parameter initialisation only to
    overwrite it)."""
    target = model.state_dict()
    check_shapes(family, model, converted, layout, checkpoint)
    typed = {k: (v.to(dtype=target[k].dtype) if k in target else v).contiguous() for k, v in converted.items()}
    on_meta = any(t.is_meta for t in target.values())
    model.load_state_dict(typed, strict=True, assign=on_meta)
    family.apply_settings(model, checkpoint.metadata)
    return model


def _preprocess(
    entry: ModelEntry, weights_entry: Weights | None, layout: str, checkpoint: Checkpoint
) -> PreprocessConfig:
    if weights_entry is not None:
        return weights_entry.preprocess
    stored = preprocess_from_metadata(checkpoint.metadata)
    if stored is not None:
        return stored
    # An unlisted file: what that layout's publisher feeds this model (or its backbone).
    by_layout = dict(entry.preprocess_by_layout)
    if layout in by_layout:
        return by_layout[layout]
    if entry.backbone is not None:
        backbone = get_model_entry(entry.backbone)
        like = dict(backbone.preprocess_by_layout).get(layout, backbone.default_preprocess)
        return entry.default_preprocess.with_normalisation_of(like)
    return entry.default_preprocess


def _attach_names(
    family: CheckpointFamily,
    model: nn.Module,
    names: list[str],
    num_classes: int,
    weights_entry: Weights | None,
    layout: str | None,
) -> None:
    """Output names from the checkpoint, else the family's for the weights' data set."""
    names = names or family.default_names(num_classes, weights_entry, layout)
    if names and len(names) == num_classes:
        setattr(model, family.names_attribute, list(names))
    elif names:
        logger.warning(
            "%s: the checkpoint names %d outputs for %d; ignoring the names",
            getattr(model, "model_name", ""),
            len(names),
            num_classes,
        )


# ---------------------------------------------------------------------------------------
# load_weights


def load_weights(model: nn.Module, source: Any) -> nn.Module:
    """Load any supported checkpoint layout into ``model`` strictly.

    ``source`` is a file, folder, URL, ``hf-hub:`` id, ``Weights`` entry, an already read
    ``Checkpoint`` or a state dict. Every key must match in name and shape: a checkpoint
    of another variant or task raises ``CheckpointMismatchError`` naming the keys. Output
    names the checkpoint carries (class names, answers) are taken when their count fits.
    """
    name = getattr(model, "model_name", None)
    if name is None:
        raise InvalidInputError("load_weights needs a model made by mobilevt.create_model (it has no model_name)")
    family = family_of(get_model_entry(name))
    checkpoint = _as_checkpoint(source, family)
    layout = family.detect_layout(checkpoint.state_dict)
    refusal = family.refuse_loading(model, checkpoint)
    converted = convert(family, checkpoint, model, layout)
    check_shapes(family, model, converted, layout, checkpoint)
    if refusal:  # every key fits, but not what the keys do not show (norm eps, exit layers ...)
        raise CheckpointMismatchError("\n".join(mismatch_lines(name, layout, [], [], [], refusal)))
    _load(family, model, converted, layout, checkpoint)
    names = class_names_from_metadata(checkpoint.metadata) or []
    if not names and checkpoint.config is not None and layout == "hf" and family.options_from_config is not None:
        names = family.options_from_config(checkpoint.config)[1]
    if names and len(names) == _num_outputs(family, model):
        setattr(model, family.names_attribute, list(names))
    return model


def _as_checkpoint(source: Any, family: CheckpointFamily) -> Checkpoint:
    if isinstance(source, Checkpoint):
        return source
    if isinstance(source, Mapping):
        return Checkpoint(unwrap_state_dict(source))
    return read_source(source, with_config=family.options_from_config is not None)


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: str | nn.Module, layout: str | None = None
) -> dict[str, torch.Tensor]:
    """Convert a state dict of any supported layout to the keys of ``model``: a model
    made by ``create_model``, or a registered name (built with its default options).
    The layout is detected unless given. Raises ``CheckpointMismatchError`` naming the
    missing and unexpected keys."""
    entry = get_model_entry(model if isinstance(model, str) else model.model_name)
    target = _skeleton(entry, {}) if isinstance(model, str) else model
    return convert(family_of(entry), Checkpoint(unwrap_state_dict(state_dict)), target, layout)


def save_weights(model: nn.Module, path: str | os.PathLike, preprocess: PreprocessConfig | None = None) -> Path:
    """Write ``model`` as mobilevt safetensors (keys, model name, classes and preprocessing
    in the metadata), atomically: a crash never leaves a half-written file."""

    path = Path(path)
    if path.suffix != ".safetensors":
        raise InvalidInputError(f"mobilevt weights are safetensors files; use a .safetensors path, not {path.name!r}")
    preprocess = preprocess or getattr(model, "preprocess", None)
    metadata = {
        "format": "mobilevt",
        "model": str(getattr(model, "model_name", "")),
        "num_classes": str(getattr(model, "num_classes", "")),
    }
    if preprocess is not None:
        metadata["preprocess"] = json.dumps(asdict(preprocess))
    class_names = getattr(model, "class_names", None)
    if class_names:
        metadata["class_names"] = json.dumps(list(class_names))
    if getattr(model, "model_name", None):
        # what the family needs to rebuild the model (DeepLabV3's ASPP, ViLT's architecture ...)
        metadata.update(get_model_entry(model.model_name).checkpoints.metadata_of(model))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path
