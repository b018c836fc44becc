"""mobilevt: MobileViT-family vision transformers for phones and small devices.

The public names are loaded on first use (PEP 562), so that ``import mobilevt`` and the
command line's ``--help`` do not pay for torch until a model is needed."""

from __future__ import annotations

import importlib
from typing import Any

from .version import __version__ as __version__

# public name -> the module that defines it
_PUBLIC = {
    "ImagePreprocess": "mobilevt.data",
    "load_image": "mobilevt.data",
    "create_tokenizer": "mobilevt.data.tokenizer",
    "convert_state_dict": "mobilevt.engine",
    "load_weights": "mobilevt.engine",
    "save_weights": "mobilevt.engine",
    "create_model": "mobilevt.factory",
    "ModelKind": "mobilevt.model_kind",
    "ModelName": "mobilevt.registry",
    "get_model_entry": "mobilevt.registry",
    "list_models": "mobilevt.registry",
    "EvaluationResult": "mobilevt.tasks",
    "Prediction": "mobilevt.tasks",
    "evaluate": "mobilevt.tasks",
    "predict": "mobilevt.tasks",
    "transforms_for": "mobilevt.tasks",
    "DetectionResult": "mobilevt.tasks.detection",
    "detect": "mobilevt.tasks.detection",
    "evaluate_detection": "mobilevt.tasks.detection",
    "Segmentation": "mobilevt.tasks.segmentation",
    "evaluate_segmentation": "mobilevt.tasks.segmentation",
    "segment": "mobilevt.tasks.segmentation",
    "VqaPipeline": "mobilevt.tasks.vqa",
    "create_vqa_pipeline": "mobilevt.tasks.vqa",
    "evaluate_vqa": "mobilevt.tasks.vqa",
    "vqa_accuracy": "mobilevt.tasks.vqa",
    "PreprocessConfig": "mobilevt.weights.entries",
    "Weights": "mobilevt.weights.entries",
    "WeightsNotFoundError": "mobilevt.weights.loading",
    "detect_layout": "mobilevt.weights.mobilevit_layouts",
    "CheckpointMismatchError": "mobilevt.weights.state_dicts",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'mobilevt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
