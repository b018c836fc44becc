"""Weights entries, checkpoint reading and layout conversion."""
from .convert import CheckpointMismatchError, convert_state_dict, detect_layout
from .entries import PreprocessConfig, Weights
from .loading import load_weights, read_checkpoint, resolve_source, save_weights

__all__ = [
    "CheckpointMismatchError",
    "PreprocessConfig",
    "Weights",
    "convert_state_dict",
    "detect_layout",
    "load_weights",
    "read_checkpoint",
    "resolve_source",
    "save_weights",
]
