"""What a model needs around it, whatever its task: its evaluation preprocessing and the
names of its outputs. One verb for each, for classifiers, segmenters and detectors."""
from __future__ import annotations

from typing import List, Optional, Union

from torch import nn

from ..data.imagenet import imagenet_classes
from ..data.preprocess import DetectionPreprocess, ImagePreprocess, SegmentationPreprocess
from ..registry import get_model_entry
from ..weights.entries import PreprocessConfig, Weights
from ..errors import InvalidInputError

ModelOrName = Union[nn.Module, str, Weights, PreprocessConfig]


def transforms_for(model_or_name: ModelOrName, task: Optional[str] = None) -> nn.Module:
    """The scriptable evaluation preprocessing of a model, a model name (``"mobilevit_s"``
    or ``"mobilevit_s.timm_in1k"``), a ``Weights`` entry or a ``PreprocessConfig``
    (taken as a classifier's): :class:`ImagePreprocess` for classifiers (shorter side
    resized, center crop), :class:`SegmentationPreprocess` and :class:`DetectionPreprocess`
    (the whole image resized to the input size) for the dense tasks. ``task`` overrides the
    task the registry gives the model (for a model built outside ``create_model``)."""
    config = preprocess_config_for(model_or_name)
    task = task or _task_of(model_or_name)
    if task == "semantic-segmentation":
        return SegmentationPreprocess(config)
    if task == "object-detection":
        return DetectionPreprocess(config)
    return ImagePreprocess(config)


def class_names_for(model: nn.Module, task: Optional[str] = None) -> List[str]:
    """Names of a model's outputs: its ``class_names`` when they name every output, else
    ImageNet's for a 1000-class classifier, ``background, class 1 ...`` for a detector,
    the class numbers for a segmenter, ``class_0 ...`` otherwise."""
    target = getattr(model, "module", model)  # DDP / wrappers
    names = getattr(target, "class_names", None)
    num_classes = int(getattr(target, "num_classes", 0) or 0)
    if names and len(names) == num_classes:
        return list(names)
    task = task or _task_of(target)
    if task == "object-detection":
        return ["background"] + [f"class {i}" for i in range(1, num_classes)]
    if task == "semantic-segmentation":
        return [str(i) for i in range(num_classes)]
    if task == "image-classification" and num_classes == 1000:
        return list(imagenet_classes().names)
    return [f"class_{i}" for i in range(num_classes)]


def preprocess_config_for(model_or_name: Union[nn.Module, str, Weights, PreprocessConfig]) -> PreprocessConfig:
    if isinstance(model_or_name, PreprocessConfig):
        return model_or_name
    if isinstance(model_or_name, Weights):
        return model_or_name.preprocess
    if isinstance(model_or_name, str):
        name, _, tag = model_or_name.partition(".")
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


def _task_of(model_or_name: ModelOrName) -> str:
    if isinstance(model_or_name, Weights):
        name = model_or_name.model
    elif isinstance(model_or_name, str):
        name = model_or_name.partition(".")[0]
    elif isinstance(model_or_name, nn.Module):
        name = getattr(getattr(model_or_name, "module", model_or_name), "model_name", None)
    else:
        name = None
    return get_model_entry(name).task if name else "image-classification"
