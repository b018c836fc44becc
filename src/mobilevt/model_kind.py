"""What a model does, declared by each model class and each registry entry: the export,
the CLI and training dispatch on it instead of guessing from attributes."""

from __future__ import annotations

from enum import Enum


class ModelKind(str, Enum):
    """A model's inputs and outputs. The value is the task name the Hugging Face hub uses."""

    CLASSIFICATION = "image-classification"  # image in, class logits out
    SEGMENTATION = "semantic-segmentation"  # image in, class logits per pixel out
    DETECTION = "object-detection"  # image in, box regressions and class logits per anchor out
    VQA = "visual-question-answering"  # question tokens and image in, answer logits out

    def __str__(self) -> str:
        return self.value


def kind_of(model: object) -> ModelKind:
    """The kind a model declares (``model.kind``); a module that declares none is taken as
    an image classifier (image in, logits out), as timm's and torchvision's are."""
    kind = getattr(model, "kind", ModelKind.CLASSIFICATION)
    return ModelKind(kind)
