"""mobilevt: MobileViT-family vision transformers for phones and small devices."""

from . import models  # noqa: F401  (registers the model families)
from .data import ImagePreprocess, load_image
from .data.tokenizer import create_tokenizer
from .engine import convert_state_dict, load_weights, save_weights
from .factory import create_model
from .model_kind import ModelKind
from .registry import ModelName, get_model_entry, list_models
from .tasks import EvaluationResult, Prediction, evaluate, predict, transforms_for
from .tasks.detection import DetectionResult, detect, evaluate_detection
from .tasks.segmentation import Segmentation, evaluate_segmentation, segment
from .tasks.vqa import VqaPipeline, create_vqa_pipeline, evaluate_vqa, vqa_accuracy
from .version import __version__ as __version__
from .weights.entries import PreprocessConfig, Weights
from .weights.loading import WeightsNotFoundError
from .weights.mobilevit_layouts import detect_layout
from .weights.state_dicts import CheckpointMismatchError

__all__ = [
    "CheckpointMismatchError",
    "EvaluationResult",
    "ImagePreprocess",
    "Prediction",
    "PreprocessConfig",
    "Weights",
    "WeightsNotFoundError",
    "DetectionResult",
    "Segmentation",
    "convert_state_dict",
    "create_model",
    "create_tokenizer",
    "detect",
    "detect_layout",
    "evaluate",
    "evaluate_detection",
    "evaluate_segmentation",
    "ModelKind",
    "ModelName",
    "get_model_entry",
    "list_models",
    "load_image",
    "load_weights",
    "predict",
    "save_weights",
    "segment",
    "transforms_for",
    "VqaPipeline",
    "create_vqa_pipeline",
    "evaluate_vqa",
    "vqa_accuracy",
]
