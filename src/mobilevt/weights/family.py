"""What a model family tells the checkpoint engine about its checkpoints.

A family (MobileViT classifiers, DeepLabV3, SSDLite, ViLT) describes its layouts with one
:class:`CheckpointFamily` in a module of its own (``mobilevit_layouts``,
``deeplabv3_layouts`` ...) that imports nothing from ``mobilevt.models``: the engine
(:mod:`mobilevt.engine`) does the reading, converting, checking and loading for
every family the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .entries import Weights
from .state_dicts import CheckpointMismatchError

StateDict = Mapping[str, torch.Tensor]


def names_from_id2label(config: Mapping[str, Any]) -> list[str]:
    """The output names of a transformers ``config.json`` (``id2label`` in index order);
    empty when it has none or its indices are not 0..n-1."""
    id2label = config.get("id2label")
    if not isinstance(id2label, Mapping) or not id2label:
        return []
    labels = {int(k): str(v) for k, v in id2label.items()}
    return [labels[i] for i in range(len(labels))] if sorted(labels) == list(range(len(labels))) else []


def no_names(num_classes: int, weights: Weights | None, layout: str | None) -> list[str]:
    return []


def no_note(*_: Any) -> str:
    return ""


def no_options(_: Mapping[str, Any]) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Mismatch:
    """Why a checkpoint did not fit: what a family's ``explain`` hook is given."""

    model_name: str
    layout: str
    state: StateDict
    missing: Sequence[str]
    unexpected: Sequence[str]
    mis_shaped: Sequence[str]
    model: nn.Module
    checkpoint: Any  # the mobilevt.weights.loading.Checkpoint (metadata, config.json)


@dataclass(frozen=True)
class CheckpointFamily:
    """A model family's checkpoint layouts and the few rules that differ by family.

    Required:
        name: the family, for messages.
        layouts: ``(layout, signature key)`` pairs checked in order: a state dict holding
            the signature key is in that layout (a layout may have several).
        source_keys: ``(layout, model key, model) -> checkpoint keys`` holding that
            tensor (several are concatenated on dim 0, e.g. separate q/k/v projections).
        head_keys: ``model -> keys`` whose shape depends on the class count; they are
            freshly initialised when ``num_classes`` differs from the checkpoint's.
        not_this_family: ``state -> message`` for a state dict in no known layout.

    Optional hooks have neutral defaults; each is described where it is declared.
    """

    name: str
    layouts: tuple[tuple[str, str], ...]
    source_keys: Callable[[str, str, nn.Module], list[str]]
    head_keys: Callable[[nn.Module], list[str]]
    not_this_family: Callable[[StateDict], str]
    # the builder's keyword for the class count, and its value for random weights
    num_classes_option: str = "num_classes"
    default_num_classes: int = 1000
    # checkpoint keys a layout carries that the model recomputes (position ids ...)
    ignored_keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # (layout, state, model) -> state, before conversion: prefixes, training-only heads
    prepare_state: Callable[[str, dict, nn.Module], dict] = lambda layout, state, model: state
    # transformers config.json -> (builder options, class names); None: not read
    options_from_config: Callable[[Mapping[str, Any]], tuple[dict, list[str]]] | None = None
    # mobilevt file metadata -> builder options (architecture the keys do not show)
    options_from_metadata: Callable[[Mapping[str, str]], dict[str, Any]] = no_options
    # model -> metadata that save_weights writes so that the options can be read back
    metadata_of: Callable[[nn.Module], dict[str, str]] = lambda model: {}
    # (model, metadata) -> None: run-time settings a file stores beside its tensors, set on
    # the model each time the file is loaded (ViLT: the exit predictor's calibrated risk)
    apply_settings: Callable[[nn.Module, Mapping[str, str]], None] = lambda model, metadata: None
    # builder options a layout implies (dandelin ViLT's LayerNorm epsilon ...)
    layout_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # (num_classes, weights entry, layout or None) -> class names when the checkpoint has none
    default_names: Callable[[int, Weights | None, str | None], list[str]] = no_names
    # the model attribute that holds the output names
    names_attribute: str = "class_names"
    # Mismatch -> the fix to put first in the message ("" when the engine's guess will do)
    explain: Callable[[Mismatch], str] = no_note
    # (model, checkpoint) -> why a checkpoint whose keys all fit must still be refused
    refuse_loading: Callable[[nn.Module, Any], str] = no_note
    # model -> keys that tell variants apart (for "the checkpoint matches X"); default:
    # every key but the head keys
    identifying_keys: Callable[[nn.Module], list[str]] | None = None
    # (converted state, model) -> the checkpoint's class count; default: the first head
    # key's first dimension
    classes_in: Callable[[StateDict, nn.Module], int] | None = None

    def detect_layout(self, state: StateDict) -> str:
        for layout, signature in self.layouts:
            if signature in state:
                return layout
        raise CheckpointMismatchError(self.not_this_family(state))

    @property
    def layout_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(layout for layout, _ in self.layouts))
