"""What a user does with a model: classify images, evaluate accuracy."""

from .classification import (
    ClassAccuracy,
    ClassScore,
    EvaluationResult,
    Prediction,
    class_names_for,
    evaluate,
    predict,
    transforms_for,
)

__all__ = [
    "ClassAccuracy",
    "ClassScore",
    "EvaluationResult",
    "Prediction",
    "class_names_for",
    "evaluate",
    "predict",
    "transforms_for",
]
