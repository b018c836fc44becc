"""Model registry: every variant is registered by name with its builder and weights."""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from .errors import InvalidInputError, MobilevtError
from .model_kind import ModelKind
from .weights.entries import PreprocessConfig, Weights
from .weights.family import CheckpointFamily


@dataclass(frozen=True, kw_only=True)
class ModelEntry:
    """A registered model: its builder, kind, weights and checkpoint family (keywords only)."""

    name: str
    builder: Callable[..., nn.Module]
    family: str
    default_preprocess: PreprocessConfig
    weights: tuple[Weights, ...] = ()
    published_params_m: float | None = None
    published_macs_g: float | None = None
    # preprocessing to assume for an unlisted checkpoint, by its layout
    preprocess_by_layout: tuple[tuple[str, PreprocessConfig], ...] = ()
    # what the model does (its inputs and outputs): export, the CLI and training dispatch on it
    kind: ModelKind = ModelKind.CLASSIFICATION
    # the family's checkpoint layouts, read by the one engine (mobilevt.engine);
    # None only for a model that loads no checkpoints
    checkpoints: CheckpointFamily | None = None
    # the registered classifier a task model is built on (backbone_weights= loads it)
    backbone: str | None = None
    # the publisher's ImageNet top-1 for a model with no registered weights entry to carry it
    published_top1: float | None = None

    @property
    def default_weights(self) -> Weights | None:
        return self.weights[0] if self.weights else None

    def find_weights(self, tag: str) -> Weights | None:
        """The weights entry tagged ``tag`` (or named ``model.tag``), else None: the one look-up."""
        return next((entry for entry in self.weights if tag in (entry.tag, entry.name)), None)

    def get_weights(self, tag: str) -> Weights:
        found = self.find_weights(tag)
        if found is not None:
            return found
        known = ", ".join(w.tag for w in self.weights) or "none"
        raise InvalidInputError(f"model {self.name!r} has no weights tagged {tag!r}; known tags: {known}")


_REGISTRY: dict[str, ModelEntry] = {}


def _registered() -> dict[str, ModelEntry]:
    """The registry, after the model families have registered themselves (importing
    ``mobilevt.models`` does; it imports this module, so it is loaded here on first use)."""
    importlib.import_module("mobilevt.models")  # waits for an import under way in another thread
    return _REGISTRY


@dataclass(frozen=True)
class ModelName:
    """A model name as users write it, timm-style: ``"mobilevit_s"`` or with a weights tag,
    ``"mobilevit_s.timm_in1k"``. The one place where such a name is taken apart."""

    base: str
    tag: str | None = None

    @classmethod
    def parse(cls, name: str) -> ModelName:
        base, dot, tag = name.partition(".")
        return cls(base, tag if dot else None)

    def __str__(self) -> str:
        return self.base if self.tag is None else f"{self.base}.{self.tag}"


def register_model(entry: ModelEntry) -> ModelEntry:
    if entry.name in _REGISTRY:
        raise ValueError(f"model {entry.name!r} is registered twice")
    _REGISTRY[entry.name] = entry
    return entry


class UnknownModelError(MobilevtError, KeyError, ValueError):
    def __str__(self) -> str:  # KeyError would print the message with quotes
        return str(self.args[0])


def get_model_entry(name: str) -> ModelEntry:
    base = ModelName.parse(name).base
    try:
        return _registered()[base]
    except KeyError:
        close = difflib.get_close_matches(base, list(_REGISTRY), n=4, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} `mobilevt models` (or mobilevt.list_models()) lists all "
            f"{len(_REGISTRY)} models."
        ) from None


def list_models(pattern: str | None = None, kind: ModelKind | str | None = None) -> list[str]:
    """Names of all registered models in registration order (families, then size),
    optionally filtered by a shell-style pattern (``"mobilevitv2_*"``) and by kind
    (``ModelKind.CLASSIFICATION`` or its name ``"image-classification"``,
    ``"semantic-segmentation"``, ``"object-detection"``, ``"visual-question-answering"``)."""
    names = list(_registered())
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    if kind is not None:
        kind = ModelKind(kind)
        names = [n for n in names if _REGISTRY[n].kind == kind]
    return names


def build_model(name: str, **kwargs: Any) -> nn.Module:
    entry = get_model_entry(name)
    model = entry.builder(**kwargs)
    model.model_name = entry.name
    return model
