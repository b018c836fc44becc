"""Weights entries, checkpoint reading, and the one engine (:mod:`.engine`) that converts
and loads the checkpoints of every model family; each family describes its layouts in a
``*_layouts`` module."""

from .entries import PreprocessConfig, Weights
from .loading import read_checkpoint, read_source, resolve_source
from .state_dicts import CheckpointMismatchError

__all__ = [
    "CheckpointMismatchError",
    "PreprocessConfig",
    "Weights",
    "read_checkpoint",
    "read_source",
    "resolve_source",
]
