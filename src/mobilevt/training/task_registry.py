"""Training tasks by name: what ``TrainConfig.task`` may say.

The built-in tasks are named by where they live (``module:class``) and imported when
first used, so that the configuration can check a task name without importing the tasks
(which import the configuration). ``register_task`` adds a task of one's own.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ..errors import InvalidInputError

TaskFactory = Callable[[], Any]

TASKS: dict[str, str | TaskFactory] = {
    "classification": "mobilevt.training.tasks:ClassificationTask",
    "segmentation": "mobilevt.training.segmentation:SegmentationTask",
    "detection": "mobilevt.training.detection:DetectionTask",
}


def register_task(name: str, factory: TaskFactory) -> None:
    """Make ``TrainConfig.task == name`` train with ``factory()`` (a ``TrainingTask``)."""
    TASKS[name] = factory


def task_names() -> list[str]:
    return sorted(TASKS)


def get_task(name: str) -> Any:
    """A fresh :class:`~mobilevt.training.tasks.TrainingTask` for ``TrainConfig.task``."""
    try:
        factory = TASKS[name]
    except KeyError:
        raise InvalidInputError(f"unknown training task {name!r}; known: {', '.join(task_names())}") from None
    if isinstance(factory, str):
        module, _, attribute = factory.partition(":")
        factory = getattr(importlib.import_module(module), attribute)
    return factory()
