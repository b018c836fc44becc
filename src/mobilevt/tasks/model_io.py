"""What a model needs around it, whatever its task: its evaluation preprocessing and the
names of its outputs. One verb for each, for classifiers, segmenters and detectors."""

from __future__ import annotations

from torch import nn

from ..data.imagenet import imagenet_classes
from ..data.preprocess import DetectionPreprocess, ImagePreprocess, SegmentationPreprocess
from ..errors import InvalidInputError
from ..model_kind import ModelKind, kind_of
from ..registry import ModelName, get_model_entry
from ..weights.entries import PreprocessConfig, Weights

ModelOrName = nn.Module | str | Weights | PreprocessConfig


def transforms_for(model_or_name: ModelOrName, kind: ModelKind | None = None) -> nn.Module:
    """The scriptable evaluation preprocessing of a model, a model name (``"mobilevit_s"``
    or ``"mobilevit_s.timm_in1k"``), a ``Weights`` entry or a ``PreprocessConfig``
    (taken as a classifier's): :class:`ImagePreprocess` for classifiers (shorter side
    resized, center crop), :class:`SegmentationPreprocess` and :class:`DetectionPreprocess`
    (the whole image resized to the input size) for the dense tasks. ``kind`` overrides the
    kind the model declares (or its registry entry, for a name)."""
    config = preprocess_config_for(model_or_name)
    kind = kind or _kind_of(model_or_name)
    if kind == ModelKind.SEGMENTATION:
        return SegmentationPreprocess(config)
    if kind == ModelKind.DETECTION:
        return DetectionPreprocess(config)
    return ImagePreprocess(config)


def class_names_for(model: nn.Module, kind: ModelKind | None = None) -> list[str]:
    """Names of a model's outputs: its ``class_names`` when they name every output, else
    ImageNet's for a 1000-class classifier, ``background, class 1 ...`` for a detector,
    the class numbers for a segmenter, ``class_0 ...`` otherwise."""
    target = getattr(model, "module", model)  # DDP / wrappers
    names = getattr(target, "class_names", None)
    num_classes = int(getattr(target, "num_classes", 0) or 0)
    if names and len(names) == num_classes:
        return list(names)
    kind = kind or _kind_of(target)
    if kind == ModelKind.DETECTION:
        return ["background"] + [f"class {i}" for i in range(1, num_classes)]
    if kind == ModelKind.SEGMENTATION:
        return [str(i) for i in range(num_classes)]
    if kind == ModelKind.CLASSIFICATION and num_classes == 1000:
        return list(imagenet_classes().names)
    return [f"class_{i}" for i in range(num_classes)]


def preprocess_config_for(model_or_name: nn.Module | str | Weights | PreprocessConfig) -> PreprocessConfig:
    if isinstance(model_or_name, PreprocessConfig):
        return model_or_name
    if isinstance(model_or_name, Weights):
        return model_or_name.preprocess
    if isinstance(model_or_name, str):
        name, tag = ModelName.parse(model_or_name).base, ModelName.parse(model_or_name).tag
        entry = get_model_entry(name)
        return entry.get_weights(tag).preprocess if tag else entry.default_preprocess
    if isinstance(model_or_name, nn.Module):
        target = getattr(model_or_name, "module", model_or_name)  # DDP / wrappers
        config = getattr(target, "preprocess", None)
        if isinstance(config, PreprocessConfig):
            return config
        raise InvalidInputError(
            f"{type(model_or_name).__name__} carries no preprocessing (models from mobilevt.create_model do); "
            "pass a PreprocessConfig or a model name instead"
        )
    raise TypeError(f"expected a model, model name, Weights or PreprocessConfig, got {type(model_or_name).__name__}")


def _kind_of(model_or_name: ModelOrName) -> ModelKind:
    if isinstance(model_or_name, Weights):
        return get_model_entry(model_or_name.model).kind
    if isinstance(model_or_name, str):
        return get_model_entry(model_or_name).kind
    if isinstance(model_or_name, nn.Module):
        return kind_of(getattr(model_or_name, "module", model_or_name))  # DDP / wrappers
    return ModelKind.CLASSIFICATION  # a PreprocessConfig: taken as a classifier's
